//! The durable journal: every record is appended, checksummed and fdatasync'd before the
//! executor tells anyone about it or sends the order to a venue.
//!
//! # Format
//! Segment files `journal-<first lsn, 20 digits>.log` in one directory. Each record is
//! framed as `[length u32 LE][crc32c of the payload u32 LE][payload]`, the payload being a
//! protobuf [`JournalRecord`] (`proto/execbridge/internal/v1/journal.proto`). A new segment
//! starts once the current one passes `journal.segment_bytes`; its directory entry is
//! fsync'd before records go into it.
//!
//! # Preallocation
//! The writer allocates a segment ahead of its records ([`PREALLOCATE`] at a time, with
//! `fallocate`), so an append does not grow the file: the `fdatasync` after it then has no
//! file size to commit to the filesystem's journal (on ext4 that made the median sync
//! about a sixth shorter in `execbridge-bench`). The allocated space reads as zeros, and a
//! zero header (a record is never empty) ends a segment's records: a reader stops there
//! when everything after it is zero too. Nonzero bytes after a zero header are a torn tail
//! in the last segment and damage in any other. A segment is cut to its records when the
//! writer moves on from it or closes, and a start cuts the tail of the last one before
//! appending, so nothing written before a crash can reappear after records written since.
//! Where `fallocate` is not supported the writer appends as before.
//!
//! # Why a log and not an embedded store
//! The executor writes records once, in order, and reads them back once, in order, at
//! start: the access pattern of a log. A log gives one `write` and one `fdatasync` per group
//! of records with no write amplification, no compaction and no background threads that
//! could stall a commit; group commit and the fsync-failure policy are ours, in ~one page
//! of code, instead of hidden in a store's transaction layer (SQLite, redb or RocksDB would
//! each want one fsync per transaction, which we would batch ourselves anyway, and their
//! behaviour after a failed fsync is theirs). What we give up (indexes, random reads) the
//! executor does not need: state lives in memory and is rebuilt by replay, from the
//! newest snapshot on ([`crate::snapshot`], which also deletes the segments it covers).
//! The price is the recovery code: a length and a CRC per record find a torn tail after a crash, which is
//! cut off; damage anywhere else stops the start with the segment and offset named.
//!
//! # Group commit, tickets and fail-stop
//! The engine appends records (under its lock, so the log order is the sequence order) to
//! the journal's pending group; an append only queues them. A commit takes the whole
//! pending group, writes it with one `write` and calls `fdatasync` once for it; while it
//! syncs, new records gather into the next group, and the engine lock is never held across
//! an fsync. One commit runs at a time.
//!
//! Whoever must not go on before its records are on disk (an order intent before it goes to
//! the venue; a cancel request; an admin change) appends them with a [`Ticket`] and awaits
//! it. If no commit is under way and the pending group is small
//! ([`Options::inline_records`], `journal.inline_commit_records`), the waiter commits it on
//! its own thread, unless that is the only worker of its runtime: at low load an
//! acknowledgement then pays the `fdatasync` and nothing else, where handing the group to a
//! writer thread and being woken by it costs two thread wake-ups (with this the executor's
//! submit -> ack p50 at 1,000/s was 35-78 µs lower in `cargo bench -p execbridge-executor
//! --bench executor` on a 2-core VM). The waiter's thread, a runtime worker, is blocked for
//! that fdatasync (about 0.2 ms on the disks measured) while the other workers go on; a
//! larger group goes to the writer thread, so a worker is never held by a batch's commit. A
//! commit wakes the waiters it made durable, and one more to commit the next group, nobody
//! else.
//!
//! Records appended without a ticket (the venue's answers, fills that market data brings)
//! go with the next group someone waits for, or the writer thread commits them after at
//! most [`Options::sync_delay`]: at low load an order then pays one fdatasync, not one per
//! record. Records reach subscribers and the audit trail only once they are durable, in
//! LSN order.
//!
//! After a failed write or fdatasync the journal stops for good (a retried fsync can report
//! success for data the kernel already dropped): the durable LSN never advances again,
//! every ticket fails with [`JournalError::Failed`], and the executor turns not-ready.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, MutexGuard, mpsc};
use std::thread;
use std::time::Instant;

use execbridge_api::internal::v1::journal_record::Entry as RecordEntry;
use execbridge_api::internal::v1::{AdminChange, JournalRecord};
use execbridge_api::v1;
use prost::Message;
use tokio::sync::{oneshot, watch};

/// Bytes of the frame header: length and CRC.
const HEADER: usize = 8;
/// Largest record accepted on read: anything larger is damage, not data.
const MAX_RECORD: usize = 16 * 1024 * 1024;
/// Bytes a segment is allocated ahead of its records (at most `segment_bytes`): a file
/// grows, and its size is committed by a sync, once per this many bytes of records.
pub const PREALLOCATE: u64 = 1 << 20;

