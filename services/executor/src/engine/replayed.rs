//! Journal records as a start applies them: decoded and converted on the journal's
//! reading thread, so the applying thread (the slower of the two) only changes state.
//!
//! A record carries the whole order after each change, as subscribers receive it, but
//! replay needs only what the change was: the request of an accepted order, the fill of a
//! fill, the venue's id of an acknowledgement. The wire types below read the
//! [`JournalRecord`](execbridge_api::internal::v1::JournalRecord) format with only those
//! fields declared; prost skips the others without allocating them, and an order's
//! request is kept as bytes and decoded only for the record that accepted it. The field
//! numbers must follow the proto: the engine's tests replay every record a live run writes
//! through these types and compare the state with the live engine's, so a field read from
//! the wrong number fails them.

use std::time::{SystemTime, UNIX_EPOCH};

use execbridge_api::convert::{
    self, account_risk_from_proto, fill_from_proto, order_request_from_proto,
    reject_reason_from_proto,
};
use execbridge_api::internal::v1::AdminChange;
use execbridge_api::v1;
use execbridge_domain::risk::AccountRisk;
use execbridge_domain::{OrderEvent, OrderId, OrderRequest, RejectReason};
use prost::Message;

use crate::journal;

/// `JournalRecord` (proto/execbridge/internal/v1/journal.proto) with the fields replay uses.
#[derive(Clone, PartialEq, prost::Message)]
struct WireRecord {
    #[prost(uint64, tag = "1")]
    lsn: u64,
    #[prost(message, optional, tag = "2")]
    time: Option<prost_types::Timestamp>,
    #[prost(oneof = "WireEntry", tags = "3, 4")]
    entry: Option<WireEntry>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum WireEntry {
    #[prost(message, tag = "3")]
    Update(WireUpdate),
    #[prost(message, tag = "4")]
    Admin(AdminChange),
}

/// `execbridge.v1.OrderUpdate` without `shard`, `progress` and `timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
struct WireUpdate {
    #[prost(uint64, tag = "2")]
    sequence: u64,
    #[prost(int32, tag = "3")]
    event: i32,
    #[prost(message, optional, tag = "4")]
    order: Option<WireOrder>,
    #[prost(message, optional, tag = "5")]
    fill: Option<WireFill>,
}

/// `execbridge.v1.Order` without the figures replay recomputes from the fills.
#[derive(Clone, PartialEq, prost::Message)]
struct WireOrder {
    #[prost(string, tag = "1")]
    order_id: String,
    /// The encoded `OrderRequest`: decoded only when the order is accepted.
    #[prost(bytes = "vec", tag = "2")]
    request: Vec<u8>,
    #[prost(int32, tag = "7")]
    reject_reason: i32,
    #[prost(string, tag = "8")]
    reject_message: String,
    #[prost(string, tag = "9")]
    venue_order_id: String,
    #[prost(message, optional, tag = "10")]
    created_at: Option<prost_types::Timestamp>,
}

/// `execbridge.v1.Fill` without the order's identity, which replay takes from the order.
#[derive(Clone, PartialEq, prost::Message)]
struct WireFill {
    #[prost(string, tag = "1")]
    trade_id: String,
    #[prost(string, tag = "8")]
    price: String,
    #[prost(string, tag = "9")]
    quantity: String,
    #[prost(string, tag = "10")]
    fee: String,
    #[prost(string, tag = "11")]
    fee_asset: String,
    #[prost(int32, tag = "12")]
    liquidity: i32,
    #[prost(message, optional, tag = "13")]
    executed_at: Option<prost_types::Timestamp>,
}

/// One journal record, ready to apply.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// Its log sequence number.
    pub lsn: u64,
    /// When it was made.
    pub time: SystemTime,
    /// What it changes.
    pub change: Change,
}

/// What a journal record changes.
#[derive(Debug, Clone)]
pub enum Change {
    /// An order was accepted (sequence, id, request, creation time).
    Accepted {
        /// The update's sequence.
        sequence: u64,
        /// The order's id.
        order_id: OrderId,
        /// The request as accepted (boxed: records move from the reading thread to the
        /// applying one, and most of them are events, much smaller than a request).
        request: Box<OrderRequest>,
        /// When the order was created, when the record says.
        created_at: Option<SystemTime>,
    },
    /// Something happened to an order accepted earlier.
    Event {
        /// The update's sequence.
        sequence: u64,
        /// The order's id.
        order_id: String,
        /// What happened.
        event: OrderEvent,
    },
    /// An account's risk settings changed.
    Risk {
        /// The account.
        account: String,
        /// Its settings after the change.
        settings: AccountRisk,
    },
}

impl Change {
    /// The sequence of the order update it was; `None` for a risk change.
    pub fn sequence(&self) -> Option<u64> {
        match self {
            Self::Accepted { sequence, .. } | Self::Event { sequence, .. } => Some(*sequence),
            Self::Risk { .. } => None,
        }
    }
}

impl Replayed {
    fn from_wire(wire: WireRecord) -> Result<Self, String> {
        let time = wire
            .time
            .as_ref()
            .and_then(convert::system_time)
            .unwrap_or(UNIX_EPOCH);
        let change = match wire.entry.ok_or("an empty record")? {
            WireEntry::Update(u) => update(u)?,
            WireEntry::Admin(change) => {
                let risk = change.risk.as_ref().ok_or("an admin change without risk")?;
                let settings = account_risk_from_proto(risk)
                    .map_err(|v| format!("risk settings: {} bad fields", v.len()))?;
                Change::Risk {
                    account: risk.account.clone(),
                    settings,
                }
            }
        };
        Ok(Self {
            lsn: wire.lsn,
            time,
            change,
        })
    }
}

