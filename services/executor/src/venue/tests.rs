use std::time::{Instant, SystemTime};

use execbridge_domain::{Liquidity, Price, Quantity};
use rust_decimal::Decimal;

use super::*;

fn accepted(venue: &mut PaperVenue, client_order_id: &str) -> String {
    match venue.receive("acct", client_order_id, Instant::now()) {
        Received::Accepted { venue_order_id, .. } => venue_order_id,
        other => panic!("not accepted: {other:?}"),
    }
}

fn fill(venue: &mut PaperVenue, venue_order_id: &str) -> Fill {
    venue.execute(
        venue_order_id,
        Price::new_checked(Decimal::new(101, 0)).unwrap(),
        Quantity::new_checked(Decimal::new(5, 1)).unwrap(),
        Liquidity::Taker,
        "USDT",
        SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(1_700_000_000_123_456_789),
    )
}

/// A venue on `path` that took four orders: one rejected (written to its ledger before it
/// opened), one filled, one canceled, and one filled and then forgotten.
fn venue_with_history(path: &Path) -> PaperVenue {
    let rejected = LedgerEntry::Rejected {
        account: "acct".into(),
        client_order_id: "r1".into(),
        message: "refused".into(),
    };
    fs::write(
        path,
        format!("{}\n", serde_json::to_string(&rejected).unwrap()),
    )
    .unwrap();
    let mut venue = PaperVenue::open("s1", PaperConfig::default(), Some(path)).unwrap();
    let filled = accepted(&mut venue, "c1");
    fill(&mut venue, &filled);
    let canceled = accepted(&mut venue, "c2");
    venue.finish(&canceled, true);
    let forgotten = accepted(&mut venue, "c3");
    fill(&mut venue, &forgotten);
    venue.forget("acct", "c3");
    venue.flush();
    venue
}

#[test]
fn a_compacted_ledger_keeps_what_the_venue_remembers_and_the_old_file_as_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paper-venue.jsonl");
    let mut venue = venue_with_history(&path);
    let old = fs::read(&path).unwrap();

    // The executor's open orders: c1 and c2 (r1 was refused; c3 is forgotten).
    let open = |_: &str, client_order_id: &str| ["c1", "c2"].contains(&client_order_id);
    assert_eq!(venue.compact_ledger(0, open).unwrap(), None, "0: never");
    let not_past = old.len() as u64 + 1;
    assert_eq!(venue.compact_ledger(not_past, open).unwrap(), None);
    let compacted = venue
        .compact_ledger(old.len() as u64, open)
        .unwrap()
        .unwrap();
    assert_eq!(compacted.before, old.len() as u64);
    assert_eq!(compacted.orders, 2);
    assert_eq!(venue.remembered(), 3, "memory is not changed");
    assert_eq!(compacted.archive, dir.path().join("paper-venue.jsonl.1"));
    assert_eq!(
        fs::read(&compacted.archive).unwrap(),
        old,
        "the history is the old file"
    );
    assert_eq!(fs::metadata(&path).unwrap().len(), compacted.after);
    assert!(compacted.after < compacted.before, "{compacted:?}");
    assert!(!dir.path().join("paper-venue.jsonl.compacting").exists());

    // A start reads back the records kept, and makes no id twice.
    let mut reopened = PaperVenue::open("s1", PaperConfig::default(), Some(&path)).unwrap();
    assert_eq!(reopened.remembered(), 2);
    for client_order_id in ["c1", "c2"] {
        assert_eq!(
            reopened.lookup("acct", client_order_id),
            venue.lookup("acct", client_order_id),
            "{client_order_id}"
        );
    }
    assert_eq!(reopened.lookup("acct", "r1"), None);
    assert_eq!(reopened.lookup("acct", "c3"), None);
    assert!(reopened.lookup("acct", "c1").unwrap().fills.len() == 1);
    assert_eq!(reopened.lookup("acct", "c2").unwrap().done, Some(true));
    let next = accepted(&mut reopened, "c4");
    assert_eq!(next, "paper-s1-4", "after c1, c2 and c3");
    assert_eq!(
        fill(&mut reopened, &next).trade_id,
        "s1-t3",
        "after two trades"
    );
    // Written after the compaction, to the compacted file.
    reopened.flush();
    let counted = count_venue_orders(&path).unwrap();
    let expected: HashMap<_, _> = ["c1", "c2", "c3", "c4"]
        .into_iter()
        .map(|c| (("acct".to_owned(), c.to_owned()), 1))
        .collect();
    assert_eq!(
        counted, expected,
        "history and ledger together, each venue order once"
    );

    // The next compaction keeps the next history file.
    let again = reopened.compact_ledger(1, |_, _| true).unwrap().unwrap();
    assert_eq!(again.archive, dir.path().join("paper-venue.jsonl.2"));
    assert_eq!(again.orders, 3, "c1, c2 and c4");
    assert_eq!(count_venue_orders(&path).unwrap(), expected);
}

