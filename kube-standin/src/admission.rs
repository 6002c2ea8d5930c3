//! Pod Security admission, as kube-apiserver's PodSecurity plugin enforces
//! it: a pod created in a namespace labelled
//! `pod-security.kubernetes.io/enforce: baseline|restricted` is refused with
//! 403 Forbidden, `pods "<name>" is forbidden: violates PodSecurity
//! "<level>:<version>": <reason> (<detail>), ...`, reasons in the order of
//! the checks' ids as k8s.io/pod-security-admission lists them.
//!
//! The checks are those of k8s.io/pod-security-admission/policy at the
//! latest version, except appArmorProfile, seLinuxOptions, procMount and
//! windowsHostProcess, which nothing the stand-in serves sets. `warn` and
//! `audit` labels, exemptions, workload-level warnings and pod updates are
//! not evaluated; any `-version` label is only echoed in the message (the
//! checks are always the latest ones).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::kinds::Kind;

/// The namespace label naming the enforced level.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";
/// The namespace label naming the enforced level's version.
pub const ENFORCE_VERSION_LABEL: &str = "pod-security.kubernetes.io/enforce-version";

/// A Pod Security Standards level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Anything goes.
    Privileged,
    /// Known privilege escalations refused.
    Baseline,
    /// Hardened.
    Restricted,
}

