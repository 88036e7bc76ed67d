//! Typed configuration: built-in defaults, then an optional TOML file, then environment
//! variables, merged by `figment` and checked before any port binds.
//!
//! `figment` is used because it reports the full key path of a bad value ("server.listen")
//! and merges providers in a declared order; with `#[serde(deny_unknown_fields)]` a typo
//! in a key is an error instead of a silently ignored setting.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key was unknown, missing or of the wrong type.
    #[error("{0}")]
    Parse(String),
    /// A value had the right type but is not acceptable.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// Full path of the key.
        key: String,
        /// Why it was refused.
        reason: String,
    },
    /// The file named on the command line does not exist.
    #[error("config file {0} does not exist")]
    MissingFile(String),
}

impl ConfigError {
    /// A value that parsed but is not acceptable.
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

fn describe(error: figment::Error) -> ConfigError {
    // Figment's own message names the key path when it knows it; make every error say where
    // the value came from, one line per problem.
    let lines: Vec<String> = error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{source}", e.kind)
            } else {
                format!("invalid value for `{key}`: {}{source}", e.kind)
            }
        })
        .collect();
    ConfigError::Parse(lines.join("; "))
}

/// Semantic checks beyond what deserialisation enforces.
pub trait Validate {
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad key.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Loads `T` for `service`: defaults, then `file` (if given), then environment variables
/// `EXECBRIDGE_<SERVICE>_<SECTION>__<KEY>`, then [`Validate::validate`].
///
/// # Errors
/// [`ConfigError`] naming the bad key.
pub fn load<T>(service: &str, file: Option<&Path>) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned + Validate,
{
    load_from(file, Env::prefixed(&env_prefix(service)).split("__"))
}

/// The environment prefix of `service`.
pub fn env_prefix(service: &str) -> String {
    format!("EXECBRIDGE_{}_", service.to_uppercase())
}

fn load_from<T>(file: Option<&Path>, env: Env) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned + Validate,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        if !file.exists() {
            return Err(ConfigError::MissingFile(file.display().to_string()));
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    let config: T = figment.merge(env).extract().map_err(describe)?;
    config.validate()?;
    Ok(config)
}

/// tonic's and gRPC's usual default for a received message: 4 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// hyper's default header list limit: 16 KiB (room for a JWT and trace context).
pub const DEFAULT_MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Accepted message limits: below 1 KiB no real order fits, above 256 MiB one call could
/// take the memory of many.
const MESSAGE_BYTES: std::ops::RangeInclusive<usize> = 1024..=256 * 1024 * 1024;
/// Accepted header list limits.
const HEADER_LIST_BYTES: std::ops::RangeInclusive<u32> = 1024..=1024 * 1024;
/// A week: longer is no bound at all.
const MAX_CONNECTION_AGE_SECS: u64 = 7 * 86_400;
/// More runtime threads than this is a typo, not a machine.
const MAX_WORKER_THREADS: usize = 1024;

/// `value` of `key` at most `max`, where 0 means `zero`; or the error naming both:
/// "must be 0 (never) to 604800, got 700000".
///
/// # Errors
/// [`ConfigError::Invalid`] naming `key` when `value` is above `max`.
pub fn check_at_most<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    max: T,
    zero: &str,
) -> Result<(), ConfigError> {
    if value <= max {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("must be 0 ({zero}) to {max}, got {value}"),
        ))
    }
}

/// `value` of `key` within `range`, or the error naming both: "must be 1 to 1000, got 0".
///
/// # Errors
/// [`ConfigError::Invalid`] naming `key` when `value` is outside `range`.
pub fn check_range<T: PartialOrd + std::fmt::Display>(
    key: impl Into<String>,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<(), ConfigError> {
    check_within(key, value, &range, "")
}

/// [`check_range`] for a size: "must be 1024 to 1048576 bytes, got 10".
fn check_bytes<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: &std::ops::RangeInclusive<T>,
) -> Result<(), ConfigError> {
    check_within(key, value, range, " bytes")
}

fn check_within<T: PartialOrd + std::fmt::Display>(
    key: impl Into<String>,
    value: T,
    range: &std::ops::RangeInclusive<T>,
    unit: &str,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!(
                "must be {} to {}{unit}, got {value}",
                range.start(),
                range.end()
            ),
        ))
    }
}

