use std::io::Write;
use std::sync::{Arc, Mutex};

use execbridge_api::v1;

use super::*;

struct Collect(Arc<Mutex<Vec<u64>>>);

impl AfterSync for Collect {
    fn synced(&mut self, entries: &[Entry]) {
        self.0.lock().unwrap().extend(entries.iter().map(|e| e.lsn));
    }
}

fn update(lsn: u64) -> Entry {
    Entry {
        lsn,
        time: prost_types::Timestamp::default(),
        payload: Payload::Update(Arc::new(v1::OrderUpdate {
            shard: "s0".into(),
            sequence: lsn,
            ..Default::default()
        })),
    }
}

fn options(segment_bytes: u64) -> Options {
    Options {
        fsync: true,
        segment_bytes,
        max_batch: 1000,
        sync_delay: std::time::Duration::from_millis(1),
        inline_records: 64,
    }
}

fn start(dir: &Path, last: u64, segment_bytes: u64) -> (Journal, Arc<Mutex<Vec<u64>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let j = Journal::start(
        dir,
        last,
        options(segment_bytes),
        Box::new(Collect(seen.clone())),
    )
    .unwrap();
    (j, seen)
}

fn lsns(dir: &Path) -> Vec<u64> {
    let mut out = Vec::new();
    replay(dir, true, |r| {
        out.push(r.lsn);
        Ok(())
    })
    .unwrap();
    out
}

#[tokio::test]
async fn records_are_durable_in_order_and_replay_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (j, seen) = start(dir.path(), 0, 4096);
    for lsn in 1..=300 {
        let _ = j.append(vec![update(lsn)], false).unwrap();
    }
    j.wait(300).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), (1..=300).collect::<Vec<_>>());
    drop(j);
    assert!(segments(dir.path()).unwrap().len() > 1, "rotated");
    assert_eq!(lsns(dir.path()), (1..=300).collect::<Vec<_>>());
    // Appending after a restart continues the sequence.
    let (j, _) = start(dir.path(), 300, 4096);
    let _ = j.append(vec![update(301)], false).unwrap();
    j.wait(301).await.unwrap();
    drop(j);
    assert_eq!(lsns(dir.path()).last(), Some(&301));
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_and_the_journal_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = start(dir.path(), 0, 1 << 20);
    let _ = j.append((1..=10).map(update).collect(), false).unwrap();
    j.wait(10).await.unwrap();
    drop(j);
    let seg = segments(dir.path()).unwrap().pop().unwrap();
    // A crash in the middle of a write leaves half a record.
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
    drop(f);
    assert_eq!(lsns(dir.path()), (1..=10).collect::<Vec<_>>());
    let (j, _) = start(dir.path(), 10, 1 << 20);
    let _ = j.append(vec![update(11)], false).unwrap();
    j.wait(11).await.unwrap();
    drop(j);
    assert_eq!(lsns(dir.path()).len(), 11);
}

#[test]
fn damage_before_the_tail_stops_the_replay_and_names_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (j, _) = start(dir.path(), 0, 4096);
    let _ = j.append((1..=200).map(update).collect(), false).unwrap();
    rt.block_on(j.wait(200)).unwrap();
    drop(j);
    let first = segments(dir.path()).unwrap().remove(0);
    let mut data = fs::read(&first).unwrap();
    data[20] ^= 0xff;
    fs::write(&first, data).unwrap();
    let err = replay(dir.path(), false, |_| Ok(())).unwrap_err();
    assert!(
        matches!(err, JournalError::Corrupt { offset, .. } if offset <= 20),
        "{err}"
    );
    assert!(
        err.to_string().contains("journal-00000000000000000001.log"),
        "{err}"
    );
}

/// Records 1 to 300 in `dir`, in groups of 20, over more than three segments.
fn three_hundred_records(dir: &Path) -> Vec<PathBuf> {
    let (j, _) = start(dir, 0, 1024);
    for first in (1..=300).step_by(20) {
        j.append((first..first + 20).map(update).collect(), true)
            .unwrap()
            .wait_blocking()
            .unwrap();
    }
    drop(j);
    let files = segments(dir).unwrap();
    assert!(files.len() > 3, "{} segments", files.len());
    files
}

