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
//! The engine queues records (under its lock, so the log order is the sequence order) on a
//! channel to one writer thread. The writer takes everything queued, writes it with one
//! `write`, and calls `fdatasync` once for the group; while it syncs, new records queue up
//! for the next group, and the engine lock is never held across an fsync.
//!
//! Whoever must not go on before its records are on disk (an order intent before it goes
//! to the venue; a cancel request; an admin change) appends them with a [`Ticket`] and
//! awaits it: the writer completes exactly those tickets its sync covered, so a commit
//! wakes its own waiters and nobody else. Records appended without a ticket (the venue's
//! answers, fills that market data brings) are written at once and made durable by the
//! next group commit that someone waits for, or after at most [`Options::sync_delay`]:
//! at low load an order then pays one fdatasync, not one per record. Records reach
//! subscribers and the audit trail only once they are durable, in LSN order.
//!
//! After a failed write or fdatasync the writer stops for good (a retried fsync can report
//! success for data the kernel already dropped): the durable LSN never advances again,
//! every ticket fails with [`JournalError::Failed`], and the executor turns not-ready.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use execbridge_api::internal::v1::journal_record::Entry as RecordEntry;
use execbridge_api::internal::v1::{AdminChange, JournalRecord};
use execbridge_api::v1;
use prost::Message;
use tokio::sync::watch;

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

type Notify = tokio::sync::oneshot::Sender<Result<(), Arc<str>>>;

enum Msg {
    /// Records to write; the sender (if any) hears once they are durable.
    Append(Vec<Entry>, Option<Notify>),
    /// Hear once everything up to this LSN is durable (forces a sync).
    Sync(u64, Notify),
    /// Sync everything written, then answer.
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// Completes once the records it was issued for are durable.
#[must_use = "a ticket does nothing unless it is awaited"]
pub struct Ticket {
    rx: Option<tokio::sync::oneshot::Receiver<Result<(), Arc<str>>>>,
}

impl Ticket {
    /// A ticket for records already durable.
    pub fn ready() -> Self {
        Self { rx: None }
    }

    fn outcome(
        r: Result<Result<(), Arc<str>>, tokio::sync::oneshot::error::RecvError>,
    ) -> Result<(), JournalError> {
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(JournalError::Failed(reason)),
            Err(_) => Err(JournalError::Failed("the journal writer stopped".into())),
        }
    }

    /// Waits until the records are durable. Cancellation safe.
    ///
    /// # Errors
    /// [`JournalError::Failed`] when the writer stopped first.
    pub async fn wait(self) -> Result<(), JournalError> {
        match self.rx {
            None => Ok(()),
            Some(rx) => Self::outcome(rx.await),
        }
    }

