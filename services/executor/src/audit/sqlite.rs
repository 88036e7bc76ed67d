//! The SQLite sink: one file, one table, a transaction per batch.

use std::path::Path;

use rusqlite::{Connection, params};

use super::{AuditEntry, AuditError, AuditSink};

fn err(e: impl std::fmt::Display) -> AuditError {
    AuditError::sink("sqlite", e)
}

/// An audit table in an SQLite file.
pub struct SqliteSink {
    conn: Connection,
    table: String,
}

impl SqliteSink {
    /// Opens (and creates) `path` with the table `table`.
    ///
    /// # Errors
    /// [`AuditError::Sink`] when the file cannot be opened.
    pub fn open(path: &Path, table: &str) -> Result<Self, AuditError> {
        let conn = Connection::open(path).map_err(err)?;
        // WAL with FULL sync: a commit is on disk when it returns. The trail reports what
        // it wrote as written, and journal segments are deleted behind it; with NORMAL a
        // power loss could drop commits whose records the journal no longer has. The
        // trail commits once per `audit.flush_interval_ms`, so this is an fsync per
        // interval, not per order.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS {table} (
               lsn INTEGER PRIMARY KEY, sequence INTEGER NOT NULL, time_nanos INTEGER NOT NULL,
               kind TEXT NOT NULL, account TEXT NOT NULL, order_id TEXT NOT NULL,
               client_order_id TEXT NOT NULL, payload TEXT NOT NULL,
               prev_hash TEXT NOT NULL, hash TEXT NOT NULL);"
        ))
        .map_err(err)?;
        Ok(Self {
            conn,
            table: table.to_owned(),
        })
    }

    /// The connection, for tests that tamper with the trail.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

impl AuditSink for SqliteSink {
    fn last(&mut self) -> Result<Option<(u64, String)>, AuditError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT lsn, hash FROM {} ORDER BY lsn DESC LIMIT 1",
                self.table
            ))
            .map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        match rows.next().map_err(err)? {
            Some(row) => {
                let lsn: i64 = row.get(0).map_err(err)?;
                Ok(Some((lsn as u64, row.get(1).map_err(err)?)))
            }
            None => Ok(None),
        }
    }

    fn write(&mut self, entries: &[AuditEntry]) -> Result<(), AuditError> {
        if entries.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO {} (lsn, sequence, time_nanos, kind, account, order_id,
                     client_order_id, payload, prev_hash, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    self.table
                ))
                .map_err(err)?;
            for e in entries {
                stmt.execute(params![
                    e.lsn as i64,
                    e.sequence as i64,
                    e.time_nanos,
                    e.kind,
                    e.account,
                    e.order_id,
                    e.client_order_id,
                    e.payload,
                    e.prev_hash,
                    e.hash
                ])
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    fn read_all(&mut self) -> Result<Vec<AuditEntry>, AuditError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT lsn, sequence, time_nanos, kind, account, order_id, client_order_id,
                 payload, prev_hash, hash FROM {} ORDER BY lsn",
                self.table
            ))
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(AuditEntry {
                    lsn: r.get::<_, i64>(0)? as u64,
                    sequence: r.get::<_, i64>(1)? as u64,
                    time_nanos: r.get(2)?,
                    kind: r.get(3)?,
                    account: r.get(4)?,
                    order_id: r.get(5)?,
                    client_order_id: r.get(6)?,
                    payload: r.get(7)?,
                    prev_hash: r.get(8)?,
                    hash: r.get(9)?,
                })
            })
            .map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
    }
}
