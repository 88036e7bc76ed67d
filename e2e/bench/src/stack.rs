//! The processes under test, each on free loopback ports: marketdata, executor and gateway
//! from their release binaries, and the echo server (this binary's `serve-echo`). A
//! [`Stack`] stops them all when it is dropped, on error and panic paths too.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rustix::process::{Pid, Signal, kill_process};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How long a process may take to become ready. The executor is ready only once prices
/// arrive from marketdata (a tick is 100 ms by default).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Given to the services as their drain period: nothing is in flight when they are
/// stopped, so the default of 10 s would only make a stuck stop slower.
const CHILD_GRACE_SECS: u64 = 2;
/// After SIGTERM, how long a process has to exit before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The gateway policy the services run with (the file says why).
pub const GATEWAY_POLICY: &str = include_str!("../gateway-policy.toml");

/// The three service binaries, in start order: each needs the one before.
pub const SERVICES: [&str; 3] = [
    "execbridge-marketdata",
    "execbridge-executor",
    "execbridge-gateway",
];

/// A child process and its name for messages.
struct Managed {
    name: &'static str,
    child: Child,
}

impl Managed {
    /// SIGTERM, then up to [`STOP_TIMEOUT`] for it to exit, then SIGKILL.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // Fails only when the process is already gone, which is what is wanted.
        let _ = kill_process(Pid::from_child(&self.child), Signal::TERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        eprintln!("execbridge-bench: {} stopped with {status}", self.name);
                    }
                    return;
                }
                Ok(None) => thread::sleep(Duration::from_millis(10)),
                Err(_) => break,
            }
        }
        eprintln!(
            "execbridge-bench: {} did not stop within {STOP_TIMEOUT:?} of SIGTERM, killing it",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The running processes and their gRPC addresses.
pub struct Stack {
    /// In start order; stopped in reverse.
    children: Vec<Managed>,
    /// Files the children read (the gateway policy); removed once they are stopped.
    scratch: Option<PathBuf>,
    /// The echo server.
    pub echo: SocketAddr,
    /// The gateway's public API.
    pub gateway: SocketAddr,
    /// The executor's admin port (its metrics).
    pub executor_admin: SocketAddr,
}

/// `n` distinct loopback ports free at the time of the call. All are held until all are
/// chosen so none repeats; another process could still take one before the child binds
/// it, in which case that child fails to start and says so.
///
/// # Errors
/// When no port can be bound.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot find free loopback ports")?;
    listeners
        .iter()
        .map(|l| l.local_addr().context("a bound port has no address"))
        .collect()
}

/// The status code of an HTTP/1 response's status line ("HTTP/1.1 200 OK").
pub fn status_code(response: &[u8]) -> Option<u16> {
    let line = response.split(|&b| b == b'\r' || b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Whether `GET http://<admin>/readyz` answers 200.
async fn readyz(admin: SocketAddr) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect(admin).await.ok()?;
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        status_code(&response)
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, probe).await,
        Ok(Some(200))
    )
}

/// Whether something accepts TCP connections on `addr`: the echo server has no admin port,
/// and it only listens once it can serve.
async fn accepts(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Where a child's output goes: this process's stderr (both streams), so stdout keeps
/// only the results.
fn to_stderr() -> anyhow::Result<(Stdio, Stdio)> {
    let out = std::io::stderr().as_fd().try_clone_to_owned()?;
    let err = std::io::stderr().as_fd().try_clone_to_owned()?;
    Ok((Stdio::from(out), Stdio::from(err)))
}

/// A command for a child with none of this process's `EXECBRIDGE_*` variables, so a
/// developer's shell cannot change what is measured.
fn command(program: &Path) -> anyhow::Result<Command> {
    let mut command = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("EXECBRIDGE_") {
            command.env_remove(&key);
        }
    }
    let (out, err) = to_stderr()?;
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    Ok(command)
}

/// Settings of one service, as environment overrides.
fn service_env(service: &str, listen: SocketAddr, admin: SocketAddr) -> Vec<(String, String)> {
    let prefix = format!("EXECBRIDGE_{}_", service.to_uppercase());
    vec![
        (format!("{prefix}SERVER__LISTEN"), listen.to_string()),
        (format!("{prefix}SERVER__ADMIN_LISTEN"), admin.to_string()),
        (
            format!("{prefix}SERVER__SHUTDOWN_GRACE_SECS"),
            CHILD_GRACE_SECS.to_string(),
        ),
        // Logging at info would put a formatted line per request on the path measured.
        (format!("{prefix}LOG__LEVEL"), "warn".into()),
    ]
}