impl Level {
    /// The level of a label value; unknown values count as restricted, the
    /// safe reading (kube-apiserver refuses such labels on namespaces).
    fn of(label: &str) -> Level {
        match label {
            "privileged" => Level::Privileged,
            "baseline" => Level::Baseline,
            _ => Level::Restricted,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// Capabilities the baseline level lets a container add (the container
/// runtime's defaults).
const DEFAULT_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls the baseline level allows (namespaced and isolated per pod).
const SAFE_SYSCTLS: [&str; 10] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// Volume types the restricted level allows.
const RESTRICTED_VOLUME_TYPES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// `Forbidden` for a pod `name` the policy refuses.
fn forbidden(name: &str, policy: &str, detail: &str) -> ApiError {
    ApiError {
        code: 403,
        reason: "Forbidden",
        message: format!(
            "pods \"{name}\" is forbidden: violates PodSecurity \"{policy}\": {detail}"
        ),
        details: Some(json!({"name": name, "kind": "pods"})),
    }
}

/// The name admission errors give an object: its name, else its
/// generateName (`admission.NewForbidden`'s `extractResourceName`).
fn admission_name(object: &Value) -> &str {
    let field = |f: &str| {
        object
            .pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
    };
    field("name")
        .or_else(|| field("generateName"))
        .unwrap_or("Unknown")
}

/// NamespaceLifecycle's refusal of new content in a namespace being
/// deleted (plugin/pkg/admission/namespace/lifecycle/admission.go).
pub fn namespace_terminating(kind: &Kind, object: &Value, namespace: &str) -> ApiError {
    let name = admission_name(object);
    ApiError {
        code: 403,
        reason: "Forbidden",
        message: format!(
            "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
            kind.qualified()
        ),
        details: Some(
            json!({"name": name, "group": kind.group, "kind": kind.plural,
            "causes": [{"reason": "NamespaceTerminating",
                        "message": format!("namespace {namespace} is being terminated"),
                        "field": "metadata.namespace"}]}),
        ),
    }
}

/// The ServiceAccount admission plugin
/// (plugin/pkg/admission/serviceaccount/admission.go): a pod without
/// `spec.serviceAccountName` gets `default`, and is refused while that
/// account does not exist in its namespace (kube-controller-manager's
/// serviceaccount controller creates `default` shortly after the
/// namespace). Mirror pods are left alone. Token volumes are not mounted.
pub fn admit_service_account(
    pod: &mut Value,
    namespace: &str,
    exists: impl Fn(&str) -> bool,
) -> Result<(), ApiError> {
    let mirror = pod
        .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some();
    if mirror {
        return Ok(());
    }
    let account = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .unwrap_or("default")
        .to_string();
    if !exists(&account) {
        let name = admission_name(pod).to_string();
        return Err(ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "pods \"{name}\" is forbidden: error looking up service account {namespace}/{account}: serviceaccount \"{account}\" not found"
            ),
            details: Some(json!({"name": name, "kind": "pods"})),
        });
    }
    if pod.get("spec").is_some_and(Value::is_object) {
        pod["spec"]["serviceAccountName"] = json!(account);
    }
    Ok(())
}

/// The taint every new Node gets until the node lifecycle controller sees
/// it Ready (the TaintNodesByCondition admission plugin,
/// plugin/pkg/admission/nodetaint/admission.go).
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose Ready condition is Unknown.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";

/// TaintNodesByCondition: a Node is created with
/// `node.kubernetes.io/not-ready:NoSchedule` added to its taints.
pub fn taint_new_node(node: &mut Value) {
    if !node.is_object() {
        return;
    }
    if !node.get("spec").is_some_and(Value::is_object) {
        node["spec"] = json!({});
    }
    let mut taints: Vec<Value> = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has = taints
        .iter()
        .any(|t| t["key"] == NOT_READY_TAINT && t["effect"] == "NoSchedule");
    if !has {
        taints.push(json!({"key": NOT_READY_TAINT, "effect": "NoSchedule"}));
    }
    node["spec"]["taints"] = json!(taints);
}

/// The finalizer that keeps a claim while a pod uses it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer that keeps a volume while a claim is bound to it.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// StorageObjectInUseProtection (plugin/pkg/admission/storage/
/// storageobjectinuseprotection): a new PersistentVolumeClaim gets
/// `kubernetes.io/pvc-protection`, a new PersistentVolume
/// `kubernetes.io/pv-protection`; their protection controllers (see
/// `controllers::storage`) remove them once nothing uses the object.
pub fn protect_storage(plural: &str, object: &mut Value) {
    let finalizer = match plural {
        "persistentvolumeclaims" => PVC_PROTECTION,
        "persistentvolumes" => PV_PROTECTION,
        _ => return,
    };
    if !object.is_object() || !object.get("metadata").is_some_and(Value::is_object) {
        return;
    }
    let mut finalizers: Vec<Value> = object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !finalizers.iter().any(|f| f == finalizer) {
        finalizers.push(json!(finalizer));
    }
    object["metadata"]["finalizers"] = json!(finalizers);
}

/// Checks a new pod against its namespace's enforced level.
pub fn admit_pod(namespace: Option<&Value>, pod: &Value) -> Result<(), ApiError> {
    let labels = namespace.and_then(|n| n.pointer("/metadata/labels"));
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    let Some(level) = label(ENFORCE_LABEL).map(Level::of) else {
        return Ok(());
    };
    if level == Level::Privileged {
        return Ok(());
    }
    let version = label(ENFORCE_VERSION_LABEL).unwrap_or("latest");
    let failures = check(level, pod);
    if failures.is_empty() {
        return Ok(());
    }
    let detail = failures
        .iter()
        .map(|(reason, detail)| {
            if detail.is_empty() {
                reason.clone()
            } else {
                format!("{reason} ({detail})")
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Err(forbidden(
        name,
        &format!("{}:{version}", level.name()),
        &detail,
    ))
}

fn pluralize(singular: &str, plural: &str, n: usize) -> String {
    if n == 1 { singular } else { plural }.to_owned()
}

fn join_quote<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| format!("\"{}\"", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every container of the pod: init, regular and ephemeral.
fn containers(spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .collect()
}

fn name(c: &Value) -> String {
    c.get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn sc<'a>(c: &'a Value, field: &str) -> Option<&'a Value> {
    c.get("securityContext").and_then(|s| s.get(field))
}

/// (reason, detail) of every failed check of `level`, in check id order.
pub fn check(level: Level, pod: &Value) -> Vec<(String, String)> {
    let empty = json!({});
    let spec = pod.get("spec").unwrap_or(&empty);
    let cs = containers(spec);
    let pod_sc = |field: &str| spec.get("securityContext").and_then(|s| s.get(field));
    let restricted = level == Level::Restricted;
    let mut out: Vec<(String, String)> = Vec::new();
    let mut fail = |reason: &str, detail: String| out.push((reason.to_owned(), detail));

    // allowPrivilegeEscalation (restricted)
    if restricted {
        let bad: Vec<String> = cs
            .iter()
            .filter(|c| sc(c, "allowPrivilegeEscalation") != Some(&Value::Bool(false)))
            .map(|c| name(c))
            .collect();
        if !bad.is_empty() {
            fail(
                "allowPrivilegeEscalation != false",
                format!(
                    "{} {} must set securityContext.allowPrivilegeEscalation=false",
                    pluralize("container", "containers", bad.len()),
                    join_quote(&bad)
                ),
            );
        }
    }

    let added = |c: &Value| -> Vec<String> {
        sc(c, "capabilities")
            .and_then(|k| k.get("add"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    if restricted {
        // capabilities_restricted (overrides capabilities_baseline)
        let mut missing_drop = Vec::new();
        let mut adding = Vec::new();
        let mut caps = BTreeSet::new();
        for c in &cs {
            let dropped_all = sc(c, "capabilities")
                .and_then(|k| k.get("drop"))
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|x| x == "ALL"));
            if !dropped_all {
                missing_drop.push(name(c));
            }
            let bad: Vec<String> = added(c)
                .into_iter()
                .filter(|x| x != "NET_BIND_SERVICE")
                .collect();
            if !bad.is_empty() {
                adding.push(name(c));
                caps.extend(bad);
            }
        }
        let mut details = Vec::new();
        if !missing_drop.is_empty() {
            details.push(format!(
                "{} {} must set securityContext.capabilities.drop=[\"ALL\"]",
                pluralize("container", "containers", missing_drop.len()),
                join_quote(&missing_drop)
            ));
        }
        if !adding.is_empty() {
            details.push(format!(
                "{} {} must not include {} in securityContext.capabilities.add",
                pluralize("container", "containers", adding.len()),
                join_quote(&adding),
                join_quote(&caps.into_iter().collect::<Vec<_>>())
            ));
        }
        if !details.is_empty() {
            fail("unrestricted capabilities", details.join("; "));
        }
    } else {
        // capabilities_baseline
        let mut adding = Vec::new();
        let mut caps = BTreeSet::new();
        for c in &cs {
            let bad: Vec<String> = added(c)
                .into_iter()
                .filter(|x| !DEFAULT_CAPABILITIES.contains(&x.as_str()))
                .collect();
            if !bad.is_empty() {
                adding.push(name(c));
                caps.extend(bad);
            }
        }
        if !adding.is_empty() {
            fail(
                "non-default capabilities",
                format!(
                    "{} {} must not include {} in securityContext.capabilities.add",
                    pluralize("container", "containers", adding.len()),
                    join_quote(&adding),
                    join_quote(&caps.into_iter().collect::<Vec<_>>())
                ),
            );
        }
    }

    // hostNamespaces
    let host: Vec<&str> = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|f| spec.get(*f) == Some(&Value::Bool(true)))
        .collect();
    if !host.is_empty() {
        fail(
            "host namespaces",
            host.iter()
                .map(|f| format!("{f}=true"))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }

    let volumes: Vec<&Value> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    // hostPathVolumes
    let host_paths: Vec<String> = volumes
        .iter()
        .filter(|v| v.get("hostPath").is_some_and(|h| !h.is_null()))
        .map(|v| name(v))
        .collect();
    if !host_paths.is_empty() {
        fail(
            "hostPath volumes",
            format!(
                "{} {}",
                pluralize("volume", "volumes", host_paths.len()),
                join_quote(&host_paths)
            ),
        );
    }

    // hostPorts
    let mut port_users = Vec::new();
    let mut ports = Vec::new();
    for c in &cs {
        let used: Vec<String> = c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("hostPort").and_then(Value::as_i64))
            .filter(|p| *p != 0)
            .map(|p| p.to_string())
            .collect();
        if !used.is_empty() {
            port_users.push(name(c));
            ports.extend(used);
        }
    }
    if !port_users.is_empty() {
        fail(
            "hostPort",
            format!(
                "{} {} {} {} {}",
                pluralize("container", "containers", port_users.len()),
                join_quote(&port_users),
                pluralize("uses", "use", port_users.len()),
                pluralize("hostPort", "hostPorts", ports.len()),
                ports.join(", ")
            ),
        );
    }

    // privileged
    let privileged: Vec<String> = cs
        .iter()
        .filter(|c| sc(c, "privileged") == Some(&Value::Bool(true)))
        .map(|c| name(c))
        .collect();
    if !privileged.is_empty() {
        fail(
            "privileged",
            format!(
                "{} {} must not set securityContext.privileged=true",
                pluralize("container", "containers", privileged.len()),
                join_quote(&privileged)
            ),
        );
    }

    if restricted {
        // restrictedVolumes
        let bad: BTreeSet<String> = volumes
            .iter()
            .filter(|v| {
                !RESTRICTED_VOLUME_TYPES
                    .iter()
                    .any(|t| v.get(*t).is_some_and(|x| !x.is_null()))
            })
            .map(|v| name(v))
            .collect();
        if !bad.is_empty() {
            fail(
                "restricted volume types",
                format!(
                    "volumes [{}] have restricted types",
                    bad.iter()
                        .map(|b| format!("\"{b}\""))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            );
        }

        // runAsNonRoot
        let pod_non_root = pod_sc("runAsNonRoot");
        let mut setters = Vec::new();
        if pod_non_root == Some(&Value::Bool(false)) {
            setters.push("pod".to_owned());
        }
        let pod_true = pod_non_root == Some(&Value::Bool(true));
        let explicit: Vec<String> = cs
            .iter()
            .filter(|c| sc(c, "runAsNonRoot") == Some(&Value::Bool(false)))
            .map(|c| name(c))
            .collect();
        let implicit: Vec<String> = cs
            .iter()
            .filter(|c| sc(c, "runAsNonRoot").is_none_or(Value::is_null) && !pod_true)
            .map(|c| name(c))
            .collect();
        if !explicit.is_empty() {
            setters.push(format!(
                "{} {}",
                pluralize("container", "containers", explicit.len()),
                join_quote(&explicit)
            ));
        }
        if !setters.is_empty() {
            fail(
                "runAsNonRoot != true",
                format!(
                    "{} must not set securityContext.runAsNonRoot=false",
                    setters.join(" and ")
                ),
            );
        } else if !implicit.is_empty() {
            fail(
                "runAsNonRoot != true",
                format!(
                    "pod or {} {} must set securityContext.runAsNonRoot=true",
                    pluralize("container", "containers", implicit.len()),
                    join_quote(&implicit)
                ),
            );
        }

        // runAsUser
        let zero = Some(&json!(0));
        let mut setters = Vec::new();
        if pod_sc("runAsUser") == zero {
            setters.push("pod".to_owned());
        }
        let bad: Vec<String> = cs
            .iter()
            .filter(|c| sc(c, "runAsUser") == zero)
            .map(|c| name(c))
            .collect();
        if !bad.is_empty() {
            setters.push(format!(
                "{} {}",
                pluralize("container", "containers", bad.len()),
                join_quote(&bad)
            ));
        }
        if !setters.is_empty() {
            fail(
                "runAsUser=0",
                format!("{} must not set runAsUser=0", setters.join(" and ")),
            );
        }
    }

    // seccompProfile: baseline refuses Unconfined; restricted (which
    // overrides it) requires RuntimeDefault or Localhost.
    let profile = |s: Option<&Value>| -> Option<String> {
        s.and_then(|p| p.get("type"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let pod_profile = profile(pod_sc("seccompProfile"));
    let valid = |t: &str| {
        if restricted {
            t == "RuntimeDefault" || t == "Localhost"
        } else {
            t != "Unconfined"
        }
    };
    let mut setters = Vec::new();
    let mut bad_values = BTreeSet::new();
    let mut pod_set = false;
    if let Some(t) = &pod_profile {
        if valid(t) {
            pod_set = true;
        } else {
            setters.push("pod".to_owned());
            bad_values.insert(t.clone());
        }
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for c in &cs {
        match profile(sc(c, "seccompProfile")) {
            Some(t) if !valid(&t) => {
                explicit.push(name(c));
                bad_values.insert(t);
            }
            Some(_) => {}
            None if restricted && !pod_set => implicit.push(name(c)),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(format!(
            "{} {}",
            pluralize("container", "containers", explicit.len()),
            join_quote(&explicit)
        ));
    }
    if !setters.is_empty() {
        fail(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters.join(" and "),
                join_quote(&bad_values.into_iter().collect::<Vec<_>>())
            ),
        );
    } else if !implicit.is_empty() {
        fail(
            "seccompProfile",
            format!(
                "pod or {} {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                pluralize("container", "containers", implicit.len()),
                join_quote(&implicit)
            ),
        );
    }

    // sysctls
    let sysctls: Vec<String> = pod_sc("sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .map(str::to_owned)
        .collect();
    if !sysctls.is_empty() {
        fail("forbidden sysctls", sysctls.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restricted_pod() -> Value {
        json!({"metadata": {"name": "web-0"}, "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 33,
                "seccompProfile": {"type": "RuntimeDefault"},
                "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "x"}}],
            "containers": [{"name": "web", "image": "x:1", "ports": [{"containerPort": 80}],
                "securityContext": {"allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]}}}],
        }})
    }

    fn namespace(level: &str) -> Value {
        json!({"metadata": {"name": "ms-a", "labels": {ENFORCE_LABEL: level}}})
    }

    #[test]
    fn a_hardened_pod_passes_every_level() {
        for level in ["privileged", "baseline", "restricted"] {
            assert!(admit_pod(Some(&namespace(level)), &restricted_pod()).is_ok());
        }
        assert!(admit_pod(None, &json!({"spec": {"hostNetwork": true}})).is_ok());
    }

    #[test]
    fn a_plain_pod_is_refused_by_restricted_with_kube_apiservers_message() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}});
        assert!(admit_pod(Some(&namespace("baseline")), &pod).is_ok());
        let e = admit_pod(Some(&namespace("restricted")), &pod).unwrap_err();
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
        assert_eq!(
            e.message,
            "pods \"p\" is forbidden: violates PodSecurity \"restricted:latest\": \
             allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), \
             unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), \
             seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
    }

    #[test]
    fn host_access_is_refused_at_baseline() {
        let mut pod = restricted_pod();
        pod["spec"]["hostNetwork"] = json!(true);
        pod["spec"]["hostPID"] = json!(true);
        pod["spec"]["volumes"] = json!([{"name": "root", "hostPath": {"path": "/"}}]);
        pod["spec"]["containers"][0]["ports"][0]["hostPort"] = json!(80);
        pod["spec"]["containers"][0]["securityContext"]["privileged"] = json!(true);
        pod["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] =
            json!(["SYS_ADMIN", "CHOWN"]);
        pod["spec"]["securityContext"]["sysctls"] =
            json!([{"name": "kernel.msgmax", "value": "1"}]);
        let e = admit_pod(Some(&namespace("baseline")), &pod).unwrap_err();
        assert_eq!(
            e.message,
            "pods \"web-0\" is forbidden: violates PodSecurity \"baseline:latest\": \
             non-default capabilities (container \"web\" must not include \"SYS_ADMIN\" in securityContext.capabilities.add), \
             host namespaces (hostNetwork=true, hostPID=true), hostPath volumes (volume \"root\"), \
             hostPort (container \"web\" uses hostPort 80), \
             privileged (container \"web\" must not set securityContext.privileged=true), \
             forbidden sysctls (kernel.msgmax)"
        );
        let e = admit_pod(Some(&namespace("restricted")), &pod).unwrap_err();
        assert!(
            e.message.contains("unrestricted capabilities (container \"web\" must not include \"CHOWN\", \"SYS_ADMIN\" in securityContext.capabilities.add)"),
            "{}",
            e.message
        );
        assert!(
            e.message
                .contains("restricted volume types (volumes [\"root\"] have restricted types)"),
            "{}",
            e.message
        );
    }

    #[test]
    fn root_and_unconfined_are_refused_at_restricted() {
        let mut pod = restricted_pod();
        pod["spec"]["securityContext"]["runAsUser"] = json!(0);
        pod["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = json!(false);
        pod["spec"]["containers"][0]["securityContext"]["seccompProfile"] =
            json!({"type": "Unconfined"});
        let e = admit_pod(Some(&namespace("restricted")), &pod).unwrap_err();
        assert!(e.message.ends_with(
            "runAsNonRoot != true (container \"web\" must not set securityContext.runAsNonRoot=false), \
             runAsUser=0 (pod must not set runAsUser=0), \
             seccompProfile (container \"web\" must not set securityContext.seccompProfile.type to \"Unconfined\")"
        ), "{}", e.message);
        // Baseline refuses only the Unconfined profile.
        let e = admit_pod(Some(&namespace("baseline")), &pod).unwrap_err();
        assert!(e.message.ends_with("\"baseline:latest\": seccompProfile (container \"web\" must not set securityContext.seccompProfile.type to \"Unconfined\")"), "{}", e.message);
    }
}
