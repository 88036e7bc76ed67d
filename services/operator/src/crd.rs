//! The `ExecbridgeConfig` custom resource: certificate policy and runtime configuration.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the operator keeps true for one execbridge installation: a CA and one
/// certificate per service in Secrets, renewed before expiry, and the runtime
/// configuration (rate limits, risk limits, instruments, venues) in a ConfigMap.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "execbridge.io",
    version = "v1alpha1",
    kind = "ExecbridgeConfig",
    namespaced,
    status = "ExecbridgeConfigStatus",
    shortname = "ebc",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"CA expires","type":"string","jsonPath":".status.caNotAfter"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ExecbridgeConfigSpec {
    /// Certificate lifetimes and the services that get one.
    pub certificates: CertificatePolicy,
    /// The ConfigMap the runtime configuration is written to; default `<name>-runtime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_name: Option<String>,
    /// Per-principal rate limits by operation (e.g. `submit`), the gateway's `[limits]`.
    #[serde(default)]
    pub rate_limits: BTreeMap<String, RateLimit>,
    /// Pre-trade risk limits, the executor's `[risk]`.
    #[serde(default)]
    pub risk_limits: RiskLimitsSpec,
    /// Tradable instruments.
    #[serde(default)]
    pub instruments: Vec<Instrument>,
    /// Venues the executor may route to.
    #[serde(default)]
    pub venues: Vec<Venue>,
}

/// Lifetimes of the CA and of the service certificates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificatePolicy {
    /// Lifetime of a service certificate, hours.
    #[schemars(range(min = 1))]
    pub lifetime_hours: u32,
    /// Renew a service certificate this many hours before it expires.
    #[schemars(range(min = 1))]
    pub renew_before_hours: u32,
    /// Lifetime of the CA, hours.
    #[schemars(range(min = 1))]
    pub ca_lifetime_hours: u32,
    /// Rotate the CA this many hours before it expires. The old CA stays in every trust
    /// bundle until it expires, so peers holding either chain keep verifying each other.
    #[schemars(range(min = 1))]
    pub ca_renew_before_hours: u32,
    /// The services that get a certificate.
    #[serde(default)]
    pub services: Vec<ServiceCertificate>,
}

/// One service's certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceCertificate {
    /// Service name; the certificate's common name.
    pub name: String,
    /// The Secret (`tls.crt`, `tls.key`, `ca.crt`) the pods mount as a directory.
    pub secret_name: String,
    /// DNS subject alternative names.
    #[serde(default)]
    pub dns_names: Vec<String>,
}

/// A GCRA budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Sustained rate.
    #[schemars(range(min = 1))]
    pub per_second: u32,
    /// Burst above the rate.
    #[schemars(range(min = 1))]
    pub burst: u32,
}

/// Risk limits for paper and live trading.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RiskLimitsSpec {
    /// Limits on paper orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paper: Option<RiskLimits>,
    /// Limits on live orders (stricter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<RiskLimits>,
}

/// One set of pre-trade limits; decimals are strings, never floats. Absent: no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RiskLimits {
    /// Maximum quantity per order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?$"))]
    pub max_order_quantity: Option<String>,
    /// Maximum notional per order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?$"))]
    pub max_order_notional: Option<String>,
    /// Maximum open orders per account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open_orders: Option<u32>,
    /// Maximum absolute position per symbol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?$"))]
    pub max_position: Option<String>,
    /// Maximum gross exposure per account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?$"))]
    pub max_gross_exposure: Option<String>,
    /// Price band around the last market price, basis points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_band_bps: Option<u32>,
    /// Order-rate limit per account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_orders_per_second: Option<u32>,
}

/// A tradable instrument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Instrument {
    /// Symbol, e.g. `BTC-USDT`.
    pub symbol: String,
    /// The venue it trades on.
    pub venue: String,
    /// Price increment (decimal string).
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?$"))]
    pub tick_size: String,
    /// Quantity increment (decimal string).
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?$"))]
    pub lot_size: String,
    /// Minimum order notional (decimal string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?$"))]
    pub min_notional: Option<String>,
}

/// A venue connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Venue {
    /// Name orders refer to.
    pub name: String,
    /// Which connector.
    pub kind: VenueKind,
    /// Endpoint override (REST or RPC base URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// The venue connectors the executor has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VenueKind {
    /// The built-in simulated venue.
    Paper,
    /// Binance spot.
    Binance,
    /// Solana swaps.
    Solana,
}

/// What the operator last did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecbridgeConfigStatus {
    /// `Ready` (everything issued and rendered) and `CertificatesReady`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the current CA expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_not_after: Option<String>,
    /// How many CAs the trust bundle holds (2 during a rotation overlap).
    #[serde(default)]
    pub trusted_cas: u32,
    /// When each service certificate expires (RFC 3339), by service.
    #[serde(default)]
    pub certificates: BTreeMap<String, String>,
    /// Hash of the rendered runtime configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
}

/// A status condition in the Kubernetes convention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason, CamelCase.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
}