/// Why the journal failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// A file operation failed.
    #[error("journal {path}: {message}")]
    Io {
        /// The file or directory.
        path: String,
        /// What failed.
        message: String,
    },
    /// A record is damaged somewhere other than the tail of the last segment.
    #[error("journal {path} is damaged at byte {offset}: {reason}")]
    Corrupt {
        /// The segment.
        path: String,
        /// Where.
        offset: u64,
        /// What was found.
        reason: String,
    },
    /// The writer stopped after a write or fsync error; nothing is acknowledged any more.
    #[error("the journal stopped after a failed write or fsync: {0}")]
    Failed(Arc<str>),
}

fn io_error(path: &Path, e: &std::io::Error) -> JournalError {
    JournalError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// What one journal record carries, as the engine produces it.
#[derive(Debug, Clone)]
pub enum Payload {
    /// An order update (published to subscribers once durable).
    Update(Arc<v1::OrderUpdate>),
    /// An admin change.
    Admin(Arc<AdminChange>),
}

/// One record on its way to the journal.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its log sequence number.
    pub lsn: u64,
    /// When it was made.
    pub time: prost_types::Timestamp,
    /// What it says.
    pub payload: Payload,
}

impl Entry {
    fn encode(&self, buf: &mut Vec<u8>) {
        // Encode the record by reference: JournalRecord { lsn = 1, time = 2, update = 3 |
        // admin = 4 }, without cloning the update into an owned message, straight into
        // `buf` after room for the header, which is filled in once the body's length and
        // checksum are known.
        let start = buf.len();
        buf.extend_from_slice(&[0; HEADER]);
        prost::encoding::uint64::encode(1, &self.lsn, buf);
        prost::encoding::message::encode(2, &self.time, buf);
        match &self.payload {
            Payload::Update(u) => prost::encoding::message::encode(3, &**u, buf),
            Payload::Admin(a) => prost::encoding::message::encode(4, &**a, buf),
        }
        let body = &buf[start + HEADER..];
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let crc = crc32c::crc32c(body);
        buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
    }

    /// The entry of a decoded record; `None` for a record without a payload.
    pub fn from_record(record: JournalRecord) -> Option<Self> {
        let payload = match record.entry? {
            RecordEntry::Update(u) => Payload::Update(Arc::new(u)),
            RecordEntry::Admin(a) => Payload::Admin(Arc::new(a)),
        };
        Some(Self {
            lsn: record.lsn,
            time: record.time.unwrap_or_default(),
            payload,
        })
    }
}

/// The durable position, or why there will be no more.
#[derive(Debug, Clone, Default)]
pub struct Durable {
    /// Every record up to this LSN is on disk.
    pub lsn: u64,
    /// Set once the writer has stopped on an error.
    pub failed: Option<Arc<str>>,
}

/// Receives each group of records once it is durable, in LSN order (on the writer thread).
pub trait AfterSync: Send + 'static {
    /// Called with the records of one group commit, after their fdatasync.
    fn synced(&mut self, entries: &[Entry]);
}

/// Completes once the records it was issued for are durable; see the module docs for who
/// writes and syncs them.
#[must_use = "a ticket does nothing unless it is awaited"]
pub struct Ticket {
    /// `None` once complete (or for records already durable).
    shared: Option<Arc<Shared>>,
    lsn: u64,
}

impl Ticket {
    /// A ticket for records already durable.
    pub fn ready() -> Self {
        Self {
            shared: None,
            lsn: 0,
        }
    }

    /// Waits until the records are durable, writing and syncing them on this task's thread
    /// when no group is in progress, at most [`Options::inline_records`] records are
    /// pending and the runtime has more than one worker (one `write` and one `fdatasync`,
    /// no hand-off); otherwise the writer thread or the task already syncing commits them. Cancellation safe: a dropped wait leaves
    /// its records to the writer thread.
    ///
    /// # Errors
    /// [`JournalError::Failed`] when the writer stopped first.
    pub async fn wait(mut self) -> Result<(), JournalError> {
        let Some(shared) = self.shared.clone() else {
            return Ok(());
        };
        let may_commit = may_block_this_worker();
        loop {
            let look_again = match shared.step(self.lsn, may_commit) {
                Step::Done(result) => {
                    self.shared = None;
                    return result;
                }
                Step::Wait(rx) => rx,
            };
            // The sender stays in the state until it is used.
            let _ = look_again.await;
        }
    }

    /// [`Ticket::wait`] for a thread outside the async runtime.
    ///
    /// # Errors
    /// [`JournalError::Failed`] when the writer stopped first.
    pub fn wait_blocking(mut self) -> Result<(), JournalError> {
        let Some(shared) = self.shared.take() else {
            return Ok(());
        };
        shared.wait_blocking(self.lsn)
    }
}

impl Drop for Ticket {
    /// A ticket nobody waited for to the end still has its records synced now, by the
    /// writer thread, rather than whenever someone next waits.
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.request(self.lsn);
        }
    }
}