/// The listening side every service has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// gRPC address.
    pub listen: SocketAddr,
    /// Admin HTTP address (`/healthz`, `/readyz`, `/metrics`).
    pub admin_listen: SocketAddr,
    /// How long in-flight calls and streams may take to finish after a shutdown signal.
    pub shutdown_grace_secs: u64,
    /// HTTP/2 streams per connection. tonic's default is unlimited (see grpc-facts).
    pub max_concurrent_streams: u32,
    /// Seconds between HTTP/2 keepalive pings; 0 disables them.
    pub keepalive_interval_secs: u64,
    /// Largest request message a service decodes, in bytes; a larger one is refused with
    /// OUT_OF_RANGE (tonic's code; the gRPC spec says RESOURCE_EXHAUSTED) before any
    /// handler sees it.
    pub max_decoding_message_bytes: usize,
    /// Largest response message a service encodes, in bytes. The gRPC default for what a
    /// client accepts is 4 MiB, so more only helps clients configured for it.
    pub max_encoding_message_bytes: usize,
    /// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`: the largest header block (all metadata of a
    /// call, decoded) a connection accepts; a larger one is refused before any handler.
    pub max_header_list_bytes: u32,
    /// Connections are closed gracefully (GOAWAY; calls and streams in flight finish, long
    /// streams are not cut) after this many seconds, so clients spread over new replicas
    /// and pick up new certificates; 0 = never.
    pub max_connection_age_secs: u64,
    /// `TCP_NODELAY` on accepted sockets: without it Nagle's algorithm holds small replies
    /// back up to 40 ms. Off only to measure that.
    pub tcp_nodelay: bool,
    /// Threads of the service's async runtime; 0 = one per CPU the process may use
    /// (tokio's default, which follows a container's CPU quota). Where services share a few
    /// cores, as on one small machine, fewer threads mean fewer wake-ups between them: one
    /// thread cut the gateway's CPU per call by a fifth on 2 cores (`make bench`).
    pub worker_threads: usize,
    /// Who owns TLS on this service's hops (its server port and its upstream clients).
    pub tls: TlsConfig,
    /// OpenTelemetry trace export.
    pub tracing: TracingConfig,
}

/// `[server.tracing]`: OTLP/gRPC trace export; off (no exporter, no cost) when
/// `otlp_endpoint` is empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The collector, `http://host:4317`; empty: no traces are exported.
    pub otlp_endpoint: String,
    /// Share of new traces sampled (0.0 to 1.0); a caller's sampling decision in
    /// `traceparent` is followed.
    pub sampling_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            sampling_ratio: 1.0,
        }
    }
}

impl Validate for TracingConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(ConfigError::invalid(
                "server.tracing.sampling_ratio",
                format!("must be 0.0 to 1.0, got {}", self.sampling_ratio),
            ));
        }
        if self.otlp_endpoint.is_empty() {
            return Ok(());
        }
        check_endpoint("server.tracing.otlp_endpoint", &self.otlp_endpoint)
    }
}

/// Who does TLS for a hop: the mesh sidecar (plaintext to it) or the service itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plaintext gRPC; a Linkerd or Istio sidecar does mTLS (and keeps per-request
    /// balancing, retries and metrics, which it cannot on application TLS).
    #[default]
    Mesh,
    /// rustls mTLS on every server port and client hop, files hot-reloaded.
    Native,
}

/// `[server.tls]`: the certificate, key and trusted CA bundle, as mounted from a Secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// `mesh` (plaintext, the default) or `native`.
    pub mode: TlsMode,
    /// PEM certificate chain this service presents, as server and as client.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// PEM bundle of trusted CAs; during a CA rotation it holds the old and the new CA.
    pub ca_file: String,
    /// How often the three files are re-read; a change is applied to new handshakes.
    pub reload_interval_ms: u64,
    /// A TLS handshake that takes longer is dropped (slowloris on the accept path).
    /// (Connections are recycled by `server.max_connection_age_secs`, so every client
    /// converges on the current certificates.)
    pub handshake_timeout_ms: u64,
    /// Whether servers demand a client certificate (mTLS). Off only for an edge that
    /// authenticates callers by API key or JWT instead.
    pub require_client_cert: bool,
    /// The name clients check in the server's certificate; empty = the endpoint's host.
    pub server_name: String,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            mode: TlsMode::Mesh,
            cert_file: String::new(),
            key_file: String::new(),
            ca_file: String::new(),
            reload_interval_ms: 1_000,
            handshake_timeout_ms: 5_000,
            require_client_cert: true,
            server_name: String::new(),
        }
    }
}

