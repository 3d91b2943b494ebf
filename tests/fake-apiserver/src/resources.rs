//! The resource types this fake serves, with the facts discovery and the
//! write path need about each (scope, kind, short names, strategy quirks).

/// One served resource type.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group, `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// Plural, as in URLs.
    pub resource: &'static str,
    pub kind: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// `metadata.generation` is kept (set to 1 on create, bumped when `spec`
    /// changes), as the apps/v1 strategies do.
    pub has_generation: bool,
    /// Changes to `metadata.annotations` bump the generation too. Only the
    /// Deployment strategy does this ("annotations are copied from
    /// deployments to their replica sets"); StatefulSets and DaemonSets
    /// bump on `spec` changes only.
    pub annotations_bump_generation: bool,
    /// The type has a `/status` subresource: writes to the main resource
    /// keep the stored status, and `/status` writes change only status.
    pub has_status: bool,
    /// PUT on a missing object creates it (the real strategies of leases
    /// and events allow it; workloads and configmaps answer 404).
    pub create_on_update: bool,
}

impl ResourceInfo {
    /// `apps/v1` or `v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps` or `configmaps`: how error messages name it.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// Where this type's URLs start: `/apis/apps/v1` or `/api/v1`.
    pub fn prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }
}

const ALL: &[&str] = &["all"];

/// Every resource type served.
pub static RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        group: "apps",
        version: "v1",
        resource: "deployments",
        kind: "Deployment",
        singular: "deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: ALL,
        has_generation: true,
        annotations_bump_generation: true,
        has_status: true,
        create_on_update: false,
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        resource: "statefulsets",
        kind: "StatefulSet",
        singular: "statefulset",
        namespaced: true,
        short_names: &["sts"],
        categories: ALL,
        has_generation: true,
        annotations_bump_generation: false,
        has_status: true,
        create_on_update: false,
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        resource: "daemonsets",
        kind: "DaemonSet",
        singular: "daemonset",
        namespaced: true,
        short_names: &["ds"],
        categories: ALL,
        has_generation: true,
        annotations_bump_generation: false,
        has_status: true,
        create_on_update: false,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        resource: "configmaps",
        kind: "ConfigMap",
        singular: "configmap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        has_generation: false,
        annotations_bump_generation: false,
        has_status: false,
        create_on_update: false,
    },
    // Pods: what the rollout follower lists (by label selector) to see
    // which digest each runs; tests write them, nothing schedules them.
    ResourceInfo {
        group: "",
        version: "v1",
        resource: "pods",
        kind: "Pod",
        singular: "pod",
        namespaced: true,
        short_names: &["po"],
        categories: ALL,
        has_generation: false,
        annotations_bump_generation: false,
        has_status: true,
        create_on_update: false,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        resource: "events",
        kind: "Event",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        has_generation: false,
        annotations_bump_generation: false,
        has_status: false,
        create_on_update: true,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        resource: "namespaces",
        kind: "Namespace",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        has_generation: false,
        annotations_bump_generation: false,
        has_status: true,
        create_on_update: false,
    },
    ResourceInfo {
        group: "coordination.k8s.io",
        version: "v1",
        resource: "leases",
        kind: "Lease",
        singular: "lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        has_generation: false,
        annotations_bump_generation: false,
        has_status: false,
        create_on_update: true,
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        resource: "clusterrolebindings",
        kind: "ClusterRoleBinding",
        singular: "clusterrolebinding",
        namespaced: false,
        short_names: &[],
        categories: &[],
        has_generation: false,
        annotations_bump_generation: false,
        has_status: false,
        create_on_update: true,
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        resource: "clusterroles",
        kind: "ClusterRole",
        singular: "clusterrole",
        namespaced: false,
        short_names: &[],
        categories: &[],
        has_generation: false,
        annotations_bump_generation: false,
        has_status: false,
        create_on_update: true,
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        resource: "rolebindings",
        kind: "RoleBinding",
        singular: "rolebinding",
        namespaced: true,
        short_names: &[],
        categories: &[],
        has_generation: false,
        annotations_bump_generation: false,
        has_status: false,
        create_on_update: true,
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        resource: "roles",
        kind: "Role",
        singular: "role",
        namespaced: true,
        short_names: &[],
        categories: &[],
        has_generation: false,
        annotations_bump_generation: false,
        has_status: false,
        create_on_update: true,
    },
];

/// The served group/versions, in discovery order (core first).
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

pub fn lookup(group: &str, version: &str, resource: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.resource == resource)
}

/// Finds the type of an object from its `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

pub fn namespaces() -> &'static ResourceInfo {
    lookup("", "v1", "namespaces").expect("namespaces is served")
}

/// The RBAC type of this kind, if it is one (`Role`, `ClusterRole`,
/// `RoleBinding`, `ClusterRoleBinding`).
pub fn is_rbac(res: &ResourceInfo) -> bool {
    res.group == "rbac.authorization.k8s.io"
}

/// The four RBAC types.
pub fn rbac_types() -> impl Iterator<Item = &'static ResourceInfo> {
    RESOURCES.iter().filter(|r| is_rbac(r))
}
