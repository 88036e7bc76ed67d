//! The gateway's policy: who may call (principals, API keys, JWT issuers), what they may
//! do (permissions and accounts), how fast (rate limits), and which instruments exist.
//!
//! Policy is data, read from a TOML file and hot-reloaded (see [`crate::reload`]); a new
//! file is compiled completely before it replaces the old one, so a bad file changes
//! nothing. Without a file the gateway runs the embedded development policy: anonymous
//! callers may paper-trade and read on any account, and the instruments are those of the
//! simulated feed.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use execbridge_domain::values::parse_decimal;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One thing a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Submit and cancel PAPER orders.
    #[serde(rename = "trade:paper")]
    TradePaper,
    /// Submit and cancel LIVE orders.
    #[serde(rename = "trade:live")]
    TradeLive,
    /// Read orders, fills, positions and order updates.
    #[serde(rename = "orders:read")]
    OrdersRead,
    /// Stream market data.
    #[serde(rename = "marketdata:read")]
    MarketdataRead,
    /// Administrative RPCs.
    #[serde(rename = "admin")]
    Admin,
}

impl Permission {
    /// The name used in the policy file and in errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::TradePaper => "trade:paper",
            Permission::TradeLive => "trade:live",
            Permission::OrdersRead => "orders:read",
            Permission::MarketdataRead => "marketdata:read",
            Permission::Admin => "admin",
        }
    }
}

/// Classes of RPC with separate rate budgets: a flood of submits never starves cancels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RpcClass {
    /// SubmitOrder, each order of SubmitOrders.
    Submit,
    /// CancelOrder, CancelAll.
    Cancel,
    /// Queries.
    Read,
    /// Opening a stream.
    Stream,
}

impl RpcClass {
    /// Every class.
    pub const ALL: [RpcClass; 4] = [
        RpcClass::Submit,
        RpcClass::Cancel,
        RpcClass::Read,
        RpcClass::Stream,
    ];

    /// The name used in the policy file, metrics and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            RpcClass::Submit => "submit",
            RpcClass::Cancel => "cancel",
            RpcClass::Read => "read",
            RpcClass::Stream => "stream",
        }
    }
}

/// A GCRA budget: a sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Calls per second, sustained.
    pub per_second: u32,
    /// Calls allowed at once above the sustained rate.
    pub burst: u32,
}

/// Budgets per RPC class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Order submissions.
    pub submit: Rate,
    /// Cancels.
    pub cancel: Rate,
    /// Queries.
    pub read: Rate,
    /// New streams.
    pub stream: Rate,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            submit: Rate {
                per_second: 1_000,
                burst: 2_000,
            },
            cancel: Rate {
                per_second: 2_000,
                burst: 4_000,
            },
            read: Rate {
                per_second: 1_000,
                burst: 2_000,
            },
            stream: Rate {
                per_second: 20,
                burst: 50,
            },
        }
    }
}

impl Limits {
    /// The budget of `class`.
    pub fn get(&self, class: RpcClass) -> Rate {
        match class {
            RpcClass::Submit => self.submit,
            RpcClass::Cancel => self.cancel,
            RpcClass::Read => self.read,
            RpcClass::Stream => self.stream,
        }
    }
}

/// How a venue's instruments are named and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InstrumentKind {
    /// An order-book market ("BTC-USDT").
    #[default]
    Spot,
    /// A Solana token swap: the symbol is "<input mint>/<output mint>", both base58
    /// addresses of 32 bytes.
    Swap,
}

/// One instrument, in the shape of a venue's exchange filters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentSpec {
    /// Venue ("paper").
    pub venue: String,
    /// Symbol on that venue.
    pub symbol: String,
    /// Spot or swap.
    #[serde(default)]
    pub kind: InstrumentKind,
    /// Whether orders may be placed.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Price increment (PRICE_FILTER tickSize), a decimal string.
    pub tick_size: String,
    /// Quantity increment (LOT_SIZE stepSize), a decimal string.
    pub lot_size: String,
    /// Smallest price x quantity (NOTIONAL minNotional), a decimal string; "0" for none.
    #[serde(default = "zero")]
    pub min_notional: String,
    /// Largest quantity of one order (LOT_SIZE maxQty); empty for none.
    #[serde(default)]
    pub max_quantity: String,
}

fn yes() -> bool {
    true
}

fn zero() -> String {
    "0".into()
}