/// Options of the writer.
#[derive(Debug, Clone)]
pub struct Options {
    /// fdatasync each group.
    pub fsync: bool,
    /// Rotate after this many bytes.
    pub segment_bytes: u64,
    /// Records pending past this many are committed by the writer thread at once, without
    /// waiting for the delay.
    pub max_batch: usize,
    /// Longest a record appended without a ticket waits for its fdatasync.
    pub sync_delay: std::time::Duration,
    /// A waiter writes and syncs the pending group itself when it holds at most this many
    /// records (0: the writer thread commits every group).
    pub inline_records: usize,
}

/// The handle the engine appends through.
pub struct Journal {
    shared: Arc<Shared>,
    thread: Option<thread::JoinHandle<()>>,
}

fn segment_name(first_lsn: u64) -> String {
    format!("journal-{first_lsn:020}.log")
}

/// The segment files of `dir`, oldest first.
///
/// # Errors
/// When the directory cannot be listed.
pub fn segments(dir: &Path) -> Result<Vec<PathBuf>, JournalError> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| io_error(dir, &e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("journal-") && n.ends_with(".log"))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Records decoded per message between the reading and the applying thread of a replay.
const REPLAY_CHUNK: usize = 4096;

/// A record as replay hands it over: decoded from a frame's body on the reading thread.
pub trait Record: Send + Sized {
    /// Decodes a record's body (the frame's payload).
    ///
    /// # Errors
    /// Why the body is not a record.
    fn decode(body: &[u8]) -> Result<Self, String>;
    /// Its log sequence number.
    fn lsn(&self) -> u64;
}

impl Record for JournalRecord {
    fn decode(body: &[u8]) -> Result<Self, String> {
        <Self as Message>::decode(body).map_err(|e| e.to_string())
    }

    fn lsn(&self) -> u64 {
        self.lsn
    }
}

/// Reads every record of `dir` in order, calling `each` with it. A torn tail of the last
/// segment is cut off (`truncate`) or ignored; damage elsewhere is an error.
///
/// Returns the last LSN read (0 for an empty journal).
///
/// # Errors
/// [`JournalError`] for unreadable files and damage before the tail.
pub fn replay(
    dir: &Path,
    truncate: bool,
    each: impl FnMut(JournalRecord) -> Result<(), JournalError>,
) -> Result<u64, JournalError> {
    replay_records(dir, 1, truncate, each)
}

/// [`replay`] of the records with LSN `from` and later, decoded as `R`. Segments that end
/// before `from` are not read, and the records before it in the first segment read are
/// checked but not decoded.
///
/// Reading, checksums and decoding run on a thread of their own, a chunk of records ahead
/// of `each` (which runs on the calling thread), so a start uses two cores; a record type
/// that does its conversions in [`Record::decode`] moves them off the applying thread.
///
/// Returns the last LSN read (0 when none is at or after `from`).
///
/// # Errors
/// As [`replay`].
pub fn replay_records<R: Record>(
    dir: &Path,
    from: u64,
    truncate: bool,
    each: impl FnMut(R) -> Result<(), JournalError>,
) -> Result<u64, JournalError> {
    replay_files(segments_from(dir, from)?, from, truncate, each)
}

fn replay_files<R: Record>(
    files: Vec<PathBuf>,
    from: u64,
    truncate: bool,
    mut each: impl FnMut(R) -> Result<(), JournalError>,
) -> Result<u64, JournalError> {
    let (tx, rx) = mpsc::sync_channel::<Vec<R>>(4);
    thread::scope(|scope| {
        let reader = scope.spawn(move || read_segments(&files, from, truncate, &tx));
        let mut last = 0;
        let mut applied: Result<(), JournalError> = Ok(());
        'chunks: for chunk in rx {
            for record in chunk {
                last = record.lsn();
                applied = each(record);
                if applied.is_err() {
                    // Dropping the receiver stops the reader at its next chunk.
                    break 'chunks;
                }
            }
        }
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(JournalError::Failed("the journal reader panicked".into())));
        applied?;
        read.map(|()| last)
    })
}

/// The segments of `dir` that may hold records with LSN `from` or later: those that end
/// before it (the next segment's name starts at or before it) are left out.
fn segments_from(dir: &Path, from: u64) -> Result<Vec<PathBuf>, JournalError> {
    let mut files = segments(dir)?;
    let skip = files
        .windows(2)
        .take_while(|pair| first_lsn_of(&pair[1]).is_some_and(|next| next <= from))
        .count();
    files.drain(..skip);
    Ok(files)
}

