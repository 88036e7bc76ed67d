use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use execbridge_api::v1;

use super::*;

fn entries(n: u64) -> Vec<Entry> {
    (1..=n)
        .map(|lsn| Entry {
            lsn,
            time: prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: lsn as i32,
            },
            payload: Payload::Update(Arc::new(v1::OrderUpdate {
                shard: "s0".into(),
                sequence: lsn,
                event: v1::OrderEventType::Accepted as i32,
                order: Some(v1::Order {
                    order_id: format!("s0-{lsn}"),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        })
        .collect()
}

fn chained(n: u64) -> Vec<AuditEntry> {
    Chain {
        last_lsn: 0,
        last_hash: GENESIS.into(),
    }
    .link(&entries(n))
}

#[test]
fn an_untouched_chain_verifies() {
    let v = verify_entries(&chained(5));
    assert_eq!(
        v,
        Verdict {
            entries: 5,
            first_lsn: Some(1),
            first_bad: None
        }
    );
}

#[test]
fn an_edited_entry_is_named() {
    let mut chain = chained(5);
    chain[2].payload = r#"{"status":"FILLED"}"#.into();
    let v = verify_entries(&chain);
    assert_eq!(v.first_bad.map(|b| b.0), Some(3));
}

#[test]
fn a_removed_entry_is_named() {
    let mut chain = chained(5);
    chain.remove(1);
    assert_eq!(verify_entries(&chain).first_bad.map(|b| b.0), Some(3));
}

#[test]
fn the_sqlite_sink_keeps_the_chain_and_verify_finds_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.sqlite");
    let mut sink = SqliteSink::open(&path, "execbridge_audit").unwrap();
    // FULL (2): a commit is durable before the trail calls it written.
    let synchronous: i64 = sink
        .connection()
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(synchronous, 2);
    sink.write(&chained(4)).unwrap();
    assert_eq!(sink.last().unwrap().map(|l| l.0), Some(4));
    let target = path.to_str().unwrap();
    assert_eq!(verify(target, "execbridge_audit").unwrap().first_bad, None);
    sink.connection()
        .execute(
            "UPDATE execbridge_audit SET account = 'mallory' WHERE lsn = 2",
            [],
        )
        .unwrap();
    let v = verify(target, "execbridge_audit").unwrap();
    assert_eq!(v.first_bad.map(|b| b.0), Some(2));
}

#[test]
fn the_postgres_sink_against_the_real_server() {
    let Ok(url) = std::env::var("EXECBRIDGE_TEST_POSTGRES_URL") else {
        println!(
            "SKIPPED: EXECBRIDGE_TEST_POSTGRES_URL is not set; the PostgreSQL audit sink was not tested"
        );
        return;
    };
    let table = format!("audit_test_{}", std::process::id());
    // A server or URL default of asynchronous commits does not reach the sink's session.
    let lax = if url.contains("://") {
        let join = if url.contains('?') { '&' } else { '?' };
        format!("{url}{join}options=-c%20synchronous_commit%3Doff")
    } else {
        format!("{url} options='-c synchronous_commit=off'")
    };
    let mut sink = PostgresSink::connect(&lax, &table).unwrap();
    assert_eq!(sink.setting("synchronous_commit").unwrap(), "on");
    sink.write(&chained(3)).unwrap();
    assert_eq!(sink.last().unwrap().map(|l| l.0), Some(3));
    assert_eq!(
        verify(&url, &table).unwrap(),
        Verdict {
            entries: 3,
            first_lsn: Some(1),
            first_bad: None
        }
    );
    sink.execute(&format!(
        "UPDATE {table} SET payload = '{{}}' WHERE lsn = 3"
    ))
    .unwrap();
    assert_eq!(
        verify(&url, &table).unwrap().first_bad.map(|b| b.0),
        Some(3)
    );
    sink.execute(&format!("DROP TABLE {table}")).unwrap();
}

#[test]
fn the_postgres_sink_reconnects_after_losing_its_connection() {
    let Ok(url) = std::env::var("EXECBRIDGE_TEST_POSTGRES_URL") else {
        println!(
            "SKIPPED: EXECBRIDGE_TEST_POSTGRES_URL is not set; the PostgreSQL audit sink was not tested"
        );
        return;
    };
    let table = format!("audit_reconnect_{}", std::process::id());
    let mut sink = PostgresSink::connect(&url, &table).unwrap();
    let all = chained(6);
    sink.write(&all[..3]).unwrap();
    // Another session ends the sink's server process, as a server restart would.
    let pid = sink.backend_pid().unwrap();
    let mut admin = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let row = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    assert!(row.get::<_, bool>(0), "the backend was terminated");
    // The next batch goes through on a new connection, and repeating a batch that is
    // already there neither duplicates nor breaks the chain.
    sink.write(&all[3..]).unwrap();
    assert_ne!(sink.backend_pid().unwrap(), pid, "a new connection");
    sink.write(&all[3..]).unwrap();
    assert_eq!(
        verify(&url, &table).unwrap(),
        Verdict {
            entries: 6,
            first_lsn: Some(1),
            first_bad: None
        }
    );
    sink.execute(&format!("DROP TABLE {table}")).unwrap();
}

#[cfg(feature = "questdb")]
#[test]
fn the_questdb_sink_sends_line_protocol_rows() {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut out = Vec::new();
        conn.read_to_end(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut sink =
        QuestdbSink::connect(&addr, "execbridge_audit", &dir.path().join("state")).unwrap();
    sink.write(&chained(2)).unwrap();
    assert_eq!(sink.last().unwrap().map(|l| l.0), Some(2));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("state")).unwrap(),
        format!("2 {}\n", chained(2)[1].hash)
    );
    assert!(
        !dir.path().join("state.tmp").exists(),
        "the state is renamed into place"
    );
    drop(sink);
    let text = reader.join().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with(
            "execbridge_audit,kind=ORDER_ACCEPTED,account= lsn=1i,sequence=1i,order_id=\"s0-1\""
        ),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains(&format!("prev_hash=\"{}\"", chained(2)[0].hash)));
    assert!(lines[0].ends_with("1700000000000000001"), "{}", lines[0]);
}

/// An SQLite sink that is slow, and refuses its first writes.
struct Troubled {
    inner: SqliteSink,
    delay: Duration,
    refuse_first: usize,
    writes: Arc<AtomicUsize>,
}

impl AuditSink for Troubled {
    fn last(&mut self) -> Result<Option<(u64, String)>, AuditError> {
        self.inner.last()
    }

    fn write(&mut self, entries: &[AuditEntry]) -> Result<(), AuditError> {
        if self.writes.fetch_add(1, Ordering::SeqCst) < self.refuse_first {
            return Err(AuditError::sink("test", "refused"));
        }
        std::thread::sleep(self.delay);
        self.inner.write(entries)
    }

    fn read_all(&mut self) -> Result<Vec<AuditEntry>, AuditError> {
        self.inner.read_all()
    }
}

/// Hands each durable group to the audit trail, as the shard's fanout does.
struct ToAudit(AuditFeed);

impl journal::AfterSync for ToAudit {
    fn synced(&mut self, entries: &[Entry]) {
        self.0.send(entries);
    }
}

/// A journal in `dir` without fdatasync (the tests are about the trail, not the disk),
/// rotating every `segment_bytes`, that hands each durable group to `after`.
fn test_journal(
    dir: &Path,
    segment_bytes: u64,
    after: Box<dyn journal::AfterSync>,
) -> journal::Journal {
    let options = journal::Options {
        fsync: false,
        segment_bytes,
        max_batch: 1000,
        sync_delay: Duration::from_millis(1),
        inline_records: 64,
    };
    journal::Journal::start(dir, 0, options, after).unwrap()
}

/// Appends records 1 to `records` in groups of `group`, each durable before the next.
fn append_in_groups(j: &journal::Journal, records: u64, group: usize) {
    for chunk in entries(records).chunks(group) {
        j.append(chunk.to_vec(), true)
            .unwrap()
            .wait_blocking()
            .unwrap();
    }
}

/// Journals `records` in groups of `group` through a trail on `sink` whose queue holds
/// `queue` records and which writes what it gathered every `flush`, closes both and
/// returns what the trail's file verifies to, and the newest LSN the feed left out of the
/// queue (0: none).
fn journal_through(
    dir: &Path,
    sink: Troubled,
    (queue, flush): (usize, Duration),
    records: u64,
    group: usize,
) -> (Verdict, u64) {
    let journal_dir = dir.join("journal");
    let audit = Audit::with_sink(Box::new(sink), &journal_dir, 0, queue, flush).unwrap();
    let mut j = test_journal(&journal_dir, 64 * 1024, Box::new(ToAudit(audit.feed())));
    append_in_groups(&j, records, group);
    // The live trail completes (from its queue and the journal) without a restart.
    let path = dir.join("audit.sqlite");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut verdict = verify(path.to_str().unwrap(), "execbridge_audit").unwrap();
    while verdict.entries < records && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        verdict = verify(path.to_str().unwrap(), "execbridge_audit").unwrap();
    }
    j.close();
    drop(j);
    let left_out = audit.feed.shared.left_out.load(Ordering::SeqCst);
    audit.close();
    (verdict, left_out)
}