/// A compiled instrument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instrument {
    /// Spot or swap.
    pub kind: InstrumentKind,
    /// Whether orders may be placed.
    pub enabled: bool,
    /// Price increment.
    pub tick_size: Decimal,
    /// Quantity increment.
    pub lot_size: Decimal,
    /// Smallest notional.
    pub min_notional: Decimal,
    /// Largest quantity.
    pub max_quantity: Option<Decimal>,
}

/// A caller identity and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalSpec {
    /// The principal's name: JWT `sub`, certificate identity, or API-key owner.
    pub name: String,
    /// What it may do.
    pub permissions: Vec<Permission>,
    /// Accounts it may trade and read; `"*"` means every account.
    pub accounts: Vec<String>,
    /// Its own rate budgets; absent: the default limits.
    #[serde(default)]
    pub limits: Option<Limits>,
}

/// An API key, stored as the SHA-256 of the key.
///
/// SHA-256, not a password hash: keys are random tokens of at least 128 bits, so a fast
/// hash cannot be brute-forced, and a slow one would cost milliseconds on every call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySpec {
    /// Whose key it is.
    pub principal: String,
    /// Lower-case hex SHA-256 of the key.
    pub sha256: String,
}

/// Signature algorithm of a JWT key. `none` does not exist here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256.
    RS256,
    /// Ed25519.
    EdDSA,
}

/// One key that may sign tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeySpec {
    /// Key id (`kid` header); a token must name it.
    pub kid: String,
    /// The only algorithm this key verifies: a token naming another is refused, which
    /// closes algorithm-confusion attacks (an RS256 public key used as an HS256 secret).
    pub algorithm: JwtAlgorithm,
    /// File with the HS256 secret (raw bytes) or the PEM public key.
    pub key_file: String,
}

/// JWT bearer tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct JwtSpec {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud` (one of the token's audiences).
    pub audience: String,
    /// Seconds of clock skew tolerated for `exp` and `nbf`.
    #[serde(default = "leeway")]
    pub leeway_secs: u64,
    /// Verification keys.
    pub keys: Vec<JwtKeySpec>,
}

fn leeway() -> u64 {
    30
}

/// The policy file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyFile {
    /// Let callers without credentials in as principal "anonymous" (development only).
    pub allow_anonymous: bool,
    /// What an anonymous caller may do.
    pub anonymous: Option<PrincipalSpec>,
    /// Known principals.
    pub principals: Vec<PrincipalSpec>,
    /// API keys.
    pub api_keys: Vec<ApiKeySpec>,
    /// JWT settings; absent: bearer tokens are refused.
    pub jwt: Option<JwtSpec>,
    /// Rate budgets of principals without their own.
    pub limits: Limits,
    /// Calls in flight across all principals before new ones are shed.
    pub max_concurrent_calls: u32,
    /// Open streams across all principals.
    pub max_concurrent_streams: u32,
    /// The instrument registry.
    pub instruments: Vec<InstrumentSpec>,
}

impl Default for PolicyFile {
    fn default() -> Self {
        let spot = |symbol: &str, tick: &str| InstrumentSpec {
            venue: "paper".into(),
            symbol: symbol.into(),
            kind: InstrumentKind::Spot,
            enabled: true,
            tick_size: tick.into(),
            lot_size: "0.0001".into(),
            min_notional: "1".into(),
            max_quantity: String::new(),
        };
        Self {
            allow_anonymous: true,
            anonymous: Some(PrincipalSpec {
                name: "anonymous".into(),
                permissions: vec![
                    Permission::TradePaper,
                    Permission::OrdersRead,
                    Permission::MarketdataRead,
                ],
                accounts: vec!["*".into()],
                limits: None,
            }),
            principals: Vec::new(),
            api_keys: Vec::new(),
            jwt: None,
            limits: Limits::default(),
            max_concurrent_calls: 4096,
            max_concurrent_streams: 4096,
            instruments: vec![
                spot("BTC-USDT", "0.01"),
                spot("ETH-USDT", "0.01"),
                spot("SOL-USDT", "0.001"),
            ],
        }
    }
}

/// Why a policy was refused.
#[derive(Debug, thiserror::Error)]
#[error("policy: `{key}`: {reason}")]
pub struct PolicyError {
    /// Where.
    pub key: String,
    /// What.
    pub reason: String,
}