/// The first LSN a segment's name says it holds.
pub fn first_lsn_of(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_prefix("journal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// Reads the records with LSN `from` and later, in order, calling `each` with them; the
/// journal stays as it is. Segments that end before `from` (the next segment's name
/// starts at or before it) are not read, so a reader that wants the newest records does
/// not pay for the whole history.
///
/// Returns the last LSN read (0 when none is at or after `from`).
///
/// # Errors
/// As [`replay`].
pub fn replay_from(
    dir: &Path,
    from: u64,
    each: impl FnMut(JournalRecord) -> Result<(), JournalError>,
) -> Result<u64, JournalError> {
    replay_records(dir, from, false, each)
}

/// The LSN of a record's body without decoding it: [`Entry::encode`] writes it first
/// (field 1, a varint). `None` for a body that starts otherwise.
fn peek_lsn(body: &[u8]) -> Option<u64> {
    let (&tag, mut rest) = body.split_first()?;
    (tag == 0x08)
        .then(|| prost::encoding::decode_varint(&mut rest).ok())
        .flatten()
}

/// The reading half of [`replay_records`]: sends the records with LSN `from` and later,
/// decoded, in chunks.
fn read_segments<R: Record>(
    files: &[PathBuf],
    from: u64,
    truncate: bool,
    tx: &mpsc::SyncSender<Vec<R>>,
) -> Result<(), JournalError> {
    let mut last = 0;
    let mut chunk = Vec::with_capacity(REPLAY_CHUNK);
    // One buffer for every segment, sized to the file before reading: no regrowth copies
    // and no fresh pages per segment.
    let mut data = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let is_last = i + 1 == files.len();
        data.clear();
        let read = File::open(path).and_then(|mut f| {
            let len = f.metadata()?.len();
            data.reserve(usize::try_from(len).unwrap_or(0));
            f.read_to_end(&mut data)
        });
        match read {
            Ok(_) => {}
            // A reader of the live journal (a resuming subscriber) listed segments that
            // the snapshot thread deleted before they were opened. Only the oldest go, so
            // this is a head the reader no longer gets: its caller checks where the
            // records start. A start (`truncate`) or a gap in the middle stays an error.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !truncate && last == 0 => {
                tracing::debug!(path = %path.display(), "segment deleted behind a snapshot while it was read");
                continue;
            }
            Err(e) => return Err(io_error(path, &e)),
        }
        let mut offset = 0usize;
        while offset < data.len() {
            let damage = |reason: String| JournalError::Corrupt {
                path: path.display().to_string(),
                offset: offset as u64,
                reason,
            };
            let frame = frame_at(&data, offset);
            let (body, next) = match frame {
                Ok(v) => v,
                Err(reason) => {
                    // Zeros to the end: space allocated ahead of the records, in any
                    // segment. Anything else is a torn tail in the last segment (where a
                    // reader of the live journal, truncate off, also meets the record being
                    // written, which is no news) and damage in any other.
                    let allocated = is_zero(&data[offset..]);
                    if !allocated && !is_last {
                        return Err(damage(reason));
                    }
                    if truncate {
                        if !allocated {
                            tracing::warn!(path = %path.display(), offset, reason, "cutting off a torn journal tail");
                        }
                        cut(path, offset as u64)?;
                    }
                    break;
                }
            };
            // Records before `from` (the head of the first segment) are not decoded.
            let (lsn, record) = match peek_lsn(body) {
                Some(lsn) if lsn < from => (lsn, None),
                _ => {
                    let record = R::decode(body).map_err(&damage)?;
                    (record.lsn(), Some(record))
                }
            };
            if lsn != last + 1 && last != 0 {
                return Err(damage(format!(
                    "lsn {lsn} follows {last}: records are missing"
                )));
            }
            last = lsn;
            if let Some(record) = record.filter(|r| r.lsn() >= from) {
                chunk.push(record);
            }
            if chunk.len() == REPLAY_CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(REPLAY_CHUNK));
                if tx.send(full).is_err() {
                    // The applying side stopped on an error of its own, which it reports.
                    return Ok(());
                }
            }
            offset = next;
        }
    }
    if !chunk.is_empty() {
        let _ = tx.send(chunk);
    }
    Ok(())
}

/// Whether `bytes` are all zero: space allocated ahead of a segment's records.
fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Cuts the segment at `path` to `len` bytes, durably.
fn cut(path: &Path, len: u64) -> Result<(), JournalError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| {
            f.set_len(len)?;
            f.sync_all()
        })
        .map_err(|e| io_error(path, &e))
}

/// Opens the last segment for appending after its last whole record: whatever follows
/// (zeros allocated ahead, or a torn record) is cut off first, so that it cannot be read
/// as a continuation of the records written next.
fn open_at_end(path: &Path) -> Result<(File, u64), JournalError> {
    let data = fs::read(path).map_err(|e| io_error(path, &e))?;
    let mut end = 0;
    while let Ok((_, next)) = frame_at(&data, end) {
        end = next;
    }
    if end < data.len() {
        if !is_zero(&data[end..]) {
            tracing::warn!(path = %path.display(), offset = end, "cutting off a torn journal tail");
        }
        cut(path, end as u64)?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io_error(path, &e))?;
    Ok((file, end as u64))
}

