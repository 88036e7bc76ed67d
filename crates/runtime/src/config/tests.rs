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
// The closure's error type is figment's own (`Jail::expect_with`).
#[allow(clippy::result_large_err)]
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

#[test]
fn every_connection_limit_has_an_explicit_default() {
    let c = ServerConfig::default();
    assert_eq!(c.max_concurrent_streams, 1024);
    assert_eq!(c.max_decoding_message_bytes, 4 * 1024 * 1024);
    assert_eq!(c.max_encoding_message_bytes, 4 * 1024 * 1024);
    assert_eq!(c.max_header_list_bytes, 16 * 1024);
    assert_eq!(c.max_connection_age_secs, 600);
    assert!(c.tcp_nodelay);
    assert_eq!(c.worker_threads, 0);
    assert!(c.validate().is_ok());
}

#[rstest::rstest]
#[case::decoding_too_small("max_decoding_message_bytes = 10", "server.max_decoding_message_bytes")]
#[case::decoding_too_large(
    "max_decoding_message_bytes = 1073741824",
    "server.max_decoding_message_bytes"
)]
#[case::encoding_too_small("max_encoding_message_bytes = 0", "server.max_encoding_message_bytes")]
#[case::header_list_too_small("max_header_list_bytes = 100", "server.max_header_list_bytes")]
#[case::header_list_too_large("max_header_list_bytes = 16777216", "server.max_header_list_bytes")]
#[case::connection_age_too_long(
    "max_connection_age_secs = 999999999",
    "server.max_connection_age_secs"
)]
#[case::nodelay_not_a_bool("tcp_nodelay = \"yes\"", "server.tcp_nodelay")]
#[case::too_many_worker_threads("worker_threads = 100000", "server.worker_threads")]
#[case::negative_worker_threads("worker_threads = -1", "server.worker_threads")]
#[case::negative_size("max_header_list_bytes = -1", "server.max_header_list_bytes")]
fn a_bad_connection_limit_names_its_key(#[case] line: &str, #[case] key: &str) {
    let f = toml(&format!("[server]\n{line}\n"));
    let err = load_from::<Sample>(Some(f.path()), no_env()).unwrap_err();
    assert!(err.to_string().contains(key), "{line}: {err}");
}

#[test]
fn connection_limits_at_their_bounds_are_accepted() {
    let f = toml(
        "[server]\nmax_decoding_message_bytes = 1024\nmax_encoding_message_bytes = 268435456\n\
         max_header_list_bytes = 1048576\nmax_connection_age_secs = 0\ntcp_nodelay = false\n\
         worker_threads = 1024\n",
    );
    let c: Sample = load_from(Some(f.path()), no_env()).unwrap();
    assert_eq!(c.server.max_decoding_message_bytes, 1024);
    assert_eq!(c.server.max_connection_age_secs, 0);
    assert!(!c.server.tcp_nodelay);
    assert_eq!(c.server.worker_threads, 1024);
}

#[test]
fn range_checks_name_the_key_the_bounds_and_the_value() {
    let message = |r: Result<(), ConfigError>| r.unwrap_err().to_string();
    assert!(check_range("a.b", 5, 1..=4).is_err());
    assert!(check_range("a.b", 4, 1..=4).is_ok());
    assert!(message(check_range("a.b", 0, 1..=4)).contains("`a.b`: must be 1 to 4, got 0"));
    assert!(message(check_range("a.p", 1.5, 0.0..=1.0)).contains("must be 0 to 1, got 1.5"));
    assert!(
        message(check_bytes("a.s", 10u32, &(1024..=2048)))
            .contains("must be 1024 to 2048 bytes, got 10")
    );
    assert!(check_at_most("a.n", 0, 9, "never").is_ok());
    assert!(
        message(check_at_most("a.n", 10, 9, "never")).contains("must be 0 (never) to 9, got 10")
    );
}
