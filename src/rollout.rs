//! Where a rollout is judged, without I/O: which rollout is pushroll's
//! (the record its own restart writes, [`ROLLOUT`]), whether it is
//! complete, waiting or failed by
//! `kubectl rollout status` rules per kind, and which pods run another
//! digest than the pushed one. The indexer's follower (`indexer/rollout.rs`)
//! feeds it what the watches see and acts on the answers.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use serde::{Deserialize, Serialize};

use crate::workload::Workload;

/// Where a rollout stands, as `kubectl rollout status` would say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Every replica is updated and available.
    Complete,
    /// Still rolling; the text says what it waits for.
    Waiting(String),
    /// It will not finish by itself (a Deployment past its progress deadline).
    Failed(String),
    /// This workload's updates are not rolled by its controller (an
    /// `OnDelete` strategy): there is nothing to follow.
    Unfollowable(String),
}

/// A workload kind whose rollout can be followed.
pub trait Followed: Workload {
    /// Where the rollout stands, from the object's spec and status.
    fn progress(&self) -> Progress;
    /// The pods' label selector.
    fn selector(&self) -> Option<&LabelSelector>;
}

fn generation_seen(generation: Option<i64>, observed: Option<i64>) -> bool {
    observed.unwrap_or(0) >= generation.unwrap_or(0) && observed.is_some()
}

/// What StatefulSets and DaemonSets share before their own rules: only a
/// `RollingUpdate` is rolled by the controller, and nothing is judged
/// before the controller has seen the update.
fn rolling_and_seen(
    strategy: Option<&str>,
    generation: Option<i64>,
    observed: Option<i64>,
) -> Option<Progress> {
    if strategy.unwrap_or("RollingUpdate") != "RollingUpdate" {
        return Some(Progress::Unfollowable(
            "updateStrategy OnDelete: pods change only when deleted".into(),
        ));
    }
    (!generation_seen(generation, observed))
        .then(|| Progress::Waiting("the controller has not seen the update yet".into()))
}