fn frame_at(data: &[u8], offset: usize) -> Result<(&[u8], usize), String> {
    let header = data
        .get(offset..offset + HEADER)
        .ok_or("a partial record header")?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 {
        return Err("an empty record".into());
    }
    if len > MAX_RECORD {
        return Err(format!("a record length of {len} bytes"));
    }
    let body = data
        .get(offset + HEADER..offset + HEADER + len)
        .ok_or("a partial record")?;
    if crc32c::crc32c(body) != crc {
        return Err("a checksum mismatch".into());
    }
    Ok((body, offset + HEADER + len))
}

/// Reads the order updates with sequence in `from..=to` back from the journal: resuming
/// subscribers older than the in-memory window.
///
/// # Errors
/// [`JournalError`] when the journal cannot be read.
pub fn read_updates(
    dir: &Path,
    from: u64,
    to: u64,
) -> Result<Vec<Arc<v1::OrderUpdate>>, JournalError> {
    let mut out = Vec::new();
    // An update's LSN is never below its sequence: both start at 1, every sequence step
    // is one journal record, and admin changes take LSNs too. So no update with sequence
    // `from` or later sits before LSN `from`.
    replay_from(dir, from, |record| {
        if let Some(RecordEntry::Update(u)) = record.entry
            && (from..=to).contains(&u.sequence)
        {
            out.push(Arc::new(u));
        }
        Ok(())
    })?;
    Ok(out)
}

fn fsync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, &e))
}

/// The open segment and what is needed to commit a group to it: held by whoever commits
/// (a waiting task or the writer thread), one at a time.
struct Io {
    dir: PathBuf,
    fsync: bool,
    segment_bytes: u64,
    file: File,
    path: PathBuf,
    /// Bytes of records in the segment: where the next record goes.
    written: u64,
    /// The file's length as allocated: `written` and the zeros ahead of it.
    allocated: u64,
    /// Whether to allocate ahead; off once `fallocate` failed (a filesystem without it).
    preallocate: bool,
    after: Box<dyn AfterSync>,
    /// The encoded group, kept between groups.
    buf: Vec<u8>,
}

impl Io {
    /// Creates the segment whose first record is `first_lsn` (a file of that name already
    /// there is an error: no segment is ever started twice). Written with positioned
    /// writes at [`Io::written`], never in append mode (which would ignore the offset).
    fn open_segment(dir: &Path, first_lsn: u64) -> Result<(File, PathBuf), JournalError> {
        let path = dir.join(segment_name(first_lsn));
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(&path, &e))?;
        fsync_dir(dir)?;
        Ok((file, path))
    }

    /// Writes `group` with one `write`, syncs it with one `fdatasync` and hands it to the
    /// [`AfterSync`] (subscribers and the audit trail hear of the records before any waiter
    /// is released, so whoever saw its call complete also finds its update published).
    fn commit(&mut self, group: &[Entry]) -> Result<(), JournalError> {
        let metrics = crate::metrics::get();
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for entry in group {
            entry.encode(&mut buf);
        }
        let written = self.write(&buf);
        self.buf = buf;
        written?;
        if self.fsync {
            // Never retried: see the module docs.
            let started = Instant::now();
            self.file
                .sync_data()
                .map_err(|e| io_error(&self.path, &e))?;
            metrics
                .journal_fsync
                .observe(started.elapsed().as_secs_f64());
        }
        metrics.journal_batch.observe(group.len() as f64);
        self.after.synced(group);
        Ok(())
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), JournalError> {
        let end = self.written + buf.len() as u64;
        if self.preallocate && end > self.allocated {
            self.allocate(end);
        }
        self.file
            .write_all_at(buf, self.written)
            .map_err(|e| io_error(&self.path, &e))?;
        self.written = end;
        Ok(())
    }

    /// Allocates the segment past `end`; where that fails, appends grow the file instead.
    /// An allocation is made durable by the next sync, like the records written into it.
    fn allocate(&mut self, end: u64) {
        let to = end + PREALLOCATE.min(self.segment_bytes.max(4096));
        let mode = rustix::fs::FallocateFlags::empty();
        match rustix::fs::fallocate(&self.file, mode, self.allocated, to - self.allocated) {
            Ok(()) => self.allocated = to,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot preallocate journal segments; appending without");
                self.preallocate = false;
            }
        }
    }

    /// Starts the next segment once this one is full.
    fn rotate_if_full(&mut self, next_lsn: u64) -> Result<(), JournalError> {
        if self.written < self.segment_bytes {
            return Ok(());
        }
        // The old segment keeps only its records; were this lost in a crash, readers would
        // stop at the zeros after them.
        self.trim()?;
        let (file, path) = Self::open_segment(&self.dir, next_lsn)?;
        self.file = file;
        self.path = path;
        self.written = 0;
        self.allocated = 0;
        Ok(())
    }

    /// Gives back the space allocated ahead of the records.
    fn trim(&mut self) -> Result<(), JournalError> {
        if self.allocated > self.written {
            self.file
                .set_len(self.written)
                .map_err(|e| io_error(&self.path, &e))?;
            self.allocated = self.written;
        }
        Ok(())
    }
}

