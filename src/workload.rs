//! The workloads pushroll restarts, one place for what every layer needs to
//! know of them: the kinds and their API names, a reference to one
//! workload, the namespaces it may touch, and the containers of a pod
//! template.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde::{Deserialize, Serialize};

/// The workload kinds pushroll restarts (all `apps/v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Deployment, Kind::StatefulSet, Kind::DaemonSet];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
        }
    }

    /// The `apps/v1` resource name, for URLs, metrics and RBAC.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Deployment => "deployments",
            Kind::StatefulSet => "statefulsets",
            Kind::DaemonSet => "daemonsets",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One workload that runs an image: an entry of the index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkloadRef {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// The containers (and init containers) that run the image, when known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
}

/// `pushroll.io/mode` on a workload or its pod template.
pub const MODE_ANNOTATION: &str = "pushroll.io/mode";

/// How a push rolls a workload (`pushroll.io/mode`, `serve --mode`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Restart the pods, as `kubectl rollout restart` does; the image
    /// field is untouched, so the pull policy decides what runs.
    #[default]
    Restart,
    /// Also set each matching container's image to `R:T@sha256:D`, so
    /// every node runs exactly the pushed digest.
    Pin,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Restart => "restart",
            Mode::Pin => "pin",
        }
    }

    /// The workload's own annotation, else its template's, else `default`.
    /// A value that is neither mode is ignored (`default` applies), never an
    /// error: a typo must not stop a push.
    pub fn of<'a>(
        workload: impl Into<Option<&'a BTreeMap<String, String>>>,
        template: impl Into<Option<&'a BTreeMap<String, String>>>,
        default: Mode,
    ) -> Mode {
        let read = |m: Option<&BTreeMap<String, String>>| match m?
            .get(MODE_ANNOTATION)?
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "restart" => Some(Mode::Restart),
            "pin" => Some(Mode::Pin),
            _ => None,
        };
        read(workload.into())
            .or_else(|| read(template.into()))
            .unwrap_or(default)
    }
}

/// Which namespaces are indexed or restarted (`--namespace`,
/// `--exclude-namespace`).
#[derive(Debug, Clone, Default)]
pub struct NamespaceFilter {
    /// Empty means every namespace.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl NamespaceFilter {
    pub(crate) fn allows(&self, namespace: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|n| n == namespace))
            && !self.exclude.iter().any(|n| n == namespace)
    }
}

/// What in a workload reference is not a Kubernetes name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InvalidName {
    Namespace,
    Name,
    Container,
}

impl InvalidName {
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidName::Namespace => "namespace",
            InvalidName::Name => "name",
            InvalidName::Container => "container",
        }
    }
}

/// A DNS-1123 label: what namespaces and container names are.
pub(crate) fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && is_label_chars(s)
}

/// A DNS-1123 subdomain: what Deployment, StatefulSet and DaemonSet names are.
pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label_chars)
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn is_label_chars(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// Whether an entry names a workload Kubernetes could hold. Its namespace
/// and name go into API request paths, so anything else (`../..`, `a/b`,
/// upper case) is refused where the index is read, not where it is used.
pub(crate) fn check_names(w: &WorkloadRef) -> Result<(), InvalidName> {
    if !is_dns1123_label(&w.namespace) {
        return Err(InvalidName::Namespace);
    }
    if !is_dns1123_subdomain(&w.name) {
        return Err(InvalidName::Name);
    }
    if !w.containers.iter().all(|c| is_dns1123_label(c)) {
        return Err(InvalidName::Container);
    }
    Ok(())
}

/// A typed workload object, as lists and watches return it.
pub trait Workload:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const KIND: Kind;
    fn template(&self) -> Option<&PodTemplateSpec>;
}

impl Workload for Deployment {
    const KIND: Kind = Kind::Deployment;
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }
}

impl Workload for StatefulSet {
    const KIND: Kind = Kind::StatefulSet;
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }
}

impl Workload for DaemonSet {
    const KIND: Kind = Kind::DaemonSet;
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }
}

