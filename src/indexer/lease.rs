//! Leader election through a coordination.k8s.io Lease, and the checks
//! around it: the Lease is read before each write, and recreated when it
//! has been deleted.

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::WatchConfig;
use crate::k8s::{FIELD_MANAGER, Kube, KubeError};
use crate::metrics::Metrics;

/// This replica's part in the election: whether the lease library says it
/// leads, and the task that renews or releases the Lease.
pub(super) struct Election {
    leader: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<LeaseManager>>,
}

impl Election {
    /// Joins the election on the Lease beside the index ConfigMap.
    pub(super) async fn start(kube: &Kube, config: &WatchConfig) -> anyhow::Result<Election> {
        let duration_secs = config.settings.lease_duration.as_secs().max(2);
        let lease = LeaseManagerBuilder::new(kube.client().clone(), &config.settings.lease_name)
            .with_namespace(&config.configmap.namespace)
            .with_identity(&config.settings.identity)
            .with_duration(duration_secs)
            .with_grace((duration_secs / 3).max(1))
            .with_field_manager(FIELD_MANAGER)
            .build()
            .await
            .with_context(|| {
                format!(
                    "starting the leader election on the Lease {}/{}",
                    config.configmap.namespace, config.settings.lease_name
                )
            })?;
        let (leader, task) = lease.watch().await;
        Ok(Election { leader, task })
    }

    /// Whether the lease library says this replica leads, marking it seen.
    pub(super) fn leads(&mut self) -> bool {
        *self.leader.borrow_and_update()
    }

    /// The same, without marking it seen (right before a write).
    pub(super) fn still_leads(&self) -> bool {
        *self.leader.borrow()
    }

    /// Waits for a change of leadership; an error when the lease task ended.
    pub(super) async fn changed(&mut self) -> anyhow::Result<()> {
        if self.leader.changed().await.is_err() {
            anyhow::bail!("the lease task ended: {:?}", (&mut self.task).await);
        }
        Ok(())
    }

    /// Releases the Lease (dropping the receiver makes the task do it).
    pub(super) async fn release(self) {
        drop(self.leader);
        match tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(_))) => tracing::info!("lease released"),
            other => tracing::warn!(?other, "lease not released cleanly"),
        }
    }
}

/// Whether `lease` names `identity` as its holder and has not expired at
/// `now`. kube-lease-manager reports changes of leadership, not failed
/// renewals: a leader cut off from its Lease goes on believing it leads
/// while another replica takes over. So the Lease is read before each
/// write (writes are debounced and rare) and a stale belief writes nothing.
pub(crate) fn holds_lease(lease: &LeaseSpec, identity: &str, now: jiff::Timestamp) -> bool {
    let (Some(holder), Some(renewed), Some(secs)) = (
        lease.holder_identity.as_deref(),
        lease.renew_time.as_ref(),
        lease.lease_duration_seconds,
    ) else {
        return false;
    };
    holder == identity
        && renewed
            .0
            .checked_add(jiff::SignedDuration::from_secs(i64::from(secs)))
            .is_ok_and(|expires| now < expires)
}

/// Reads the Lease; recreates it when it is gone. kube-lease-manager
/// creates the Lease only when it starts: once deleted (a common operator
/// fix for a stuck Lease), it reports an error on every loop, never a loss
/// of leadership, and nobody would write the index again.
pub(super) async fn read_lease(
    kube: &Kube,
    config: &WatchConfig,
    metrics: &Metrics,
) -> Result<Lease, KubeError> {
    let ns = &config.configmap.namespace;
    let lease = kube.get_lease(ns, &config.settings.lease_name).await;
    if let Err(KubeError::NotFound) = &lease {
        let created = kube.create_lease(ns, &config.settings.lease_name).await;
        let result = if created.is_ok() {
            "recreated"
        } else {
            "error"
        };
        metrics.indexer.lease_recreation(result);
        match created {
            Ok(()) => {
                tracing::warn!(lease = %format!("{ns}/{}", config.settings.lease_name), "the Lease was deleted; recreated it, and the election starts over")
            }
            Err(e) => {
                tracing::error!(lease = %format!("{ns}/{}", config.settings.lease_name), error = %e, "the Lease was deleted and cannot be recreated")
            }
        }
    }
    lease
}

pub(super) async fn lease_is_ours(kube: &Kube, config: &WatchConfig, metrics: &Metrics) -> bool {
    let lease = read_lease(kube, config, metrics).await;
    let ours = match &lease {
        Ok(lease) => lease.spec.as_ref().is_some_and(|spec| {
            holds_lease(spec, &config.settings.identity, jiff::Timestamp::now())
        }),
        Err(_) => false,
    };
    if !ours {
        let holder = lease
            .as_ref()
            .ok()
            .and_then(|l| l.spec.as_ref()?.holder_identity.clone());
        let error = lease.as_ref().err().map(ToString::to_string);
        tracing::warn!(identity = %config.settings.identity, ?holder, ?error, "the Lease is not held by this replica (expired, taken over, or unreadable): not writing");
        metrics.indexer.write("not-lease-holder");
    }
    ours
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: Option<&str>, renewed: Option<&str>, secs: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(Into::into),
            renew_time: renewed.map(|t| MicroTime(t.parse().unwrap())),
            lease_duration_seconds: secs,
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_write_needs_an_unexpired_lease_naming_us() {
        let now: jiff::Timestamp = "2026-11-27T12:00:10Z".parse().unwrap();
        let renewed = Some("2026-11-27T12:00:00Z");
        let cases = [
            (lease(Some("me"), renewed, Some(15)), true, "held and fresh"),
            (
                lease(Some("me"), renewed, Some(10)),
                false,
                "expired at now",
            ),
            (lease(Some("me"), renewed, Some(5)), false, "expired"),
            (lease(Some("other"), renewed, Some(15)), false, "taken over"),
            (lease(None, renewed, Some(15)), false, "released"),
            (lease(Some("me"), None, Some(15)), false, "never renewed"),
            (lease(Some("me"), renewed, None), false, "no duration"),
            (
                lease(Some("me"), Some("2026-11-27T12:00:20Z"), Some(15)),
                true,
                "renewed by a clock ahead of ours",
            ),
        ];
        for (spec, want, case) in cases {
            assert_eq!(holds_lease(&spec, "me", now), want, "{case}");
        }
    }
}
