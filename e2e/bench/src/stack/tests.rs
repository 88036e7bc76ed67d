use std::collections::HashSet;

use super::{free_ports, service_env, status_code};

#[test]
fn the_status_code_is_read_from_the_status_line() {
    assert_eq!(
        status_code(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nready\n"),
        Some(200)
    );
    assert_eq!(
        status_code(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"),
        Some(503)
    );
}

#[test]
fn anything_but_an_http_status_line_has_no_status_code() {
    assert_eq!(status_code(b""), None);
    assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
    assert_eq!(status_code(b"HTTP/1.1 OK\r\n"), None);
}

#[test]
fn free_ports_are_distinct_loopback_ports() {
    let ports = free_ports(7).expect("free ports");
    assert_eq!(ports.len(), 7);
    assert!(ports.iter().all(|p| p.ip().is_loopback() && p.port() != 0));
    assert_eq!(ports.iter().collect::<HashSet<_>>().len(), 7);
}

#[test]
fn service_settings_use_the_services_own_environment_keys() {
    let env = service_env(
        "executor",
        "127.0.0.1:1".parse().expect("an address"),
        "127.0.0.1:2".parse().expect("an address"),
    );
    let get = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    assert_eq!(
        get("EXECBRIDGE_EXECUTOR_SERVER__LISTEN"),
        Some("127.0.0.1:1")
    );
    assert_eq!(
        get("EXECBRIDGE_EXECUTOR_SERVER__ADMIN_LISTEN"),
        Some("127.0.0.1:2")
    );
    assert_eq!(get("EXECBRIDGE_EXECUTOR_LOG__LEVEL"), Some("warn"));
}

#[test]
fn the_gateway_policy_raises_only_the_submit_budget() {
    let policy: toml::Table = toml::from_str(super::GATEWAY_POLICY).expect("valid TOML");
    let limits = policy["limits"].as_table().expect("a limits table");
    assert_eq!(limits.keys().collect::<Vec<_>>(), ["submit"]);
    assert!(limits["submit"]["per_second"].as_integer() >= Some(100_000));
    assert_eq!(policy.keys().collect::<Vec<_>>(), ["limits"]);
}