/// What the writer thread is doing, so that an append wakes it only when it must.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThreadWait {
    /// Awake: it looks at the state before it waits again.
    Running,
    /// Asleep until the oldest pending record's deadline.
    Deadline,
    /// Asleep until woken.
    Idle,
}

/// The journal's state, behind [`Shared::state`].
struct State {
    /// Records appended and not yet committed, in LSN order.
    pending: Vec<Entry>,
    /// When the oldest of them was appended: they are committed [`Options::sync_delay`]
    /// after it at the latest.
    oldest: Option<Instant>,
    /// The last LSN durable.
    durable: u64,
    /// The segment, when nobody is committing: its committer holds it meanwhile, and
    /// after a failure nobody does.
    io: Option<Io>,
    /// Records up to this LSN are to be committed by the writer thread without delay.
    requested: u64,
    thread: ThreadWait,
    /// Waiters for a commit, by the LSN they wait for: each hears once that LSN is durable
    /// (or the journal stopped), and one of them also when the next group is its to commit.
    waiters: Vec<Waiter>,
    closing: bool,
    /// The writer thread has committed everything and stopped.
    closed: bool,
    failed: Option<Arc<str>>,
}

impl State {
    /// Whether a group is being committed (its committer holds the segment).
    fn busy(&self) -> bool {
        self.io.is_none() && self.failed.is_none()
    }
}

/// What the handle, the tickets and the writer thread share.
struct Shared {
    options: Options,
    state: std::sync::Mutex<State>,
    /// Wakes the writer thread.
    wake_thread: Condvar,
    /// The durable position (readiness, subscribers to it).
    durable: watch::Sender<Durable>,
}

/// A waiter for a commit.
struct Waiter {
    /// It waits until this LSN is durable.
    lsn: u64,
    /// Whether it may commit a small group on its own thread.
    may_commit: bool,
    /// Tells it to look again.
    tx: oneshot::Sender<()>,
}

/// Whether a task may hold its runtime worker for a commit: not on a runtime with one
/// worker, where every other task (reading requests, answering) would wait for the
/// fdatasync too, and under load a commit would then be made for every few orders
/// (measured through `execbridge-bench` with `server.worker_threads = 1`: at 6,000
/// submits/s the open-loop p50 went from 2.4 ms to 619 ms). Outside a runtime it may.
fn may_block_this_worker() -> bool {
    tokio::runtime::Handle::try_current().map_or(true, |h| h.metrics().num_workers() > 1)
}

/// What a waiter does next.
enum Step {
    Done(Result<(), JournalError>),
    /// Wait until told to look again.
    Wait(oneshot::Receiver<()>),
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes the writer thread if it sleeps in one of `waits`.
    fn wake(&self, st: &State, waits: &[ThreadWait]) {
        if waits.contains(&st.thread) {
            self.wake_thread.notify_one();
        }
    }

