//! `json-l2`: a small JSON websocket format for L2 market data, modelled on the common
//! venue pattern (Binance's diff-depth stream among them): deltas carry the range of
//! update ids they cover, a snapshot says which update id it includes, and the client
//! asks for snapshots. The tests' local venue simulator speaks it; it is also the
//! reference for what a [`VenueProtocol`] must provide.
//!
//! Client to venue, text frames:
//! - `{"op":"subscribe","symbols":["BTC-USDT"]}`
//! - `{"op":"snapshot","symbol":"BTC-USDT"}`
//!
//! Venue to client, text frames (prices and quantities are decimal strings):
//! - `{"type":"snapshot","symbol":"BTC-USDT","last_update":10,"bids":[["100.00","1.5"]],"asks":[]}`
//! - `{"type":"delta","symbol":"BTC-USDT","first_update":11,"last_update":12,"bids":[],"asks":[["100.10","0"]]}`
//! - `{"type":"trade","symbol":"BTC-USDT","id":"t-1","price":"100.05","quantity":"0.2","buyer_is_maker":true}`
//! - `{"type":"subscribed", ...}` and anything with an unknown `type` are ignored.
//!
//! Every venue message may carry `"time_ms"`, the venue's time in Unix milliseconds.

use serde::{Deserialize, Serialize};

use super::ws::{ProtocolError, VenueMessage, VenueProtocol};

/// The `json-l2` format.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonL2;

/// A request from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Subscribe to these symbols' deltas and trades.
    Subscribe {
        /// Symbols.
        symbols: Vec<String>,
    },
    /// Send a snapshot of this symbol.
    Snapshot {
        /// Symbol.
        symbol: String,
    },
}

/// A message from the venue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// The full book, including every update up to `last_update`.
    Snapshot {
        /// Symbol.
        symbol: String,
        /// Last update id included.
        last_update: u64,
        /// `[price, quantity]`, best first.
        bids: Vec<[String; 2]>,
        /// `[price, quantity]`, best first.
        asks: Vec<[String; 2]>,
        /// Venue time, Unix ms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time_ms: Option<u64>,
    },
    /// Changed levels covering update ids `first_update..=last_update`; quantity 0 removes.
    Delta {
        /// Symbol.
        symbol: String,
        /// First update id covered.
        first_update: u64,
        /// Last update id covered.
        last_update: u64,
        /// `[price, quantity]`.
        bids: Vec<[String; 2]>,
        /// `[price, quantity]`.
        asks: Vec<[String; 2]>,
        /// Venue time, Unix ms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time_ms: Option<u64>,
    },
    /// A trade.
    Trade {
        /// Symbol.
        symbol: String,
        /// Venue trade id.
        id: String,
        /// Price.
        price: String,
        /// Quantity.
        quantity: String,
        /// The buyer was the resting order.
        buyer_is_maker: bool,
        /// Venue time, Unix ms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time_ms: Option<u64>,
    },
    /// Anything else (acknowledgements).
    #[serde(other)]
    Other,
}

fn pairs(levels: Vec<[String; 2]>) -> Vec<(String, String)> {
    levels.into_iter().map(|[p, q]| (p, q)).collect()
}

impl VenueProtocol for JsonL2 {
    fn subscribe(&self, symbols: &[String]) -> Vec<String> {
        let request = Request::Subscribe {
            symbols: symbols.to_vec(),
        };
        serde_json::to_string(&request).into_iter().collect()
    }

    fn request_snapshot(&self, symbol: &str) -> Option<String> {
        serde_json::to_string(&Request::Snapshot {
            symbol: symbol.to_owned(),
        })
        .ok()
    }

    fn decode(&self, text: &str) -> Result<Vec<VenueMessage>, ProtocolError> {
        let message: Message =
            serde_json::from_str(text).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        Ok(match message {
            Message::Snapshot {
                symbol,
                last_update,
                bids,
                asks,
                time_ms,
            } => vec![VenueMessage::Snapshot {
                symbol,
                last_update,
                bids: pairs(bids),
                asks: pairs(asks),
                time_ms,
            }],
            Message::Delta {
                symbol,
                first_update,
                last_update,
                bids,
                asks,
                time_ms,
            } => vec![VenueMessage::Delta {
                symbol,
                first_update,
                last_update,
                bids: pairs(bids),
                asks: pairs(asks),
                time_ms,
            }],
            Message::Trade {
                symbol,
                id,
                price,
                quantity,
                buyer_is_maker,
                time_ms,
            } => vec![VenueMessage::Trade {
                symbol,
                id,
                price,
                quantity,
                buyer_is_maker,
                time_ms,
            }],
            Message::Other => Vec::new(),
        })
    }
}