#[test]
fn replay_from_reads_only_the_segments_that_hold_the_records_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let files = three_hundred_records(dir.path());
    let third = first_lsn_of(&files[2]).unwrap();
    // Damage in the first segment does not matter to a reader that starts later.
    let mut data = fs::read(&files[0]).unwrap();
    data[20] ^= 0xff;
    fs::write(&files[0], data).unwrap();
    for from in [third, third + 1, 300] {
        let mut seen = Vec::new();
        let last = replay_from(dir.path(), from, |r| {
            seen.push(r.lsn);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, (from..=300).collect::<Vec<_>>(), "from {from}");
        assert_eq!(last, 300);
    }
    assert_eq!(replay_from(dir.path(), 301, |_| Ok(())).unwrap(), 0);
    // Starting in the damaged segment meets the damage.
    assert!(matches!(
        replay_from(dir.path(), 1, |_| Ok(())),
        Err(JournalError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn after_a_failed_write_nothing_is_acknowledged_again() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = start(dir.path(), 0, 1 << 20);
    let _ = j.append(vec![update(1)], false).unwrap();
    j.wait(1).await.unwrap();
    // /dev/full fails every write with ENOSPC: the stand-in for a failing disk.
    let full = OpenOptions::new().append(true).open("/dev/full").unwrap();
    let io = Io {
        dir: dir.path().to_owned(),
        fsync: true,
        segment_bytes: 1 << 20,
        file: full,
        path: "/dev/full".into(),
        written: 0,
        allocated: 0,
        preallocate: true,
        after: Box::new(Collect(Arc::new(Mutex::new(Vec::new())))),
        buf: Vec::new(),
    };
    let broken = Journal::with_io(io, 1, options(1 << 20)).unwrap();
    let ticket = broken.append(vec![update(2)], true).unwrap();
    let err = ticket.wait().await.unwrap_err();
    assert!(matches!(err, JournalError::Failed(_)), "{err}");
    let err = broken.wait(2).await.unwrap_err();
    assert!(matches!(err, JournalError::Failed(_)), "{err}");
    assert!(broken.failed().is_some());
    assert!(
        broken.append(vec![update(3)], true).is_err(),
        "fail-stop: the writer is gone"
    );
    assert_eq!(broken.durable_lsn(), 1);
}

#[tokio::test]
async fn a_ticket_completes_once_its_records_are_durable_and_published() {
    let dir = tempfile::tempdir().unwrap();
    let (j, seen) = start(dir.path(), 0, 1 << 20);
    let mut tickets = Vec::new();
    for lsn in 1..=50 {
        tickets.push((lsn, j.append(vec![update(lsn)], true).unwrap()));
    }
    for (lsn, ticket) in tickets {
        ticket.wait().await.unwrap();
        assert!(j.durable_lsn() >= lsn);
        assert!(
            seen.lock().unwrap().contains(&lsn),
            "published before released"
        );
    }
}

#[test]
fn a_ticket_dropped_without_a_wait_still_has_its_records_made_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (j, seen) = start(dir.path(), 0, 1 << 20);
    drop(j.append(vec![update(1), update(2)], true).unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while seen.lock().unwrap().len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(*seen.lock().unwrap(), vec![1, 2]);
    assert_eq!(j.durable_lsn(), 2);
}

#[test]
fn concurrent_waiters_see_their_records_durable_and_published_once_in_lsn_order() {
    // Every group to the writer thread, every group to a waiter, and both.
    for inline_records in [0, 1000, 3] {
        concurrent_waiters(inline_records);
    }
}

fn concurrent_waiters(inline_records: usize) {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let j = Journal::start(
        dir.path(),
        0,
        Options {
            inline_records,
            ..options(64 * 1024)
        },
        Box::new(Collect(seen.clone())),
    )
    .unwrap();
    // The lock that assigns LSNs, as the engine's does.
    let next = Mutex::new(0u64);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for i in 0..250 {
                    let ticket = {
                        let mut lsn = next.lock().unwrap();
                        *lsn += 1;
                        // Every fifth group nobody waits for, as with a venue's answers.
                        j.append(vec![update(*lsn)], i % 5 != 0).unwrap()
                    };
                    ticket.wait_blocking().unwrap();
                }
            });
        }
    });
    j.sync(2000).wait_blocking().unwrap();
    drop(j);
    let expected: Vec<u64> = (1..=2000).collect();
    assert_eq!(
        *seen.lock().unwrap(),
        expected,
        "published once each, in order (inline_records {inline_records})"
    );
    assert_eq!(lsns(dir.path()), expected);
}

/// Records which thread committed each group.
struct Committers(Arc<Mutex<Vec<Option<String>>>>);

impl AfterSync for Committers {
    fn synced(&mut self, _: &[Entry]) {
        let name = std::thread::current().name().map(str::to_owned);
        self.0.lock().unwrap().push(name);
    }
}