fn troubled(dir: &Path, delay: Duration, refuse_first: usize) -> (Troubled, Arc<AtomicUsize>) {
    let writes = Arc::new(AtomicUsize::new(0));
    let sink = Troubled {
        inner: SqliteSink::open(&dir.join("audit.sqlite"), "execbridge_audit").unwrap(),
        delay,
        refuse_first,
        writes: writes.clone(),
    };
    (sink, writes)
}

#[test]
fn a_slow_sink_costs_journal_reads_not_memory_or_records() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, writes) = troubled(dir.path(), Duration::from_millis(3), 0);
    let read_back = crate::metrics::get().audit_read_back.get();
    // A queue of 8 records against a sink that takes 3 ms a write: most groups do not fit
    // and are read back from the journal (several segments of it).
    let (verdict, left_out) = journal_through(dir.path(), sink, (8, Duration::ZERO), 3000, 4);
    assert!(left_out > 0, "groups were left out of the queue");
    assert_eq!(
        verdict,
        Verdict {
            entries: 3000,
            first_lsn: Some(1),
            first_bad: None
        }
    );
    assert!(
        crate::metrics::get().audit_read_back.get() > read_back,
        "records were read back from the journal"
    );
    assert!(
        writes.load(Ordering::SeqCst) < 750,
        "fewer writes than groups: read-back writes are batched"
    );
    assert!(
        journal::segments(&dir.path().join("journal"))
            .unwrap()
            .len()
            > 1
    );
}