fn bad(key: impl Into<String>, reason: impl std::fmt::Display) -> PolicyError {
    PolicyError {
        key: key.into(),
        reason: reason.to_string(),
    }
}

/// A principal ready for checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Its name.
    pub name: String,
    /// What it may do.
    pub permissions: HashSet<Permission>,
    /// `None`: every account.
    pub accounts: Option<HashSet<String>>,
    /// Its budgets.
    pub limits: Limits,
}

impl Principal {
    /// Whether it holds `permission`.
    pub fn may(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }

    /// Whether it may act on `account`.
    pub fn may_use(&self, account: &str) -> bool {
        self.accounts.as_ref().is_none_or(|a| a.contains(account))
    }
}

/// A compiled JWT key.
#[derive(Clone)]
pub struct JwtKey {
    /// The algorithm it verifies.
    pub algorithm: jsonwebtoken::Algorithm,
    /// The key.
    pub key: jsonwebtoken::DecodingKey,
}

/// A compiled policy: everything the admission path needs, indexed for O(1) lookups.
#[derive(Clone)]
pub struct Policy {
    /// The anonymous principal, when anonymous access is on.
    pub anonymous: Option<Arc<Principal>>,
    /// By name.
    pub principals: HashMap<String, Arc<Principal>>,
    /// SHA-256 of key -> principal name.
    pub api_keys: HashMap<[u8; 32], String>,
    /// By `kid`.
    pub jwt_keys: HashMap<String, JwtKey>,
    /// Required issuer and audience, and leeway.
    pub jwt: Option<(String, String, u64)>,
    /// Global limits.
    pub max_concurrent_calls: u32,
    /// Global stream limit.
    pub max_concurrent_streams: u32,
    /// (venue, symbol) -> instrument.
    pub instruments: HashMap<(String, String), Instrument>,
}

fn compile_principal(
    spec: &PrincipalSpec,
    defaults: &Limits,
    key: &str,
) -> Result<Principal, PolicyError> {
    if spec.name.is_empty() || spec.name.len() > 128 || spec.name.chars().any(char::is_control) {
        return Err(bad(
            format!("{key}.name"),
            "must be 1 to 128 printable characters",
        ));
    }
    let limits = spec.limits.clone().unwrap_or_else(|| defaults.clone());
    check_limits(&limits, &format!("{key}.limits"))?;
    let accounts = if spec.accounts.iter().any(|a| a == "*") {
        None
    } else {
        Some(spec.accounts.iter().cloned().collect())
    };
    Ok(Principal {
        name: spec.name.clone(),
        permissions: spec.permissions.iter().copied().collect(),
        accounts,
        limits,
    })
}

fn check_limits(limits: &Limits, key: &str) -> Result<(), PolicyError> {
    for class in RpcClass::ALL {
        let rate = limits.get(class);
        if rate.per_second == 0 || rate.burst == 0 {
            return Err(bad(
                format!("{key}.{}", class.as_str()),
                "per_second and burst must be at least 1",
            ));
        }
    }
    Ok(())
}

fn decimal(key: &str, text: &str, positive: bool) -> Result<Decimal, PolicyError> {
    let d = parse_decimal(text).map_err(|e| bad(key, e))?;
    if d < Decimal::ZERO || (positive && d.is_zero()) {
        return Err(bad(
            key,
            format!("must be {}, got {d}", if positive { "> 0" } else { ">= 0" }),
        ));
    }
    Ok(d)
}