impl Followed for Deployment {
    fn progress(&self) -> Progress {
        let (Some(spec), status) = (&self.spec, self.status.clone().unwrap_or_default()) else {
            return Progress::Waiting("no spec".into());
        };
        if !generation_seen(self.metadata.generation, status.observed_generation) {
            return Progress::Waiting("the controller has not seen the update yet".into());
        }
        let deadline_exceeded = status.conditions.iter().flatten().any(|c| {
            c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
        if deadline_exceeded {
            return Progress::Failed(
                "progress deadline exceeded (ProgressDeadlineExceeded)".into(),
            );
        }
        let want = spec.replicas.unwrap_or(1);
        let updated = status.updated_replicas.unwrap_or(0);
        let replicas = status.replicas.unwrap_or(0);
        let available = status.available_replicas.unwrap_or(0);
        if updated < want {
            Progress::Waiting(format!("{updated} of {want} updated replicas"))
        } else if replicas > updated {
            Progress::Waiting(format!(
                "{} old replicas are pending termination",
                replicas - updated
            ))
        } else if available < updated {
            Progress::Waiting(format!(
                "{available} of {updated} updated replicas available"
            ))
        } else {
            Progress::Complete
        }
    }

    fn selector(&self) -> Option<&LabelSelector> {
        self.spec.as_ref().map(|s| &s.selector)
    }
}

impl Followed for StatefulSet {
    fn progress(&self) -> Progress {
        let Some(spec) = &self.spec else {
            return Progress::Waiting("no spec".into());
        };
        let strategy = spec.update_strategy.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        if let Some(not_yet) = rolling_and_seen(
            strategy.type_.as_deref(),
            self.metadata.generation,
            status.observed_generation,
        ) {
            return not_yet;
        }
        let want = spec.replicas.unwrap_or(1);
        let ready = status.ready_replicas.unwrap_or(0);
        if ready < want {
            return Progress::Waiting(format!("{ready} of {want} pods ready"));
        }
        let partition = strategy
            .rolling_update
            .and_then(|r| r.partition)
            .unwrap_or(0);
        if partition > 0 {
            // Only the pods at or above the partition roll.
            let updated = status.updated_replicas.unwrap_or(0);
            let due = (want - partition).max(0);
            return if updated < due {
                Progress::Waiting(format!("{updated} of {due} partitioned pods updated"))
            } else {
                Progress::Complete
            };
        }
        if status.update_revision.is_some() && status.update_revision != status.current_revision {
            let updated = status.updated_replicas.unwrap_or(0);
            return Progress::Waiting(format!("{updated} of {want} pods updated"));
        }
        Progress::Complete
    }

    fn selector(&self) -> Option<&LabelSelector> {
        self.spec.as_ref().map(|s| &s.selector)
    }
}

impl Followed for DaemonSet {
    fn progress(&self) -> Progress {
        let Some(spec) = &self.spec else {
            return Progress::Waiting("no spec".into());
        };
        let strategy = spec.update_strategy.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        if let Some(not_yet) = rolling_and_seen(
            strategy.type_.as_deref(),
            self.metadata.generation,
            status.observed_generation,
        ) {
            return not_yet;
        }
        let desired = status.desired_number_scheduled;
        let updated = status.updated_number_scheduled.unwrap_or(0);
        let available = status.number_available.unwrap_or(0);
        if updated < desired {
            Progress::Waiting(format!("{updated} of {desired} updated pods scheduled"))
        } else if available < desired {
            Progress::Waiting(format!("{available} of {desired} updated pods available"))
        } else {
            Progress::Complete
        }
    }

    fn selector(&self) -> Option<&LabelSelector> {
        self.spec.as_ref().map(|s| &s.selector)
    }
}

/// `pushroll.io/rollout`: the rollout pushroll's own restart started,
/// written on the workload's metadata in the same PATCH that changes the
/// template. Its identity is the generation that PATCH produced: nothing
/// but that PATCH creates a record whose generation is the workload's
/// own. A rollback, `kubectl rollout restart`, an edit or a sync moves the
/// generation on (and a Deployment rollback copies an old ReplicaSet's
/// annotations, old records included, but never a current generation), so
/// the template they bring is never judged as pushroll's.
pub const ROLLOUT: &str = "pushroll.io/rollout";

/// The rollout a restart started: the digest, the containers it rolled,
/// when, and the generation the write produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pushed {
    pub digest: String,
    pub containers: Vec<String>,
    /// `kubectl.kubernetes.io/restartedAt` of the same write: when the
    /// rollout began.
    pub restarted_at: jiff::Timestamp,
    /// `metadata.generation` right after the write.
    pub generation: i64,
    /// The normalized image pushed (notifications name it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl Pushed {
    /// The record on a workload's own annotations; `None` when absent or
    /// not a record.
    pub fn of(annotations: &BTreeMap<String, String>) -> Option<Pushed> {
        serde_json::from_str(annotations.get(ROLLOUT)?).ok()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record always serializes")
    }

    /// Whether `other` records the same push (its generation aside: a
    /// record carried forward by pushroll's own annotation write).
    pub fn same_push(&self, other: &Pushed) -> bool {
        self.digest == other.digest
            && self.containers == other.containers
            && self.restarted_at == other.restarted_at
    }

    /// Whether the workload's template is still the one this record's
    /// write made: its generation has not moved since.
    pub fn is_current(&self, generation: Option<i64>) -> bool {
        generation == Some(self.generation)
    }
}

/// The rollout pushroll's own write started and that the workload still
/// runs: the record on `annotations`, when `generation` is its own.
pub fn ours(annotations: &BTreeMap<String, String>, generation: Option<i64>) -> Option<Pushed> {
    Pushed::of(annotations).filter(|p| p.is_current(generation))
}

/// The digest part of a container status' `imageID`
/// (`docker-pullable://R@sha256:…`, `R@sha256:…`, or a bare `sha256:…`).
pub fn image_id_digest(image_id: &str) -> Option<&str> {
    let digest = image_id.rsplit_once('@').map_or(image_id, |(_, d)| d);
    digest.starts_with("sha256:").then_some(digest)
}

/// A pod that runs another digest than the pushed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StalePod {
    pub pod: String,
    pub node: String,
    pub container: String,
    /// What it runs (the digest of its `imageID`).
    pub digest: String,
}