#[test]
fn a_failed_sink_write_is_retried_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, writes) = troubled(dir.path(), Duration::ZERO, 3);
    let failures = crate::metrics::get().audit_write_failures.get();
    let (verdict, _) = journal_through(dir.path(), sink, (100_000, Duration::ZERO), 200, 10);
    assert_eq!(
        verdict,
        Verdict {
            entries: 200,
            first_lsn: Some(1),
            first_bad: None
        }
    );
    assert!(writes.load(Ordering::SeqCst) > 3);
    assert!(crate::metrics::get().audit_write_failures.get() >= failures + 3);
}

#[test]
fn the_trail_writes_what_it_gathered_over_the_flush_interval_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, writes) = troubled(dir.path(), Duration::ZERO, 0);
    let flush = Duration::from_millis(200);
    let started = std::time::Instant::now();
    // 300 durable groups of 3, each committed before the next.
    let (verdict, left_out) = journal_through(dir.path(), sink, (100_000, flush), 900, 3);
    let elapsed = started.elapsed();
    assert_eq!(
        verdict,
        Verdict {
            entries: 900,
            first_lsn: Some(1),
            first_bad: None
        }
    );
    assert_eq!(left_out, 0, "everything fitted in the queue");
    // A write at most every interval, plus the one at close.
    let most = elapsed.as_millis() / flush.as_millis() + 2;
    let writes = writes.load(Ordering::SeqCst);
    assert!(
        (writes as u128) <= most && writes < 300,
        "{writes} sink writes for 300 groups in {elapsed:?}"
    );
}