    /// [`Ticket::wait`] for a thread outside the async runtime.
    ///
    /// # Errors
    /// [`JournalError::Failed`] when the writer stopped first.
    pub fn wait_blocking(self) -> Result<(), JournalError> {
        match self.rx {
            None => Ok(()),
            Some(rx) => Self::outcome(rx.blocking_recv()),
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
    /// Most records per group.
    pub max_batch: usize,
    /// Longest a record appended without a ticket waits for its fdatasync.
    pub sync_delay: std::time::Duration,
}

/// The handle the engine appends through.
pub struct Journal {
    tx: Option<mpsc::Sender<Msg>>,
    durable: watch::Receiver<Durable>,
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

struct Writer {
    dir: PathBuf,
    options: Options,
    file: File,
    path: PathBuf,
    /// Bytes of records in the segment: where the next record goes.
    written: u64,
    /// The file's length as allocated: `written` and the zeros ahead of it.
    allocated: u64,
    /// Whether to allocate ahead; off once `fallocate` failed (a filesystem without it).
    preallocate: bool,
    durable: watch::Sender<Durable>,
    after: Box<dyn AfterSync>,
    /// The last LSN written to the file.
    written_lsn: u64,
    /// The last LSN known durable.
    durable_lsn: u64,
    /// Written records awaiting their fdatasync.
    unsynced: Vec<Entry>,
    /// Tickets: complete once `durable_lsn` reaches the LSN.
    waiters: Vec<(u64, Notify)>,
}

impl Writer {
    /// Creates the segment whose first record is `first_lsn` (a file of that name already
    /// there is an error: no segment is ever started twice). Written with positioned
    /// writes at [`Writer::written`], never in append mode (which would ignore the offset).
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

    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut buf = Vec::with_capacity(1 << 20);
        let mut group: Vec<Entry> = Vec::new();
        let mut flushes = Vec::new();
        // When the oldest record without a waiter must be synced at the latest.
        let mut deadline: Option<std::time::Instant> = None;
        loop {
            let first = match deadline {
                None => match rx.recv() {
                    Ok(msg) => Some(msg),
                    Err(_) => break,
                },
                Some(at) => {
                    match rx.recv_timeout(at.saturating_duration_since(std::time::Instant::now())) {
                        Ok(msg) => Some(msg),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            // Someone waits for a sync: do it now rather than at the deadline.
            let mut urgent = first.is_none();
            let mut take = |msg: Msg, group: &mut Vec<Entry>, urgent: &mut bool| match msg {
                Msg::Append(entries, notify) => {
                    if let Some(notify) = notify {
                        let lsn = entries.last().map_or(0, |e| e.lsn);
                        self.waiters.push((lsn, notify));
                        *urgent = true;
                    }
                    group.extend(entries);
                }
                Msg::Sync(lsn, notify) => {
                    self.waiters.push((lsn, notify));
                    *urgent = true;
                }
                Msg::Flush(done) => {
                    flushes.push(done);
                    *urgent = true;
                }
            };
            if let Some(first) = first {
                take(first, &mut group, &mut urgent);
                while group.len() < self.options.max_batch {
                    match rx.try_recv() {
                        Ok(msg) => take(msg, &mut group, &mut urgent),
                        Err(_) => break,
                    }
                }
            }
            if !group.is_empty() {
                let metrics = crate::metrics::get();
                metrics.journal_queue.sub(group.len() as i64);
                buf.clear();
                for entry in &group {
                    entry.encode(&mut buf);
                }
                if let Err(e) = self.write(&buf) {
                    self.fail(&e);
                    return;
                }
                self.written_lsn = group.last().map_or(self.written_lsn, |e| e.lsn);
                self.unsynced.append(&mut group);
            }
            let must_sync = urgent
                || !self.options.fsync
                || self.unsynced.len() >= self.options.max_batch
                || deadline.is_some_and(|at| std::time::Instant::now() >= at);
            if must_sync {
                if let Err(e) = self.sync() {
                    self.fail(&e);
                    return;
                }
                deadline = None;
            } else if !self.unsynced.is_empty() && deadline.is_none() {
                deadline = Some(std::time::Instant::now() + self.options.sync_delay);
            }
            if self.unsynced.is_empty() {
                for done in flushes.drain(..) {
                    let _ = done.send(());
                }
            }
        }
        // The channel closed (the journal is closing): make what was written durable,
        // then give back the space allocated ahead (a crash would leave it: readers stop
        // at its zeros).
        if let Err(e) = self.sync() {
            self.fail(&e);
        } else if self.allocated > self.written {
            let _ = self.file.set_len(self.written);
        }
    }

    /// Syncs what was written, publishes it and completes the tickets it covers.
    fn sync(&mut self) -> Result<(), JournalError> {
        if !self.unsynced.is_empty() {
            if self.options.fsync {
                // Never retried: see the module docs.
                let started = std::time::Instant::now();
                self.file
                    .sync_data()
                    .map_err(|e| io_error(&self.path, &e))?;
                crate::metrics::get()
                    .journal_fsync
                    .observe(started.elapsed().as_secs_f64());
            }
            crate::metrics::get()
                .journal_batch
                .observe(self.unsynced.len() as f64);
            // Subscribers and the audit trail hear of the records before any waiter is
            // released, so whoever saw its call complete also finds its update published.
            self.after.synced(&self.unsynced);
            self.unsynced.clear();
            self.durable_lsn = self.written_lsn;
            let lsn = self.durable_lsn;
            self.durable.send_modify(|d| d.lsn = lsn);
            if self.written >= self.options.segment_bytes {
                self.rotate(lsn + 1)?;
            }
        }
        let durable = self.durable_lsn;
        let mut i = 0;
        while i < self.waiters.len() {
            if self.waiters[i].0 <= durable {
                let (_, notify) = self.waiters.swap_remove(i);
                let _ = notify.send(Ok(()));
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Fail-stop: nothing is acknowledged after this.
    fn fail(&mut self, e: &JournalError) {
        tracing::error!(error = %e, "journal write failed; the executor stops acknowledging (fail-stop)");
        let reason: Arc<str> = e.to_string().into();
        self.durable
            .send_modify(|d| d.failed = Some(reason.clone()));
        for (_, notify) in self.waiters.drain(..) {
            let _ = notify.send(Err(reason.clone()));
        }
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
        let to = end + PREALLOCATE.min(self.options.segment_bytes.max(4096));
        let mode = rustix::fs::FallocateFlags::empty();
        match rustix::fs::fallocate(&self.file, mode, self.allocated, to - self.allocated) {
            Ok(()) => self.allocated = to,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot preallocate journal segments; appending without");
                self.preallocate = false;
            }
        }
    }

    fn rotate(&mut self, next_lsn: u64) -> Result<(), JournalError> {
        // The old segment keeps only its records; were this lost in a crash, readers would
        // stop at the zeros after them.
        if self.allocated > self.written {
            self.file
                .set_len(self.written)
                .map_err(|e| io_error(&self.path, &e))?;
        }
        let (file, path) = Self::open_segment(&self.dir, next_lsn)?;
        self.file = file;
        self.path = path;
        self.written = 0;
        self.allocated = 0;
        Ok(())
    }
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
                let (file, path) = Writer::open_segment(dir, last_lsn + 1)?;
                (file, path, 0)
            }
        };
        let (durable_tx, durable) = watch::channel(Durable {
            lsn: last_lsn,
            failed: None,
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            dir: dir.to_owned(),
            options,
            file,
            path,
            written,
            allocated: written,
            preallocate: true,
            durable: durable_tx,
            after,
            written_lsn: last_lsn,
            durable_lsn: last_lsn,
            unsynced: Vec::new(),
            waiters: Vec::new(),
        };
        let thread = thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| io_error(dir, &e))?;
        Ok(Self {
            tx: Some(tx),
            durable,
            thread: Some(thread),
        })
    }

    /// Queues `entries` (already in LSN order) for the next group commit. Call it under
    /// the lock that assigned the LSNs, so groups reach the writer in order. With `wait`
    /// the returned ticket completes once they are durable (and the writer syncs without
    /// delay); without, it is ready at once and the records are synced within
    /// [`Options::sync_delay`].
    ///
    /// # Errors
    /// [`JournalError::Failed`] once the writer has stopped.
    pub fn append(&self, entries: Vec<Entry>, wait: bool) -> Result<Ticket, JournalError> {
        if self.durable.borrow().failed.is_some() {
            return Err(self.failure());
        }
        if entries.is_empty() {
            return Ok(Ticket::ready());
        }
        let queued = entries.len() as i64;
        crate::metrics::get().journal_queue.add(queued);
        let (notify, ticket) = if wait {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Ticket { rx: Some(rx) })
        } else {
            (None, Ticket::ready())
        };
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(Msg::Append(entries, notify)).ok())
            .ok_or_else(|| self.failure())?;
        Ok(ticket)
    }

    /// A ticket that completes once every record up to `lsn` is durable, syncing records
    /// written without a ticket now rather than at their deadline.
    pub fn sync(&self, lsn: u64) -> Ticket {
        if self.durable.borrow().lsn >= lsn {
            return Ticket::ready();
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Some(sender) = &self.tx {
            // A closed channel drops `tx`: the ticket then reports the stopped writer.
            let _ = sender.send(Msg::Sync(lsn, tx));
        }
        Ticket { rx: Some(rx) }
    }

    fn failure(&self) -> JournalError {
        JournalError::Failed(
            self.durable
                .borrow()
                .failed
                .clone()
                .unwrap_or_else(|| "the journal writer is stopped".into()),
        )
    }

    /// The reason the writer stopped, if it did.
    pub fn failed(&self) -> Option<Arc<str>> {
        self.durable.borrow().failed.clone()
    }

    /// The durable LSN.
    pub fn durable_lsn(&self) -> u64 {
        self.durable.borrow().lsn
    }

    /// A receiver of the durable position (for readiness and waiters).
    pub fn watch(&self) -> watch::Receiver<Durable> {
        self.durable.clone()
    }

    /// Completes once every record up to `lsn` is durable. Cancellation safe.
    ///
    /// # Errors
    /// [`JournalError::Failed`] when the writer stopped before reaching `lsn`.
    pub async fn wait(&self, lsn: u64) -> Result<(), JournalError> {
        self.sync(lsn).wait().await
    }

    /// Writes and syncs everything queued so far, then stops the writer.
    pub fn close(&mut self) {
        if let Some(tx) = self.tx.take() {
            let (done_tx, done_rx) = mpsc::sync_channel(1);
            if tx.send(Msg::Flush(done_tx)).is_ok() {
                let _ = done_rx.recv();
            }
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