fn committers(
    inline_records: usize,
) -> (Journal, Arc<Mutex<Vec<Option<String>>>>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let options = Options {
        inline_records,
        // Nothing is committed by the delay while the test looks.
        sync_delay: std::time::Duration::from_secs(3600),
        ..options(1 << 20)
    };
    let j = Journal::start(dir.path(), 0, options, Box::new(Committers(seen.clone()))).unwrap();
    (j, seen, dir)
}

#[test]
fn a_waiter_commits_a_small_group_on_its_own_thread_and_hands_a_large_one_to_the_writer() {
    let (j, seen, _dir) = committers(4);
    std::thread::Builder::new()
        .name("waiter".into())
        .spawn(move || {
            // Four records: committed by the waiter itself.
            let ticket = j.append((1..=4).map(update).collect(), true).unwrap();
            ticket.wait_blocking().unwrap();
            // Five: too many for a waiter, so the writer thread commits them.
            let ticket = j.append((5..=9).map(update).collect(), true).unwrap();
            ticket.wait_blocking().unwrap();
            assert_eq!(j.durable_lsn(), 9);
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Some("waiter".to_owned()), Some("journal-writer".to_owned())]
    );
}

#[test]
fn a_waiter_on_a_runtime_with_one_worker_leaves_even_a_small_group_to_the_writer() {
    let (j, seen, _dir) = committers(64);
    let one_worker = |flavor: &str| match flavor {
        "current_thread" => tokio::runtime::Builder::new_current_thread().build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build(),
    };
    let mut lsn = 0;
    for flavor in ["current_thread", "multi_thread"] {
        let runtime = one_worker(flavor).unwrap();
        lsn += 1;
        let ticket = j.append(vec![update(lsn)], true).unwrap();
        runtime.block_on(async { tokio::spawn(ticket.wait()).await.unwrap().unwrap() });
    }
    // Two workers: the waiter commits it itself, on a runtime thread.
    let two = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("worker")
        .build()
        .unwrap();
    let ticket = j.append(vec![update(lsn + 1)], true).unwrap();
    two.block_on(async { tokio::spawn(ticket.wait()).await.unwrap().unwrap() });
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            Some("journal-writer".to_owned()),
            Some("journal-writer".to_owned()),
            Some("worker".to_owned())
        ]
    );
}

#[test]
fn with_inline_commits_off_the_writer_thread_commits_every_group() {
    let (j, seen, _dir) = committers(0);
    for lsn in 1..=3 {
        j.append(vec![update(lsn)], true)
            .unwrap()
            .wait_blocking()
            .unwrap();
    }
    drop(j);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter().all(|c| c.as_deref() == Some("journal-writer")),
        "{seen:?}"
    );
}

/// The last LSN of each group committed, and the name of the thread that committed it.
type CommittedBy = Arc<Mutex<Vec<(u64, Option<String>)>>>;

/// Holds the commit of LSN 1 until `gate` opens; records who committed each group.
struct Gated {
    gate: std::sync::mpsc::Receiver<()>,
    committers: CommittedBy,
}

impl AfterSync for Gated {
    fn synced(&mut self, entries: &[Entry]) {
        if entries.first().is_some_and(|e| e.lsn == 1) {
            self.gate.recv().unwrap();
        }
        let name = std::thread::current().name().map(str::to_owned);
        let last = entries.last().map_or(0, |e| e.lsn);
        self.committers.lock().unwrap().push((last, name));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_given_up_while_another_commit_runs_leaves_its_records_to_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (open, gate) = std::sync::mpsc::channel();
    let committers = Arc::new(Mutex::new(Vec::new()));
    let options = Options {
        // Only a request, not the delay, can get record 2 committed.
        sync_delay: std::time::Duration::from_secs(3600),
        ..options(1 << 20)
    };
    let after = Gated {
        gate,
        committers: committers.clone(),
    };
    let j = Arc::new(Journal::start(dir.path(), 0, options, Box::new(after)).unwrap());
    let first = j.append(vec![update(1)], true).unwrap();
    let committing = std::thread::Builder::new()
        .name("committing".into())
        .spawn(move || first.wait_blocking())
        .unwrap();
    while !j.shared.lock().busy() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // Record 2 waits behind the commit of record 1, and its waiter goes away.
    let second = j.append(vec![update(2)], true).unwrap();
    let abandoned = tokio::time::timeout(std::time::Duration::from_millis(20), second.wait()).await;
    assert!(
        abandoned.is_err(),
        "record 2 cannot be durable while record 1's commit runs"
    );
    assert_eq!(j.shared.lock().waiters.len(), 1);
    open.send(()).unwrap();
    committing.join().unwrap().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while j.durable_lsn() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "record 2 was never committed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!(
        *committers.lock().unwrap(),
        vec![
            (1, Some("committing".to_owned())),
            (2, Some("journal-writer".to_owned()))
        ]
    );
}

