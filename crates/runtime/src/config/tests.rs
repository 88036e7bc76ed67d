use std::io::Write;

use figment::providers::Env;
use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Sample {
    server: ServerConfig,
    log: LogConfig,
}

impl Validate for Sample {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.log.validate()
    }
}

fn toml(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn no_env() -> Env {
    Env::prefixed("EXECBRIDGE_TEST_NOTHING_SET_")
}

#[test]
fn defaults_load_without_a_file() {
    let c: Sample = load_from(None, no_env()).unwrap();
    assert_eq!(c.server.shutdown_grace_secs, 10);
}

#[test]
fn an_unknown_key_is_named() {
    let f = toml("[server]\nlisten = \"127.0.0.1:1\"\nlistne = \"x\"\n");
    let err = load_from::<Sample>(Some(f.path()), no_env()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("listne"), "{text}");
}

#[test]
fn a_bad_value_names_its_key() {
    let f = toml("[server]\nlisten = \"not an address\"\n");
    let err = load_from::<Sample>(Some(f.path()), no_env()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("server.listen"), "{text}");
}

#[test]
fn a_semantic_error_names_its_key() {
    let f = toml("[server]\nshutdown_grace_secs = 0\n");
    let err = load_from::<Sample>(Some(f.path()), no_env()).unwrap_err();
    assert!(
        err.to_string().contains("server.shutdown_grace_secs"),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_an_error() {
    let err = load_from::<Sample>(Some(Path::new("/nonexistent.toml")), no_env()).unwrap_err();
    assert!(matches!(err, ConfigError::MissingFile(_)));
}

#[test]
fn environment_overrides_the_file() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("EXECBRIDGE_JAILED_SERVER__LISTEN", "127.0.0.1:4242");
        jail.set_env("EXECBRIDGE_JAILED_LOG__FORMAT", "json");
        let c: Sample = load("jailed", None).map_err(|e| e.to_string())?;
        assert_eq!(c.server.listen.port(), 4242);
        assert_eq!(c.log.format, LogFormat::Json);
        Ok(())
    });
}

#[test]
fn endpoints_need_a_scheme_and_host() {
    assert!(check_endpoint("k", "http://127.0.0.1:1").is_ok());
    assert!(check_endpoint("k", "127.0.0.1:1").is_err());
    assert!(check_endpoint("k", "ftp://x").is_err());
}
