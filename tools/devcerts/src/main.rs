//! `devcerts --out DIR`: a development CA and one identity directory per service and for
//! the orchestrator (`DIR/<name>/{tls.crt,tls.key,ca.crt}`), plus `DIR/ca.crt`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use execbridge_devcerts::{Ca, DEV_IDENTITIES, Leaf, write_atomic, write_identity};

#[derive(Debug, Parser)]
struct Args {
    /// Output directory.
    #[arg(long, default_value = ".certs")]
    out: PathBuf,
    /// Days the leaf certificates are valid.
    #[arg(long, default_value_t = 30)]
    days: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let day = Duration::from_secs(86_400);
    let ca = Ca::new("execbridge dev CA", day * 365).context("creating the CA")?;
    let bundle = ca.cert_pem();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    write_atomic(&args.out.join("ca.crt"), bundle.as_bytes())?;
    for name in DEV_IDENTITIES {
        let issued = ca
            .issue(&Leaf::dev(name, day * args.days))
            .with_context(|| format!("issuing {name}"))?;
        let dir = args.out.join(name);
        write_identity(&dir, &issued, &bundle)
            .with_context(|| format!("writing {}", dir.display()))?;
    }
    #[allow(clippy::print_stdout)]
    {
        println!(
            "dev CA and certificates for {} in {}",
            DEV_IDENTITIES.join(", "),
            args.out.display()
        );
    }
    Ok(())
}
