//! Prints the `ExecbridgeConfig` CRD generated from the Rust types (`make crds`).

use std::io::Write;

fn main() -> anyhow::Result<()> {
    let yaml = execbridge_operator::crd_yaml()?;
    std::io::stdout().write_all(yaml.as_bytes())?;
    Ok(())
}
