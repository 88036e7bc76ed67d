//! One shard as the service sees it: the engine behind its lock, the journal that makes
//! every change durable, the update stream, and the asynchronous order pipeline.
//!
//! A submit runs in three steps:
//! 1. under the engine lock: idempotency, risk, the order is created and its records are
//!    queued to the journal with a ticket (the lock is released before any fsync);
//! 2. once the intent is durable: the order goes to the venue (after the simulated
//!    latency), and the venue's answer is applied and queued to the journal;
//! 3. the caller gets the order.
//!
//! The venue's answer is in the journal's queue before the caller hears of it and is
//! fdatasync'd with the next group commit (within `journal.sync_delay_us`); the caller
//! does not wait for that second sync. A crash in between leaves the durable intent
//! without its answer: the order replays as PENDING_NEW and start-up reconciliation asks
//! the venue, as for any venue outcome the journal does not hold. Subscribers hear of the
//! answer once it is durable. So a submit pays one fdatasync, not two.
//!
//! Steps 2 and 3 run in a task of their own, so a caller that goes away (deadline, client
//! cancel) cannot strand a durable intent before it reaches the venue. A duplicate submit
//! that arrives while the original is with the venue waits for the same outcome.
//!
//! [`Shard::submit_batch`] runs many orders through the same steps together: one lock and
//! one journal ticket for all intents, one lock for all venue answers.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use execbridge_api::v1;
use execbridge_domain::risk::{AccountRisk, RiskLimits, TradingState};
use execbridge_domain::{OrderRequest, TradingMode};
use execbridge_runtime::{Shutdown, otel_child_span};
use tracing::Instrument as _;

use crate::config::ExecutorConfig;
use crate::engine::{Actor, Begin, Engine, EngineError, OrderRef, Replayed, Submitted};
use crate::journal::{self, AfterSync, Entry, Journal, JournalError, Payload, Ticket};
use crate::updates::{Subscription, Updates};
use crate::venue::PaperVenue;

/// Why a shard operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The engine refused.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The journal failed; nothing more is acknowledged.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The shard is stopping.
    #[error("the executor is shutting down")]
    ShuttingDown,
}

