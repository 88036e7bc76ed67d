//! Journal records as a start applies them: decoded and converted on the journal's
//! reading thread, so the applying thread (the slower of the two) only changes state.
//!
//! A record carries the whole order after each change, as subscribers receive it, but
//! replay needs only what the change was: the request of an accepted order, the fill of a
//! fill, the venue's id of an acknowledgement. So a record is read in place: each message
//! of the [`JournalRecord`](execbridge_api::internal::v1::JournalRecord) format is walked
//! field by field with prost's wire primitives, strings and embedded messages are borrowed
//! from the record, and only what the change needs is decoded and allocated (an order's
//! request for the record that accepted it; a fill's decimals are parsed from the record's
//! bytes). Generated or derived prost messages would allocate every string they declare.
//! The field numbers are those of the proto, named in [`tags`]; a test checks each against
//! the number prost's generated code writes the field with, and the engine's tests replay
//! every record a live run writes through this reader and compare the state with the live
//! engine's.

use std::time::{SystemTime, UNIX_EPOCH};

use execbridge_api::convert::{
    self, account_risk_from_proto, fill_from_fields, order_request_from_proto,
    reject_reason_from_proto,
};
use execbridge_api::internal::v1::AdminChange;
use execbridge_api::v1;
use execbridge_domain::risk::AccountRisk;
use execbridge_domain::{OrderEvent, OrderId, OrderRequest, RejectReason};
use prost::Message as _;

use crate::journal;

/// A field of a message as it is on the wire; a length-delimited value (a string, bytes or
/// an embedded message) is borrowed from the record.
#[derive(Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed 32- or 64-bit value: no field replay reads has one.
    Fixed,
}

/// Calls `each` with the number and value of every field of the message in `buf`, in the
/// order they are written. Fields replay does not declare are passed too, and ignored.
fn fields<'a>(
    mut buf: &'a [u8],
    mut each: impl FnMut(u32, Value<'a>) -> Result<(), String>,
) -> Result<(), String> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).map_err(|e| e.to_string())?;
        let value = match wire_type {
            WireType::Varint => Value::Varint(decode_varint(&mut buf).map_err(|e| e.to_string())?),
            WireType::LengthDelimited => {
                let len = decode_varint(&mut buf).map_err(|e| e.to_string())?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|len| *len <= buf.len())
                    .ok_or_else(|| format!("field {tag}: {len} bytes, {} left", buf.len()))?;
                let (value, rest) = buf.split_at(len);
                buf = rest;
                Value::Bytes(value)
            }
            WireType::ThirtyTwoBit | WireType::SixtyFourBit => {
                let len = if wire_type == WireType::ThirtyTwoBit {
                    4
                } else {
                    8
                };
                buf = buf
                    .get(len..)
                    .ok_or_else(|| format!("field {tag}: {len} bytes, {} left", buf.len()))?;
                Value::Fixed
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err(format!("field {tag}: groups are not used"));
            }
        };
        each(tag, value)?;
    }
    Ok(())
}

fn varint(tag: u32, value: Value<'_>) -> Result<u64, String> {
    match value {
        Value::Varint(v) => Ok(v),
        _ => Err(format!("field {tag} is not a varint")),
    }
}

/// An `int32` or enum field: its varint truncated, as protobuf reads it.
#[allow(clippy::cast_possible_truncation)]
fn int32(tag: u32, value: Value<'_>) -> Result<i32, String> {
    varint(tag, value).map(|v| v as i32)
}

fn bytes(tag: u32, value: Value<'_>) -> Result<&[u8], String> {
    match value {
        Value::Bytes(b) => Ok(b),
        _ => Err(format!("field {tag} is not length-delimited")),
    }
}

fn string(tag: u32, value: Value<'_>) -> Result<&str, String> {
    std::str::from_utf8(bytes(tag, value)?).map_err(|e| format!("field {tag}: {e}"))
}

/// An embedded message field, kept whole to decode once the record is read. Protobuf
/// merges repeated occurrences of one; a journal writer never repeats them, so a repeat is
/// damage here rather than merged.
fn once<'a>(slot: &mut Option<&'a [u8]>, tag: u32, value: Value<'a>) -> Result<(), String> {
    if slot.replace(bytes(tag, value)?).is_some() {
        return Err(format!("field {tag} occurs twice"));
    }
    Ok(())
}