fn update(u: WireUpdate) -> Result<Change, String> {
    let order = u.order.ok_or("an update without an order")?;
    let kind = v1::OrderEventType::try_from(u.event).map_err(|e| e.to_string())?;
    let event = match kind {
        v1::OrderEventType::Accepted => {
            if order.request.is_empty() {
                return Err("an accepted order without a request".into());
            }
            let request = v1::OrderRequest::decode(order.request.as_slice())
                .map_err(|e| format!("the accepted order's request: {e}"))?;
            let request = order_request_from_proto(&request, "")
                .map_err(|v| format!("request: {} bad fields", v.len()))?;
            let order_id = OrderId::new_checked(order.order_id).map_err(|e| e.to_string())?;
            return Ok(Change::Accepted {
                sequence: u.sequence,
                order_id,
                request: Box::new(request),
                created_at: order.created_at.as_ref().and_then(convert::system_time),
            });
        }
        v1::OrderEventType::Acknowledged => OrderEvent::Acknowledged {
            venue_order_id: order.venue_order_id,
        },
        v1::OrderEventType::Filled => {
            let fill = u.fill.ok_or("a fill update without a fill")?;
            let fill = v1::Fill {
                trade_id: fill.trade_id,
                price: fill.price,
                quantity: fill.quantity,
                fee: fill.fee,
                fee_asset: fill.fee_asset,
                liquidity: fill.liquidity,
                executed_at: fill.executed_at,
                ..v1::Fill::default()
            };
            OrderEvent::Fill(fill_from_proto(&fill).ok_or("a fill update without a valid fill")?)
        }
        v1::OrderEventType::Rejected => OrderEvent::Rejected {
            reason: v1::RejectReason::try_from(order.reject_reason)
                .ok()
                .and_then(reject_reason_from_proto)
                .unwrap_or(RejectReason::VenueRejected),
            message: order.reject_message,
        },
        v1::OrderEventType::Unknown => OrderEvent::Unknown {
            message: order.reject_message,
        },
        v1::OrderEventType::CancelRequested => OrderEvent::CancelRequested,
        v1::OrderEventType::Canceled => OrderEvent::Canceled,
        v1::OrderEventType::Expired => OrderEvent::Expired,
        v1::OrderEventType::Triggered => OrderEvent::Triggered,
        v1::OrderEventType::Unspecified => return Err(format!("event {kind:?}")),
    };
    Ok(Change::Event {
        sequence: u.sequence,
        order_id: order.order_id,
        event,
    })
}

impl journal::Record for Replayed {
    fn decode(body: &[u8]) -> Result<Self, String> {
        Self::from_wire(WireRecord::decode(body).map_err(|e| e.to_string())?)
    }

    fn lsn(&self) -> u64 {
        self.lsn
    }
}

#[cfg(test)]
mod tests {
    use execbridge_api::internal::v1::JournalRecord;
    use execbridge_api::internal::v1::journal_record::Entry as RecordEntry;

    use super::*;
    use crate::journal::Record as _;

    fn decoded(entry: Option<RecordEntry>) -> Result<Replayed, String> {
        let record = JournalRecord {
            lsn: 7,
            time: None,
            entry,
        };
        Replayed::decode(&record.encode_to_vec())
    }

    fn update(event: v1::OrderEventType, order: Option<v1::Order>) -> Option<RecordEntry> {
        Some(RecordEntry::Update(v1::OrderUpdate {
            shard: "s0".into(),
            sequence: 3,
            event: event as i32,
            order,
            ..Default::default()
        }))
    }

    fn order() -> v1::Order {
        v1::Order {
            order_id: "s0-1".into(),
            venue_order_id: "v-9".into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_event_keeps_what_replay_applies_and_the_time_defaults_to_the_epoch() {
        let r = decoded(update(v1::OrderEventType::Acknowledged, Some(order()))).unwrap();
        assert_eq!((r.lsn, r.time), (7, UNIX_EPOCH));
        assert!(
            matches!(&r.change, Change::Event { sequence: 3, order_id, event: OrderEvent::Acknowledged { venue_order_id } }
                if order_id == "s0-1" && venue_order_id == "v-9"),
            "{r:?}"
        );
    }

    #[test]
    fn records_replay_cannot_apply_are_refused_with_the_reason() {
        let cases = [
            (None, "an empty record"),
            (
                update(v1::OrderEventType::Canceled, None),
                "an update without an order",
            ),
            (
                update(v1::OrderEventType::Accepted, Some(order())),
                "an accepted order without a request",
            ),
            (
                update(
                    v1::OrderEventType::Accepted,
                    Some(v1::Order {
                        request: Some(v1::OrderRequest {
                            quantity: "-1".into(),
                            ..Default::default()
                        }),
                        ..order()
                    }),
                ),
                "bad fields",
            ),
            (
                update(v1::OrderEventType::Filled, Some(order())),
                "a fill update without a fill",
            ),
            (
                {
                    let mut u = update(v1::OrderEventType::Filled, Some(order()));
                    if let Some(RecordEntry::Update(u)) = &mut u {
                        u.fill = Some(v1::Fill {
                            trade_id: "t1".into(),
                            price: "abc".into(),
                            ..Default::default()
                        });
                    }
                    u
                },
                "a fill update without a valid fill",
            ),
            (
                update(v1::OrderEventType::Unspecified, Some(order())),
                "event Unspecified",
            ),
            (
                Some(RecordEntry::Admin(AdminChange::default())),
                "an admin change without risk",
            ),
        ];
        for (entry, reason) in cases {
            let err = decoded(entry).unwrap_err();
            assert!(err.contains(reason), "{err:?} does not say {reason:?}");
        }
        let garbage = Replayed::decode(&[0x08, 1, 0xff, 0xff]).unwrap_err();
        assert!(!garbage.is_empty());
    }
}
