//! Snapshots of the engine's state, so that a start replays only the journal written after
//! the newest one, and journal segments older than the snapshots can be deleted: without
//! them the journal, and the time a start takes, grow with every order ever taken.
//!
//! # When
//! A snapshot thread (at the audit trail's low priority) looks at the journal's durable LSN
//! at start and ten times a second. Once `journal.snapshot_every_records` records are durable after
//! the newest snapshot, it loads that snapshot into an engine of its own (no venue ledger,
//! no service), replays the journal after it up to the durable LSN, writes the new
//! snapshot and deletes what is no longer needed. A failed snapshot is tried again after
//! a pause that doubles from 1 s to 5 minutes. Its input is the journal files, so the
//! order path never waits for it and no lock is held for it; the price is the time the
//! replay takes on a core of its own, and memory for a second copy of the retained
//! history while it runs.
//!
//! # What is kept
//! The newest [`KEEP`] snapshots. A journal segment is deleted once every record in it is
//! at or below the older of them (so a damaged newest snapshot still has its fallback
//! with the journal after it) and, when an audit trail runs, written to the audit sink (it
//! catches up from the journal). The segment being written is never deleted. Segments are
//! deleted after each snapshot, at start, and whenever the trail has written more since
//! the last try, so a trail that lagged at a snapshot does not keep them until the next
//! one. A subscriber resuming from a sequence whose segment is gone is told the oldest it
//! can resume from.
//!
//! # Format
//! `snapshot-<lsn, 20 digits>.json`: a 20-byte header (`EBSNAP01`, the body's length as a
//! u64 and its CRC-32C as a u32, little-endian) and the [`Checkpoint`] as JSON. Written to a
//! temporary name, fsync'd, renamed into place and the directory fsync'd, so a crash leaves
//! either the whole snapshot or none. JSON, not a binary format: the domain types
//! serialize decimals as strings and some enums with internal tags, which compact binary
//! formats (bincode, postcard) cannot read back, and a snapshot stays readable with
//! ordinary tools. `make bench` reports what writing and reading one costs.
//!
//! The JSON follows the engine's state types, so a release that changes them must still
//! read the previous release's snapshots (new fields with serde defaults) or change the
//! header's version: a start whose snapshots all fail to read back, after segments were
//! deleted, refuses to run rather than rebuild a partial state.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::engine::{Checkpoint, Engine, Replayed};
use crate::journal::{self, Durable, JournalError};

/// Snapshots kept: the newest, and one to fall back on.
pub const KEEP: usize = 2;
const MAGIC: &[u8; 8] = b"EBSNAP01";
const HEADER: usize = 20;
/// How often the snapshot thread looks at the journal's durable LSN (a read of a value).
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// The pause after a failed snapshot; it doubles up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_secs(1);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(300);

fn name_of(lsn: u64) -> String {
    format!("snapshot-{lsn:020}.json")
}

fn lsn_of(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_prefix("snapshot-")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

fn io_error(path: &Path, e: &dyn std::fmt::Display) -> JournalError {
    JournalError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The snapshot files of `dir` with their LSNs, newest first.
///
/// # Errors
/// When the directory cannot be listed.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .map_err(|e| io_error(dir, &e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| lsn_of(&p).map(|lsn| (lsn, p)))
        .collect();
    out.sort_by_key(|s| std::cmp::Reverse(s.0));
    Ok(out)
}

/// Writes `checkpoint` as `dir`'s newest snapshot; returns its path.
///
/// # Errors
/// When the file cannot be written and made durable.
pub fn write(dir: &Path, checkpoint: &Checkpoint) -> Result<PathBuf, JournalError> {
    let path = dir.join(name_of(checkpoint.lsn));
    let temp = path.with_extension("json.tmp");
    // Streamed: the JSON (about 1.3 KB per order held) never sits in memory whole. The
    // header's length and checksum are filled in once the body is written.
    let mut file = File::create(&temp).map_err(|e| io_error(&temp, &e))?;
    let mut body = Summing {
        out: std::io::BufWriter::with_capacity(1 << 20, &mut file),
        crc: 0,
        len: 0,
    };
    let written = body
        .out
        .write_all(&[0; HEADER])
        .map_err(|e| io_error(&temp, &e))
        .and_then(|()| {
            serde_json::to_writer(&mut body, checkpoint).map_err(|e| io_error(&temp, &e))
        })
        .and_then(|()| body.out.flush().map_err(|e| io_error(&temp, &e)));
    let (crc, len) = (body.crc, body.len);
    drop(body);
    written?;
    let mut header = [0u8; HEADER];
    header[..8].copy_from_slice(MAGIC);
    header[8..16].copy_from_slice(&len.to_le_bytes());
    header[16..].copy_from_slice(&crc.to_le_bytes());
    std::os::unix::fs::FileExt::write_all_at(&file, &header, 0)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(&temp, &e))?;
    drop(file);
    fs::rename(&temp, &path).map_err(|e| io_error(&path, &e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, &e))?;
    Ok(path)
}