/// Why the shard could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The journal could not be read or opened.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A journal record did not replay.
    #[error(transparent)]
    Replay(#[from] EngineError),
    /// The venue ledger could not be read.
    #[error(transparent)]
    Ledger(#[from] crate::venue::LedgerError),
    /// The audit sink could not be opened.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// Reconciliation at start failed.
    #[error(transparent)]
    Shard(#[from] ShardError),
}

/// What a start found in the journal.
#[derive(Debug, Clone, Default)]
pub struct ReplayStats {
    /// Records replayed.
    pub records: u64,
    /// The last sequence.
    pub last_sequence: u64,
    /// Orders changed by reconciliation with the venue.
    pub reconciled: usize,
    /// Time taken.
    pub elapsed: Duration,
}

/// Publishes durable records to subscribers and the audit trail.
struct Fanout {
    updates: Arc<Updates>,
    audit: Option<crate::audit::AuditFeed>,
    counts: crate::metrics::OrderCounts,
}

impl AfterSync for Fanout {
    fn synced(&mut self, entries: &[Entry]) {
        for entry in entries {
            if let Payload::Update(u) = &entry.payload {
                self.counts.count(u);
                self.updates.publish(u.clone());
            }
        }
        if let Some(audit) = &self.audit {
            audit.send(entries);
        }
    }
}

/// One shard.
pub struct Shard {
    engine: Mutex<Engine>,
    journal: Mutex<Option<Journal>>,
    durable: tokio::sync::watch::Receiver<journal::Durable>,
    updates: Arc<Updates>,
    shard: String,
    /// The journal directory (kept alive when temporary).
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    audit: Mutex<Option<crate::audit::Audit>>,
    snapshots: Mutex<Option<crate::snapshot::Snapshots>>,
}

impl Shard {
    /// Opens the journal, replays it, reconciles with the venue and starts the writer.
    /// Blocking (file IO): call it from a blocking context.
    ///
    /// # Errors
    /// [`StartError`] when the journal, the ledger or the audit sink cannot be used.
    pub fn open(config: &ExecutorConfig) -> Result<(Arc<Self>, ReplayStats), StartError> {
        let started = Instant::now();
        let (dir, temp) = if config.journal.dir.as_os_str().is_empty() {
            let temp = tempfile::Builder::new()
                .prefix("execbridge-journal-")
                .tempdir()
                .map_err(|e| JournalError::Io {
                    path: std::env::temp_dir().display().to_string(),
                    message: e.to_string(),
                })?;
            tracing::warn!(dir = %temp.path().display(), "journal.dir is not set: journaling to a temporary directory that a restart will not find");
            (temp.path().to_owned(), Some(temp))
        } else {
            (config.journal.dir.clone(), None)
        };
        std::fs::create_dir_all(&dir).map_err(|e| JournalError::Io {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
        let ledger = if config.paper.ledger_path.as_os_str().is_empty() {
            dir.join("paper-venue.jsonl")
        } else {
            config.paper.ledger_path.clone()
        };
        let venue = PaperVenue::open(&config.shard.id, config.paper.clone(), Some(&ledger))?;
        let mut engine = Engine::new(config.shard.id.clone(), &config.paper, &config.risk, venue)
            .with_retention(config.shard.retention());
        let updates = Arc::new(Updates::new(
            config.shard.updates_retained,
            Some(dir.clone()),
        ));
        // The newest snapshot that reads back, then the journal after it.
        let snapshot_lsn = match crate::snapshot::start_point(&dir)? {
            Some(checkpoint) => {
                let lsn = checkpoint.lsn;
                engine.restore(checkpoint)?;
                tracing::info!(lsn, "state restored from a snapshot");
                lsn
            }
            None => 0,
        };
        let mut records = 0;
        let tail = journal::replay_records(&dir, snapshot_lsn + 1, true, |record: Replayed| {
            let lsn = record.lsn;
            engine.replay(record).map_err(|e| JournalError::Corrupt {
                path: dir.display().to_string(),
                offset: lsn,
                reason: e.to_string(),
            })?;
            records += 1;
            Ok(())
        })?;
        // The stream goes on after the replayed updates. A subscriber resuming from one of
        // them reads it back from the journal (whole, unlike replay, which decodes only
        // what state needs); memory holds those published from now on.
        updates.resume_at(engine.last_sequence());
        let last_lsn = tail.max(snapshot_lsn);
        if snapshot_lsn > 0 {
            engine.drop_venue_records_of_forgotten_orders();
        }
        // Everything the engine holds is durable here (it was read from the journal).
        log_compaction(engine.compact_venue_ledger());
        let audit = crate::audit::Audit::start(config, &dir, last_lsn)?;
        let feed = audit.as_ref().map(crate::audit::Audit::feed);
        let journal = Journal::start(
            &dir,
            last_lsn,
            journal::Options {
                fsync: config.journal.fsync,
                segment_bytes: config.journal.segment_bytes,
                max_batch: config.journal.max_batch,
                sync_delay: Duration::from_micros(config.journal.sync_delay_us),
                inline_records: config.journal.inline_commit_records,
            },
            Box::new(Fanout {
                updates: updates.clone(),
                audit: feed,
                counts: crate::metrics::OrderCounts::default(),
            }),
        )?;
        let durable = journal.watch();
        let snapshots = match config.journal.snapshot_every_records {
            0 => None,
            every => {
                let config = config.clone();
                Some(crate::snapshot::Snapshots::start(
                    dir.clone(),
                    every,
                    move || Engine::for_replay(&config),
                    durable.clone(),
                    audit.as_ref().map(crate::audit::Audit::written),
                )?)
            }
        };
        let shard = Arc::new(Self {
            engine: Mutex::new(engine),
            journal: Mutex::new(Some(journal)),
            durable,
            updates,
            shard: config.shard.id.clone(),
            dir,
            _temp: temp,
            audit: Mutex::new(audit),
            snapshots: Mutex::new(snapshots),
        });
        // Orders whose outcome the journal does not have are settled with the venue
        // before the shard turns ready.
        let (reconciled, ticket) = shard.mutate(|e| e.reconcile(SystemTime::now(), true))?;
        let stats = ReplayStats {
            records,
            last_sequence: shard.lock().last_sequence(),
            reconciled,
            elapsed: started.elapsed(),
        };
        // The reconciliation records are durable before the shard turns ready (we are not
        // in async context here).
        ticket.wait_blocking()?;
        Ok((shard, stats))
    }

    fn lock(&self) -> MutexGuard<'_, Engine> {
        // A panic while holding the lock is a bug already reported; the state it guards is
        // only changed through checked transitions, so keep serving.
        self.engine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The shard id.
    pub fn id(&self) -> &str {
        &self.shard
    }

    /// Why the journal stopped, if it did.
    pub fn failed(&self) -> Option<Arc<str>> {
        self.durable.borrow().failed.clone()
    }

    /// A receiver of the journal's durable position (readiness watches it).
    pub fn durable_watch(&self) -> tokio::sync::watch::Receiver<journal::Durable> {
        self.durable.clone()
    }

    /// Runs `f` on the engine and queues what it produced to the journal before the lock
    /// is released. Returns its result and a ticket that completes once everything `f`
    /// could have seen or made is durable.
    ///
    /// # Errors
    /// [`ShardError::Journal`] once the journal has failed (nothing is changed then).
    pub fn mutate<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> Result<(R, Ticket), ShardError> {
        self.mutate_with(f, true)
    }

    /// [`Shard::mutate`] for changes nobody waits on: the records are queued before the
    /// lock is released and made durable with a later group commit.
    ///
    /// # Errors
    /// [`ShardError::Journal`] once the journal has failed (nothing is changed then).
    pub fn mutate_queued<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> Result<R, ShardError> {
        self.mutate_with(f, false).map(|(r, _)| r)
    }

    fn mutate_with<R>(
        &self,
        f: impl FnOnce(&mut Engine) -> R,
        wait: bool,
    ) -> Result<(R, Ticket), ShardError> {
        if let Some(reason) = self.failed() {
            return Err(JournalError::Failed(reason).into());
        }
        let mut engine = self.lock();
        let result = f(&mut engine);
        let entries = engine.take_outbox();
        let lsn = engine.last_lsn();
        let journal = self
            .journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ticket = match journal.as_ref() {
            Some(j) if !entries.is_empty() => j.append(entries, wait)?,
            // Nothing new, but what `f` saw must be durable before anyone is told.
            Some(j) if wait => j.sync(lsn),
            Some(_) => Ticket::ready(),
            None if entries.is_empty() => Ticket::ready(),
            None => return Err(ShardError::ShuttingDown),
        };
        Ok((result, ticket))
    }

    /// Reads from the engine and waits until everything it could have seen is durable, so
    /// no caller is shown a change the journal does not have.
    ///
    /// # Errors
    /// [`ShardError::Journal`] when the journal failed first.
    pub async fn read<R>(&self, f: impl FnOnce(&Engine) -> R) -> Result<R, ShardError> {
        let (result, lsn) = {
            let engine = self.lock();
            (f(&engine), engine.last_lsn())
        };
        self.wait(lsn).await?;
        Ok(result)
    }

    async fn wait(&self, lsn: u64) -> Result<(), ShardError> {
        let ticket = self
            .journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|j| j.sync(lsn));
        match ticket {
            Some(ticket) => Ok(ticket.wait().await?),
            // Closing: whatever was queued is being synced by the close.
            None => Ok(journal::wait_durable(self.durable.clone(), lsn).await?),
        }
    }

    /// Submits an order: returns once the venue accepted or rejected it and that answer
    /// is durable. Cancellation safe: the pipeline runs in its own task.
    ///
    /// # Errors
    /// [`ShardError`] for an idempotency mismatch or a failed journal.
    pub async fn submit(self: &Arc<Self>, request: OrderRequest) -> Result<Submitted, ShardError> {
        self.submit_with(request, false).await
    }

    async fn submit_with(
        self: &Arc<Self>,
        request: OrderRequest,
        flatten: bool,
    ) -> Result<Submitted, ShardError> {
        let now = SystemTime::now();
        let (begin, ticket) = self.mutate(|e| {
            if flatten {
                e.begin_flatten(request, now)
            } else {
                e.begin_submit(request, now)
            }
        })?;
        let begin = begin?;
        let this = self.clone();
        // Steps 2 and 3 run in their own task (see the module docs), in the caller's trace.
        tokio::spawn(async move { this.finish(begin, ticket).await }.in_current_span())
            .await
            .map_err(|e| EngineError::Internal(format!("order pipeline: {e}")))?
    }

    /// Steps 2 and 3 of one submit, after step 1 gave `begin` and the intent's `ticket`.
    async fn finish(
        self: Arc<Self>,
        begin: Begin,
        ticket: Ticket,
    ) -> Result<Submitted, ShardError> {
        match begin {
            Begin::Duplicate {
                idx,
                order,
                in_flight,
            } => {
                if let Some(mut done) = in_flight {
                    // The original is with the venue: the same outcome, once it is known.
                    let _ = done.wait_for(|d| *d).await;
                }
                // Answered once what it reports is durable; the order as found when it
                // has finished and been forgotten meanwhile.
                let order = self.read(|e| e.order_at(idx)).await?.unwrap_or(order);
                Ok(Submitted {
                    order,
                    duplicate: true,
                })
            }
            Begin::Rejected { order, .. } => {
                durable(ticket, "rejection").await?;
                Ok(Submitted {
                    order,
                    duplicate: false,
                })
            }
            Begin::New { idx, ack_latency } => {
                // Never send an intent the journal does not hold: after a crash we could
                // not know the order exists, and a retry would make a second one.
                durable(ticket, "intent").await?;
                if !ack_latency.is_zero() {
                    tokio::time::sleep(ack_latency).await;
                }
                let outcome = self
                    .mutate_queued(|e| e.venue_submit(idx, SystemTime::now(), Instant::now()))??;
                self.schedule_arrival(idx, outcome.arrival);
                Ok(Submitted {
                    order: outcome.order,
                    duplicate: false,
                })
            }
        }
    }

    /// Submits many orders together: one engine lock and one journal ticket for all the
    /// intents, one lock for all the venue answers. Results come in request order; an
    /// order the engine refuses (an idempotency mismatch) fails alone.
    ///
    /// # Errors
    /// [`ShardError`] for a failed journal (every order of the batch then fails).
    pub async fn submit_batch(
        self: &Arc<Self>,
        requests: Vec<OrderRequest>,
    ) -> Result<Vec<Result<Submitted, ShardError>>, ShardError> {
        let now = SystemTime::now();
        let (begins, ticket) = self.mutate(|e| {
            requests
                .into_iter()
                .map(|r| e.begin_submit(r, now))
                .collect::<Vec<_>>()
        })?;
        let this = self.clone();
        tokio::spawn(async move { this.finish_batch(begins, ticket).await }.in_current_span())
            .await
            .map_err(|e| EngineError::Internal(format!("order pipeline: {e}")))?
    }

    async fn finish_batch(
        self: Arc<Self>,
        begins: Vec<Result<Begin, EngineError>>,
        ticket: Ticket,
    ) -> Result<Vec<Result<Submitted, ShardError>>, ShardError> {
        durable(ticket, "intents").await?;
        let immediate = begins.iter().all(|b| match b {
            Ok(Begin::New { ack_latency, .. }) => ack_latency.is_zero(),
            _ => true,
        });
        if !immediate {
            // Simulated venue latency: each order keeps its own timing, all at once.
            let each = begins.into_iter().map(|begin| {
                let this = self.clone();
                async move {
                    match begin {
                        Ok(begin) => this.finish(begin, Ticket::ready()).await,
                        Err(e) => Err(e.into()),
                    }
                }
            });
            return Ok(futures::future::join_all(each).await);
        }
        // Every intent is durable: all new orders go to the venue under one lock.
        let answers = self.mutate_queued(|e| {
            let (now, clock) = (SystemTime::now(), Instant::now());
            begins
                .iter()
                .map(|b| match b {
                    Ok(Begin::New { idx, .. }) => Some(e.venue_submit(*idx, now, clock)),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })?;
        let mut results = Vec::with_capacity(begins.len());
        for (begin, answer) in begins.into_iter().zip(answers) {
            results.push(match (begin, answer) {
                (Err(e), _) => Err(e.into()),
                (Ok(Begin::New { idx, .. }), Some(answer)) => answer
                    .map(|outcome| {
                        self.schedule_arrival(idx, outcome.arrival);
                        Submitted {
                            order: outcome.order,
                            duplicate: false,
                        }
                    })
                    .map_err(ShardError::from),
                (Ok(Begin::Rejected { order, .. }), _) => Ok(Submitted {
                    order,
                    duplicate: false,
                }),
                (Ok(begin), _) => self.clone().finish(begin, Ticket::ready()).await,
            });
        }
        Ok(results)
    }

    /// Runs the deferred arrival match of order `idx` after `delay` (fill latency).
    fn schedule_arrival(self: &Arc<Self>, idx: usize, delay: Option<Duration>) {
        if let Some(delay) = delay {
            let this = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Err(e) = this.mutate_queued(|e| e.arrive(idx, SystemTime::now())) {
                    tracing::warn!(error = %e, "deferred fill not applied");
                }
            });
        }
    }

    fn schedule_cancels(self: &Arc<Self>, pending: Vec<(usize, Duration)>) {
        for (idx, delay) in pending {
            let this = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                match this.mutate_queued(|e| e.confirm_cancel(idx, SystemTime::now())) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "cancel confirmation refused"),
                    Err(e) => tracing::warn!(error = %e, "cancel confirmation not applied"),
                }
            });
        }
    }

    /// Requests a cancel; returns the order once the request (and, without cancel
    /// latency, the confirmation) is durable.
    ///
    /// # Errors
    /// [`ShardError`] for an unknown or finished order or a failed journal.
    pub async fn cancel(
        self: &Arc<Self>,
        account: &str,
        by: &OrderRef,
    ) -> Result<v1::Order, ShardError> {
        let (result, ticket) = self.mutate(|e| e.cancel(account, by, SystemTime::now()))?;
        let (order, pending) = result?;
        self.schedule_cancels(pending.into_iter().collect());
        ticket.wait().await?;
        Ok(order)
    }

    /// Requests the cancel of every matching open order.
    ///
    /// # Errors
    /// [`ShardError`] for a failed journal.
    pub async fn cancel_all(
        self: &Arc<Self>,
        account: &str,
        symbol: &str,
        venue: &str,
    ) -> Result<Vec<v1::Order>, ShardError> {
        let (result, ticket) =
            self.mutate(|e| e.cancel_all(account, symbol, venue, SystemTime::now()))?;
        let (orders, pending) = result?;
        self.schedule_cancels(pending);
        ticket.wait().await?;
        Ok(orders)
    }

    /// Cancels every matching open order, then closes the positions with market orders.
    ///
    /// # Errors
    /// [`ShardError`] for a failed journal.
    pub async fn flatten(
        self: &Arc<Self>,
        account: &str,
        symbol: &str,
        venue: &str,
    ) -> Result<(Vec<v1::Order>, Vec<v1::Order>), ShardError> {
        let canceled = self.cancel_all(account, symbol, venue).await?;
        let (orders, _) = self.mutate(|e| e.flatten_orders(account, symbol, venue))?;
        let mut submitted = Vec::with_capacity(orders.len());
        for order in orders {
            submitted.push(self.submit_with(order, true).await?.order);
        }
        Ok((canceled, submitted))
    }

    /// Sets a trading state; returns the account's settings once the change is durable.
    ///
    /// # Errors
    /// [`ShardError`] for a failed journal.
    pub async fn set_trading_state(
        &self,
        account: &str,
        symbol: &str,
        state: TradingState,
        actor: &Actor,
    ) -> Result<AccountRisk, ShardError> {
        let (risk, ticket) =
            self.mutate(|e| e.set_trading_state(account, symbol, state, actor, SystemTime::now()))?;
        ticket.wait().await?;
        Ok(risk)
    }

    /// Replaces risk limits; returns the account's settings once the change is durable.
    ///
    /// # Errors
    /// [`ShardError`] for a failed journal.
    pub async fn set_risk_limits(
        &self,
        account: &str,
        mode: TradingMode,
        limits: RiskLimits,
        actor: &Actor,
    ) -> Result<AccountRisk, ShardError> {
        let (risk, ticket) =
            self.mutate(|e| e.set_risk_limits(account, mode, limits, actor, SystemTime::now()))?;
        ticket.wait().await?;
        Ok(risk)
    }

    /// The update stream from `after`.
    ///
    /// # Errors
    /// As [`Updates::subscribe`].
    pub fn subscribe(&self, after: Option<u64>) -> Result<Subscription, EngineError> {
        self.updates.subscribe(after)
    }

    /// Updates after `after`, for a subscriber that fell behind.
    ///
    /// # Errors
    /// As [`Updates::catch_up`].
    pub fn catch_up(&self, after: u64) -> Result<Vec<Arc<v1::OrderUpdate>>, EngineError> {
        self.updates.catch_up(after)
    }

    /// Feeds a market update to the engine (no wait: subscribers hear once it is durable).
    pub fn market(&self, f: impl FnOnce(&mut Engine)) {
        if let Err(e) = self.mutate_queued(f) {
            tracing::debug!(error = %e, "market update not applied");
        }
    }

    /// Compacts the paper venue's ledger once it is due (see
    /// [`Engine::compact_venue_ledger`]), under the engine lock at a moment when the
    /// journal holds everything the engine did: tried for up to [`COMPACT_TRIES`]
    /// milliseconds, then left to the next call (under a load that never lets the
    /// journal catch up, until the load pauses). Returns what it did, if it compacted.
    ///
    /// The order path waits for it: the compacted file holds the open orders' facts, and
    /// it is synced, linked and renamed (four fsyncs), once per
    /// `paper.ledger_compact_bytes` of ledger.
    pub async fn compact_venue_ledger(&self) -> Option<crate::venue::Compacted> {
        if !self.peek(Engine::venue_ledger_due) {
            return None;
        }
        for _ in 0..COMPACT_TRIES {
            {
                let mut engine = self.lock();
                if self.durable.borrow().lsn >= engine.last_lsn() {
                    return log_compaction(engine.compact_venue_ledger());
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        None
    }

    /// Resolves orders with an unconfirmed venue outcome every `every` until `shutdown`,
    /// and compacts the venue's ledger when it is due.
    pub async fn reconcile_loop(self: Arc<Self>, every: Duration, shutdown: Shutdown) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.wait() => return,
            }
            let reconciled = self.mutate_queued(|e| {
                let (held, forgotten) = e.history_held();
                let m = crate::metrics::get();
                m.finished_orders_held
                    .set(i64::try_from(held).unwrap_or(i64::MAX));
                m.forgotten_client_order_ids
                    .set(i64::try_from(forgotten).unwrap_or(i64::MAX));
                e.reconcile(SystemTime::now(), false)
            });
            match reconciled {
                Ok(n) if n > 0 => tracing::info!(orders = n, "reconciled with the venue"),
                Ok(_) => {}
                Err(_) => return,
            }
            self.compact_venue_ledger().await;
        }
    }

    /// The graceful end: optionally cancels working orders, then writes and syncs
    /// everything queued and stops the journal and the audit trail.
    pub async fn close(self: &Arc<Self>, cancel_open: bool) {
        if cancel_open {
            let accounts: Vec<String> = self.lock().open_accounts();
            for account in accounts {
                if let Err(e) = self.cancel_all(&account, "", "").await {
                    tracing::warn!(error = %e, account, "cancel on shutdown failed");
                }
            }
        }
        let snapshots = self
            .snapshots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(mut snapshots) = snapshots {
            let _ = tokio::task::spawn_blocking(move || snapshots.close()).await;
        }
        let journal = self
            .journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(mut journal) = journal {
            let _ = tokio::task::spawn_blocking(move || journal.close()).await;
        }
        let audit = self
            .audit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(audit) = audit {
            let _ = tokio::task::spawn_blocking(move || audit.close()).await;
        }
    }

    /// Runs `f` on the engine without waiting for durability (tests, metrics).
    pub fn peek<R>(&self, f: impl FnOnce(&Engine) -> R) -> R {
        f(&self.lock())
    }
}

/// Waits for `ticket`; with trace export on, the wait is a `journal` span of the caller's
/// trace saying what became durable.
/// How many times, a millisecond apart, [`Shard::compact_venue_ledger`] looks for the
/// journal caught up.
const COMPACT_TRIES: usize = 50;

/// Logs what a compaction of the venue's ledger did, and passes it on. A failure leaves
/// the ledger as it was, to be compacted later.
fn log_compaction(
    outcome: Result<Option<crate::venue::Compacted>, crate::venue::LedgerError>,
) -> Option<crate::venue::Compacted> {
    match outcome {
        Ok(Some(c)) => {
            tracing::info!(
                before_bytes = c.before,
                after_bytes = c.after,
                orders = c.orders,
                took_us = c.took.as_micros(),
                history = %c.archive.display(),
                history_files_deleted = c.pruned,
                "paper venue ledger compacted"
            );
            Some(c)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "paper venue ledger not compacted");
            None
        }
    }
}

async fn durable(ticket: Ticket, what: &'static str) -> Result<(), JournalError> {
    ticket
        .wait()
        .instrument(otel_child_span!("journal", durable = what))
        .await
}
