//! The gateway's audit stream: every authentication attempt and every admission decision,
//! as structured records on the `audit` log target (a collector routes that target to the
//! audit store). Never a credential: only who, from where, which method and why.

use std::net::SocketAddr;

/// Records an authentication attempt.
pub fn authentication(
    rpc: &str,
    peer: Option<SocketAddr>,
    method: &str,
    principal: Option<&str>,
    failure: Option<&str>,
) {
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    match failure {
        None => {
            tracing::info!(target: "audit", event = "authentication", rpc, %peer, method, principal, outcome = "success")
        }
        Some(reason) => {
            tracing::warn!(target: "audit", event = "authentication", rpc, %peer, method, outcome = "failure", reason)
        }
    }
}

/// Records a refused admission (authorization, rate limit, load shedding, validation).
pub fn refused(rpc: &str, principal: &str, reason: &str) {
    tracing::info!(target: "audit", event = "admission", rpc, principal, outcome = "refused", reason);
}

/// Records that the gateway closed a connection (`reason`: why, e.g. "auth_failures"
/// after `failures` failed authentications on it).
pub fn connection_closed(peer: Option<SocketAddr>, reason: &str, failures: u32) {
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    tracing::warn!(target: "audit", event = "connection_closed", %peer, reason, failures, "connection closed");
}