impl PolicyFile {
    /// Reads and parses a policy file (not yet compiled).
    ///
    /// # Errors
    /// [`PolicyError`] naming the file or the bad key.
    pub fn read(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| bad(path.display().to_string(), e))?;
        toml::from_str(&text).map_err(|e| bad(path.display().to_string(), e.message()))
    }

    /// Compiles the policy; `base` resolves relative key files.
    ///
    /// # Errors
    /// [`PolicyError`] naming the first bad key.
    pub fn compile(&self, base: &Path) -> Result<Policy, PolicyError> {
        check_limits(&self.limits, "limits")?;
        if self.max_concurrent_calls == 0 || self.max_concurrent_streams == 0 {
            return Err(bad("max_concurrent_calls", "limits must be at least 1"));
        }
        let anonymous = match (self.allow_anonymous, &self.anonymous) {
            (false, _) => None,
            (true, Some(spec)) => Some(Arc::new(compile_principal(
                spec,
                &self.limits,
                "anonymous",
            )?)),
            (true, None) => {
                return Err(bad("anonymous", "is required when allow_anonymous is true"));
            }
        };
        let mut principals = HashMap::new();
        for (i, spec) in self.principals.iter().enumerate() {
            let p = compile_principal(spec, &self.limits, &format!("principals[{i}]"))?;
            if principals.insert(p.name.clone(), Arc::new(p)).is_some() {
                return Err(bad(
                    format!("principals[{i}].name"),
                    format!("{:?} is listed twice", spec.name),
                ));
            }
        }
        let mut api_keys = HashMap::new();
        for (i, k) in self.api_keys.iter().enumerate() {
            let key = format!("api_keys[{i}]");
            if !principals.contains_key(&k.principal) {
                return Err(bad(
                    format!("{key}.principal"),
                    format!("unknown principal {:?}", k.principal),
                ));
            }
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&k.sha256, &mut hash)
                .map_err(|_| bad(format!("{key}.sha256"), "must be 64 hex characters"))?;
            api_keys.insert(hash, k.principal.clone());
        }
        let mut jwt_keys = HashMap::new();
        let jwt = match &self.jwt {
            None => None,
            Some(spec) => {
                if spec.issuer.is_empty() || spec.audience.is_empty() {
                    return Err(bad("jwt", "issuer and audience are required"));
                }
                for (i, k) in spec.keys.iter().enumerate() {
                    let key = format!("jwt.keys[{i}]");
                    let path = base.join(&k.key_file);
                    let bytes = std::fs::read(&path).map_err(|e| {
                        bad(
                            format!("{key}.key_file"),
                            format!("{}: {e}", path.display()),
                        )
                    })?;
                    let (algorithm, decoding) = match k.algorithm {
                        JwtAlgorithm::HS256 => {
                            if bytes.len() < 32 {
                                return Err(bad(
                                    format!("{key}.key_file"),
                                    "an HS256 secret needs at least 32 bytes",
                                ));
                            }
                            (
                                jsonwebtoken::Algorithm::HS256,
                                jsonwebtoken::DecodingKey::from_secret(&bytes),
                            )
                        }
                        JwtAlgorithm::RS256 => (
                            jsonwebtoken::Algorithm::RS256,
                            jsonwebtoken::DecodingKey::from_rsa_pem(&bytes)
                                .map_err(|e| bad(format!("{key}.key_file"), e))?,
                        ),
                        JwtAlgorithm::EdDSA => (
                            jsonwebtoken::Algorithm::EdDSA,
                            jsonwebtoken::DecodingKey::from_ed_pem(&bytes)
                                .map_err(|e| bad(format!("{key}.key_file"), e))?,
                        ),
                    };
                    jwt_keys.insert(
                        k.kid.clone(),
                        JwtKey {
                            algorithm,
                            key: decoding,
                        },
                    );
                }
                Some((spec.issuer.clone(), spec.audience.clone(), spec.leeway_secs))
            }
        };
        let mut instruments = HashMap::new();
        for (i, spec) in self.instruments.iter().enumerate() {
            let key = |f: &str| format!("instruments[{i}].{f}");
            let instrument = Instrument {
                kind: spec.kind,
                enabled: spec.enabled,
                tick_size: decimal(&key("tick_size"), &spec.tick_size, true)?,
                lot_size: decimal(&key("lot_size"), &spec.lot_size, true)?,
                min_notional: decimal(&key("min_notional"), &spec.min_notional, false)?,
                max_quantity: if spec.max_quantity.is_empty() {
                    None
                } else {
                    Some(decimal(&key("max_quantity"), &spec.max_quantity, true)?)
                },
            };
            if spec.kind == InstrumentKind::Swap {
                crate::validate::swap_pair(&spec.symbol)
                    .map_err(|v| bad(key("symbol"), v.description))?;
            }
            if instruments
                .insert((spec.venue.clone(), spec.symbol.clone()), instrument)
                .is_some()
            {
                return Err(bad(
                    key("symbol"),
                    format!("{} on {} is listed twice", spec.symbol, spec.venue),
                ));
            }
        }
        Ok(Policy {
            anonymous,
            principals,
            api_keys,
            jwt_keys,
            jwt,
            max_concurrent_calls: self.max_concurrent_calls,
            max_concurrent_streams: self.max_concurrent_streams,
            instruments,
        })
    }
}

#[cfg(test)]
mod tests;
