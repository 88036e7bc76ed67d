//! One shard as the service sees it: the engine behind its lock, the journal that makes
//! every change durable, the update stream, and the asynchronous order pipeline.
//!
//! A submit runs in three steps:
//! 1. under the engine lock: idempotency, risk, the order is created and its records are
//!    queued to the journal (the lock is released before any fsync);
//! 2. once the intent is durable: the order goes to the venue (after the simulated
//!    latency), and the venue's answer is applied and queued;
//! 3. once the answer is durable: the caller gets the order.
//!
//! Steps 2 and 3 run in a task of their own, so a caller that goes away (deadline, client
//! cancel) cannot strand a durable intent before it reaches the venue. A duplicate submit
//! that arrives while the original is with the venue waits for the same outcome.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use execbridge_api::v1;
use execbridge_domain::risk::{AccountRisk, RiskLimits, TradingState};
use execbridge_domain::{OrderRequest, TradingMode};
use execbridge_runtime::Shutdown;

use crate::config::ExecutorConfig;
use crate::engine::{Actor, Begin, Engine, EngineError, OrderRef, Submitted};
use crate::journal::{self, AfterSync, Entry, Journal, JournalError, Payload};
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
}

impl AfterSync for Fanout {
    fn synced(&mut self, entries: &[Entry]) {
        for entry in entries {
            if let Payload::Update(u) = &entry.payload {
                crate::metrics::order_update(u);
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
        let mut engine = Engine::new(config.shard.id.clone(), &config.paper, &config.risk, venue);
        let updates = Arc::new(Updates::new(
            config.shard.updates_retained,
            Some(dir.clone()),
        ));
        let mut records = 0;
        let last_lsn = journal::replay(&dir, true, |record| {
            engine.replay(&record).map_err(|e| JournalError::Corrupt {
                path: dir.display().to_string(),
                offset: record.lsn,
                reason: e.to_string(),
            })?;
            if let Some(execbridge_api::internal::v1::journal_record::Entry::Update(u)) =
                record.entry
            {
                updates.restore(Arc::new(u));
            }
            records += 1;
            Ok(())
        })?;
        let audit = crate::audit::Audit::start(config, &dir, last_lsn)?;
        let feed = audit.as_ref().map(crate::audit::Audit::feed);
        let journal = Journal::start(
            &dir,
            last_lsn,
            journal::Options {
                fsync: config.journal.fsync,
                segment_bytes: config.journal.segment_bytes,
                max_batch: config.journal.max_batch,
            },
            Box::new(Fanout {
                updates: updates.clone(),
                audit: feed,
            }),
        )?;
        let durable = journal.watch();
        let shard = Arc::new(Self {
            engine: Mutex::new(engine),
            journal: Mutex::new(Some(journal)),
            durable,
            updates,
            shard: config.shard.id.clone(),
            dir,
            _temp: temp,
            audit: Mutex::new(audit),
        });
        // Orders whose outcome the journal does not have are settled with the venue
        // before the shard turns ready.
        let (reconciled, lsn) = shard.mutate(|e| e.reconcile(SystemTime::now(), true))?;
        let stats = ReplayStats {
            records,
            last_sequence: shard.lock().last_sequence(),
            reconciled,
            elapsed: started.elapsed(),
        };
        // Blocking wait for the reconciliation records (we are not in async context here).
        while shard.durable.borrow().lsn < lsn {
            if let Some(reason) = shard.durable.borrow().failed.clone() {
                return Err(JournalError::Failed(reason).into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
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
    /// is released. Returns its result and the LSN to wait for.
    ///
    /// # Errors
    /// [`ShardError::Journal`] once the journal has failed (nothing is changed then).
    pub fn mutate<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> Result<(R, u64), ShardError> {
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
        match journal.as_ref() {
            Some(j) => j.append(entries)?,
            None if entries.is_empty() => {}
            None => return Err(ShardError::ShuttingDown),
        }
        Ok((result, lsn))
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
        Ok(journal::wait_durable(self.durable.clone(), lsn).await?)
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
        let (begin, lsn) = self.mutate(|e| {
            if flatten {
                e.begin_flatten(request, now)
            } else {
                e.begin_submit(request, now)
            }
        })?;
        match begin? {
            Begin::Duplicate { idx, in_flight } => {
                if let Some(mut done) = in_flight {
                    // The original is with the venue: the same outcome, once it is known.
                    let _ = done.wait_for(|d| *d).await;
                }
                let order = self.read(|e| e.order_at(idx)).await?;
                Ok(Submitted {
                    order,
                    duplicate: true,
                })
            }
            Begin::Rejected { idx } => {
                self.wait(lsn).await?;
                Ok(Submitted {
                    order: self.lock().order_at(idx),
                    duplicate: false,
                })
            }
            Begin::New { idx, ack_latency } => {
                let this = self.clone();
                let task = tokio::spawn(async move { this.send(idx, lsn, ack_latency).await });
                let order = task
                    .await
                    .map_err(|e| EngineError::Internal(format!("order pipeline: {e}")))??;
                Ok(Submitted {
                    order,
                    duplicate: false,
                })
            }
        }
    }

    /// Steps 2 and 3 of a submit.
    async fn send(
        self: Arc<Self>,
        idx: usize,
        intent_lsn: u64,
        ack_latency: Duration,
    ) -> Result<v1::Order, ShardError> {
        // Never send an intent the journal does not hold: after a crash we could not know
        // the order exists, and a retry would make a second one.
        self.wait(intent_lsn).await?;
        if !ack_latency.is_zero() {
            tokio::time::sleep(ack_latency).await;
        }
        let (outcome, lsn) =
            self.mutate(|e| e.venue_submit(idx, SystemTime::now(), Instant::now()))?;
        let outcome = outcome?;
        if let Some(delay) = outcome.arrival {
            let this = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Err(e) = this.mutate(|e| e.arrive(idx, SystemTime::now())) {
                    tracing::warn!(error = %e, "deferred fill not applied");
                }
            });
        }
        self.wait(lsn).await?;
        Ok(outcome.order)
    }

    fn schedule_cancels(self: &Arc<Self>, pending: Vec<(usize, Duration)>) {
        for (idx, delay) in pending {
            let this = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                match this.mutate(|e| e.confirm_cancel(idx, SystemTime::now())) {
                    Ok((Ok(()), _)) => {}
                    Ok((Err(e), _)) => tracing::warn!(error = %e, "cancel confirmation refused"),
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
        let (result, lsn) = self.mutate(|e| e.cancel(account, by, SystemTime::now()))?;
        let (order, pending) = result?;
        self.schedule_cancels(pending.into_iter().collect());
        self.wait(lsn).await?;
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
        let (result, lsn) =
            self.mutate(|e| e.cancel_all(account, symbol, venue, SystemTime::now()))?;
        let (orders, pending) = result?;
        self.schedule_cancels(pending);
        self.wait(lsn).await?;
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
        let (risk, lsn) =
            self.mutate(|e| e.set_trading_state(account, symbol, state, actor, SystemTime::now()))?;
        self.wait(lsn).await?;
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
        let (risk, lsn) =
            self.mutate(|e| e.set_risk_limits(account, mode, limits, actor, SystemTime::now()))?;
        self.wait(lsn).await?;
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
        if let Err(e) = self.mutate(f) {
            tracing::debug!(error = %e, "market update not applied");
        }
    }

    /// Resolves orders with an unconfirmed venue outcome every `every` until `shutdown`.
    pub async fn reconcile_loop(self: Arc<Self>, every: Duration, shutdown: Shutdown) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.wait() => return,
            }
            match self.mutate(|e| e.reconcile(SystemTime::now(), false)) {
                Ok((n, _)) if n > 0 => tracing::info!(orders = n, "reconciled with the venue"),
                Ok(_) => {}
                Err(_) => return,
            }
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
