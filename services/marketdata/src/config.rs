//! Configuration of the marketdata service.

use execbridge_domain::{Symbol, VenueId};
use execbridge_runtime::cli::ServiceConfig;
use execbridge_runtime::config::check_range;
use execbridge_runtime::{ConfigError, LogConfig, ServerConfig, Validate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Everything the marketdata service reads at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarketdataConfig {
    /// Listening ports and drain.
    pub server: ServerConfig,
    /// Logging.
    pub log: LogConfig,
    /// The simulated feed.
    pub feed: FeedConfig,
    /// Subscriber queues and batching.
    pub fanout: FanoutConfig,
    /// Venue websocket feeds, one upstream connection each.
    pub venues: Vec<VenueConfig>,
}

impl Default for MarketdataConfig {
    fn default() -> Self {
        Self {
            server: ServerConfig::loopback(50053, 9103),
            log: LogConfig::default(),
            feed: FeedConfig::default(),
            fanout: FanoutConfig::default(),
            venues: Vec::new(),
        }
    }
}

impl ServiceConfig for MarketdataConfig {
    fn server(&self) -> &ServerConfig {
        &self.server
    }
    fn log(&self) -> &LogConfig {
        &self.log
    }
}

impl Validate for MarketdataConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.log.validate()?;
        self.feed.validate()?;
        self.fanout.validate()?;
        // A response batch is "about" max_batch_bytes: it may pass it by one event, so
        // leave the encoding limit room for that.
        if self.fanout.max_batch_bytes > self.server.max_encoding_message_bytes / 2 {
            return Err(ConfigError::invalid(
                "fanout.max_batch_bytes",
                format!(
                    "must be at most half of server.max_encoding_message_bytes ({}), got {}",
                    self.server.max_encoding_message_bytes, self.fanout.max_batch_bytes
                ),
            ));
        }
        let mut seen: std::collections::HashSet<(String, String)> = self
            .feed
            .symbols
            .iter()
            .filter(|_| self.feed.enabled)
            .map(|s| (s.venue.clone(), s.symbol.clone()))
            .collect();
        for (i, venue) in self.venues.iter().enumerate() {
            venue.validate(i)?;
            for (j, s) in venue.symbols.iter().enumerate() {
                if !seen.insert((venue.name.clone(), s.symbol.clone())) {
                    return Err(ConfigError::invalid(
                        format!("venues[{i}].symbols[{j}].symbol"),
                        format!("{} on {} is produced by another feed", s.symbol, venue.name),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The simulated feed: a seeded random walk in whole ticks per symbol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    /// Whether the simulated feed runs.
    pub enabled: bool,
    /// Seed of the random walk: the same seed gives the same sequence of prices.
    pub seed: u64,
    /// Milliseconds between ticks.
    pub tick_interval_ms: u64,
    /// Largest move of the mid price per tick, in ticks.
    pub max_step_ticks: u32,
    /// Probability, in percent, that a tick also prints a trade.
    pub trade_probability_pct: u8,
    /// L2 levels per side.
    pub depth_levels: u16,
    /// The venue that subscriptions without one refer to.
    pub default_venue: String,
    /// The instruments to simulate.
    pub symbols: Vec<SymbolConfig>,
}

impl Default for FeedConfig {
    fn default() -> Self {
        let symbol =
            |symbol: &str, price: i64, scale: u32, tick: i64, tick_scale: u32| SymbolConfig {
                symbol: symbol.into(),
                venue: "paper".into(),
                initial_price: Decimal::new(price, scale),
                tick_size: Decimal::new(tick, tick_scale),
                lot_size: Decimal::new(1, 4),
            };
        Self {
            enabled: true,
            seed: 42,
            tick_interval_ms: 100,
            max_step_ticks: 5,
            trade_probability_pct: 30,
            depth_levels: 10,
            default_venue: "paper".into(),
            symbols: vec![
                symbol("BTC-USDT", 60_000, 0, 1, 2),
                symbol("ETH-USDT", 3_000, 0, 1, 2),
                symbol("SOL-USDT", 150, 0, 1, 3),
            ],
        }
    }
}

impl FeedConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_range("feed.tick_interval_ms", self.tick_interval_ms, 1..=60_000)?;
        if self.trade_probability_pct > 100 {
            return Err(ConfigError::invalid(
                "feed.trade_probability_pct",
                "must be 0 to 100",
            ));
        }
        check_range("feed.depth_levels", self.depth_levels, 1..=1000)?;
        VenueId::new_checked(self.default_venue.as_str())
            .map_err(|e| ConfigError::invalid("feed.default_venue", e.to_string()))?;
        if self.symbols.is_empty() {
            return Err(ConfigError::invalid(
                "feed.symbols",
                "needs at least one symbol",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.symbols.iter().enumerate() {
            let key = |field: &str| format!("feed.symbols[{i}].{field}");
            Symbol::new_checked(s.symbol.as_str())
                .map_err(|e| ConfigError::invalid(key("symbol"), e.to_string()))?;
            VenueId::new_checked(s.venue.as_str())
                .map_err(|e| ConfigError::invalid(key("venue"), e.to_string()))?;
            for (field, value) in [
                ("initial_price", s.initial_price),
                ("tick_size", s.tick_size),
                ("lot_size", s.lot_size),
            ] {
                if value <= Decimal::ZERO {
                    return Err(ConfigError::invalid(
                        key(field),
                        format!("must be > 0, got {value}"),
                    ));
                }
            }
            if !(s.initial_price % s.tick_size).is_zero() {
                return Err(ConfigError::invalid(
                    key("initial_price"),
                    format!(
                        "{} is not a multiple of tick_size {}",
                        s.initial_price, s.tick_size
                    ),
                ));
            }
            if !seen.insert((s.venue.clone(), s.symbol.clone())) {
                return Err(ConfigError::invalid(
                    key("symbol"),
                    format!("{} is listed twice", s.symbol),
                ));
            }
        }
        Ok(())
    }
}

/// One simulated instrument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymbolConfig {
    /// Instrument ("BTC-USDT").
    pub symbol: String,
    /// Venue it trades on.
    pub venue: String,
    /// Starting mid price (a multiple of `tick_size`), a decimal string.
    #[serde(with = "rust_decimal::serde::str")]
    pub initial_price: Decimal,
    /// Price increment, a decimal string.
    #[serde(with = "rust_decimal::serde::str")]
    pub tick_size: Decimal,
    /// Quantity increment, a decimal string.
    #[serde(with = "rust_decimal::serde::str")]
    pub lot_size: Decimal,
}

/// Subscriber queues and batching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FanoutConfig {
    /// Events a subscriber stream may have queued before its slow-consumer policy acts.
    pub queue_capacity: usize,
    /// Encoded bytes a subscriber stream may have queued before its policy acts.
    pub queue_max_bytes: usize,
    /// Most events in one response message.
    pub max_batch_events: usize,
    /// About the most bytes in one response message.
    pub max_batch_bytes: usize,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 4096,
            queue_max_bytes: 4 << 20,
            max_batch_events: 512,
            max_batch_bytes: 64 * 1024,
        }
    }
}

impl FanoutConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (field, value, max) in [
            ("fanout.queue_capacity", self.queue_capacity, 1 << 20),
            ("fanout.queue_max_bytes", self.queue_max_bytes, 1 << 30),
            ("fanout.max_batch_events", self.max_batch_events, 1 << 16),
            ("fanout.max_batch_bytes", self.max_batch_bytes, 4 << 20),
        ] {
            check_range(field, value, 1..=max)?;
        }
        Ok(())
    }
}