#[tokio::test]
async fn records_without_a_ticket_are_synced_within_the_delay() {
    let dir = tempfile::tempdir().unwrap();
    let (j, seen) = start(dir.path(), 0, 1 << 20);
    let ticket = j.append(vec![update(1), update(2)], false).unwrap();
    ticket.wait().await.unwrap();
    // Nobody waits: the writer still syncs and publishes them (options: 1 ms delay).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while j.durable_lsn() < 2 {
        assert!(std::time::Instant::now() < deadline, "never synced");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!(*seen.lock().unwrap(), vec![1, 2]);
    // A sync request for what is already durable is ready at once.
    j.sync(2).wait().await.unwrap();
}

#[tokio::test]
async fn a_sync_request_makes_pending_records_durable_without_waiting_for_the_delay() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut slow = options(1 << 20);
    slow.sync_delay = std::time::Duration::from_secs(3600);
    let j = Journal::start(dir.path(), 0, slow, Box::new(Collect(seen.clone()))).unwrap();
    j.append(vec![update(1)], false)
        .unwrap()
        .wait()
        .await
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), j.sync(1).wait())
        .await
        .expect("the sync request did not wait for the hour-long delay")
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![1]);
}

#[test]
fn a_reader_of_the_live_journal_skips_head_segments_deleted_after_it_listed_them() {
    let dir = tempfile::tempdir().unwrap();
    let files = three_hundred_records(dir.path());
    let third = first_lsn_of(&files[2]).unwrap();
    // Listed, then the two oldest deleted (as the snapshot thread does) before the read.
    fs::remove_file(&files[0]).unwrap();
    fs::remove_file(&files[1]).unwrap();
    let read = |files: Vec<PathBuf>, truncate: bool| {
        let mut seen = Vec::new();
        replay_files(files, 1, truncate, |r: JournalRecord| {
            seen.push(r.lsn);
            Ok(())
        })
        .map(|_| seen)
    };
    assert_eq!(
        read(files.clone(), false).unwrap(),
        (third..=300).collect::<Vec<_>>()
    );
    // A start never skips a listed segment.
    assert!(matches!(
        read(files.clone(), true),
        Err(JournalError::Io { .. })
    ));
    // Nor does a reader skip one in the middle: that is a gap, not a deleted head.
    let mut middle = files[2..].to_vec();
    middle.insert(1, dir.path().join(segment_name(third + 1)));
    assert!(matches!(read(middle, false), Err(JournalError::Io { .. })));
}

/// A frame around `body`, as the writer frames a record.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn encoded(lsn: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    update(lsn).encode(&mut buf);
    buf
}

#[test]
fn records_before_the_start_asked_for_are_checked_for_gaps_but_not_decoded() {
    let dir = tempfile::tempdir().unwrap();
    // LSN 2's body carries its LSN first, as every record does, then bytes that are no
    // protobuf (a field tag whose varint never ends); its checksum is right.
    let mut data = encoded(1);
    data.extend(frame(&[0x08, 2, 0xff, 0xff]));
    for lsn in 3..=5 {
        data.extend(encoded(lsn));
    }
    std::fs::write(dir.path().join(segment_name(1)), &data).unwrap();
    let mut read = Vec::new();
    let last = replay_from(dir.path(), 3, |r| {
        read.push(r.lsn);
        Ok(())
    })
    .unwrap();
    assert_eq!((read, last), (vec![3, 4, 5], 5));
    // Asked for, the same record is damage, named by its place.
    let from_one = replay_from(dir.path(), 2, |_| Ok(()));
    let offset = encoded(1).len() as u64;
    assert!(
        matches!(&from_one, Err(JournalError::Corrupt { offset: o, .. }) if *o == offset),
        "{from_one:?}"
    );

    // A record missing before the start is still found.
    let mut gap = encoded(1);
    gap.extend(encoded(2));
    gap.extend(encoded(4));
    gap.extend(encoded(5));
    std::fs::write(dir.path().join(segment_name(1)), &gap).unwrap();
    let err = replay_from(dir.path(), 5, |_| Ok(())).unwrap_err();
    assert!(err.to_string().contains("lsn 4 follows 2"), "{err}");
}