/// A writer that passes bytes on and sums their CRC-32C and length.
struct Summing<W> {
    out: W,
    crc: u32,
    len: u64,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Reads one snapshot, checking its header and checksum.
///
/// # Errors
/// [`JournalError::Corrupt`] for a damaged file, [`JournalError::Io`] for an unreadable one.
pub fn read(path: &Path) -> Result<Checkpoint, JournalError> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| io_error(path, &e))?;
    let damage = |reason: String| JournalError::Corrupt {
        path: path.display().to_string(),
        offset: 0,
        reason,
    };
    if data.len() < HEADER || &data[..8] != MAGIC {
        return Err(damage("not a snapshot (bad header)".into()));
    }
    let len = u64::from_le_bytes(data[8..16].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(data[16..20].try_into().unwrap_or_default());
    let body = &data[HEADER..];
    if body.len() as u64 != len {
        return Err(damage(format!(
            "{} bytes of body, the header says {len}",
            body.len()
        )));
    }
    if crc32c::crc32c(body) != crc {
        return Err(damage("a checksum mismatch".into()));
    }
    let checkpoint: Checkpoint = serde_json::from_slice(body).map_err(|e| damage(e.to_string()))?;
    match lsn_of(path) {
        Some(lsn) if lsn == checkpoint.lsn => Ok(checkpoint),
        named => Err(damage(format!(
            "the file is named for lsn {named:?}, its state is at lsn {}",
            checkpoint.lsn
        ))),
    }
}

/// The newest snapshot of `dir` that reads back whole; a damaged one is reported and the
/// next older one tried. `None` when there is none (replay starts from the journal's
/// beginning).
///
/// # Errors
/// When the directory cannot be listed.
pub fn newest(dir: &Path) -> Result<Option<Checkpoint>, JournalError> {
    for (_, path) in list(dir)? {
        match read(&path) {
            Ok(checkpoint) => return Ok(Some(checkpoint)),
            Err(e) => {
                tracing::error!(error = %e, "skipping a snapshot that does not read back");
                crate::metrics::get().snapshot_failures.inc();
            }
        }
    }
    Ok(None)
}

/// Where a start replays from: the newest snapshot that reads back (its state), or none
/// when the journal still begins at its first record.
///
/// # Errors
/// [`JournalError::Corrupt`] when no snapshot reads back but older segments were deleted
/// (the journal alone no longer rebuilds the state), naming the first LSN it holds.
pub fn start_point(dir: &Path) -> Result<Option<Checkpoint>, JournalError> {
    if let Some(checkpoint) = newest(dir)? {
        return Ok(Some(checkpoint));
    }
    match journal::segments(dir)?.first() {
        Some(first) if journal::first_lsn_of(first).is_some_and(|lsn| lsn > 1) => {
            Err(JournalError::Corrupt {
                path: first.display().to_string(),
                offset: 0,
                reason: format!(
                    "the journal begins at lsn {} (the segments before it were deleted once \
                     snapshots covered them) and no snapshot reads back: restore a snapshot \
                     file (snapshot-*.json) or the deleted segments",
                    journal::first_lsn_of(first).unwrap_or_default()
                ),
            })
        }
        _ => Ok(None),
    }
}

/// Deletes snapshots beyond the newest [`KEEP`], then every journal segment whose records
/// are all at or below both the oldest snapshot kept and `audited` (the audit trail's
/// written LSN; `None` without a trail). Returns the segments deleted.
///
/// # Errors
/// When a file cannot be listed or deleted.
pub fn prune(dir: &Path, audited: Option<u64>) -> Result<usize, JournalError> {
    let snapshots = list(dir)?;
    for (_, path) in snapshots.iter().skip(KEEP) {
        fs::remove_file(path).map_err(|e| io_error(path, &e))?;
    }
    let Some((oldest_kept, _)) = snapshots.iter().take(KEEP).next_back() else {
        return Ok(0);
    };
    let bound = audited.map_or(*oldest_kept, |a| a.min(*oldest_kept));
    let segments = journal::segments(dir)?;
    let mut deleted = 0;
    for pair in segments.windows(2) {
        // Segment `pair[0]` ends just before the next one's first LSN.
        match journal::first_lsn_of(&pair[1]) {
            Some(next) if next.saturating_sub(1) <= bound => {
                fs::remove_file(&pair[0]).map_err(|e| io_error(&pair[0], &e))?;
                deleted += 1;
            }
            _ => break,
        }
    }
    if deleted > 0 {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(dir, &e))?;
    }
    Ok(deleted)
}

