//! Hot reload of the policy file. The file's directory is polled (Kubernetes updates a
//! mounted Secret or ConfigMap by swapping a `..data` symlink, so the file's identity
//! changes without a write to it); a changed file is compiled and swapped in, and a bad one
//! is refused with a log line while the old policy stays in force.
//!
//! Polling once a second is chosen over inotify: it sees symlink swaps on every platform
//! and filesystem, costs one `stat` and one read per second, and is trivially correct.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use execbridge_runtime::Shutdown;

use crate::admission::{Admission, Compiled};
use crate::policy::{PolicyError, PolicyFile};

/// Reads and compiles the policy at `path`.
///
/// # Errors
/// [`PolicyError`] naming the bad key.
pub fn load(path: &std::path::Path) -> Result<Compiled, PolicyError> {
    let base = path.parent().map(PathBuf::from).unwrap_or_default();
    let file = PolicyFile::read(path)?;
    Ok(Compiled::new(file.compile(&base)?))
}

/// Watches `path` until `shutdown`, replacing the policy in `admission` when it changes.
pub async fn watch(
    path: PathBuf,
    admission: Arc<Admission>,
    interval: Duration,
    shutdown: Shutdown,
) {
    let mut last = std::fs::read(&path).ok();
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.wait() => return,
        }
        // Content, not mtime: a symlink swap can keep the old mtime.
        let Ok(content) = std::fs::read(&path) else {
            tracing::warn!(path = %path.display(), "policy file unreadable; keeping the policy in force");
            continue;
        };
        if last.as_deref() == Some(content.as_slice()) {
            continue;
        }
        match load(&path) {
            Ok(compiled) => {
                admission.replace(compiled);
                tracing::info!(path = %path.display(), "policy reloaded");
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "new policy refused; keeping the policy in force")
            }
        }
        last = Some(content);
    }
}