#[test]
fn a_compaction_that_crashed_after_keeping_the_history_is_finished_without_a_second_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paper-venue.jsonl");
    drop(venue_with_history(&path));
    let old = fs::read(&path).unwrap();
    // The crash: the history link made, a half-written compacted file, no rename.
    fs::hard_link(&path, dir.path().join("paper-venue.jsonl.1")).unwrap();
    fs::write(
        dir.path().join("paper-venue.jsonl.compacting"),
        "{\"t\":\"acc",
    )
    .unwrap();

    let mut venue = PaperVenue::open("s1", PaperConfig::default(), Some(&path)).unwrap();
    let compacted = venue.compact_ledger(1, |_, _| true).unwrap().unwrap();
    assert_eq!(compacted.archive, dir.path().join("paper-venue.jsonl.1"));
    assert!(
        !dir.path().join("paper-venue.jsonl.2").exists(),
        "no second copy"
    );
    assert_eq!(fs::read(&compacted.archive).unwrap(), old);
    // Forgotten orders were not dropped here (a fresh venue remembers its whole ledger).
    assert_eq!(compacted.orders, 4);
    let counted = count_venue_orders(&path).unwrap();
    assert_eq!(
        counted.len(),
        3,
        "c1, c2, c3 (r1 never became a venue order)"
    );
    assert!(counted.values().all(|n| *n == 1), "{counted:?}");
}

#[test]
fn history_files_are_the_ledgers_name_and_a_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paper-venue.jsonl");
    for name in [
        "paper-venue.jsonl.3",
        "paper-venue.jsonl.10",
        "paper-venue.jsonl.compacting",
        "paper-venue.jsonl.x1",
        "other.jsonl.2",
    ] {
        fs::write(dir.path().join(name), "").unwrap();
    }
    let found: Vec<u64> = ledger_history(&path)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(found, [3, 10]);
}

#[test]
fn a_compaction_deletes_the_history_files_older_than_the_newest_it_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paper-venue.jsonl");
    drop(venue_with_history(&path));
    let config = PaperConfig {
        ledger_history_files: 2,
        ..PaperConfig::default()
    };
    let mut venue = PaperVenue::open("s1", config, Some(&path)).unwrap();
    let mut pruned = Vec::new();
    for round in 0..4_u64 {
        accepted(&mut venue, &format!("n{round}"));
        let compacted = venue.compact_ledger(1, |_, _| true).unwrap().unwrap();
        pruned.push(compacted.pruned);
        let kept: Vec<u64> = ledger_history(&path)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let newest = round + 1;
        let expected: Vec<u64> = (newest.saturating_sub(1).max(1)..=newest).collect();
        assert_eq!(kept, expected, "after compaction {newest}");
    }
    assert_eq!(pruned, [0, 0, 1, 1]);
    // The ledger itself is whole: a start reads back every order the venue remembers.
    let reopened = PaperVenue::open("s1", PaperConfig::default(), Some(&path)).unwrap();
    assert_eq!(reopened.remembered(), venue.remembered());

    // 0 keeps every history file.
    let mut venue = reopened;
    let before = ledger_history(&path).unwrap().len();
    let compacted = venue.compact_ledger(1, |_, _| true).unwrap().unwrap();
    assert_eq!(compacted.pruned, 0);
    assert_eq!(ledger_history(&path).unwrap().len(), before + 1);
}

#[test]
fn facts_written_after_a_torn_last_line_start_a_line_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paper-venue.jsonl");
    drop(venue_with_history(&path));
    // Killed in the middle of a write.
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(br#"{"t":"accepted","account":"ac"#).unwrap();
    drop(file);

    let mut venue = PaperVenue::open("s1", PaperConfig::default(), Some(&path)).unwrap();
    let after = accepted(&mut venue, "c5");
    drop(venue);
    let venue = PaperVenue::open("s1", PaperConfig::default(), Some(&path)).unwrap();
    assert_eq!(
        venue
            .lookup("acct", "c5")
            .map(|r| r.venue_order_ids.clone()),
        Some(vec![after]),
        "the fact after the torn line reads back"
    );
}

#[test]
fn a_compaction_is_due_once_the_ledger_has_grown_by_the_threshold_since_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paper-venue.jsonl");
    let mut venue = venue_with_history(&path);
    let len = fs::metadata(&path).unwrap().len();
    assert!(venue.ledger_due(len) && !venue.ledger_due(len + 1) && !venue.ledger_due(0));
    let compacted = venue.compact_ledger(len, |_, _| true).unwrap().unwrap();
    assert!(!venue.ledger_due(len), "nothing written since");
    // Facts since the compaction count; those it kept do not.
    for i in 0..20 {
        accepted(&mut venue, &format!("n{i}"));
    }
    venue.flush();
    let grown = fs::metadata(&path).unwrap().len() - compacted.after;
    assert!(venue.ledger_due(grown) && !venue.ledger_due(grown + 1));
    assert!(
        PaperVenue::open("s1", PaperConfig::default(), None)
            .unwrap()
            .compact_ledger(1, |_, _| true)
            .unwrap()
            .is_none(),
        "no ledger, nothing to compact"
    );
}