/// The numbers of the fields replay reads, by message, as the proto declares them.
mod tags {
    /// `execbridge.internal.v1.JournalRecord`.
    pub(super) mod record {
        pub const LSN: u32 = 1;
        pub const TIME: u32 = 2;
        pub const UPDATE: u32 = 3;
        pub const ADMIN: u32 = 4;
    }
    /// `execbridge.v1.OrderUpdate`.
    pub(super) mod update {
        pub const SEQUENCE: u32 = 2;
        pub const EVENT: u32 = 3;
        pub const ORDER: u32 = 4;
        pub const FILL: u32 = 5;
    }
    /// `execbridge.v1.Order`.
    pub(super) mod order {
        pub const ORDER_ID: u32 = 1;
        pub const REQUEST: u32 = 2;
        pub const REJECT_REASON: u32 = 7;
        pub const REJECT_MESSAGE: u32 = 8;
        pub const VENUE_ORDER_ID: u32 = 9;
        pub const CREATED_AT: u32 = 10;
    }
    /// `execbridge.v1.Fill`.
    pub(super) mod fill {
        pub const TRADE_ID: u32 = 1;
        pub const PRICE: u32 = 8;
        pub const QUANTITY: u32 = 9;
        pub const FEE: u32 = 10;
        pub const FEE_ASSET: u32 = 11;
        pub const LIQUIDITY: u32 = 12;
        pub const EXECUTED_AT: u32 = 13;
    }
}

fn timestamp(buf: &[u8]) -> Result<prost_types::Timestamp, String> {
    prost_types::Timestamp::decode(buf).map_err(|e| format!("a time: {e}"))
}

/// `JournalRecord` (proto/execbridge/internal/v1/journal.proto): its lsn, time and entry
/// (an `execbridge.v1.OrderUpdate` or an admin change).
#[derive(Default)]
struct RecordFields<'a> {
    lsn: u64,
    time: Option<&'a [u8]>,
    update: Option<&'a [u8]>,
    admin: Option<&'a [u8]>,
}

/// `execbridge.v1.OrderUpdate`: its sequence, event, order and fill.
#[derive(Default)]
struct UpdateFields<'a> {
    sequence: u64,
    event: i32,
    order: Option<&'a [u8]>,
    fill: Option<&'a [u8]>,
}

/// `execbridge.v1.Order`: its ids, request, rejection and creation time. The figures after
/// the change are not read: replay recomputes them from the fills.
#[derive(Default)]
struct OrderFields<'a> {
    order_id: &'a str,
    request: Option<&'a [u8]>,
    reject_reason: i32,
    reject_message: &'a str,
    venue_order_id: &'a str,
    created_at: Option<&'a [u8]>,
}

/// A message read in place: the fields replay declares, taken as they come.
trait Message<'a>: Default {
    /// Takes field `tag` (ignored unless declared).
    fn field(&mut self, tag: u32, value: Value<'a>) -> Result<(), String>;

    fn read(buf: &'a [u8]) -> Result<Self, String> {
        let mut message = Self::default();
        fields(buf, |tag, value| message.field(tag, value))?;
        Ok(message)
    }
}

impl<'a> Message<'a> for RecordFields<'a> {
    fn field(&mut self, tag: u32, value: Value<'a>) -> Result<(), String> {
        use tags::record::{ADMIN, LSN, TIME, UPDATE};
        match tag {
            LSN => varint(tag, value).map(|v| self.lsn = v),
            TIME => once(&mut self.time, tag, value),
            UPDATE => once(&mut self.update, tag, value),
            ADMIN => once(&mut self.admin, tag, value),
            _ => Ok(()),
        }
    }
}

impl<'a> Message<'a> for UpdateFields<'a> {
    fn field(&mut self, tag: u32, value: Value<'a>) -> Result<(), String> {
        use tags::update::{EVENT, FILL, ORDER, SEQUENCE};
        match tag {
            SEQUENCE => varint(tag, value).map(|v| self.sequence = v),
            EVENT => int32(tag, value).map(|v| self.event = v),
            ORDER => once(&mut self.order, tag, value),
            FILL => once(&mut self.fill, tag, value),
            _ => Ok(()),
        }
    }
}

impl<'a> Message<'a> for OrderFields<'a> {
    fn field(&mut self, tag: u32, value: Value<'a>) -> Result<(), String> {
        use tags::order::{
            CREATED_AT, ORDER_ID, REJECT_MESSAGE, REJECT_REASON, REQUEST, VENUE_ORDER_ID,
        };
        match tag {
            ORDER_ID => string(tag, value).map(|v| self.order_id = v),
            REQUEST => once(&mut self.request, tag, value),
            REJECT_REASON => int32(tag, value).map(|v| self.reject_reason = v),
            REJECT_MESSAGE => string(tag, value).map(|v| self.reject_message = v),
            VENUE_ORDER_ID => string(tag, value).map(|v| self.venue_order_id = v),
            CREATED_AT => once(&mut self.created_at, tag, value),
            _ => Ok(()),
        }
    }
}

