use clap::Parser;

use super::{Cli, Command, parse_env};

#[test]
fn service_settings_are_key_value_pairs_of_execbridge_keys() {
    assert_eq!(
        parse_env("EXECBRIDGE_EXECUTOR_JOURNAL__FSYNC=false"),
        Ok(("EXECBRIDGE_EXECUTOR_JOURNAL__FSYNC".into(), "false".into()))
    );
    assert_eq!(
        parse_env("EXECBRIDGE_GATEWAY_POLICY__FILE=a=b"),
        Ok(("EXECBRIDGE_GATEWAY_POLICY__FILE".into(), "a=b".into()))
    );
    assert!(parse_env("EXECBRIDGE_EXECUTOR_JOURNAL__FSYNC").is_err());
    assert!(parse_env("RUST_LOG=debug").is_err());
    assert!(parse_env("EXECBRIDGE_=x").is_err());
}

#[test]
fn the_defaults_are_the_documented_ones() {
    let cli = Cli::try_parse_from(["execbridge-bench"]).expect("no arguments are needed");
    assert!(cli.command.is_none());
    let b = cli.bench;
    assert_eq!(
        (b.calls, b.warmup, b.rate, b.duration_secs, b.connections),
        (20_000, 2_000, 2_000, 10, 4)
    );
    assert_eq!(b.bin_dir.to_str(), Some("target/release"));
    assert_eq!(b.out.to_str(), Some("bench-results/submit_order.json"));
}

#[test]
fn serve_echo_takes_only_its_address() {
    let cli = Cli::try_parse_from(["execbridge-bench", "serve-echo", "--listen", "127.0.0.1:0"])
        .expect("the hidden subcommand parses");
    assert!(matches!(cli.command, Some(Command::ServeEcho { listen }) if listen.port() == 0));
    assert!(
        Cli::try_parse_from([
            "execbridge-bench",
            "--calls",
            "5",
            "serve-echo",
            "--listen",
            "127.0.0.1:0"
        ])
        .is_err()
    );
}
