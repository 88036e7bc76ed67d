//! The PostgreSQL sink: one table, a transaction per batch.

use postgres::{Client, NoTls};

use super::{AuditEntry, AuditError, AuditSink};

fn err(e: impl std::fmt::Display) -> AuditError {
    AuditError::sink("postgres", e)
}

/// An audit table in PostgreSQL.
pub struct PostgresSink {
    client: Client,
    table: String,
}

impl PostgresSink {
    /// Connects with `url` (a `postgres://` URL or a `host=... dbname=...` string) and
    /// creates the table `table` if needed.
    ///
    /// # Errors
    /// [`AuditError::Sink`] when the server cannot be reached.
    pub fn connect(url: &str, table: &str) -> Result<Self, AuditError> {
        let mut client = Client::connect(url, NoTls).map_err(err)?;
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                   lsn BIGINT PRIMARY KEY, sequence BIGINT NOT NULL, time_nanos BIGINT NOT NULL,
                   kind TEXT NOT NULL, account TEXT NOT NULL, order_id TEXT NOT NULL,
                   client_order_id TEXT NOT NULL, payload TEXT NOT NULL,
                   prev_hash TEXT NOT NULL, hash TEXT NOT NULL)"
            ))
            .map_err(err)?;
        Ok(Self {
            client,
            table: table.to_owned(),
        })
    }

    /// Runs a statement (tests tamper with the trail through it).
    ///
    /// # Errors
    /// When the server refuses.
    pub fn execute(&mut self, sql: &str) -> Result<(), AuditError> {
        self.client.batch_execute(sql).map_err(err)
    }
}

impl AuditSink for PostgresSink {
    fn last(&mut self) -> Result<Option<(u64, String)>, AuditError> {
        let row = self
            .client
            .query_opt(
                &format!(
                    "SELECT lsn, hash FROM {} ORDER BY lsn DESC LIMIT 1",
                    self.table
                ),
                &[],
            )
            .map_err(err)?;
        Ok(row.map(|r| (r.get::<_, i64>(0) as u64, r.get(1))))
    }

    fn write(&mut self, entries: &[AuditEntry]) -> Result<(), AuditError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = self.client.transaction().map_err(err)?;
        let stmt = tx
            .prepare(&format!(
                "INSERT INTO {} (lsn, sequence, time_nanos, kind, account, order_id,
                 client_order_id, payload, prev_hash, hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                self.table
            ))
            .map_err(err)?;
        for e in entries {
            tx.execute(
                &stmt,
                &[
                    &(e.lsn as i64),
                    &(e.sequence as i64),
                    &e.time_nanos,
                    &e.kind,
                    &e.account,
                    &e.order_id,
                    &e.client_order_id,
                    &e.payload,
                    &e.prev_hash,
                    &e.hash,
                ],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn read_all(&mut self) -> Result<Vec<AuditEntry>, AuditError> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT lsn, sequence, time_nanos, kind, account, order_id, client_order_id,
                     payload, prev_hash, hash FROM {} ORDER BY lsn",
                    self.table
                ),
                &[],
            )
            .map_err(err)?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                lsn: r.get::<_, i64>(0) as u64,
                sequence: r.get::<_, i64>(1) as u64,
                time_nanos: r.get(2),
                kind: r.get(3),
                account: r.get(4),
                order_id: r.get(5),
                client_order_id: r.get(6),
                payload: r.get(7),
                prev_hash: r.get(8),
                hash: r.get(9),
            })
            .collect())
    }
}
