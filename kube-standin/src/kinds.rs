//! The table of resource kinds the stand-in serves, as kube-apiserver's
//! discovery describes them.

/// One resource kind served by the stand-in.
#[derive(Debug, PartialEq, Eq)]
pub struct Kind {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Resource name in URLs (`pods`).
    pub plural: &'static str,
    /// Kind in objects (`Pod`).
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether the kind has a `/status` subresource: then writes to the main
    /// resource leave `.status` alone, and `/status` writes change only it.
    pub status_subresource: bool,
    /// Whether `metadata.generation` is kept (bumped on spec changes).
    pub generation: bool,
    /// Whether a create clears `.status` (as the kind's registry strategy
    /// does; nodes keep what the creator sent).
    pub clear_status_on_create: bool,
}

impl Kind {
    /// `apiVersion` of objects of this kind (`v1`, `apps/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The resource as kube-apiserver names it in error messages
    /// (`pods`, `deployments.apps`).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const fn kind(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    status_subresource: bool,
    generation: bool,
) -> Kind {
    Kind {
        group,
        version,
        plural,
        kind,
        namespaced,
        status_subresource,
        generation,
        clear_status_on_create: status_subresource,
    }
}

/// Every kind served, in discovery order.
pub static KINDS: &[Kind] = &[
    Kind {
        clear_status_on_create: false,
        ..kind("", "v1", "nodes", "Node", false, true, false)
    },
    kind("", "v1", "namespaces", "Namespace", false, true, false),
    kind("", "v1", "pods", "Pod", true, true, true),
    kind("", "v1", "secrets", "Secret", true, false, false),
    kind("", "v1", "configmaps", "ConfigMap", true, false, false),
    kind("", "v1", "services", "Service", true, true, false),
    kind(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
        true,
        false,
    ),
    kind(
        "",
        "v1",
        "persistentvolumes",
        "PersistentVolume",
        false,
        true,
        false,
    ),
    kind(
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        true,
        false,
        false,
    ),
    kind(
        "",
        "v1",
        "resourcequotas",
        "ResourceQuota",
        true,
        true,
        false,
    ),
    kind("", "v1", "limitranges", "LimitRange", true, false, false),
    kind("apps", "v1", "deployments", "Deployment", true, true, true),
    kind(
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        true,
        true,
        true,
    ),
    kind("apps", "v1", "daemonsets", "DaemonSet", true, true, true),
    kind("apps", "v1", "replicasets", "ReplicaSet", true, true, true),
    kind(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        true,
        true,
    ),
    kind(
        "networking.k8s.io",
        "v1",
        "ingresses",
        "Ingress",
        true,
        true,
        true,
    ),
    kind(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
        false,
        true,
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
        false,
        false,
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        false,
        false,
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "Role",
        true,
        false,
        false,
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
        false,
        false,
    ),
];

/// The kind served at `group/version/plural`, if any.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// The kind with this `kind` name in the core or named group.
pub fn by_kind(group: &str, kind: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.group == group && k.kind == kind)
}

/// Namespaces, the one kind other objects depend on.
pub fn namespaces() -> &'static Kind {
    lookup("", "v1", "namespaces").expect("namespaces are in the table")
}

/// ServiceAccounts (the ServiceAccount admission plugin looks them up).
pub fn service_accounts() -> &'static Kind {
    lookup("", "v1", "serviceaccounts").expect("serviceaccounts are in the table")
}

/// Nodes.
pub fn nodes() -> &'static Kind {
    lookup("", "v1", "nodes").expect("nodes are in the table")
}

/// Pods, which evictions and disruption budgets look at.
pub fn pods() -> &'static Kind {
    lookup("", "v1", "pods").expect("pods are in the table")
}

/// PodDisruptionBudgets.
pub fn pdbs() -> &'static Kind {
    lookup("policy", "v1", "poddisruptionbudgets").expect("pdbs are in the table")
}
