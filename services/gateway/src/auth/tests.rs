use std::path::Path;

use sha2::{Digest, Sha256};
use tonic::metadata::{MetadataMap, MetadataValue};

use super::*;
use crate::policy::PolicyFile;

fn policy() -> Policy {
    let hash = hex::encode(Sha256::digest(b"the-key"));
    let text = format!(
        "allow_anonymous = false\n[[principals]]\nname = \"alice\"\npermissions = [\"trade:paper\"]\naccounts = [\"a\"]\n[[api_keys]]\nprincipal = \"alice\"\nsha256 = \"{hash}\"\n"
    );
    toml::from_str::<PolicyFile>(&text)
        .unwrap()
        .compile(Path::new("."))
        .unwrap()
}

fn metadata(pairs: &[(&'static str, &str)]) -> MetadataMap {
    let mut m = MetadataMap::new();
    for (k, v) in pairs {
        m.insert(*k, MetadataValue::try_from(*v).unwrap());
    }
    m
}

#[test]
fn a_known_api_key_names_its_principal() {
    let (p, method) = authenticate(
        &policy(),
        &TokenCache::default(),
        &metadata(&[("x-api-key", "the-key")]),
        None,
    )
    .unwrap();
    assert_eq!(p.name, "alice");
    assert_eq!(method, Method::ApiKey);
}

#[test]
fn without_credentials_and_without_anonymous_access_the_caller_is_refused() {
    let err =
        authenticate(&policy(), &TokenCache::default(), &MetadataMap::new(), None).unwrap_err();
    assert_eq!(err, AuthError::Missing);
}

#[test]
fn a_certificate_identity_is_a_principal_when_the_policy_knows_it() {
    let (p, method) = authenticate(
        &policy(),
        &TokenCache::default(),
        &MetadataMap::new(),
        Some("alice"),
    )
    .unwrap();
    assert_eq!((p.name.as_str(), method), ("alice", Method::Certificate));
    let err = authenticate(
        &policy(),
        &TokenCache::default(),
        &MetadataMap::new(),
        Some("spiffe://x/bob"),
    )
    .unwrap_err();
    assert_eq!(err.reason(), "UNKNOWN_PRINCIPAL");
}

#[test]
fn bearer_tokens_are_refused_when_no_issuer_is_configured() {
    let err = authenticate(
        &policy(),
        &TokenCache::default(),
        &metadata(&[("authorization", "Bearer a.b.c")]),
        None,
    )
    .unwrap_err();
    assert_eq!(err.reason(), "INVALID_TOKEN");
}

#[test]
fn the_error_never_echoes_the_credential() {
    let err = authenticate(
        &policy(),
        &TokenCache::default(),
        &metadata(&[("x-api-key", "secret-canary-123")]),
        None,
    )
    .unwrap_err();
    assert!(!err.to_string().contains("secret-canary-123"));
    assert_eq!(err.reason(), "UNKNOWN_API_KEY");
}

#[test]
fn the_header_algorithm_is_read_without_trusting_it() {
    // {"alg":"none"}
    assert_eq!(
        header_algorithm("eyJhbGciOiJub25lIn0.e30.").as_deref(),
        Some("none")
    );
    assert_eq!(header_algorithm("not-base64!.x.y"), None);
}
