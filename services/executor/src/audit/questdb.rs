//! The QuestDB sink: rows over the InfluxDB line protocol (TCP) with the official
//! `questdb-rs` client. QuestDB is write-only from here, so the chain's last LSN and hash
//! are kept in a small state file beside the journal.

use std::path::{Path, PathBuf};

use questdb::ingress::{Buffer, Sender, TimestampNanos};

use super::{AuditEntry, AuditError, AuditSink};

fn err(e: impl std::fmt::Display) -> AuditError {
    AuditError::sink("questdb", e)
}

/// An audit table in QuestDB.
pub struct QuestdbSink {
    sender: Sender,
    buffer: Buffer,
    table: String,
    state: PathBuf,
}

impl QuestdbSink {
    /// Connects to the ILP/TCP listener at `addr` (`host:port`).
    ///
    /// # Errors
    /// [`AuditError::Sink`] when it cannot connect.
    pub fn connect(addr: &str, table: &str, state: &Path) -> Result<Self, AuditError> {
        let sender = Sender::from_conf(format!("tcp::addr={addr};")).map_err(err)?;
        let buffer = sender.new_buffer();
        Ok(Self {
            sender,
            buffer,
            table: table.to_owned(),
            state: state.to_owned(),
        })
    }
}

impl AuditSink for QuestdbSink {
    fn last(&mut self) -> Result<Option<(u64, String)>, AuditError> {
        let Ok(text) = std::fs::read_to_string(&self.state) else {
            return Ok(None);
        };
        let (lsn, hash) = text
            .trim()
            .split_once(' ')
            .ok_or_else(|| err("bad state file"))?;
        Ok(Some((lsn.parse().map_err(err)?, hash.to_owned())))
    }

    fn write(&mut self, entries: &[AuditEntry]) -> Result<(), AuditError> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        for e in entries {
            self.buffer
                .table(self.table.as_str())
                .and_then(|b| b.symbol("kind", e.kind.as_str()))
                .and_then(|b| b.symbol("account", e.account.as_str()))
                .and_then(|b| b.column_i64("lsn", e.lsn as i64))
                .and_then(|b| b.column_i64("sequence", e.sequence as i64))
                .and_then(|b| b.column_str("order_id", e.order_id.as_str()))
                .and_then(|b| b.column_str("client_order_id", e.client_order_id.as_str()))
                .and_then(|b| b.column_str("payload", e.payload.as_str()))
                .and_then(|b| b.column_str("prev_hash", e.prev_hash.as_str()))
                .and_then(|b| b.column_str("hash", e.hash.as_str()))
                .and_then(|b| b.at(TimestampNanos::new(e.time_nanos)))
                .map_err(err)?;
        }
        self.sender.flush(&mut self.buffer).map_err(err)?;
        // Replaced whole (a temporary file renamed over it), so a kill mid-write leaves the
        // old state or the new one, never a torn file the next start cannot read.
        let next = self.state.with_extension("tmp");
        std::fs::write(&next, format!("{} {}\n", last.lsn, last.hash)).map_err(err)?;
        std::fs::rename(&next, &self.state).map_err(err)
    }

    fn read_all(&mut self) -> Result<Vec<AuditEntry>, AuditError> {
        Err(AuditError::NotReadable("questdb"))
    }
}
