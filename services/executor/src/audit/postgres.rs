//! The PostgreSQL sink: one table, a transaction per batch.
//!
//! A lost connection (server restart, failover, an idle connection cut by a proxy) is
//! re-established and the batch written again, a few times with growing pauses, before
//! the sink gives up. Rows are keyed by LSN and a retried batch skips rows a lost commit
//! had already written, so a retry never duplicates or reorders the chain.
//!
//! The sink's sessions commit with `synchronous_commit = on` whatever the server's default:
//! the trail reports what it wrote as written, and journal segments are deleted behind
//! it, only once a commit is on the server's disk.

use std::time::Duration;

use postgres::{Client, NoTls};

use super::{AuditEntry, AuditError, AuditSink};

fn err(e: impl std::fmt::Display) -> AuditError {
    AuditError::sink("postgres", e)
}

/// An audit table in PostgreSQL.
pub struct PostgresSink {
    client: Client,
    table: String,
    url: String,
}

/// A session whose commits are durable when they return (see the module docs).
fn open(url: &str) -> Result<Client, postgres::Error> {
    let mut client = Client::connect(url, NoTls)?;
    client.batch_execute("SET synchronous_commit = on")?;
    Ok(client)
}

/// Pauses before each reconnect attempt of one write.
const RECONNECT_PAUSES: [Duration; 5] = [
    Duration::from_millis(0),
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

impl PostgresSink {
    /// Connects with `url` (a `postgres://` URL or a `host=... dbname=...` string) and
    /// creates the table `table` if needed.
    ///
    /// # Errors
    /// [`AuditError::Sink`] when the server cannot be reached.
    pub fn connect(url: &str, table: &str) -> Result<Self, AuditError> {
        let mut client = open(url).map_err(err)?;
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
            url: url.to_owned(),
        })
    }

    /// The value of the setting `name` in this sink's session.
    ///
    /// # Errors
    /// When the server refuses.
    pub fn setting(&mut self, name: &str) -> Result<String, AuditError> {
        let row = self
            .client
            .query_one("SELECT current_setting($1)", &[&name])
            .map_err(err)?;
        Ok(row.get(0))
    }

    /// The server process serving this sink's connection (tests cut it).
    ///
    /// # Errors
    /// When the server refuses.
    pub fn backend_pid(&mut self) -> Result<i32, AuditError> {
        let row = self
            .client
            .query_one("SELECT pg_backend_pid()", &[])
            .map_err(err)?;
        Ok(row.get(0))
    }

    fn write_once(&mut self, entries: &[AuditEntry]) -> Result<(), postgres::Error> {
        let mut tx = self.client.transaction()?;
        let stmt = tx.prepare(&format!(
            "INSERT INTO {} (lsn, sequence, time_nanos, kind, account, order_id,
             client_order_id, payload, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (lsn) DO NOTHING",
            self.table
        ))?;
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
            )?;
        }
        tx.commit()
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
        let mut failure = match self.write_once(entries) {
            Ok(()) => return Ok(()),
            Err(e) if !self.client.is_closed() => return Err(err(e)),
            Err(e) => e.to_string(),
        };
        for pause in RECONNECT_PAUSES {
            tracing::warn!(error = %failure, retry_in_ms = pause.as_millis() as u64, "audit sink postgres: connection lost, reconnecting");
            std::thread::sleep(pause);
            match open(&self.url) {
                Ok(client) => self.client = client,
                Err(e) => {
                    failure = e.to_string();
                    continue;
                }
            }
            match self.write_once(entries) {
                Ok(()) => {
                    tracing::info!("audit sink postgres: reconnected");
                    return Ok(());
                }
                Err(e) if !self.client.is_closed() => return Err(err(e)),
                Err(e) => failure = e.to_string(),
            }
        }
        Err(err(format!(
            "connection lost and not re-established: {failure}"
        )))
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