impl Stack {
    /// Starts the echo server (`echo_exe serve-echo`), then marketdata, executor and
    /// gateway from `bin_dir`, each once the one before is ready. `extra_env` goes to all
    /// three services after the benchmark's own settings, so it can override them.
    ///
    /// # Errors
    /// When a binary is missing, a file cannot be written, a process cannot be started, or
    /// one exits or is not ready within 30 s; whatever was started is stopped again.
    pub async fn start(
        bin_dir: &Path,
        echo_exe: &Path,
        extra_env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let bins: Vec<PathBuf> = SERVICES.iter().map(|s| bin_dir.join(s)).collect();
        if let Some(missing) = bins.iter().find(|b| !b.is_file()) {
            bail!(
                "{} not found; build the services first: cargo build --release --bins",
                missing.display()
            );
        }
        let ports = free_ports(7)?;
        let [echo, md, md_admin, ex, ex_admin, gw, gw_admin] = ports[..] else {
            bail!("expected 7 free ports, got {}", ports.len());
        };
        let mut stack = Self {
            children: Vec::new(),
            scratch: None,
            echo,
            gateway: gw,
            executor_admin: ex_admin,
        };
        let scratch = std::env::temp_dir().join(format!("execbridge-bench-{}", std::process::id()));
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("cannot create {}", scratch.display()))?;
        stack.scratch = Some(scratch.clone());
        let policy = scratch.join("gateway-policy.toml");
        std::fs::write(&policy, GATEWAY_POLICY)
            .with_context(|| format!("cannot write {}", policy.display()))?;

        let mut serve_echo = command(echo_exe)?;
        serve_echo.args([
            OsString::from("serve-echo"),
            "--listen".into(),
            echo.to_string().into(),
        ]);
        stack.spawn("echo", serve_echo)?;
        stack.wait_ready(|| accepts(echo)).await?;

        let mut marketdata = command(&bins[0])?;
        marketdata
            .envs(service_env("marketdata", md, md_admin))
            .envs(extra_env.iter().cloned());
        stack.spawn("marketdata", marketdata)?;
        stack.wait_ready(|| readyz(md_admin)).await?;

        let mut executor = command(&bins[1])?;
        executor
            .envs(service_env("executor", ex, ex_admin))
            .env(
                "EXECBRIDGE_EXECUTOR_MARKETDATA__ENDPOINT",
                format!("http://{md}"),
            )
            .envs(extra_env.iter().cloned());
        stack.spawn("executor", executor)?;
        stack.wait_ready(|| readyz(ex_admin)).await?;

        let mut gateway = command(&bins[2])?;
        gateway
            .envs(service_env("gateway", gw, gw_admin))
            .env(
                "EXECBRIDGE_GATEWAY_EXECUTOR__ENDPOINT",
                format!("http://{ex}"),
            )
            .env(
                "EXECBRIDGE_GATEWAY_MARKETDATA__ENDPOINT",
                format!("http://{md}"),
            )
            .env("EXECBRIDGE_GATEWAY_POLICY__FILE", &policy)
            .envs(extra_env.iter().cloned());
        stack.spawn("gateway", gateway)?;
        stack.wait_ready(|| readyz(gw_admin)).await?;
        Ok(stack)
    }

    fn spawn(&mut self, name: &'static str, mut command: Command) -> anyhow::Result<()> {
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name} ({:?})", command.get_program()))?;
        self.children.push(Managed { name, child });
        Ok(())
    }

    /// Probes the newest child until `ready` says so; fails early if it exits.
    async fn wait_ready<F, Fut>(&mut self, mut ready: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let Some(managed) = self.children.last_mut() else {
            bail!("no process to wait for");
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = managed.child.try_wait()? {
                bail!("{} exited with {status} before it was ready", managed.name);
            }
            if ready().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{} was not ready within {READY_TIMEOUT:?}", managed.name);
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// Fails if a process has exited: figures measured after that would be meaningless.
    ///
    /// # Errors
    /// Naming the first process that is gone and its exit status.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for managed in &mut self.children {
            let exited: Option<ExitStatus> = managed.child.try_wait()?;
            if let Some(status) = exited {
                bail!("{} exited with {status} during the run", managed.name);
            }
        }
        Ok(())
    }

    /// Stops every process, newest first (gateway, executor, marketdata, echo), so none
    /// loses its upstream while still serving. Blocks up to a few seconds per process.
    pub fn stop(&mut self) {
        while let Some(mut managed) = self.children.pop() {
            managed.stop();
        }
        if let Some(scratch) = self.scratch.take() {
            // Best effort: a leftover file in the temporary directory harms nothing.
            let _ = std::fs::remove_dir_all(scratch);
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;
