//! Helpers for execbridge tests: free loopback addresses, waiting for a gRPC server to
//! report SERVING, and running a service future in the background with its own shutdown.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use execbridge_api::v1;
use execbridge_runtime::{ServerConfig, Shutdown};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// A loopback address with a port that was free a moment ago.
///
/// # Panics
/// When no port can be bound at all (the machine is broken for these tests).
pub fn free_addr() -> SocketAddr {
    #[allow(clippy::unwrap_used)]
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    #[allow(clippy::unwrap_used)]
    listener.local_addr().unwrap()
}

/// The first port of the kernel's ephemeral range (`ip_local_port_range`), where
/// outgoing connections take their source ports.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A loopback address for a server that a test kills and starts again on the same port.
///
/// A port from [`free_addr`] lies in the ephemeral range: while the server is down, any
/// outgoing connection on the machine may take it as its source port, and the restart
/// cannot bind. This port lies below that range, where only an explicit bind takes one.
///
/// # Panics
/// When no port below the ephemeral range can be bound.
pub fn restartable_addr() -> SocketAddr {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let end = ephemeral_start();
    let start = end.saturating_sub(10_000).max(1024);
    let span = usize::from(end - start).max(1);
    // Spread the processes and the calls within one process over the range.
    let seed = std::process::id() as usize * 7919 + CALLS.fetch_add(1, Ordering::Relaxed) * 104_729;
    for i in 0..span {
        let port = start + u16::try_from((seed + i) % span).unwrap_or(0);
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port))
            && let Ok(addr) = listener.local_addr()
        {
            return addr;
        }
    }
    panic!("no loopback port from {start} to {end} can be bound");
}

/// A server config on fresh loopback ports with a short grace period.
pub fn server_config() -> ServerConfig {
    ServerConfig {
        listen: free_addr(),
        admin_listen: free_addr(),
        shutdown_grace_secs: 5,
        ..ServerConfig::default()
    }
}

/// A running in-process service and the means to stop it.
pub struct Running {
    /// Its gRPC address.
    pub addr: SocketAddr,
    /// Fires its shutdown.
    pub shutdown: Shutdown,
    handle: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Starts `run(shutdown)` in the background and waits until `addr` reports SERVING.
    ///
    /// # Panics
    /// When the service does not turn SERVING within 20 s.
    pub async fn start<F, Fut, E>(addr: SocketAddr, run: F) -> Self
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let shutdown = Shutdown::new();
        let fut = run(shutdown.clone());
        let handle = tokio::spawn(async move {
            if let Err(e) = fut.await {
                panic!("service at {addr} failed: {e}");
            }
        });
        wait_serving(addr, Duration::from_secs(20)).await;
        Self {
            addr,
            shutdown,
            handle,
        }
    }

    /// `http://addr`, for clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A connected channel.
    ///
    /// # Panics
    /// When the service is unreachable.
    pub async fn channel(&self) -> Channel {
        #[allow(clippy::unwrap_used)]
        Channel::from_shared(self.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Fires shutdown and waits for the service to return.
    ///
    /// # Panics
    /// When it does not stop within 10 s.
    pub async fn stop(self) {
        self.shutdown.trigger();
        #[allow(clippy::unwrap_used)]
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .unwrap()
            .unwrap();
    }
}

/// Waits until the gRPC server at `addr` answers the health check with SERVING.
///
/// # Panics
/// When it does not within `timeout`.
pub async fn wait_serving(addr: SocketAddr, timeout: Duration) {
    let start = Instant::now();
    loop {
        if let Ok(channel) = Channel::from_shared(format!("http://{addr}"))
            .expect("a socket address is a valid URI")
            .connect()
            .await
        {
            let status = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|r| r.into_inner().status);
            if status.is_ok_and(|s| s == ServingStatus::Serving as i32) {
                return;
            }
        }
        assert!(
            start.elapsed() < timeout,
            "{addr} not SERVING after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Order `i` of a load of paper MARKET orders for 0.001 BTC-USDT: client order id
/// `{prefix}-{i}`, spread over `accounts` accounts (`acct-0`...), buying on even `i` and
/// selling on odd, so positions stay small however many orders there are.
pub fn paper_market_order(prefix: &str, i: u64, accounts: u64) -> v1::OrderRequest {
    v1::OrderRequest {
        client_order_id: format!("{prefix}-{i}"),
        account: format!("acct-{}", i % accounts.max(1)),
        venue: "paper".into(),
        mode: v1::TradingMode::Paper as i32,
        symbol: "BTC-USDT".into(),
        side: if i.is_multiple_of(2) {
            v1::Side::Buy
        } else {
            v1::Side::Sell
        } as i32,
        r#type: v1::OrderType::Market as i32,
        quantity: "0.001".into(),
        ..Default::default()
    }
}

/// A lazily connecting channel to `addr` that counts the TCP connections it opens, for
/// tests of when a server closes connections.
///
/// # Panics
/// Never for a socket address (the URI it builds is always valid).
pub fn counted_channel(addr: SocketAddr) -> (Channel, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let opened = count.clone();
    #[allow(clippy::unwrap_used)]
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let channel = endpoint
        .timeout(Duration::from_secs(5))
        .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
            let opened = opened.clone();
            async move {
                opened.fetch_add(1, Ordering::SeqCst);
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tcp))
            }
        }));
    (channel, count)
}

/// Resident memory of process `pid` in bytes, from `/proc/<pid>/status` (Linux); `None`
/// where it cannot be read.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restartable_port_lies_below_the_ephemeral_range_and_differs_per_call() {
        let (a, b) = (restartable_addr(), restartable_addr());
        assert!(a.port() < ephemeral_start() && b.port() < ephemeral_start());
        assert!(a.port() >= 1024);
        assert_ne!(a, b);
        TcpListener::bind(a).expect("the port is free to bind");
    }
}
