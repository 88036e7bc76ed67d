use std::time::{Duration, SystemTime};

use execbridge_api::v1::{OrderEventType, OrderStatus as PbStatus};
use execbridge_domain::*;
use rust_decimal::Decimal;

use std::sync::Arc;

use execbridge_api::v1;
use execbridge_domain::risk::{RiskLimits, TradingState};

use super::*;
use crate::journal::Payload;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn drain(e: &mut Engine) -> Vec<Arc<v1::OrderUpdate>> {
    e.take_outbox()
        .into_iter()
        .filter_map(|x| match x.payload {
            Payload::Update(u) => Some(u),
            Payload::Admin(_) => None,
        })
        .collect()
}

fn engine() -> Engine {
    let mut e = Engine::in_memory("s0", PaperConfig::default());
    e.on_quote("paper", "BTC-USDT", Quote::around(d("100")), now());
    e
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn request(id: &str, side: Side, order_type: OrderType, price: Option<&str>) -> OrderRequest {
    OrderRequest {
        client_order_id: ClientOrderId::new_checked(id).unwrap(),
        account: AccountId::new_checked("acct").unwrap(),
        venue: VenueId::new_checked("paper").unwrap(),
        mode: TradingMode::Paper,
        symbol: Symbol::new_checked("BTC-USDT").unwrap(),
        side,
        order_type,
        time_in_force: TimeInForce::Gtc,
        post_only: false,
        quantity: Quantity::parse("2").unwrap(),
        price: price.map(|p| Price::parse(p).unwrap()),
        stop_price: None,
        stop_loss: None,
        take_profit: None,
        slippage_bps: 0,
        mev_protection: None,
        metadata: Default::default(),
    }
}

fn market(id: &str, side: Side) -> OrderRequest {
    request(id, side, OrderType::Market, None)
}

fn query(page_size: usize) -> PageQuery {
    PageQuery {
        account: "acct".into(),
        page_size,
        ..Default::default()
    }
}

#[test]
fn a_market_order_is_accepted_acknowledged_and_filled_in_sequence() {
    let mut e = engine();
    assert!(drain(&mut e).is_empty());
    let done = e.submit(market("m1", Side::Buy), now()).unwrap();
    assert_eq!(done.order.status, PbStatus::Filled as i32);
    assert_eq!(done.order.average_fill_price, "101");
    assert_eq!(done.order.fees, "0.202");
    let updates = drain(&mut e);
    let events: Vec<_> = updates.iter().map(|u| (u.sequence, u.event)).collect();
    assert_eq!(
        events,
        [
            (1, OrderEventType::Accepted as i32),
            (2, OrderEventType::Acknowledged as i32),
            (3, OrderEventType::Filled as i32),
        ]
    );
    let fill = updates[2].fill.as_ref().unwrap();
    assert_eq!((fill.price.as_str(), fill.quantity.as_str()), ("101", "2"));
    assert_eq!(updates[2].progress, "1");
}

#[test]
fn a_retry_returns_the_original_order() {
    let mut e = engine();
    let first = e.submit(market("m1", Side::Buy), now()).unwrap();
    let again = e.submit(market("m1", Side::Buy), now()).unwrap();
    assert!(again.duplicate);
    assert_eq!(again.order.order_id, first.order.order_id);
    assert_eq!(
        e.trades(&query(10)).unwrap().0.len(),
        1,
        "one fill, not two"
    );
}

#[test]
fn the_same_id_with_another_payload_names_the_differences() {
    let mut e = engine();
    e.submit(market("m1", Side::Buy), now()).unwrap();
    let err = e.submit(market("m1", Side::Sell), now()).unwrap_err();
    match err {
        EngineError::IdempotencyMismatch { fields, .. } => assert_eq!(fields, ["side"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_limit_order_rests_until_the_market_crosses_it() {
    let mut e = engine();
    let placed = e
        .submit(
            request("l1", Side::Buy, OrderType::Limit, Some("100")),
            now(),
        )
        .unwrap();
    assert_eq!(placed.order.status, PbStatus::New as i32);
    e.on_quote(
        "paper",
        "BTC-USDT",
        Quote {
            bid: d("100.5"),
            ask: d("100.6"),
            last: d("100.5"),
        },
        now(),
    );
    let by = OrderRef::ClientOrderId("l1".into());
    assert_eq!(e.get("acct", &by).unwrap().status, PbStatus::New as i32);
    e.on_quote(
        "paper",
        "BTC-USDT",
        Quote {
            bid: d("99.8"),
            ask: d("99.9"),
            last: d("99.9"),
        },
        now(),
    );
    let filled = e.get("acct", &by).unwrap();
    assert_eq!(filled.status, PbStatus::Filled as i32);
    assert_eq!(filled.average_fill_price, "100");
    assert_eq!(e.open_orders(), 0);
}

#[test]
fn cancel_ends_a_working_order_and_refuses_a_finished_one() {
    let mut e = engine();
    e.submit(
        request("l1", Side::Buy, OrderType::Limit, Some("50")),
        now(),
    )
    .unwrap();
    let (canceled, pending) = e
        .cancel("acct", &OrderRef::ClientOrderId("l1".into()), now())
        .unwrap();
    assert!(pending.is_none(), "no cancel latency configured");
    assert_eq!(canceled.status, PbStatus::Canceled as i32);
    let err = e
        .cancel("acct", &OrderRef::ClientOrderId("l1".into()), now())
        .unwrap_err();
    assert!(matches!(
        err,
        EngineError::NotCancelable {
            status: OrderStatus::Canceled,
            ..
        }
    ));
}

#[test]
fn another_accounts_order_is_not_found() {
    let mut e = engine();
    let placed = e.submit(market("m1", Side::Buy), now()).unwrap();
    let err = e
        .get("someone-else", &OrderRef::OrderId(placed.order.order_id))
        .unwrap_err();
    assert!(matches!(err, EngineError::NotFound(_)));
}

#[test]
fn an_order_id_finds_its_order_only_as_the_engine_wrote_it() {
    let mut e = engine();
    let first = e.submit(market("m1", Side::Buy), now()).unwrap().order;
    let second = e.submit(market("m2", Side::Sell), now()).unwrap().order;
    assert_eq!(
        (first.order_id.as_str(), second.order_id.as_str()),
        ("s0-1", "s0-2")
    );
    for (id, client_order_id) in [("s0-1", "m1"), ("s0-2", "m2")] {
        let by_id = e.get("acct", &OrderRef::OrderId(id.into())).unwrap();
        assert_eq!(by_id.request.unwrap().client_order_id, client_order_id);
        let by_client = e
            .get("acct", &OrderRef::ClientOrderId(client_order_id.into()))
            .unwrap();
        assert_eq!(by_client.order_id, id);
    }
    // Ids that name a slot's number in another form, another shard, or no slot.
    for id in [
        "s0-01",
        "s0-+1",
        "x-1",
        "s0-0",
        "s0-3",
        "s0-",
        "1",
        "",
        "s0-99999999999999999999",
    ] {
        let err = e.get("acct", &OrderRef::OrderId(id.into())).unwrap_err();
        assert!(
            matches!(err, EngineError::NotFound(ref n) if n == id),
            "{id}: {err}"
        );
    }
    for (account, client_order_id) in [("acct", "m3"), ("acct", "M1"), ("someone-else", "m1")] {
        let err = e
            .get(account, &OrderRef::ClientOrderId(client_order_id.into()))
            .unwrap_err();
        assert!(
            matches!(err, EngineError::NotFound(_)),
            "{account}/{client_order_id}: {err}"
        );
    }
}

#[test]
fn replay_refuses_an_accepted_order_whose_id_does_not_name_its_slot() {
    let mut live = engine();
    live.submit(market("m1", Side::Buy), now()).unwrap();
    live.submit(market("m2", Side::Buy), now()).unwrap();
    let mut records = records(&mut live);
    let second = records
        .iter_mut()
        .filter_map(|r| match &mut r.change {
            Change::Accepted { order_id, .. } => Some(order_id),
            _ => None,
        })
        .nth(1)
        .unwrap();
    *second = OrderId::new_checked("s0-1").unwrap();
    let mut copy = Engine::in_memory("s0", PaperConfig::default());
    let err = records
        .into_iter()
        .try_for_each(|r| copy.replay(r))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("order id s0-1 does not name the shard's order 2"),
        "{err}"
    );
}

#[test]
fn cancel_all_cancels_only_the_matching_open_orders() {
    let mut e = engine();
    e.on_quote("paper", "ETH-USDT", Quote::around(d("10")), now());
    e.submit(request("a", Side::Buy, OrderType::Limit, Some("50")), now())
        .unwrap();
    let mut eth = request("b", Side::Buy, OrderType::Limit, Some("5"));
    eth.symbol = Symbol::new_checked("ETH-USDT").unwrap();
    e.submit(eth, now()).unwrap();
    e.submit(market("c", Side::Buy), now()).unwrap();
    let (canceled, _) = e.cancel_all("acct", "BTC-USDT", "", now()).unwrap();
    assert_eq!(canceled.len(), 1);
    assert_eq!(canceled[0].request.as_ref().unwrap().client_order_id, "a");
    assert_eq!(e.open_orders(), 1);
}

#[test]
fn pages_walk_newest_first_without_overlap() {
    let mut e = engine();
    for i in 0..5 {
        e.submit(market(&format!("m{i}"), Side::Buy), now())
            .unwrap();
    }
    let (first, token) = e.list(&query(2), &OrderFilter::default()).unwrap();
    let ids: Vec<_> = first
        .iter()
        .map(|o| o.request.as_ref().unwrap().client_order_id.clone())
        .collect();
    assert_eq!(ids, ["m4", "m3"]);
    let mut q = query(2);
    q.page_token = token;
    let (second, token) = e.list(&q, &OrderFilter::default()).unwrap();
    assert_eq!(second.len(), 2);
    q.page_token = token;
    let (last, token) = e.list(&q, &OrderFilter::default()).unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(token, "");
    q.page_token = "nonsense".into();
    assert!(matches!(
        e.list(&q, &OrderFilter::default()),
        Err(EngineError::BadPageToken(_))
    ));
}

#[test]
fn positions_and_balances_follow_the_fills() {
    let mut e = engine();
    e.submit(market("b", Side::Buy), now()).unwrap();
    let mut sell = market("s", Side::Sell);
    sell.quantity = Quantity::parse("0.5").unwrap();
    e.submit(sell, now()).unwrap();
    let (positions, balances) = e.positions("acct", "");
    assert_eq!(positions.len(), 1);
    assert_eq!(positions[0].quantity, "1.5");
    assert_eq!(positions[0].average_entry_price, "101");
    assert_eq!(positions[0].realized_pnl, "-1");
    let btc = balances.iter().find(|b| b.asset == "BTC").unwrap();
    assert_eq!(btc.total, "1.5");
    let usdt = balances.iter().find(|b| b.asset == "USDT").unwrap();
    // 1,000,000 - 202 - 0.202 fee + 49.5 - 0.0495 fee
    assert_eq!(usdt.total, "999847.2485");
}

#[test]
fn without_a_price_the_order_is_rejected_with_a_reason() {
    let mut e = Engine::in_memory("s0", PaperConfig::default());
    let done = e.submit(market("m1", Side::Buy), now()).unwrap();
    assert_eq!(done.order.status, PbStatus::Rejected as i32);
    assert_eq!(
        done.order.reject_reason,
        execbridge_api::v1::RejectReason::NoMarketData as i32
    );
}

/// The outbox as a start reads it back: each entry encoded as the journal record it
/// becomes, and decoded the way replay decodes it.
fn records(live: &mut Engine) -> Vec<Replayed> {
    use crate::journal::Record as _;
    use execbridge_api::internal::v1::JournalRecord;
    use execbridge_api::internal::v1::journal_record::Entry as RecordEntry;
    use prost::Message as _;
    live.take_outbox()
        .into_iter()
        .map(|entry| {
            let record = JournalRecord {
                lsn: entry.lsn,
                time: Some(entry.time),
                entry: Some(match entry.payload {
                    Payload::Update(u) => RecordEntry::Update((*u).clone()),
                    Payload::Admin(a) => RecordEntry::Admin((*a).clone()),
                }),
            };
            Replayed::decode(&record.encode_to_vec()).unwrap()
        })
        .collect()
}

fn replayed(live: &mut Engine) -> Engine {
    let mut copy = Engine::in_memory("s0", PaperConfig::default()).with_retention(live.retention);
    for record in records(live) {
        copy.replay(record).unwrap();
    }
    copy
}

/// Empty engines that share their forgotten-key seeds (each restored from one empty
/// checkpoint), so that their checkpoints compare whole.
fn twins(retention: Retention) -> impl Fn() -> Engine {
    let make = move || Engine::in_memory("s0", PaperConfig::default()).with_retention(retention);
    let empty = make().checkpoint();
    move || {
        let mut e = make();
        e.restore(empty.clone()).unwrap();
        e
    }
}

/// Every order and fill as the API shows them.
fn shown(e: &Engine) -> (Vec<Option<v1::Order>>, Vec<v1::Fill>) {
    let orders = (0..e.orders.len()).map(|idx| e.order_at(idx)).collect();
    (orders, e.trades(&query(100_000)).unwrap().0)
}

fn replay_all(mut engine: Engine, records: &[Replayed]) -> Engine {
    for record in records {
        engine.replay(record.clone()).unwrap();
    }
    engine
}

/// Replays `records` up to `split`, snapshots (through the JSON a snapshot file holds),
/// restores a fresh engine from it and replays the rest there.
fn replayed_through_a_snapshot(
    records: &[Replayed],
    split: usize,
    fresh: &dyn Fn() -> Engine,
) -> Engine {
    let mut before = fresh();
    for record in &records[..split] {
        before.replay(record.clone()).unwrap();
    }
    let copied = before.checkpoint();
    let moved = before.into_checkpoint();
    assert_eq!(copied, moved, "moving the history out copies nothing else");
    let json = serde_json::to_vec(&moved).unwrap();
    let mut after = fresh();
    after
        .restore(serde_json::from_slice(&json).unwrap())
        .unwrap();
    for record in &records[split..] {
        after.replay(record.clone()).unwrap();
    }
    after
}

#[test]
fn a_restored_snapshot_and_the_journal_after_it_rebuild_the_state_of_a_full_replay() {
    let mut e = retaining(1);
    e.submit(market("b1", Side::Buy), now()).unwrap();
    e.submit(market("b2", Side::Buy), now()).unwrap();
    e.submit(
        request("l", Side::Sell, OrderType::Limit, Some("150")),
        now(),
    )
    .unwrap();
    e.set_trading_state(
        "acct",
        "ETH-USDT",
        TradingState::Halted,
        &Actor::default(),
        now(),
    );
    let records = records(&mut e);
    let fresh = twins(e.retention);
    let full = replay_all(fresh(), &records);
    for split in 0..=records.len() {
        let restored = replayed_through_a_snapshot(&records, split, &fresh);
        assert_eq!(restored.digest(), full.digest(), "split at {split}");
        assert_eq!(restored.checkpoint(), full.checkpoint(), "split at {split}");
        assert_eq!(restored.history_held(), full.history_held());
    }
    // b1 was forgotten (one finished order retained): still refused after a restore.
    let mut restored = replayed_through_a_snapshot(&records, records.len(), &fresh);
    let err = restored.submit(market("b1", Side::Buy), now()).unwrap_err();
    assert!(
        matches!(err, EngineError::ClientOrderIdUsed { .. }),
        "{err:?}"
    );
    // The working limit order is open and cancelable after the restore.
    assert_eq!(restored.open_orders(), 1);
    restored
        .cancel("acct", &OrderRef::ClientOrderId("l".into()), now())
        .unwrap();
}

#[test]
fn a_snapshot_restores_only_an_empty_engine() {
    let mut e = engine();
    e.submit(market("b", Side::Buy), now()).unwrap();
    let checkpoint = replayed(&mut e).checkpoint();
    let mut busy = engine();
    busy.submit(market("x", Side::Buy), now()).unwrap();
    let err = busy.restore(checkpoint).unwrap_err();
    assert!(err.to_string().contains("empty engine"), "{err}");
}

#[test]
fn replaying_the_records_rebuilds_the_same_state() {
    let mut e = engine();
    e.submit(market("b", Side::Buy), now()).unwrap();
    e.submit(
        request("l", Side::Sell, OrderType::Limit, Some("150")),
        now(),
    )
    .unwrap();
    e.cancel("acct", &OrderRef::ClientOrderId("l".into()), now())
        .unwrap();
    e.set_trading_state(
        "acct",
        "ETH-USDT",
        TradingState::Halted,
        &Actor::default(),
        now(),
    );
    let copy = replayed(&mut e);
    assert_eq!(copy.digest(), e.digest());
    assert_eq!(shown(&copy), shown(&e));
    assert_eq!(
        copy.positions("acct", "").0[0].quantity,
        e.positions("acct", "").0[0].quantity
    );
}

fn retaining(finished_orders: usize) -> Engine {
    let mut e = Engine::in_memory("s0", PaperConfig::default()).with_retention(Retention {
        finished_orders,
        idempotency_window: Duration::from_secs(60),
    });
    e.on_quote("paper", "BTC-USDT", Quote::around(d("100")), now());
    e
}

#[test]
fn finished_orders_beyond_the_retention_are_forgotten_with_their_fills_and_venue_records() {
    let mut e = retaining(2);
    for i in 1..=5 {
        let done = e
            .submit(market(&format!("m{i}"), Side::Buy), now())
            .unwrap();
        assert_eq!(done.order.status, PbStatus::Filled as i32);
    }
    // Forgetting runs at each accept: before m5 was accepted, m1 and m2 went; m5 finished
    // after it.
    assert_eq!(e.history_held(), (3, 2));
    for gone in ["m1", "m2"] {
        assert!(matches!(
            e.get("acct", &OrderRef::ClientOrderId(gone.into())),
            Err(EngineError::NotFound(_))
        ));
    }
    assert!(matches!(
        e.get("acct", &OrderRef::OrderId("s0-1".into())),
        Err(EngineError::NotFound(_))
    ));
    let (orders, next) = e.list(&query(10), &OrderFilter::default()).unwrap();
    let ids: Vec<_> = orders.iter().map(|o| o.order_id.as_str()).collect();
    assert_eq!((ids, next.as_str()), (vec!["s0-5", "s0-4", "s0-3"], ""));
    let (fills, _) = e.trades(&query(10)).unwrap();
    assert_eq!(
        fills.len(),
        3,
        "the forgotten orders' fills are gone, the others stay"
    );
    assert_eq!(e.venue.remembered(), 3);
    // What was forgotten changed no position: five fills of 2 each.
    assert_eq!(e.positions("acct", "").0[0].quantity, "10");
    // Pages still walk over the holes the forgotten orders left.
    let (first, token) = e.list(&query(2), &OrderFilter::default()).unwrap();
    assert_eq!(first.len(), 2);
    let (rest, end) = e
        .list(
            &PageQuery {
                page_token: token,
                ..query(2)
            },
            &OrderFilter::default(),
        )
        .unwrap();
    assert_eq!((rest.len(), end.as_str()), (1, ""));
}

#[test]
fn a_forgotten_orders_client_order_id_is_refused_within_the_window_and_free_after_it() {
    let mut e = retaining(0);
    e.submit(market("m1", Side::Buy), now()).unwrap();
    e.submit(market("m2", Side::Buy), now()).unwrap();
    assert_eq!(
        e.history_held(),
        (1, 1),
        "m1 was forgotten when m2 was accepted"
    );
    let sent_before = e.venue.remembered();
    drain(&mut e);
    match e.submit(market("m1", Side::Buy), now() + Duration::from_secs(59)) {
        Err(EngineError::ClientOrderIdUsed {
            client_order_id,
            order_id,
        }) => assert_eq!(
            (client_order_id.as_str(), order_id.as_str()),
            ("m1", "s0-1")
        ),
        other => panic!("expected ClientOrderIdUsed, got {other:?}"),
    }
    // A refusal changes nothing: no record, no venue order.
    assert!(drain(&mut e).is_empty());
    assert_eq!(e.venue.remembered(), sent_before);
    // Once the window has passed since m1 finished, the id is free for a new order.
    let again = e
        .submit(market("m1", Side::Buy), now() + Duration::from_secs(60))
        .unwrap();
    assert!(!again.duplicate);
    assert_eq!(again.order.order_id, "s0-3");
}

#[test]
fn working_orders_are_never_forgotten_however_many_orders_finish_after_them() {
    let mut e = retaining(0);
    let resting = e
        .submit(
            request("rest", Side::Buy, OrderType::Limit, Some("50")),
            now(),
        )
        .unwrap();
    assert_eq!(resting.order.status, PbStatus::New as i32);
    for i in 0..20 {
        e.submit(market(&format!("m{i}"), Side::Buy), now())
            .unwrap();
    }
    let held = e
        .get("acct", &OrderRef::ClientOrderId("rest".into()))
        .unwrap();
    assert_eq!(held.status, PbStatus::New as i32);
    let repeat = e
        .submit(
            request("rest", Side::Buy, OrderType::Limit, Some("50")),
            now(),
        )
        .unwrap();
    assert!(
        repeat.duplicate,
        "a working order's id answers with the order itself"
    );
    // Only the newest finished order is held; the working one pins nothing else.
    assert_eq!(e.history_held(), (1, 19));
    let copy = replayed(&mut e);
    assert_eq!(copy.digest(), e.digest());
}

#[test]
fn a_risk_denial_is_a_rejected_order_with_the_reason() {
    let mut e = engine();
    let limits = RiskLimits {
        max_order_quantity: Some(d("1")),
        ..Default::default()
    };
    e.set_risk_limits("acct", TradingMode::Paper, limits, &Actor::default(), now());
    let done = e.submit(market("big", Side::Buy), now()).unwrap();
    assert_eq!(done.order.status, PbStatus::Rejected as i32);
    assert_eq!(
        done.order.reject_reason,
        v1::RejectReason::RiskMaxQuantity as i32
    );
    assert_eq!(e.open_orders(), 0);
}

#[test]
fn a_halted_account_rejects_orders_but_flatten_still_closes_positions() {
    let mut e = engine();
    e.submit(market("b", Side::Buy), now()).unwrap();
    e.set_trading_state("acct", "", TradingState::Halted, &Actor::default(), now());
    let done = e.submit(market("b2", Side::Buy), now()).unwrap();
    assert_eq!(
        done.order.reject_reason,
        v1::RejectReason::TradingHalted as i32
    );
    let orders = e.flatten_orders("acct", "", "");
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].side, Side::Sell);
    let Begin::New { idx, .. } = e.begin_flatten(orders[0].clone(), now()).unwrap() else {
        panic!("flatten order not accepted");
    };
    e.venue_submit(idx, now(), Instant::now()).unwrap();
    assert_eq!(e.positions("acct", "").0[0].quantity, "0");
}

#[test]
fn a_lost_acknowledgement_leaves_the_order_unknown_until_reconciliation() {
    let mut paper = PaperConfig::default();
    paper.faults.lost_ack_probability = 1.0;
    let mut e = Engine::in_memory("s0", paper);
    e.on_quote("paper", "BTC-USDT", Quote::around(d("100")), now());
    let done = e.submit(market("m1", Side::Buy), now()).unwrap();
    assert_eq!(done.order.status, PbStatus::Unknown as i32);
    assert_eq!(e.reconcile(now(), false), 1);
    let order = e
        .get("acct", &OrderRef::ClientOrderId("m1".into()))
        .unwrap();
    assert_eq!(
        order.status,
        PbStatus::Filled as i32,
        "the venue had filled it"
    );
    assert_eq!(e.trades(&query(10)).unwrap().0.len(), 1);
    assert_eq!(e.reconcile(now(), false), 0, "nothing left to resolve");
}

#[test]
fn an_intent_the_venue_never_received_is_sent_once_by_reconciliation() {
    let mut e = engine();
    let Begin::New { .. } = e.begin_submit(market("m1", Side::Buy), now()).unwrap() else {
        panic!()
    };
    // As after a crash: the in-flight marker is gone, the venue has no trace of the order.
    e.in_flight.clear();
    assert_eq!(e.reconcile(now(), true), 1);
    let order = e
        .get("acct", &OrderRef::ClientOrderId("m1".into()))
        .unwrap();
    assert_eq!(order.status, PbStatus::Filled as i32);
    let sent: Vec<_> = e.venue.venue_orders().map(|(_, n)| n).collect();
    assert_eq!(sent, [1]);
    assert_eq!(e.reconcile(now(), true), 0);
}

#[test]
fn fill_latency_defers_the_arrival_match() {
    let mut paper = PaperConfig::default();
    paper.latency.fill_us = 1000;
    let mut e = Engine::in_memory("s0", paper);
    e.on_quote("paper", "BTC-USDT", Quote::around(d("100")), now());
    let Begin::New { idx, .. } = e.begin_submit(market("m1", Side::Buy), now()).unwrap() else {
        panic!()
    };
    let outcome = e.venue_submit(idx, now(), Instant::now()).unwrap();
    assert_eq!(outcome.order.status, PbStatus::New as i32);
    assert!(outcome.arrival.is_some());
    e.arrive(idx, now());
    assert_eq!(e.order_at(idx).unwrap().status, PbStatus::Filled as i32);
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Market(bool, u32),
        Limit(bool, u32, u32),
        Quote(u32),
        Cancel(usize),
        Halt(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<bool>(), 1u32..50).prop_map(|(b, q)| Op::Market(b, q)),
            (any::<bool>(), 1u32..50, 90u32..110).prop_map(|(b, q, p)| Op::Limit(b, q, p)),
            (90u32..110).prop_map(Op::Quote),
            (0usize..30).prop_map(Op::Cancel),
            any::<bool>().prop_map(Op::Halt),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn replaying_the_journal_gives_the_state_of_the_live_run(ops in prop::collection::vec(op(), 1..60), retain in 0usize..6, split in any::<prop::sample::Index>()) {
            let mut paper = PaperConfig::default();
            paper.depth.displayed_size = true;
            paper.depth.synthetic_levels = 2;
            let mut e = Engine::in_memory("s0", paper.clone());
            // The same flow on an engine that forgets all but `retain` finished orders.
            let mut f = Engine::in_memory("s0", paper).with_retention(Retention {
                finished_orders: retain,
                idempotency_window: Duration::from_secs(60),
            });
            let book = |mid: u32| Quote::around(Decimal::from(mid));
            f.on_top_of_book("paper", "BTC-USDT", book(100), (Some(d("0.2")), Some(d("0.2"))), now());
            e.on_top_of_book("paper", "BTC-USDT", book(100), (Some(d("0.2")), Some(d("0.2"))), now());
            for (n, op) in ops.into_iter().enumerate() {
                for e in [&mut e, &mut f] {
                    apply_op(e, op.clone(), n + 1);
                }
            }
            let copy = replayed(&mut e);
            prop_assert_eq!(copy.digest(), e.digest());
            // What the API shows of each order and fill, field by field.
            prop_assert_eq!(shown(&copy), shown(&e));
            let journal = records(&mut f);
            let fresh = twins(f.retention);
            let copy = replay_all(fresh(), &journal);
            prop_assert_eq!(copy.digest(), f.digest());
            // A snapshot at any record, restored, and the journal after it: the same state.
            let restored = replayed_through_a_snapshot(&journal, split.index(journal.len() + 1), &fresh);
            prop_assert_eq!(restored.digest(), copy.digest());
            prop_assert_eq!(restored.checkpoint(), copy.checkpoint());
            // Forgetting finished orders changes no position and no balance.
            prop_assert_eq!(f.positions("acct", ""), e.positions("acct", ""));
            // Positions equal the sum of the fills.
            let (fills, _) = e.trades(&query(1000)).unwrap();
            let net: Decimal = fills.iter().map(|f| {
                let q: Decimal = f.quantity.parse().unwrap();
                if f.side == v1::Side::Buy as i32 { q } else { -q }
            }).sum();
            let position = e.positions("acct", "").0.first().map_or(Decimal::ZERO, |p| p.quantity.parse().unwrap());
            prop_assert_eq!(position, net);
        }
    }

    fn apply_op(e: &mut Engine, op: Op, n: usize) {
        let book = |mid: u32| Quote::around(Decimal::from(mid));
        let id = format!("o{n}");
        let side = |b: bool| if b { Side::Buy } else { Side::Sell };
        let qty = |q: u32| Quantity::new_checked(Decimal::new(q.into(), 2)).unwrap();
        match op {
            Op::Market(b, q) => {
                let mut r = market(&id, side(b));
                r.quantity = qty(q);
                e.submit(r, now()).unwrap();
            }
            Op::Limit(b, q, p) => {
                let mut r = request(&id, side(b), OrderType::Limit, Some(&p.to_string()));
                r.quantity = qty(q);
                e.submit(r, now()).unwrap();
            }
            Op::Quote(mid) => e.on_top_of_book(
                "paper",
                "BTC-USDT",
                book(mid),
                (Some(d("0.3")), Some(d("0.3"))),
                now(),
            ),
            Op::Cancel(i) => {
                let _ = e.cancel("acct", &OrderRef::ClientOrderId(format!("o{i}")), now());
            }
            Op::Halt(h) => {
                let state = if h {
                    TradingState::ReduceOnly
                } else {
                    TradingState::Active
                };
                e.set_trading_state("acct", "", state, &Actor::default(), now());
            }
        }
    }
}

#[test]
fn the_order_rate_limit_counts_the_account_s_submits_of_the_last_second() {
    let mut e = engine();
    let limits = RiskLimits {
        max_orders_per_second: Some(3),
        ..Default::default()
    };
    e.set_risk_limits("acct", TradingMode::Paper, limits, &Actor::default(), now());
    let status = |e: &mut Engine, id: &str, at: SystemTime| {
        let done = e.submit(market(id, Side::Buy), at).unwrap();
        (done.order.status, done.order.reject_reason)
    };
    let filled = (PbStatus::Filled as i32, 0);
    let too_fast = (
        PbStatus::Rejected as i32,
        v1::RejectReason::RiskOrderRate as i32,
    );
    for id in ["r1", "r2", "r3"] {
        assert_eq!(status(&mut e, id, now()), filled, "{id}");
    }
    // A fourth within the second is refused; the refused one counts as a submit too.
    let later = now() + Duration::from_millis(900);
    assert_eq!(status(&mut e, "r4", later), too_fast);
    // Once the first three are a second old, only r4 is left in the window.
    let next = now() + Duration::from_millis(1000);
    assert_eq!(status(&mut e, "r5", next), filled);
    assert_eq!(status(&mut e, "r6", next), filled);
    assert_eq!(status(&mut e, "r7", next), too_fast);
}