    /// Commits everything pending as one group on the calling thread. Called with the lock
    /// held, no group in progress and records pending; the lock is released for the I/O and
    /// held again on return.
    fn commit<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let Some(mut io) = st.io.take() else {
            return st;
        };
        let group = std::mem::take(&mut st.pending);
        let Some(last) = group.last().map(|e| e.lsn) else {
            st.io = Some(io);
            return st;
        };
        st.oldest = None;
        drop(st);
        crate::metrics::get().journal_queue.sub(group.len() as i64);
        let committed = io.commit(&group);
        let rotated = match committed {
            Ok(()) => io.rotate_if_full(last + 1),
            Err(_) => Ok(()),
        };
        let mut st = self.lock();
        if committed.is_ok() {
            st.durable = last;
            self.durable.send_modify(|d| d.lsn = last);
        }
        match committed.and(rotated) {
            Ok(()) => st.io = Some(io),
            Err(e) => {
                // Fail-stop: `io` is dropped, nothing is written or acknowledged after this.
                tracing::error!(error = %e, "journal write failed; the executor stops acknowledging (fail-stop)");
                let reason: Arc<str> = e.to_string().into();
                st.failed = Some(reason.clone());
                self.durable.send_modify(|d| d.failed = Some(reason));
            }
        }
        self.release(&mut st);
        if !st.pending.is_empty() || st.closing || st.failed.is_some() {
            self.wake(&st, &[ThreadWait::Idle]);
        }
        st
    }

    /// After a commit: tells the waiters whose records are durable (all of them once the
    /// journal stopped), and hands the next group, if any, to one waiter when it is small
    /// or to the writer thread when it is not. Nobody else is woken.
    fn release(&self, st: &mut State) {
        let everyone = st.failed.is_some() || st.closed;
        let durable = st.durable;
        let mut i = 0;
        while i < st.waiters.len() {
            if everyone || st.waiters[i].lsn <= durable {
                let _ = st.waiters.swap_remove(i).tx.send(());
            } else {
                i += 1;
            }
        }
        if st.busy() || st.pending.is_empty() || st.waiters.is_empty() {
            return;
        }
        if st.pending.len() <= self.options.inline_records {
            while let Some(at) = st.waiters.iter().rposition(|w| w.may_commit) {
                if st.waiters.swap_remove(at).tx.send(()).is_ok() {
                    return;
                }
            }
        }
        // Too large for a waiter, or no waiter that may commit it: the thread commits it.
        let last = st.pending.last().map_or(0, |e| e.lsn);
        st.requested = st.requested.max(last);
        self.wake(st, &[ThreadWait::Idle, ThreadWait::Deadline]);
    }

    /// Looks at the state for a waiter of `lsn`: done, or registered to be told when to
    /// look again. Commits the pending group on this thread when that is the waiter's part
    /// (see [`Ticket::wait`]).
    fn step(&self, lsn: u64, may_commit: bool) -> Step {
        let mut st = self.lock();
        loop {
            if st.durable >= lsn {
                return Step::Done(Ok(()));
            }
            if let Some(reason) = &st.failed {
                return Step::Done(Err(JournalError::Failed(reason.clone())));
            }
            let busy = st.busy();
            if busy || st.pending.is_empty() {
                // A commit is under way, or the records are not appended yet (and never
                // will be once the journal is closed).
                if st.closed && !busy {
                    return Step::Done(Err(stopped()));
                }
                break;
            }
            if may_commit && st.pending.len() <= self.options.inline_records {
                st = self.commit(st);
                continue;
            }
            st.requested = st.requested.max(lsn);
            self.wake(&st, &[ThreadWait::Idle, ThreadWait::Deadline]);
            break;
        }
        // Registered under the lock: the commit that could release this waiter looks at
        // the waiters under the same lock, after this.
        let (tx, rx) = oneshot::channel();
        st.waiters.push(Waiter {
            lsn,
            may_commit,
            tx,
        });
        Step::Wait(rx)
    }

    fn wait_blocking(&self, lsn: u64) -> Result<(), JournalError> {
        loop {
            // A thread outside the async runtime blocks nobody else.
            match self.step(lsn, true) {
                Step::Done(result) => return result,
                // The sender lives in the state until it is used.
                Step::Wait(rx) => {
                    let _ = rx.blocking_recv();
                }
            }
        }
    }

    /// Asks the writer thread to commit up to `lsn` without delay.
    fn request(&self, lsn: u64) {
        let mut st = self.lock();
        if st.durable < lsn && st.failed.is_none() {
            st.requested = st.requested.max(lsn);
            self.wake(&st, &[ThreadWait::Idle, ThreadWait::Deadline]);
        }
    }

    /// The writer thread: commits what nobody waits for within the delay, what it is asked
    /// to (groups too large for a waiter, dropped tickets), and everything at close.
    fn run(&self) {
        let mut st = self.lock();
        loop {
            if st.failed.is_some() && !st.busy() {
                break;
            }
            let now = Instant::now();
            let deadline = st.oldest.map(|t| t + self.options.sync_delay);
            let due = !st.pending.is_empty()
                && (st.requested > st.durable
                    || st.closing
                    || !self.options.fsync
                    || st.pending.len() >= self.options.max_batch
                    || deadline.is_some_and(|d| now >= d));
            if due && !st.busy() {
                st = self.commit(st);
                continue;
            }
            if st.closing && st.pending.is_empty() && !st.busy() {
                break;
            }
            st = match deadline {
                Some(at) if !st.busy() => {
                    st.thread = ThreadWait::Deadline;
                    self.wake_thread
                        .wait_timeout(st, at.saturating_duration_since(now))
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
                _ => {
                    st.thread = ThreadWait::Idle;
                    self.wake_thread
                        .wait(st)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                }
            };
            st.thread = ThreadWait::Running;
        }
        // Closing: give back the space allocated ahead (a crash would leave it: readers
        // stop at its zeros).
        if st.failed.is_none()
            && let Some(io) = st.io.as_mut()
            && let Err(e) = io.trim()
        {
            tracing::warn!(error = %e, "journal segment not trimmed at close");
        }
        st.thread = ThreadWait::Running;
        st.closed = true;
        // Whoever still waits looks again, and hears that nothing more comes.
        self.release(&mut st);
    }
}

fn stopped() -> JournalError {
    JournalError::Failed("the journal writer is stopped".into())
}