impl Validate for TlsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.mode == TlsMode::Mesh {
            return Ok(());
        }
        for (key, value) in [
            ("server.tls.cert_file", &self.cert_file),
            ("server.tls.key_file", &self.key_file),
            ("server.tls.ca_file", &self.ca_file),
        ] {
            if value.is_empty() {
                return Err(ConfigError::invalid(
                    key,
                    "required when server.tls.mode = \"native\"",
                ));
            }
        }
        if self.reload_interval_ms < 10 {
            return Err(ConfigError::invalid(
                "server.tls.reload_interval_ms",
                "must be at least 10",
            ));
        }
        if !self.server_name.is_empty()
            && rustls::pki_types::ServerName::try_from(self.server_name.as_str()).is_err()
        {
            return Err(ConfigError::invalid(
                "server.tls.server_name",
                "must be a DNS name or an IP address",
            ));
        }
        if self.handshake_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "server.tls.handshake_timeout_ms",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl ServerConfig {
    /// Defaults for a service listening on loopback ports `grpc` and `admin`.
    pub fn loopback(grpc: u16, admin: u16) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], grpc)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], admin)),
            shutdown_grace_secs: 10,
            max_concurrent_streams: 1024,
            keepalive_interval_secs: 20,
            max_decoding_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_encoding_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_header_list_bytes: DEFAULT_MAX_HEADER_LIST_BYTES,
            max_connection_age_secs: 600,
            tcp_nodelay: true,
            worker_threads: 0,
            tls: TlsConfig::default(),
            tracing: TracingConfig::default(),
        }
    }

    /// The grace period as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self::loopback(0, 0)
    }
}

impl Validate for ServerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.shutdown_grace_secs == 0 || self.shutdown_grace_secs > 300 {
            return Err(ConfigError::invalid(
                "server.shutdown_grace_secs",
                format!("must be 1 to 300, got {}", self.shutdown_grace_secs),
            ));
        }
        if self.max_concurrent_streams == 0 {
            return Err(ConfigError::invalid(
                "server.max_concurrent_streams",
                "must be at least 1",
            ));
        }
        check_bytes(
            "server.max_decoding_message_bytes",
            self.max_decoding_message_bytes,
            &MESSAGE_BYTES,
        )?;
        check_bytes(
            "server.max_encoding_message_bytes",
            self.max_encoding_message_bytes,
            &MESSAGE_BYTES,
        )?;
        check_bytes(
            "server.max_header_list_bytes",
            self.max_header_list_bytes,
            &HEADER_LIST_BYTES,
        )?;
        check_at_most(
            "server.max_connection_age_secs",
            self.max_connection_age_secs,
            MAX_CONNECTION_AGE_SECS,
            "never",
        )?;
        check_at_most(
            "server.worker_threads",
            self.worker_threads,
            MAX_WORKER_THREADS,
            "one per CPU",
        )?;
        if self.listen.port() != 0 && self.listen == self.admin_listen {
            return Err(ConfigError::invalid(
                "server.admin_listen",
                format!("must differ from server.listen ({})", self.listen),
            ));
        }
        self.tls.validate()?;
        self.tracing.validate()
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// An `EnvFilter` directive ("info", "execbridge_gateway=debug,info").
    pub level: String,
    /// Line format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Validate for LogConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map(|_| ())
            .map_err(|e| ConfigError::invalid("log.level", e.to_string()))
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Text,
}

/// Checks that `endpoint` is an `http://` or `https://` URI.
///
/// # Errors
/// [`ConfigError::Invalid`] for `key`.
pub fn check_endpoint(key: &str, endpoint: &str) -> Result<(), ConfigError> {
    let uri: tonic::transport::Uri = endpoint
        .parse()
        .map_err(|e| ConfigError::invalid(key, format!("{endpoint:?} is not a URI: {e}")))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(()),
        _ => Err(ConfigError::invalid(
            key,
            format!("{endpoint:?} must look like http://host:port"),
        )),
    }
}

#[cfg(test)]
mod tests;
