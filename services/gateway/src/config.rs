//! Configuration of the gateway.

use execbridge_runtime::cli::ServiceConfig;
use execbridge_runtime::config::{check_at_most, check_endpoint, check_range};
use execbridge_runtime::{ConfigError, LogConfig, ServerConfig, Validate};
use serde::{Deserialize, Serialize};

/// Everything the gateway reads at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Listening ports and drain.
    pub server: ServerConfig,
    /// Logging.
    pub log: LogConfig,
    /// The executor shard orders go to.
    pub executor: UpstreamConfig,
    /// The id of that shard, as it names itself in order updates.
    pub executor_shard: String,
    /// Several shards (accounts are spread over them); when empty, the one shard above.
    pub executor_shards: Vec<ShardEndpoint>,
    /// The circuit breaker in front of each shard.
    pub breaker: BreakerConfig,
    /// The marketdata service streams are proxied to.
    pub marketdata: UpstreamConfig,
    /// Principals, limits and instruments.
    pub policy: PolicyConfig,
    /// Reactions to failed authentication.
    pub auth: AuthConfig,
}

/// `[auth]`: what repeated authentication failures do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Failed authentications on one HTTP/2 connection after which the gateway closes it
    /// (and counts `gateway_connections_closed_total{reason="auth_failures"}`); 0 never
    /// closes one. Behind a mesh sidecar every connection comes from the sidecar and
    /// carries many callers: there the sidecar's connection is what gets closed (its
    /// other callers' calls in flight fail with UNAVAILABLE and are retried by the mesh),
    /// so raise the limit or set 0 where callers cannot be told apart by connection.
    pub max_failures_per_connection: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            max_failures_per_connection: crate::admission::DEFAULT_MAX_AUTH_FAILURES_PER_CONNECTION,
        }
    }
}

/// Most failures per connection that may be configured: beyond it the limit is no limit.
const MAX_AUTH_FAILURES_PER_CONNECTION: u32 = 10_000;

/// Where the policy comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// The policy file (TOML), hot-reloaded; empty: the embedded development policy
    /// (anonymous paper trading on any account, the simulated instruments).
    pub file: String,
    /// How often the file is checked for changes.
    pub reload_interval_ms: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            file: String::new(),
            reload_interval_ms: 1_000,
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            server: ServerConfig::loopback(50051, 9101),
            log: LogConfig::default(),
            executor: UpstreamConfig {
                endpoint: "http://127.0.0.1:50052".into(),
                ..UpstreamConfig::default()
            },
            executor_shard: "s0".into(),
            executor_shards: Vec::new(),
            breaker: BreakerConfig::default(),
            policy: PolicyConfig::default(),
            auth: AuthConfig::default(),
            marketdata: UpstreamConfig {
                endpoint: "http://127.0.0.1:50053".into(),
                ..UpstreamConfig::default()
            },
        }
    }
}

impl GatewayConfig {
    /// Every executor shard as (id, connection settings).
    pub fn shards(&self) -> Vec<(String, UpstreamConfig)> {
        if self.executor_shards.is_empty() {
            return vec![(self.executor_shard.clone(), self.executor.clone())];
        }
        self.executor_shards
            .iter()
            .map(|s| {
                let upstream = UpstreamConfig {
                    endpoint: s.endpoint.clone(),
                    ..self.executor.clone()
                };
                (s.id.clone(), upstream)
            })
            .collect()
    }
}

/// One executor shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEndpoint {
    /// The shard's id (its `shard.id`).
    pub id: String,
    /// Its gRPC endpoint; in Kubernetes the pod's name under the headless Service.
    pub endpoint: String,
}

/// Circuit breaker settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures to reach a shard that open its breaker.
    pub failure_threshold: u32,
    /// How long it stays open before one probe call is let through.
    pub cooldown_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cooldown_ms: 1_000,
        }
    }
}

impl ServiceConfig for GatewayConfig {
    fn server(&self) -> &ServerConfig {
        &self.server
    }
    fn log(&self) -> &LogConfig {
        &self.log
    }
}

impl Validate for GatewayConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.log.validate()?;
        self.executor.validate("executor")?;
        let mut ids = std::collections::HashSet::new();
        for (i, shard) in self.executor_shards.iter().enumerate() {
            if shard.id.is_empty() || !ids.insert(shard.id.as_str()) {
                return Err(ConfigError::invalid(
                    format!("executor_shards[{i}].id"),
                    "must be non-empty and unique",
                ));
            }
            check_endpoint(&format!("executor_shards[{i}].endpoint"), &shard.endpoint)?;
        }
        if self.breaker.failure_threshold == 0 || !(1..=300_000).contains(&self.breaker.cooldown_ms)
        {
            return Err(ConfigError::invalid(
                "breaker",
                "failure_threshold must be at least 1 and cooldown_ms 1 to 300000",
            ));
        }
        self.marketdata.validate("marketdata")?;
        check_range(
            "policy.reload_interval_ms",
            self.policy.reload_interval_ms,
            100..=60_000,
        )?;
        check_at_most(
            "auth.max_failures_per_connection",
            self.auth.max_failures_per_connection,
            MAX_AUTH_FAILURES_PER_CONNECTION,
            "never close",
        )?;
        // A policy file that does not compile stops the start, before anything binds.
        if !self.policy.file.is_empty() {
            crate::reload::load(std::path::Path::new(&self.policy.file))
                .map_err(|e| ConfigError::invalid("policy.file", e.to_string()))?;
        }
        Ok(())
    }
}

/// One upstream service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// gRPC endpoint ("http://host:port").
    pub endpoint: String,
    /// How long a connection attempt may take.
    pub connect_timeout_ms: u64,
    /// Deadline given to a forwarded unary call when the client sent none.
    pub default_timeout_ms: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            connect_timeout_ms: 2_000,
            default_timeout_ms: 10_000,
        }
    }
}

impl UpstreamConfig {
    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        check_endpoint(&format!("{section}.endpoint"), &self.endpoint)?;
        for (key, ms) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("default_timeout_ms", self.default_timeout_ms),
        ] {
            check_range(format!("{section}.{key}"), ms, 1..=300_000)?;
        }
        Ok(())
    }
}
