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
        j.append(vec![update(lsn)]).unwrap();
    }
    j.wait(300).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), (1..=300).collect::<Vec<_>>());
    drop(j);
    assert!(segments(dir.path()).unwrap().len() > 1, "rotated");
    assert_eq!(lsns(dir.path()), (1..=300).collect::<Vec<_>>());
    // Appending after a restart continues the sequence.
    let (j, _) = start(dir.path(), 300, 4096);
    j.append(vec![update(301)]).unwrap();
    j.wait(301).await.unwrap();
    drop(j);
    assert_eq!(lsns(dir.path()).last(), Some(&301));
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_and_the_journal_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = start(dir.path(), 0, 1 << 20);
    j.append((1..=10).map(update).collect()).unwrap();
    j.wait(10).await.unwrap();
    drop(j);
    let seg = segments(dir.path()).unwrap().pop().unwrap();
    // A crash in the middle of a write leaves half a record.
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
    drop(f);
    assert_eq!(lsns(dir.path()), (1..=10).collect::<Vec<_>>());
    let (j, _) = start(dir.path(), 10, 1 << 20);
    j.append(vec![update(11)]).unwrap();
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
    j.append((1..=200).map(update).collect()).unwrap();
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

#[tokio::test]
async fn after_a_failed_write_nothing_is_acknowledged_again() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = start(dir.path(), 0, 1 << 20);
    j.append(vec![update(1)]).unwrap();
    j.wait(1).await.unwrap();
    // /dev/full fails every write with ENOSPC: the stand-in for a failing disk.
    let full = OpenOptions::new().append(true).open("/dev/full").unwrap();
    let (tx, rx) = mpsc::channel();
    let (durable_tx, durable) = watch::channel(Durable {
        lsn: 1,
        failed: None,
    });
    let writer = Writer {
        dir: dir.path().to_owned(),
        options: options(1 << 20),
        file: full,
        path: "/dev/full".into(),
        written: 0,
        durable: durable_tx,
        after: Box::new(Collect(Arc::new(Mutex::new(Vec::new())))),
    };
    let thread = thread::spawn(move || writer.run(rx));
    let broken = Journal {
        tx: Some(tx),
        durable,
        thread: Some(thread),
    };
    broken.append(vec![update(2)]).unwrap();
    let err = broken.wait(2).await.unwrap_err();
    assert!(matches!(err, JournalError::Failed(_)), "{err}");
    assert!(broken.failed().is_some());
    assert!(
        broken.append(vec![update(3)]).is_err(),
        "fail-stop: the writer is gone"
    );
    assert_eq!(broken.durable_lsn(), 1);
}
