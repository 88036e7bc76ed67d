//! One leader via a `coordination.k8s.io/v1` Lease: only the holder reconciles.
//!
//! The holder renews every `ttl / 3`; another replica takes over only after the lease has
//! gone unrenewed for `ttl`. A holder that fails to renew stops at once (the binary exits
//! and Kubernetes restarts it as a follower), so two controllers never write at the same
//! time for longer than the clock skew between nodes.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};

/// A Lease lock held under one identity.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    holder: String,
    ttl_secs: i32,
}

/// What one attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    /// We hold the lease (created, renewed or taken over).
    Leader,
    /// Someone else holds a live lease, or won a race for it.
    Follower,
}

impl LeaseLock {
    /// A lock on Lease `name` in `namespace`, held as `holder` for `ttl_secs`.
    pub fn new(client: Client, namespace: &str, name: &str, holder: &str, ttl_secs: i32) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            holder: holder.into(),
            ttl_secs,
        }
    }

    /// Seconds between renewals.
    pub fn renew_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::try_from(self.ttl_secs / 3).unwrap_or(1).max(1))
    }

    fn spec(&self, now: Timestamp, acquired: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(self.ttl_secs),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One attempt to acquire or renew the lease at `now`.
    ///
    /// # Errors
    /// Any API error other than a lost race (409 Conflict), which is [`Leadership::Follower`].
    pub async fn try_acquire(&self, now: Timestamp) -> Result<Leadership, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let mut lease = Lease {
                spec: Some(self.spec(now, now, 0)),
                ..Lease::default()
            };
            lease.metadata.name = Some(self.name.clone());
            return self.write(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.holder.as_str());
        let expires = spec.renew_time.as_ref().map(|t| {
            t.0 + SignedDuration::from_secs(i64::from(
                spec.lease_duration_seconds.unwrap_or(self.ttl_secs),
            ))
        });
        let transitions = spec.lease_transitions.unwrap_or(0);
        let next = if ours {
            let acquired = spec.acquire_time.map_or(now, |t| t.0);
            self.spec(now, acquired, transitions)
        } else if expires.is_some_and(|e| e > now) {
            return Ok(Leadership::Follower);
        } else {
            self.spec(now, now, transitions + 1)
        };
        // The replace carries the resourceVersion we read: if another replica wrote in
        // between, the API server answers 409 and we stay a follower.
        lease.spec = Some(next);
        self.write(
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await,
        )
    }

    fn write(&self, result: Result<Lease, kube::Error>) -> Result<Leadership, kube::Error> {
        match result {
            Ok(_) => Ok(Leadership::Leader),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Leadership::Follower),
            Err(e) => Err(e),
        }
    }
}