/// Brings the newest snapshot of `dir` up to `target` (a durable LSN) with `engine` (fresh,
/// replay only), writes it, and prunes. Returns the new snapshot's LSN.
///
/// # Errors
/// When the journal cannot be read or replayed, or the snapshot cannot be written.
pub fn take(
    dir: &Path,
    mut engine: Engine,
    target: u64,
    audited: Option<u64>,
) -> Result<u64, JournalError> {
    let started = Instant::now();
    let damage = |lsn: u64, e: &dyn std::fmt::Display| JournalError::Corrupt {
        path: dir.display().to_string(),
        offset: lsn,
        reason: e.to_string(),
    };
    if let Some(checkpoint) = newest(dir)? {
        let lsn = checkpoint.lsn;
        engine.restore(checkpoint).map_err(|e| damage(lsn, &e))?;
    }
    let from = engine.last_lsn() + 1;
    journal::replay_records(dir, from, false, |record: Replayed| {
        if record.lsn > target {
            return Ok(());
        }
        let lsn = record.lsn;
        engine.replay(record).map_err(|e| damage(lsn, &e))
    })?;
    if engine.last_lsn() != target {
        return Err(damage(
            target,
            &format!(
                "the journal holds records up to lsn {}, the snapshot is for {target}",
                engine.last_lsn()
            ),
        ));
    }
    let checkpoint = engine.into_checkpoint();
    let path = write(dir, &checkpoint)?;
    let deleted = prune(dir, audited)?;
    let metrics = crate::metrics::get();
    metrics
        .snapshot_lsn
        .set(i64::try_from(target).unwrap_or(i64::MAX));
    metrics
        .snapshot_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.segments_deleted.inc_by(deleted as u64);
    tracing::info!(
        path = %path.display(),
        lsn = target,
        replayed = target + 1 - from,
        segments_deleted = deleted,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "snapshot written"
    );
    Ok(target)
}

/// Deletes the temporary files of snapshots a crash interrupted.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("snapshot-")
            && name.ends_with(".json.tmp")
            && let Err(e) = fs::remove_file(&path)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete an unfinished snapshot");
        }
    }
}

/// The running snapshot thread.
pub struct Snapshots {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Snapshots {
    /// Starts the thread: a snapshot every `every` durable records, each made with an
    /// engine from `fresh`. `audited` is the audit trail's written LSN, when one runs.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(
        dir: PathBuf,
        every: u64,
        fresh: impl Fn() -> Engine + Send + 'static,
        durable: tokio::sync::watch::Receiver<Durable>,
        audited: Option<Arc<AtomicU64>>,
    ) -> Result<Self, JournalError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let mut last = list(&dir)?.first().map_or(0, |(lsn, _)| *lsn);
        let thread = thread::Builder::new()
            .name("snapshots".into())
            .spawn(move || {
                crate::audit::lower_priority("snapshot");
                remove_leftovers(&dir);
                // After a failure, the next try waits; the pause doubles up to a limit.
                let mut pause = FIRST_RETRY_PAUSE;
                let mut retry_at = Instant::now();
                // The audit trail's written LSN at the last prune (`u64::MAX` without a
                // trail); `None` before the first, so a start prunes once.
                let mut pruned_for: Option<u64> = None;
                // At once first: a start that replayed a long journal tail snapshots it.
                loop {
                    let target = durable.borrow().lsn;
                    let audit_now = audited.as_ref().map(|a| a.load(Ordering::Acquire));
                    let mark = audit_now.unwrap_or(u64::MAX);
                    if target >= last.saturating_add(every) && Instant::now() >= retry_at {
                        match take(&dir, fresh(), target, audit_now) {
                            Ok(lsn) => {
                                last = lsn;
                                pause = FIRST_RETRY_PAUSE;
                                pruned_for = Some(mark);
                            }
                            Err(e) => {
                                // The journal still has everything: the next try starts over.
                                crate::metrics::get().snapshot_failures.inc();
                                tracing::error!(error = %e, retry_in = ?pause, "snapshot failed");
                                retry_at = Instant::now() + pause;
                                pause = (pause * 2).min(MAX_RETRY_PAUSE);
                            }
                        }
                    } else if last > 0 && pruned_for.is_none_or(|p| mark > p) {
                        // Segments the trail held back at the last snapshot go once it
                        // has written them, not at the next snapshot, which may be far
                        // off when orders stop. Also once at start, after a kill between
                        // a snapshot's rename and its prune.
                        match prune(&dir, audit_now) {
                            Ok(deleted) => {
                                crate::metrics::get()
                                    .segments_deleted
                                    .inc_by(deleted as u64);
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot delete journal segments"),
                        }
                        pruned_for = Some(mark);
                    }
                    match stopped.recv_timeout(CHECK_EVERY) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => break,
                    }
                }
            })
            .map_err(|e| io_error(Path::new("snapshot thread"), &e))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread (a snapshot being written is finished first).
    pub fn close(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Snapshots {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests;