impl Journal {
    /// Starts the writer on `dir` (created if missing), appending after `last_lsn`.
    ///
    /// # Errors
    /// [`JournalError::Io`] when the directory or the segment cannot be opened.
    pub fn start(
        dir: &Path,
        last_lsn: u64,
        options: Options,
        after: Box<dyn AfterSync>,
    ) -> Result<Self, JournalError> {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, &e))?;
        let existing = segments(dir)?;
        let (file, path, written) = match existing.last() {
            Some(path) => {
                let (file, end) = open_at_end(path)?;
                (file, path.clone(), end)
            }
            None => {
                let (file, path) = Io::open_segment(dir, last_lsn + 1)?;
                (file, path, 0)
            }
        };
        let io = Io {
            dir: dir.to_owned(),
            fsync: options.fsync,
            segment_bytes: options.segment_bytes,
            file,
            path,
            written,
            allocated: written,
            preallocate: true,
            after,
            buf: Vec::with_capacity(1 << 20),
        };
        Self::with_io(io, last_lsn, options)
    }

    fn with_io(io: Io, last_lsn: u64, options: Options) -> Result<Self, JournalError> {
        let dir = io.dir.clone();
        let (durable, _) = watch::channel(Durable {
            lsn: last_lsn,
            failed: None,
        });
        let shared = Arc::new(Shared {
            options,
            state: std::sync::Mutex::new(State {
                pending: Vec::new(),
                oldest: None,
                durable: last_lsn,
                io: Some(io),
                requested: 0,
                thread: ThreadWait::Running,
                waiters: Vec::new(),
                closing: false,
                closed: false,
                failed: None,
            }),
            wake_thread: Condvar::new(),
            durable,
        });
        let writer = shared.clone();
        let thread = thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| io_error(&dir, &e))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues `entries` (already in LSN order) for the next group commit. Call it under
    /// the lock that assigned the LSNs, so groups are committed in order. With `wait` the
    /// returned ticket completes once they are durable (whoever awaits it commits them
    /// without delay, see [`Ticket::wait`]); without, it is ready at once and the writer
    /// thread commits them within [`Options::sync_delay`], unless a waiter's group takes
    /// them first.
    ///
    /// # Errors
    /// [`JournalError::Failed`] once the writer has stopped.
    pub fn append(&self, entries: Vec<Entry>, wait: bool) -> Result<Ticket, JournalError> {
        let mut st = self.shared.lock();
        if let Some(reason) = &st.failed {
            return Err(JournalError::Failed(reason.clone()));
        }
        if st.closing {
            return Err(stopped());
        }
        let Some(lsn) = entries.last().map(|e| e.lsn) else {
            return Ok(Ticket::ready());
        };
        crate::metrics::get()
            .journal_queue
            .add(entries.len() as i64);
        st.pending.extend(entries);
        st.oldest.get_or_insert_with(Instant::now);
        let urgent =
            !self.shared.options.fsync || st.pending.len() >= self.shared.options.max_batch;
        if urgent {
            self.shared
                .wake(&st, &[ThreadWait::Idle, ThreadWait::Deadline]);
        } else if !wait {
            // A sleeping thread with a deadline wakes by then anyway.
            self.shared.wake(&st, &[ThreadWait::Idle]);
        }
        Ok(if wait {
            Ticket {
                shared: Some(self.shared.clone()),
                lsn,
            }
        } else {
            Ticket::ready()
        })
    }

    /// A ticket that completes once every record up to `lsn` is durable: awaiting it
    /// commits records written without a ticket now rather than at their deadline.
    pub fn sync(&self, lsn: u64) -> Ticket {
        if self.shared.durable.borrow().lsn >= lsn {
            return Ticket::ready();
        }
        Ticket {
            shared: Some(self.shared.clone()),
            lsn,
        }
    }

    /// The reason the writer stopped, if it did.
    pub fn failed(&self) -> Option<Arc<str>> {
        self.shared.durable.borrow().failed.clone()
    }

    /// The durable LSN.
    pub fn durable_lsn(&self) -> u64 {
        self.shared.durable.borrow().lsn
    }

    /// A receiver of the durable position (for readiness and waiters).
    pub fn watch(&self) -> watch::Receiver<Durable> {
        self.shared.durable.subscribe()
    }

    /// Completes once every record up to `lsn` is durable. Cancellation safe.
    ///
    /// # Errors
    /// [`JournalError::Failed`] when the writer stopped before reaching `lsn`.
    pub async fn wait(&self, lsn: u64) -> Result<(), JournalError> {
        self.sync(lsn).wait().await
    }

    /// Commits everything appended so far, then stops the writer; appends fail after it.
    pub fn close(&mut self) {
        {
            let mut st = self.shared.lock();
            st.closing = true;
            self.shared
                .wake(&st, &[ThreadWait::Idle, ThreadWait::Deadline]);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

/// Waits on a durable-position receiver until `lsn` is durable.
///
/// # Errors
/// [`JournalError::Failed`] when the writer stopped before reaching it.
pub async fn wait_durable(mut rx: watch::Receiver<Durable>, lsn: u64) -> Result<(), JournalError> {
    let state = rx
        .wait_for(|d| d.lsn >= lsn || d.failed.is_some())
        .await
        .map_err(|_| JournalError::Failed("the journal writer is gone".into()))?
        .clone();
    if state.lsn >= lsn {
        Ok(())
    } else {
        Err(JournalError::Failed(
            state.failed.unwrap_or_else(|| "stopped".into()),
        ))
    }
}

#[cfg(test)]
mod tests;