/// One venue's websocket market-data feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VenueConfig {
    /// The venue id subscriptions name ("binance").
    pub name: String,
    /// `ws://` URL of the market-data websocket.
    pub url: String,
    /// The wire format: `json-l2` (the documented JSON format of [`crate::feed::json`]).
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Milliseconds between our pings.
    #[serde(default = "default_ping_ms")]
    pub ping_interval_ms: u64,
    /// Milliseconds without any message before the venue's symbols turn STALE.
    #[serde(default = "default_idle_ms")]
    pub idle_timeout_ms: u64,
    /// Milliseconds without any message before the connection is dropped and remade.
    #[serde(default = "default_dead_ms")]
    pub dead_timeout_ms: u64,
    /// Backoff before the second reconnect attempt (the first is immediate), doubling
    /// up to `backoff_max_ms`, with jitter.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Longest backoff.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Instruments to subscribe.
    pub symbols: Vec<VenueSymbolConfig>,
}

fn default_protocol() -> String {
    "json-l2".into()
}
fn default_ping_ms() -> u64 {
    5_000
}
fn default_idle_ms() -> u64 {
    10_000
}
fn default_dead_ms() -> u64 {
    30_000
}
fn default_backoff_initial_ms() -> u64 {
    100
}
fn default_backoff_max_ms() -> u64 {
    10_000
}

impl VenueConfig {
    fn validate(&self, i: usize) -> Result<(), ConfigError> {
        let key = |field: &str| format!("venues[{i}].{field}");
        VenueId::new_checked(self.name.as_str())
            .map_err(|e| ConfigError::invalid(key("name"), e.to_string()))?;
        if !(self.url.starts_with("ws://") || self.url.starts_with("wss://")) {
            return Err(ConfigError::invalid(
                key("url"),
                format!("must be a ws:// or wss:// URL, got {:?}", self.url),
            ));
        }
        if self.url.starts_with("wss://") {
            return Err(ConfigError::invalid(
                key("url"),
                "wss:// needs TLS, which this build does not include yet",
            ));
        }
        if self.protocol != "json-l2" {
            return Err(ConfigError::invalid(
                key("protocol"),
                format!("unknown protocol {:?}; known: json-l2", self.protocol),
            ));
        }
        for (field, value) in [
            ("ping_interval_ms", self.ping_interval_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("dead_timeout_ms", self.dead_timeout_ms),
            ("backoff_initial_ms", self.backoff_initial_ms),
            ("backoff_max_ms", self.backoff_max_ms),
        ] {
            check_range(key(field), value, 1..=600_000)?;
        }
        if self.dead_timeout_ms < self.idle_timeout_ms {
            return Err(ConfigError::invalid(
                key("dead_timeout_ms"),
                "must be at least idle_timeout_ms",
            ));
        }
        if self.symbols.is_empty() {
            return Err(ConfigError::invalid(
                key("symbols"),
                "needs at least one symbol",
            ));
        }
        for (j, s) in self.symbols.iter().enumerate() {
            let key = |field: &str| format!("venues[{i}].symbols[{j}].{field}");
            Symbol::new_checked(s.symbol.as_str())
                .map_err(|e| ConfigError::invalid(key("symbol"), e.to_string()))?;
            for (field, value) in [("tick_size", s.tick_size), ("lot_size", s.lot_size)] {
                if value <= Decimal::ZERO {
                    return Err(ConfigError::invalid(
                        key(field),
                        format!("must be > 0, got {value}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// One instrument of a venue feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VenueSymbolConfig {
    /// Instrument as subscribers name it ("BTC-USDT").
    pub symbol: String,
    /// Price increment, a decimal string.
    #[serde(with = "rust_decimal::serde::str")]
    pub tick_size: Decimal,
    /// Quantity increment, a decimal string.
    #[serde(with = "rust_decimal::serde::str")]
    pub lot_size: Decimal,
}