/// `execbridge.v1.Fill` without the order's identity, which replay takes from the order.
fn read_fill(buf: &[u8]) -> Result<Option<execbridge_domain::Fill>, String> {
    use tags::fill::{EXECUTED_AT, FEE, FEE_ASSET, LIQUIDITY, PRICE, QUANTITY, TRADE_ID};
    let mut f = convert::FillFields::default();
    let mut executed_at = None;
    fields(buf, |tag, value| match tag {
        TRADE_ID => string(tag, value).map(|v| f.trade_id = v),
        PRICE => string(tag, value).map(|v| f.price = v),
        QUANTITY => string(tag, value).map(|v| f.quantity = v),
        FEE => string(tag, value).map(|v| f.fee = v),
        FEE_ASSET => string(tag, value).map(|v| f.fee_asset = v),
        LIQUIDITY => int32(tag, value).map(|v| f.liquidity = v),
        EXECUTED_AT => once(&mut executed_at, tag, value),
        _ => Ok(()),
    })?;
    let executed_at = executed_at.map(timestamp).transpose()?;
    f.executed_at = executed_at.as_ref();
    Ok(fill_from_fields(&f))
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
    fn read(body: &[u8]) -> Result<Self, String> {
        let record = RecordFields::read(body)?;
        let time = record
            .time
            .map(timestamp)
            .transpose()?
            .as_ref()
            .and_then(convert::system_time)
            .unwrap_or(UNIX_EPOCH);
        let change = match (record.update, record.admin) {
            (Some(u), _) => update(&UpdateFields::read(u)?)?,
            (None, Some(admin)) => {
                let change = AdminChange::decode(admin).map_err(|e| e.to_string())?;
                let risk = change.risk.as_ref().ok_or("an admin change without risk")?;
                let settings = account_risk_from_proto(risk)
                    .map_err(|v| format!("risk settings: {} bad fields", v.len()))?;
                Change::Risk {
                    account: risk.account.clone(),
                    settings,
                }
            }
            (None, None) => return Err("an empty record".into()),
        };
        Ok(Self {
            lsn: record.lsn,
            time,
            change,
        })
    }
}

fn update(u: &UpdateFields<'_>) -> Result<Change, String> {
    let order = OrderFields::read(u.order.ok_or("an update without an order")?)?;
    let kind = v1::OrderEventType::try_from(u.event).map_err(|e| e.to_string())?;
    let event = match kind {
        v1::OrderEventType::Accepted => {
            let request = order
                .request
                .filter(|r| !r.is_empty())
                .ok_or("an accepted order without a request")?;
            let request = v1::OrderRequest::decode(request)
                .map_err(|e| format!("the accepted order's request: {e}"))?;
            let request = order_request_from_proto(&request, "")
                .map_err(|v| format!("request: {} bad fields", v.len()))?;
            let order_id = OrderId::new_checked(order.order_id).map_err(|e| e.to_string())?;
            let created_at = order.created_at.map(timestamp).transpose()?;
            return Ok(Change::Accepted {
                sequence: u.sequence,
                order_id,
                request: Box::new(request),
                created_at: created_at.as_ref().and_then(convert::system_time),
            });
        }
        v1::OrderEventType::Acknowledged => OrderEvent::Acknowledged {
            venue_order_id: order.venue_order_id.to_owned(),
        },
        v1::OrderEventType::Filled => {
            let fill = u.fill.ok_or("a fill update without a fill")?;
            OrderEvent::Fill(read_fill(fill)?.ok_or("a fill update without a valid fill")?)
        }
        v1::OrderEventType::Rejected => OrderEvent::Rejected {
            reason: v1::RejectReason::try_from(order.reject_reason)
                .ok()
                .and_then(reject_reason_from_proto)
                .unwrap_or(RejectReason::VenueRejected),
            message: order.reject_message.to_owned(),
        },
        v1::OrderEventType::Unknown => OrderEvent::Unknown {
            message: order.reject_message.to_owned(),
        },
        v1::OrderEventType::CancelRequested => OrderEvent::CancelRequested,
        v1::OrderEventType::Canceled => OrderEvent::Canceled,
        v1::OrderEventType::Expired => OrderEvent::Expired,
        v1::OrderEventType::Triggered => OrderEvent::Triggered,
        v1::OrderEventType::Unspecified => return Err(format!("event {kind:?}")),
    };
    Ok(Change::Event {
        sequence: u.sequence,
        order_id: order.order_id.to_owned(),
        event,
    })
}