/// `(container name, image)` of a pod template's init containers, then its
/// containers; a container without an image is skipped.
pub fn containers(template: &PodTemplateSpec) -> Vec<(String, String)> {
    template
        .spec
        .as_ref()
        .map(|spec| {
            spec.init_containers
                .iter()
                .flatten()
                .chain(spec.containers.iter())
                .filter_map(|c| Some((c.name.clone(), c.image.clone()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The same as [`containers`], for a pod template read as JSON (the restart
/// path reads workloads untyped, so that no field it does not need can fail
/// the read).
pub(crate) fn containers_json(template: &serde_json::Value) -> Vec<(String, String)> {
    field_by_container(template, "image").collect()
}

/// `imagePullPolicy` by container name, where a pod template read as JSON
/// sets one.
pub(crate) fn pull_policies_json(
    template: &serde_json::Value,
) -> std::collections::BTreeMap<String, String> {
    field_by_container(template, "imagePullPolicy").collect()
}

/// The names of a pod template's init containers (read as JSON): a pin
/// patches them under `initContainers`, the others under `containers`.
pub(crate) fn init_containers_json(
    template: &serde_json::Value,
) -> std::collections::BTreeSet<String> {
    template["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some(c["name"].as_str()?.to_owned()))
        .collect()
}

/// `(container name, its string field)` of init containers, then
/// containers, where both are strings.
fn field_by_container<'t>(
    template: &'t serde_json::Value,
    field: &'t str,
) -> impl Iterator<Item = (String, String)> + 't {
    ["initContainers", "containers"]
        .into_iter()
        .flat_map(|key| template["spec"][key].as_array().into_iter().flatten())
        .filter_map(move |c| {
            Some((
                c["name"].as_str()?.to_owned(),
                c[field].as_str()?.to_owned(),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_mode_comes_from_the_workload_then_its_template_then_the_default() {
        let m = |v: &str| BTreeMap::from([(MODE_ANNOTATION.to_owned(), v.to_owned())]);
        let none = BTreeMap::new();
        // (workload, template, default, mode)
        let table = [
            (&none, &none, Mode::Restart, Mode::Restart),
            (&none, &none, Mode::Pin, Mode::Pin),
            (&m("pin"), &none, Mode::Restart, Mode::Pin),
            (&none, &m("pin"), Mode::Restart, Mode::Pin),
            (&m(" Pin "), &none, Mode::Restart, Mode::Pin),
            (&m("restart"), &m("pin"), Mode::Pin, Mode::Restart),
            (&m("pinned"), &m("pin"), Mode::Restart, Mode::Pin),
            (&m("bogus"), &none, Mode::Pin, Mode::Pin),
            (&m(""), &none, Mode::Restart, Mode::Restart),
        ];
        for (i, (workload, template, default, want)) in table.into_iter().enumerate() {
            assert_eq!(Mode::of(workload, template, default), want, "row {i}");
        }
    }

    #[test]
    fn typed_and_json_templates_give_the_same_containers() {
        let cases = [
            json!({"spec": {"initContainers": [{"name": "migrate", "image": "app:v1"}],
                            "containers": [{"name": "db", "image": "pg:16"}, {"name": "noimage"}]}}),
            json!({"spec": {"containers": [{"name": "web", "image": "nginx"}]}}),
            json!({"spec": {"containers": []}}),
            json!({}),
        ];
        for template in cases {
            let typed: PodTemplateSpec = serde_json::from_value(template.clone()).unwrap();
            assert_eq!(containers(&typed), containers_json(&template), "{template}");
        }
        let t = json!({"spec": {"initContainers": [{"name": "i", "image": "a"}],
                                "containers": [{"name": "c", "image": "b"}]}});
        assert_eq!(
            containers_json(&t),
            [("i".into(), "a".into()), ("c".into(), "b".into())],
            "init containers first"
        );
    }

    #[test]
    fn plural_names_are_the_api_resources() {
        let got: Vec<_> = Kind::ALL.iter().map(|k| k.plural()).collect();
        assert_eq!(got, ["deployments", "statefulsets", "daemonsets"]);
    }
}
