//! Authentication: who is calling, from an API key, a JWT bearer token, the TLS client
//! certificate identity, or (development policy only) nobody.
//!
//! Credentials are compared and verified here and never logged: errors name what was
//! wrong, not what was sent.

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;

use crate::policy::{Policy, Principal};

/// Why a caller was not authenticated. Each variant's [`AuthError::reason`] is the
/// `ErrorInfo.reason` the caller receives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential, and anonymous access is off.
    #[error("credentials are required: send x-api-key or authorization: Bearer <jwt>")]
    Missing,
    /// A header is present but malformed.
    #[error("malformed {0} header")]
    Malformed(&'static str),
    /// The API key is not known.
    #[error("unknown API key")]
    UnknownApiKey,
    /// The token is not a well-formed, correctly signed JWT.
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `aud` does not name this service.
    #[error("the token is for another audience")]
    WrongAudience,
    /// `iss` is not the trusted issuer.
    #[error("the token is from an untrusted issuer")]
    WrongIssuer,
    /// The header names an algorithm other than the key's (or `none`).
    #[error("the token's algorithm is not allowed for its key")]
    AlgorithmNotAllowed,
    /// The identity is valid but has no principal in the policy.
    #[error("principal {0:?} is not known")]
    UnknownPrincipal(String),
}

impl AuthError {
    /// The `ErrorInfo.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "MISSING_CREDENTIALS",
            AuthError::Malformed(_) => "MALFORMED_CREDENTIALS",
            AuthError::UnknownApiKey => "UNKNOWN_API_KEY",
            AuthError::InvalidToken(_) => "INVALID_TOKEN",
            AuthError::Expired => "TOKEN_EXPIRED",
            AuthError::NotYetValid => "TOKEN_NOT_YET_VALID",
            AuthError::WrongAudience => "TOKEN_WRONG_AUDIENCE",
            AuthError::WrongIssuer => "TOKEN_WRONG_ISSUER",
            AuthError::AlgorithmNotAllowed => "TOKEN_ALGORITHM_NOT_ALLOWED",
            AuthError::UnknownPrincipal(_) => "UNKNOWN_PRINCIPAL",
        }
    }
}

/// How the caller authenticated, for the audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `x-api-key`.
    ApiKey,
    /// `authorization: Bearer`.
    Jwt,
    /// TLS client certificate.
    Certificate,
    /// No credential (development policy).
    Anonymous,
}

impl Method {
    /// For logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::ApiKey => "api_key",
            Method::Jwt => "jwt",
            Method::Certificate => "certificate",
            Method::Anonymous => "anonymous",
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// Most verified tokens remembered; past it the cache starts over.
const TOKEN_CACHE_CAPACITY: usize = 16_384;

/// Tokens already verified, by SHA-256 of the token, with their subject and expiry.
///
/// A client sends the same token on every call until it expires; verifying an RS256 or
/// EdDSA signature costs 50-200 us, a lookup well under one. An entry is only used
/// before the token's `exp`, and the cache belongs to one compiled policy, so a key
/// rotation (a policy reload) empties it.
#[derive(Default)]
pub struct TokenCache {
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], (String, u64)>>,
}

impl TokenCache {
    fn get(&self, hash: &[u8; 32], now: u64) -> Option<String> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(hash)
            .filter(|(_, exp)| now < *exp)
            .map(|(sub, _)| sub.clone())
    }

    fn put(&self, hash: [u8; 32], sub: String, exp: u64) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= TOKEN_CACHE_CAPACITY {
            entries.clear();
        }
        entries.insert(hash, (sub, exp));
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Authenticates the caller of one request.
///
/// Precedence: an API key, then a bearer token, then the TLS client identity (set by the
/// TLS acceptor as `peer_identity`), then anonymous if the policy allows it.
///
/// # Errors
/// [`AuthError`] saying what was wrong.
pub fn authenticate(
    policy: &Policy,
    tokens: &TokenCache,
    metadata: &MetadataMap,
    peer_identity: Option<&str>,
) -> Result<(Arc<Principal>, Method), AuthError> {
    let principal = |name: &str| {
        policy
            .principals
            .get(name)
            .cloned()
            .ok_or_else(|| AuthError::UnknownPrincipal(name.to_owned()))
    };
    if let Some(key) = metadata.get("x-api-key") {
        let key = key
            .to_str()
            .map_err(|_| AuthError::Malformed("x-api-key"))?;
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let name = policy.api_keys.get(&hash).ok_or(AuthError::UnknownApiKey)?;
        return Ok((principal(name)?, Method::ApiKey));
    }
    if let Some(header) = metadata.get("authorization") {
        let header = header
            .to_str()
            .map_err(|_| AuthError::Malformed("authorization"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(AuthError::Malformed("authorization"))?;
        let token = token.trim();
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = unix_now();
        let sub = match tokens.get(&hash, now) {
            Some(sub) => sub,
            None => {
                let claims = verify_jwt(policy, token)?;
                tokens.put(hash, claims.sub.clone(), claims.exp);
                claims.sub
            }
        };
        return Ok((principal(&sub)?, Method::Jwt));
    }
    if let Some(identity) = peer_identity {
        return Ok((principal(identity)?, Method::Certificate));
    }
    policy
        .anonymous
        .clone()
        .map(|p| (p, Method::Anonymous))
        .ok_or(AuthError::Missing)
}

fn verify_jwt(policy: &Policy, token: &str) -> Result<Claims, AuthError> {
    let Some((issuer, audience, leeway)) = &policy.jwt else {
        return Err(AuthError::InvalidToken(
            "bearer tokens are not accepted here",
        ));
    };
    // The header is read before the signature is checked only to pick the key; nothing in
    // it is trusted: the key fixes the algorithm. `alg: none` (and any algorithm this
    // gateway does not verify) is refused by name before the JWT library sees it.
    if let Some(alg) = header_algorithm(token)
        && !matches!(alg.as_str(), "HS256" | "RS256" | "EdDSA")
    {
        return Err(AuthError::AlgorithmNotAllowed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
        ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            AuthError::AlgorithmNotAllowed
        }
        _ => AuthError::InvalidToken("malformed"),
    })?;
    let kid = header
        .kid
        .as_deref()
        .ok_or(AuthError::InvalidToken("no kid in the header"))?;
    let key = policy
        .jwt_keys
        .get(kid)
        .ok_or(AuthError::InvalidToken("unknown kid"))?;
    if header.alg != key.algorithm {
        return Err(AuthError::AlgorithmNotAllowed);
    }
    let mut validation = jsonwebtoken::Validation::new(key.algorithm);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    validation.validate_nbf = true;
    validation.leeway = *leeway;
    let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| match e
        .kind()
    {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAlgorithm => AuthError::AlgorithmNotAllowed,
        ErrorKind::InvalidSignature => AuthError::InvalidToken("bad signature"),
        ErrorKind::MissingRequiredClaim(_) => {
            AuthError::InvalidToken("a required claim is missing")
        }
        _ => AuthError::InvalidToken("malformed"),
    })?;
    Ok(data.claims)
}

/// The `alg` of a token's header, if the header is readable JSON.
fn header_algorithm(token: &str) -> Option<String> {
    use base64::Engine as _;
    #[derive(Deserialize)]
    struct Alg {
        alg: String,
    }
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Alg>(&bytes).ok().map(|a| a.alg)
}

#[cfg(test)]
mod tests;
