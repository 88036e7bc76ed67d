use std::fs;

use execbridge_domain::Side;

use super::*;
use crate::config::PaperConfig;

fn checkpoint_at(orders: usize) -> Checkpoint {
    let mut e = Engine::in_memory("s0", PaperConfig::default());
    e.on_quote(
        "paper",
        "BTC-USDT",
        crate::paper::Quote::around(100.into()),
        std::time::SystemTime::now(),
    );
    for i in 0..orders {
        let proto = execbridge_testutil::paper_market_order("snap", i as u64, 2);
        let mut request = execbridge_api::convert::order_request_from_proto(&proto, "").unwrap();
        request.side = Side::Buy;
        e.submit(request, std::time::SystemTime::now()).unwrap();
    }
    e.take_outbox();
    e.checkpoint()
}

fn touch(dir: &Path, name: &str) {
    fs::write(dir.join(name), b"").unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    out.sort();
    out
}

#[test]
fn a_snapshot_reads_back_as_written_and_damage_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = checkpoint_at(3);
    assert!(checkpoint.lsn > 0);
    let path = write(dir.path(), &checkpoint).unwrap();
    assert_eq!(
        path.file_name().unwrap().to_str().unwrap(),
        format!("snapshot-{:020}.json", checkpoint.lsn)
    );
    assert_eq!(read(&path).unwrap(), checkpoint);
    assert_eq!(names(dir.path()).len(), 1, "no temporary file is left");

    let mut data = fs::read(&path).unwrap();
    let last = data.len() - 2;
    data[last] ^= 0x20;
    fs::write(&path, &data).unwrap();
    let err = read(&path).unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");

    fs::write(&path, &data[..data.len() / 2]).unwrap();
    let err = read(&path).unwrap_err().to_string();
    assert!(err.contains("the header says"), "{err}");

    fs::write(&path, b"not a snapshot at all").unwrap();
    let err = read(&path).unwrap_err().to_string();
    assert!(err.contains("bad header"), "{err}");

    // Renamed to another LSN: refused, the state would be applied at the wrong place.
    let good = write(dir.path(), &checkpoint).unwrap();
    let moved = dir.path().join(name_of(checkpoint.lsn + 5));
    fs::rename(&good, &moved).unwrap();
    let err = read(&moved).unwrap_err().to_string();
    assert!(err.contains("named for lsn"), "{err}");
}

#[test]
fn the_newest_snapshot_that_reads_back_is_used() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(newest(dir.path()).unwrap(), None);
    let older = checkpoint_at(1);
    let newer = checkpoint_at(2);
    assert!(newer.lsn > older.lsn);
    write(dir.path(), &older).unwrap();
    let path = write(dir.path(), &newer).unwrap();
    assert_eq!(newest(dir.path()).unwrap().unwrap().lsn, newer.lsn);
    fs::write(&path, b"EBSNAP01 torn").unwrap();
    assert_eq!(
        newest(dir.path()).unwrap().unwrap().lsn,
        older.lsn,
        "a damaged newest snapshot falls back to the older one"
    );
}

#[test]
fn prune_keeps_two_snapshots_and_the_segments_they_and_the_audit_trail_need() {
    let dir = tempfile::tempdir().unwrap();
    for first in [1u64, 101, 201, 301] {
        touch(dir.path(), &format!("journal-{first:020}.log"));
    }
    for lsn in [120u64, 210, 260] {
        touch(dir.path(), &name_of(lsn));
    }
    // The audit trail has written up to 150 only: segment 1..=100 may go, 101..=200 not.
    assert_eq!(prune(dir.path(), Some(150)).unwrap(), 1);
    assert_eq!(
        names(dir.path()),
        [
            "journal-00000000000000000101.log",
            "journal-00000000000000000201.log",
            "journal-00000000000000000301.log",
            "snapshot-00000000000000000210.json",
            "snapshot-00000000000000000260.json",
        ]
    );
    // Without a trail: up to the older snapshot kept (210); 201..=300 holds 210 and stays.
    assert_eq!(prune(dir.path(), None).unwrap(), 1);
    assert_eq!(names(dir.path())[0], "journal-00000000000000000201.log");
    // The segment being written is never deleted, however far the snapshots are.
    touch(dir.path(), &name_of(900));
    touch(dir.path(), &name_of(901));
    assert_eq!(prune(dir.path(), None).unwrap(), 1);
    assert_eq!(
        names(dir.path()),
        [
            "journal-00000000000000000301.log",
            "snapshot-00000000000000000900.json",
            "snapshot-00000000000000000901.json",
        ]
    );
}

#[test]
fn without_a_snapshot_nothing_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    for first in [1u64, 101] {
        touch(dir.path(), &format!("journal-{first:020}.log"));
    }
    assert_eq!(prune(dir.path(), None).unwrap(), 0);
    assert_eq!(names(dir.path()).len(), 2);
}

/// Waits up to 10 s for `done`.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn segments_the_trail_held_back_are_deleted_once_it_has_written_them_without_a_new_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    for first in [1u64, 101, 201] {
        touch(dir.path(), &format!("journal-{first:020}.log"));
    }
    touch(dir.path(), &name_of(250));
    let (_durable_tx, durable) = tokio::sync::watch::channel(Durable {
        lsn: 250,
        failed: None,
    });
    let audited = Arc::new(AtomicU64::new(50));
    // No snapshot is due for a million records: only the trail's progress can delete.
    let mut snapshots = Snapshots::start(
        dir.path().to_owned(),
        1_000_000,
        || Engine::in_memory("s0", PaperConfig::default()),
        durable,
        Some(audited.clone()),
    )
    .unwrap();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        names(dir.path()).len(),
        4,
        "the trail holds segment 1..=100"
    );

    audited.store(150, Ordering::Release);
    eventually("segment 1..=100 is deleted", || {
        names(dir.path())[0] == "journal-00000000000000000101.log"
    });
    audited.store(250, Ordering::Release);
    eventually("segment 101..=200 is deleted", || {
        names(dir.path())[0] == "journal-00000000000000000201.log"
    });
    snapshots.close();
    assert_eq!(
        names(dir.path()),
        [
            "journal-00000000000000000201.log",
            "snapshot-00000000000000000250.json"
        ],
        "the segment being written and the snapshot stay"
    );
}