/// The live pods (not terminating) whose `containers` report an `imageID`
/// of another digest than `digest`. A container that reports no imageID
/// yet is not judged.
pub fn stale_pods(pods: &[Pod], containers: &[String], digest: &str) -> Vec<StalePod> {
    let mut stale = Vec::new();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let statuses = pod.status.iter().flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        });
        for status in statuses {
            if !containers.contains(&status.name) {
                continue;
            }
            let Some(running) = image_id_digest(&status.image_id) else {
                continue;
            };
            if running != digest {
                stale.push(StalePod {
                    pod: pod.metadata.name.clone().unwrap_or_default(),
                    node: pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default(),
                    container: status.name.clone(),
                    digest: running.to_owned(),
                });
            }
        }
    }
    stale
}

/// A label selector in the API's query form (`a=b,c in (d,e),!f`).
/// `None` for a selector that selects nothing (an unknown operator).
pub fn selector_query(selector: &LabelSelector) -> Option<String> {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            _ => return None,
        });
    }
    Some(parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn object<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    fn deployment(generation: i64, spec_replicas: i64, status: Value) -> Deployment {
        object(json!({
            "metadata": {"name": "api", "generation": generation},
            "spec": {"replicas": spec_replicas, "selector": {"matchLabels": {"app": "api"}},
                     "template": {"spec": {"containers": []}}},
            "status": status,
        }))
    }

    fn complete(p: &Progress) -> &'static str {
        match p {
            Progress::Complete => "complete",
            Progress::Waiting(_) => "waiting",
            Progress::Failed(_) => "failed",
            Progress::Unfollowable(_) => "unfollowable",
        }
    }

    #[test]
    fn deployments_complete_by_kubectl_rules() {
        let deadline = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]);
        let progressing =
            json!([{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]);
        // (name, generation, spec.replicas, status, result)
        let table = [
            (
                "not observed yet",
                2,
                3,
                json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
                "waiting",
            ),
            ("no status", 1, 3, json!(null), "waiting"),
            (
                "updating",
                2,
                3,
                json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 1, "availableReplicas": 3, "conditions": progressing}),
                "waiting",
            ),
            (
                "old replicas left",
                2,
                3,
                json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3}),
                "waiting",
            ),
            (
                "not available",
                2,
                3,
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}),
                "waiting",
            ),
            (
                "complete",
                2,
                3,
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
                "complete",
            ),
            (
                "observed ahead",
                2,
                3,
                json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
                "complete",
            ),
            (
                "scaled to zero",
                2,
                0,
                json!({"observedGeneration": 2}),
                "complete",
            ),
            (
                "deadline exceeded",
                2,
                3,
                json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 1, "availableReplicas": 3, "conditions": deadline}),
                "failed",
            ),
            // An old deadline before the controller saw our update is not ours.
            (
                "old deadline, not observed",
                3,
                3,
                json!({"observedGeneration": 2, "conditions": deadline}),
                "waiting",
            ),
        ];
        for (name, generation, replicas, status, want) in table {
            let d = deployment(generation, replicas, status);
            assert_eq!(complete(&d.progress()), want, "{name}: {:?}", d.progress());
        }
    }

    #[test]
    fn statefulsets_complete_by_revision_or_partition() {
        // (name, strategy, spec.replicas, status, result)
        let table = [
            (
                "not observed",
                json!({}),
                3,
                json!({"observedGeneration": 1, "readyReplicas": 3, "currentRevision": "a", "updateRevision": "a"}),
                "waiting",
            ),
            (
                "rolling",
                json!({"type": "RollingUpdate"}),
                3,
                json!({"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "b"}),
                "waiting",
            ),
            (
                "not ready",
                json!({}),
                3,
                json!({"observedGeneration": 2, "readyReplicas": 2, "currentRevision": "b", "updateRevision": "b"}),
                "waiting",
            ),
            (
                "complete",
                json!({}),
                3,
                json!({"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 3, "currentRevision": "b", "updateRevision": "b"}),
                "complete",
            ),
            (
                "partition pending",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}),
                5,
                json!({"observedGeneration": 2, "readyReplicas": 5, "updatedReplicas": 2, "currentRevision": "a", "updateRevision": "b"}),
                "waiting",
            ),
            (
                "partition done",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}),
                5,
                json!({"observedGeneration": 2, "readyReplicas": 5, "updatedReplicas": 3, "currentRevision": "a", "updateRevision": "b"}),
                "complete",
            ),
            (
                "on delete",
                json!({"type": "OnDelete"}),
                3,
                json!({"observedGeneration": 2, "readyReplicas": 3}),
                "unfollowable",
            ),
        ];
        for (name, strategy, replicas, status, want) in table {
            let s: StatefulSet = object(json!({
                "metadata": {"name": "db", "generation": 2},
                "spec": {"replicas": replicas, "serviceName": "db", "updateStrategy": strategy,
                         "selector": {"matchLabels": {"app": "db"}}, "template": {"spec": {"containers": []}}},
                "status": status,
            }));
            assert_eq!(complete(&s.progress()), want, "{name}: {:?}", s.progress());
        }
    }

    #[test]
    fn daemonsets_complete_when_every_node_runs_the_update() {
        // (name, strategy, status, result)
        let table = [
            (
                "not observed",
                json!({}),
                json!({"observedGeneration": 1, "desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberMisscheduled": 0, "numberReady": 2, "updatedNumberScheduled": 2, "numberAvailable": 2}),
                "waiting",
            ),
            (
                "scheduling",
                json!({}),
                json!({"observedGeneration": 2, "desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberMisscheduled": 0, "numberReady": 2, "updatedNumberScheduled": 1, "numberAvailable": 2}),
                "waiting",
            ),
            (
                "not available",
                json!({}),
                json!({"observedGeneration": 2, "desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberMisscheduled": 0, "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1}),
                "waiting",
            ),
            (
                "complete",
                json!({"type": "RollingUpdate"}),
                json!({"observedGeneration": 2, "desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberMisscheduled": 0, "numberReady": 2, "updatedNumberScheduled": 2, "numberAvailable": 2}),
                "complete",
            ),
            (
                "on delete",
                json!({"type": "OnDelete"}),
                json!({"observedGeneration": 2, "desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberMisscheduled": 0, "numberReady": 2}),
                "unfollowable",
            ),
        ];
        for (name, strategy, status, want) in table {
            let d: DaemonSet = object(json!({
                "metadata": {"name": "agent", "generation": 2},
                "spec": {"updateStrategy": strategy, "selector": {"matchLabels": {"app": "agent"}},
                         "template": {"spec": {"containers": []}}},
                "status": status,
            }));
            assert_eq!(complete(&d.progress()), want, "{name}: {:?}", d.progress());
        }
    }

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn a_rollout_is_ours_only_at_the_generation_its_write_produced() {
        let record = Pushed {
            digest: D1.into(),
            containers: vec!["app".into()],
            restarted_at: "2026-11-26T12:00:00Z".parse().unwrap(),
            generation: 4,
            image: Some("r.example/app:v1".into()),
        };
        let map =
            |v: &str| -> BTreeMap<String, String> { [(ROLLOUT.to_owned(), v.to_owned())].into() };
        let json = record.to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["restartedAt"], "2026-11-26T12:00:00Z");
        assert_eq!(value["generation"], 4);
        // (name, annotations, generation, ours)
        type Row<'a> = (&'a str, BTreeMap<String, String>, Option<i64>, bool);
        let table: Vec<Row> = vec![
            ("the write's own generation", map(&json), Some(4), true),
            (
                "moved on: a rollback, a restart, an edit",
                map(&json),
                Some(5),
                false,
            ),
            (
                "a record copied back from an old ReplicaSet",
                map(&json),
                Some(9),
                false,
            ),
            ("no generation", map(&json), None, false),
            ("not a record", map("{oops"), Some(4), false),
            (
                "no record (template annotations alone never count)",
                BTreeMap::new(),
                Some(4),
                false,
            ),
        ];
        for (name, annotations, generation, want) in table {
            assert_eq!(ours(&annotations, generation).is_some(), want, "{name}");
        }
        assert_eq!(ours(&map(&json), Some(4)), Some(record));
    }

    #[test]
    fn stale_pods_are_those_on_another_digest() {
        let pod = |name: &str, node: &str, image_id: &str, deleting: bool| -> Pod {
            let mut p: Pod = object(json!({
                "metadata": {"name": name},
                "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:v1"}]},
                "status": {"containerStatuses": [
                    {"name": "app", "image": "app:v1", "imageID": image_id, "ready": true, "restartCount": 0},
                    {"name": "side", "image": "side:v1", "imageID": format!("side@{D2}"), "ready": true, "restartCount": 0}]},
            }));
            if deleting {
                p.metadata.deletion_timestamp = Some(
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
                );
            }
            p
        };
        let pods = [
            pod("a", "n1", &format!("docker-pullable://r/app@{D1}"), false),
            pod("b", "n2", &format!("r/app@{D2}"), false),
            pod("c", "n2", D2, false),
            pod("d", "n3", "", false),
            pod("e", "n3", &format!("r/app@{D2}"), true),
        ];
        let stale = stale_pods(&pods, &["app".to_owned()], D1);
        let got: Vec<(&str, &str, &str)> = stale
            .iter()
            .map(|s| (s.pod.as_str(), s.node.as_str(), s.digest.as_str()))
            .collect();
        assert_eq!(got, [("b", "n2", D2), ("c", "n2", D2)]);
        assert!(stale_pods(&pods[..1], &["app".to_owned()], D1).is_empty());
    }

    #[test]
    fn image_ids_give_their_digest() {
        let table = [
            (format!("docker-pullable://gcr.io/p/app@{D1}"), Some(D1)),
            (format!("gcr.io/p/app@{D1}"), Some(D1)),
            (D1.to_owned(), Some(D1)),
            (String::new(), None),
            ("docker://abc".to_owned(), None),
        ];
        for (id, want) in &table {
            assert_eq!(image_id_digest(id), *want, "{id}");
        }
    }

    #[test]
    fn selectors_render_as_queries() {
        let table = [
            (
                json!({"matchLabels": {"app": "api", "tier": "web"}}),
                Some("app=api,tier=web"),
            ),
            (
                json!({"matchLabels": {"app": "api"}, "matchExpressions": [
                    {"key": "env", "operator": "In", "values": ["a", "b"]},
                    {"key": "x", "operator": "NotIn", "values": ["c"]},
                    {"key": "y", "operator": "Exists"},
                    {"key": "z", "operator": "DoesNotExist"}]}),
                Some("app=api,env in (a,b),x notin (c),y,!z"),
            ),
            (
                json!({"matchExpressions": [{"key": "k", "operator": "Odd"}]}),
                None,
            ),
        ];
        for (selector, want) in table {
            let s: LabelSelector = object(selector.clone());
            assert_eq!(selector_query(&s).as_deref(), want, "{selector}");
        }
    }
}