#[test]
fn the_trail_runs_below_the_order_path_priority() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, _) = troubled(dir.path(), Duration::ZERO, 0);
    let audit = Audit::with_sink(
        Box::new(sink),
        &dir.path().join("journal"),
        0,
        10,
        Duration::ZERO,
    )
    .unwrap();
    let thread = audit.thread.as_ref().unwrap().thread().clone();
    // The thread lowers its own priority as it starts; its nice value is field 19 of
    // /proc/self/task/<tid>/stat (after the parenthesised name).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let nice_values = loop {
        let values: Vec<i32> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| {
                let path = task.ok()?.path();
                let comm = std::fs::read_to_string(path.join("comm")).ok()?;
                (comm.trim() == thread.name()?).then_some(())?;
                let stat = std::fs::read_to_string(path.join("stat")).ok()?;
                let after_name = stat.rsplit_once(')')?.1;
                after_name.split_whitespace().nth(16)?.parse().ok()
            })
            .collect();
        if values.contains(&BACKGROUND_NICE) || std::time::Instant::now() > deadline {
            break values;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    audit.close();
    assert!(
        nice_values.contains(&BACKGROUND_NICE),
        "audit threads' nice values: {nice_values:?}"
    );
}

/// Ignores what the journal syncs.
struct Nobody;

impl journal::AfterSync for Nobody {
    fn synced(&mut self, _: &[Entry]) {}
}

/// Records 1 to 500 journaled in groups of 7 under `dir/journal`, in 4 KiB segments.
fn five_hundred_records(dir: &Path) -> std::path::PathBuf {
    let journal_dir = dir.join("journal");
    let mut j = test_journal(&journal_dir, 4096, Box::new(Nobody));
    append_in_groups(&j, 500, 7);
    j.close();
    journal_dir
}

#[test]
fn a_trail_behind_the_journal_catches_up_from_where_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = five_hundred_records(dir.path());
    // The trail holds the first 120 records.
    let (mut sink, _) = troubled(dir.path(), Duration::ZERO, 0);
    sink.write(&chained(120)).unwrap();
    let audit = Audit::with_sink(Box::new(sink), &journal_dir, 500, 10, Duration::ZERO).unwrap();
    audit.close();
    let path = dir.path().join("audit.sqlite");
    assert_eq!(
        verify(path.to_str().unwrap(), "execbridge_audit").unwrap(),
        Verdict {
            entries: 500,
            first_lsn: Some(1),
            first_bad: None
        }
    );
}

#[test]
fn a_trail_whose_end_the_journal_no_longer_holds_is_refused_not_chained_over_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = five_hundred_records(dir.path());
    // The trail holds the first 120 records; the segments up to past 121 are gone (an
    // older copy of the trail put back after the journal moved on).
    let (mut sink, _) = troubled(dir.path(), Duration::ZERO, 0);
    sink.write(&chained(120)).unwrap();
    let files = journal::segments(&journal_dir).unwrap();
    let keep = files
        .iter()
        .position(|p| journal::first_lsn_of(p).is_some_and(|l| l > 121))
        .unwrap();
    for path in &files[..keep] {
        std::fs::remove_file(path).unwrap();
    }
    let start = journal::first_lsn_of(&files[keep]).unwrap();
    let refused = Audit::with_sink(Box::new(sink), &journal_dir, 500, 10, Duration::ZERO)
        .err()
        .expect("a trail chained over a gap");
    assert!(
        refused.to_string().contains(&format!(
            "the audit trail ends at lsn 120, the journal's records start at {start}"
        )),
        "{refused}"
    );
    // Nothing was chained after the gap.
    let path = dir.path().join("audit.sqlite");
    assert_eq!(
        verify(path.to_str().unwrap(), "execbridge_audit").unwrap(),
        Verdict {
            entries: 120,
            first_lsn: Some(1),
            first_bad: None
        }
    );
}