/// The sequence of each update record in `dir`, in LSN order, tails cut as at a start.
fn sequences(dir: &Path) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    replay(dir, true, |r| {
        if let Some(RecordEntry::Update(u)) = r.entry {
            out.push((r.lsn, u.sequence));
        }
        Ok(())
    })
    .unwrap();
    out
}

#[tokio::test]
async fn a_segment_is_allocated_ahead_of_its_records_and_a_start_after_a_crash_appends_after_them()
{
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = start(dir.path(), 0, 64 << 20);
    let _ = j.append((1..=10).map(update).collect(), true).unwrap();
    j.wait(10).await.unwrap();
    let seg = segments(dir.path()).unwrap().pop().unwrap();
    let records: u64 = (1..=10).map(|lsn| encoded(lsn).len() as u64).sum();
    let allocated = fs::metadata(&seg).unwrap().len();
    assert!(
        allocated >= records + PREALLOCATE,
        "{allocated} bytes for {records} bytes of records"
    );
    // The live journal reads as its records, the zeros after them as their end.
    let mut live = Vec::new();
    replay(dir.path(), false, |r| {
        live.push(r.lsn);
        Ok(())
    })
    .unwrap();
    assert_eq!(live, (1..=10).collect::<Vec<_>>());

    // What a crash now would leave on disk: the records and the space allocated after them.
    let crashed = tempfile::tempdir().unwrap();
    fs::copy(&seg, crashed.path().join(seg.file_name().unwrap())).unwrap();
    drop(j);
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        records,
        "a closed segment keeps only its records"
    );
    assert_eq!(lsns(crashed.path()), (1..=10).collect::<Vec<_>>());
    let (j, _) = start(crashed.path(), 10, 64 << 20);
    let _ = j.append(vec![update(11)], true).unwrap();
    j.wait(11).await.unwrap();
    drop(j);
    assert_eq!(lsns(crashed.path()), (1..=11).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_record_left_beyond_zeros_in_the_last_segment_is_cut_off_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    // A crash after records 1 and 2 were synced, while 3 and 4 were written but not yet:
    // the page of 3 never reached the disk (zeros), that of 4 did.
    let stale = Entry {
        lsn: 4,
        time: prost_types::Timestamp::default(),
        payload: Payload::Update(Arc::new(v1::OrderUpdate {
            shard: "s0".into(),
            sequence: 999,
            ..Default::default()
        })),
    };
    let mut data = encoded(1);
    data.extend(encoded(2));
    data.extend(vec![0; encoded(3).len()]);
    stale.encode(&mut data);
    data.extend(vec![0; 4096]);
    fs::write(dir.path().join(segment_name(1)), &data).unwrap();
    // A reader of the live journal stops at the zeros.
    let mut live = Vec::new();
    replay(dir.path(), false, |r| {
        live.push(r.lsn);
        Ok(())
    })
    .unwrap();
    assert_eq!(live, vec![1, 2]);
    // The start appends a new record 3 exactly where the lost one was; had it not cut the
    // segment after record 2, the old record 4 would now follow it as if durable.
    let (j, _) = start(dir.path(), 2, 64 << 20);
    let _ = j.append(vec![update(3)], true).unwrap();
    j.wait(3).await.unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let seg = dir.path().join(segment_name(1));
    fs::copy(&seg, crashed.path().join(segment_name(1))).unwrap();
    drop(j);
    assert_eq!(sequences(dir.path()), vec![(1, 1), (2, 2), (3, 3)]);
    assert_eq!(sequences(crashed.path()), vec![(1, 1), (2, 2), (3, 3)]);
}

#[test]
fn zeros_end_the_records_of_any_segment_and_anything_after_them_before_the_last_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let files = three_hundred_records(dir.path());
    // A crash while the writer moved on to a new segment leaves the old one allocated
    // ahead: its zeros end its records.
    let mut first = fs::read(&files[0]).unwrap();
    first.extend(vec![0; 8192]);
    fs::write(&files[0], &first).unwrap();
    assert_eq!(lsns(dir.path()), (1..=300).collect::<Vec<_>>());
    // Anything but zeros there is damage, named by its place.
    let records = first.len() - 8192;
    first[records + 100] = 1;
    fs::write(&files[0], &first).unwrap();
    let err = replay(dir.path(), false, |_| Ok(())).unwrap_err();
    assert!(
        matches!(&err, JournalError::Corrupt { path, offset, .. }
            if *offset == records as u64 && path.ends_with("journal-00000000000000000001.log")),
        "{err}"
    );
}
