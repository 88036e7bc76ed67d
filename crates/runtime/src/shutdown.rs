//! The one shutdown path: a signal future, a token every task watches, and the drain.

use tokio_util::sync::CancellationToken;

/// Cloneable handle to the process-wide shutdown signal.
///
/// Servers stop accepting when it fires; long-lived streams select on [`Shutdown::wait`]
/// and end so that the graceful drain can finish within the grace period.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the signal (idempotent).
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once the signal has fired. Cancellation safe.
    pub async fn wait(&self) {
        self.token.cancelled().await;
    }

    /// An owned future for APIs that need `'static` (tonic's `serve_with_shutdown`).
    pub fn wait_owned(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.token.clone().cancelled_owned()
    }
}

/// Completes on SIGTERM or SIGINT and says which.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub async fn os_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