impl journal::Record for Replayed {
    fn decode(body: &[u8]) -> Result<Self, String> {
        Self::read(body)
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

    /// A fill update as prost writes it, and the same fields written by hand in `order`.
    fn fill_update() -> (Vec<u8>, v1::Fill, v1::Order) {
        let fill = v1::Fill {
            trade_id: "s0-t4".into(),
            order_id: "s0-1".into(),
            price: "101.5".into(),
            quantity: "0.25".into(),
            fee: "0.01".into(),
            fee_asset: "USDT".into(),
            liquidity: v1::Liquidity::Taker as i32,
            executed_at: Some(convert::timestamp(
                UNIX_EPOCH + std::time::Duration::from_secs(9),
            )),
            ..Default::default()
        };
        let order = order();
        let record = JournalRecord {
            lsn: 7,
            time: None,
            entry: Some(RecordEntry::Update(v1::OrderUpdate {
                sequence: 3,
                event: v1::OrderEventType::Filled as i32,
                order: Some(order.clone()),
                fill: Some(fill.clone()),
                ..Default::default()
            })),
        };
        (record.encode_to_vec(), fill, order)
    }

    #[test]
    fn fields_are_read_in_any_order_and_unknown_ones_of_every_wire_type_are_skipped() {
        use prost::encoding::{WireType, encode_key, encode_varint, message, uint64};
        let (written, fill, order) = fill_update();
        let expected = Replayed::decode(&written).unwrap();
        assert!(
            matches!(&expected.change, Change::Event { order_id, event: OrderEvent::Fill(f), .. }
                if order_id == "s0-1" && f.trade_id == "s0-t4" && f.price.get().to_string() == "101.5"
                    && f.fee.to_string() == "0.01" && f.fee_asset == "USDT"),
            "{expected:?}"
        );
        // The update's fields last to first, with fields no reader declares in between: a
        // fixed 64-bit, a fixed 32-bit and an unknown length-delimited one.
        let mut update = Vec::new();
        message::encode(5, &fill, &mut update);
        encode_key(99, WireType::SixtyFourBit, &mut update);
        update.extend_from_slice(&[0; 8]);
        message::encode(4, &order, &mut update);
        encode_key(98, WireType::ThirtyTwoBit, &mut update);
        update.extend_from_slice(&[0; 4]);
        uint64::encode(3, &(v1::OrderEventType::Filled as u64), &mut update);
        encode_key(97, WireType::LengthDelimited, &mut update);
        encode_varint(2, &mut update);
        update.extend_from_slice(b"zz");
        uint64::encode(2, &3, &mut update);
        let mut record = Vec::new();
        encode_key(3, WireType::LengthDelimited, &mut record);
        encode_varint(update.len() as u64, &mut record);
        record.extend_from_slice(&update);
        uint64::encode(1, &7, &mut record);
        let read = Replayed::decode(&record).unwrap();
        assert_eq!(format!("{read:?}"), format!("{expected:?}"));
    }

    /// A message with only what `set` sets.
    fn with<M: Default>(set: impl FnOnce(&mut M)) -> M {
        let mut message = M::default();
        set(&mut message);
        message
    }

    /// Checks that each message, with one field set, is written by prost with that field
    /// numbered as its pair says.
    fn numbered_as_prost_writes<M: prost::Message + std::fmt::Debug>(fields_set: &[(u32, M)]) {
        for (number, message) in fields_set {
            let mut written = Vec::new();
            fields(&message.encode_to_vec(), |tag, _| {
                written.push(tag);
                Ok(())
            })
            .unwrap();
            assert_eq!(written, [*number], "{message:?}");
        }
    }

    #[test]
    fn field_numbers_are_those_prost_encodes_each_field_with() {
        use super::tags::{fill, order, record, update};
        let time = Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 0,
        });
        let text = || "x".to_string();
        numbered_as_prost_writes(&[
            (record::LSN, with(|r: &mut JournalRecord| r.lsn = 1)),
            (record::TIME, with(|r: &mut JournalRecord| r.time = time)),
            (
                record::UPDATE,
                with(|r: &mut JournalRecord| {
                    r.entry = Some(RecordEntry::Update(v1::OrderUpdate::default()));
                }),
            ),
            (
                record::ADMIN,
                with(|r: &mut JournalRecord| {
                    r.entry = Some(RecordEntry::Admin(AdminChange::default()));
                }),
            ),
        ]);
        numbered_as_prost_writes(&[
            (
                update::SEQUENCE,
                with(|u: &mut v1::OrderUpdate| u.sequence = 1),
            ),
            (update::EVENT, with(|u: &mut v1::OrderUpdate| u.event = 1)),
            (
                update::ORDER,
                with(|u: &mut v1::OrderUpdate| u.order = Some(v1::Order::default())),
            ),
            (
                update::FILL,
                with(|u: &mut v1::OrderUpdate| u.fill = Some(v1::Fill::default())),
            ),
        ]);
        // Each field of the order beside its neighbours that a swap would confuse it with
        // (created_at and updated_at are both timestamps, the ids all strings).
        numbered_as_prost_writes(&[
            (
                order::ORDER_ID,
                with(|o: &mut v1::Order| o.order_id = text()),
            ),
            (
                order::REQUEST,
                with(|o: &mut v1::Order| o.request = Some(v1::OrderRequest::default())),
            ),
            (
                order::REJECT_REASON,
                with(|o: &mut v1::Order| o.reject_reason = 1),
            ),
            (
                order::REJECT_MESSAGE,
                with(|o: &mut v1::Order| o.reject_message = text()),
            ),
            (
                order::VENUE_ORDER_ID,
                with(|o: &mut v1::Order| o.venue_order_id = text()),
            ),
            (
                order::CREATED_AT,
                with(|o: &mut v1::Order| o.created_at = time),
            ),
        ]);
        numbered_as_prost_writes(&[
            (fill::TRADE_ID, with(|f: &mut v1::Fill| f.trade_id = text())),
            (fill::PRICE, with(|f: &mut v1::Fill| f.price = text())),
            (fill::QUANTITY, with(|f: &mut v1::Fill| f.quantity = text())),
            (fill::FEE, with(|f: &mut v1::Fill| f.fee = text())),
            (
                fill::FEE_ASSET,
                with(|f: &mut v1::Fill| f.fee_asset = text()),
            ),
            (fill::LIQUIDITY, with(|f: &mut v1::Fill| f.liquidity = 1)),
            (
                fill::EXECUTED_AT,
                with(|f: &mut v1::Fill| f.executed_at = time),
            ),
        ]);
    }

    #[test]
    fn damage_in_the_wire_format_is_named() {
        use prost::encoding::{WireType, encode_key, encode_varint};
        let (written, ..) = fill_update();
        // The record's update field (3) repeated.
        let mut twice = written.clone();
        twice.extend_from_slice(&written[written.iter().position(|b| *b == 0x1a).unwrap()..]);
        // The lsn (1) written as a string.
        let mut lsn_as_string = Vec::new();
        encode_key(1, WireType::LengthDelimited, &mut lsn_as_string);
        encode_varint(1, &mut lsn_as_string);
        lsn_as_string.push(b'7');
        // A length beyond the record's end.
        let mut too_long = Vec::new();
        encode_key(3, WireType::LengthDelimited, &mut too_long);
        encode_varint(1_000, &mut too_long);
        too_long.extend_from_slice(&[0; 10]);
        // A group, which the proto never uses.
        let mut group = Vec::new();
        encode_key(3, WireType::StartGroup, &mut group);
        // A fixed 64-bit field cut short.
        let mut short = Vec::new();
        encode_key(5, WireType::SixtyFourBit, &mut short);
        short.extend_from_slice(&[0; 3]);
        // An order id that is not UTF-8.
        let mut bad_utf8 = order();
        bad_utf8.order_id.clear();
        let mut order_bytes = bad_utf8.encode_to_vec();
        order_bytes.splice(0..0, [0x0a, 2, 0xc3, 0x28]);
        let mut update = Vec::new();
        prost::encoding::uint64::encode(3, &(v1::OrderEventType::Canceled as u64), &mut update);
        prost::encoding::bytes::encode(4, &order_bytes, &mut update);
        let mut not_utf8 = Vec::new();
        prost::encoding::bytes::encode(3, &update, &mut not_utf8);
        for (body, says) in [
            (twice, "field 3 occurs twice"),
            (lsn_as_string, "field 1 is not a varint"),
            (too_long, "field 3: 1000 bytes, 10 left"),
            (group, "field 3: groups are not used"),
            (short, "field 5: 8 bytes, 3 left"),
            (not_utf8, "field 1: invalid utf-8"),
        ] {
            let err = Replayed::decode(&body).unwrap_err();
            assert!(err.contains(says), "{err:?} does not say {says:?}");
        }
    }
}
