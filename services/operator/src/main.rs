//! The operator binary: parse arguments, start logging and the admin port, run the
//! controller until a signal.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use execbridge_operator::leader::{Leadership, LeaseLock};
use execbridge_operator::metrics::Metrics;
use execbridge_operator::reconcile::{self, Context};

/// execbridge operator.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Namespace whose ExecbridgeConfig resources are reconciled.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Admin HTTP address (/healthz, /readyz, /metrics).
    #[arg(long, default_value = "127.0.0.1:9104")]
    admin_listen: SocketAddr,
    /// The Lease that elects the one active replica.
    #[arg(long, default_value = "execbridge-operator")]
    lease_name: String,
    /// Seconds a leader's lease lasts without renewal.
    #[arg(long, default_value_t = 15)]
    lease_ttl_secs: i32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    tracing::info!(version = env!("CARGO_PKG_VERSION"), namespace = %args.namespace, "starting");
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let admin = tokio::spawn(execbridge_operator::admin::serve(
        args.admin_listen,
        metrics.clone(),
    ));
    let holder = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("execbridge-operator-{}", std::process::id()));
    let lock = LeaseLock::new(
        client.clone(),
        &args.namespace,
        &args.lease_name,
        &holder,
        args.lease_ttl_secs,
    );
    while lock
        .try_acquire(k8s_openapi::jiff::Timestamp::now())
        .await?
        == Leadership::Follower
    {
        tokio::time::sleep(lock.renew_interval()).await;
    }
    tracing::info!(%holder, lease = %args.lease_name, "leading");
    // Renew until the controller stops; a lost or failed renewal ends the process, so a
    // replica that is no longer the leader never keeps writing.
    let renew = async {
        loop {
            tokio::time::sleep(lock.renew_interval()).await;
            match lock.try_acquire(k8s_openapi::jiff::Timestamp::now()).await {
                Ok(Leadership::Leader) => {}
                Ok(Leadership::Follower) => return anyhow::anyhow!("lost the lease"),
                Err(e) => return anyhow::anyhow!("renewing the lease: {e}"),
            }
        }
    };
    let ctx = Arc::new(Context::new(client.clone(), metrics));
    tokio::select! {
        () = reconcile::run(client, &args.namespace, ctx) => {}
        error = renew => {
            admin.abort();
            return Err(error);
        }
    }
    admin.abort();
    tracing::info!("stopped");
    Ok(())
}
