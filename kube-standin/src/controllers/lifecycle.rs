//! What kube-controller-manager does to namespaces and nodes, as far as the
//! control plane depends on it:
//! - the serviceaccount controller creates each namespace's `default`
//!   ServiceAccount, shortly after the namespace (pkg/controller/
//!   serviceaccount/serviceaccounts_controller.go); until then the
//!   ServiceAccount admission plugin refuses the namespace's pods;
//! - the namespace controller deletes the content of a Terminating
//!   namespace (pods gracefully: they wait for their kubelet), then the
//!   namespace (pkg/controller/namespace/deletion/
//!   namespaced_resources_deleter.go);
//! - the node lifecycle controller keeps the `node.kubernetes.io/not-ready`
//!   (Ready False or missing) or `node.kubernetes.io/unreachable` (Ready
//!   Unknown) NoSchedule taint on a node while it is not Ready and removes
//!   it once it is (pkg/controller/nodelifecycle/
//!   node_lifecycle_controller.go `doNoScheduleTaintingPass`). The
//!   NoExecute taints it also sets on a real cluster are not modelled.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::{CONTROLLER_MANAGER, Timers, nodes_kind, terminating, text, uid_of};
use crate::admission::{NOT_READY_TAINT, UNREACHABLE_TAINT};
use crate::api::Api;
use crate::kinds;
use crate::store::name_of;

/// How long after a namespace appears its `default` ServiceAccount does
/// (the serviceaccount controller works from a watch: milliseconds on a
/// real cluster, never in the namespace's own create).
pub const SERVICE_ACCOUNT_DELAY: Duration = Duration::from_millis(100);

/// The serviceaccount controller: `default` in every namespace not being
/// deleted, `SERVICE_ACCOUNT_DELAY` after the controllers first saw it.
pub fn ensure_default_service_accounts(
    api: &mut Api,
    seen: &mut HashMap<String, Instant>,
    now: Instant,
    timers: &mut Timers,
) {
    let namespaces: Vec<Value> = api
        .store
        .list(kinds::namespaces(), None)
        .into_iter()
        .cloned()
        .collect();
    let accounts = kinds::service_accounts();
    for namespace in &namespaces {
        let name = name_of(namespace).1.to_string();
        let uid = uid_of(namespace).to_string();
        if terminating(namespace) || api.store.get(accounts, &name, "default").is_some() {
            continue;
        }
        let due = *seen.entry(uid).or_insert(now) + SERVICE_ACCOUNT_DELAY;
        if due > now {
            timers.at(due);
            continue;
        }
        let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                             "metadata": {"name": "default"}});
        if let Err(error) = api.create(accounts, &name, account, CONTROLLER_MANAGER) {
            tracing::debug!(?error, namespace = name, "default service account");
        }
    }
    let live: std::collections::HashSet<&str> = namespaces.iter().map(uid_of).collect();
    seen.retain(|uid, _| live.contains(uid.as_str()));
}

/// The namespace controller: empty each Terminating namespace (every
/// object deleted as a client would, so pods wait for their kubelet), and
/// remove it once nothing is left.
pub fn finish_terminating_namespaces(api: &mut Api) {
    let doomed: Vec<String> = api
        .store
        .list(kinds::namespaces(), None)
        .into_iter()
        .filter(|n| terminating(n))
        .map(|n| name_of(n).1.to_string())
        .collect();
    for namespace in doomed {
        for kind in kinds::KINDS.iter().filter(|k| k.namespaced) {
            let objects: Vec<Value> = api
                .store
                .list(kind, Some(&namespace))
                .into_iter()
                .filter(|o| !terminating(o))
                .cloned()
                .collect();
            for object in objects {
                super::delete(api, kind, &object);
            }
        }
        api.finish_namespace(&namespace);
    }
}

/// The NoSchedule taint a node's Ready condition calls for, if any.
fn condition_taint(node: &Value) -> Option<&'static str> {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .map(|c| text(c, "/status"));
    match ready {
        Some("True") => None,
        Some("Unknown") => Some(UNREACHABLE_TAINT),
        _ => Some(NOT_READY_TAINT),
    }
}

/// The node lifecycle controller's NoSchedule tainting pass.
pub fn taint_nodes_by_condition(api: &mut Api) {
    let nodes: Vec<Value> = api
        .store
        .list(nodes_kind(), None)
        .into_iter()
        .cloned()
        .collect();
    for node in nodes {
        let current: Vec<Value> = node
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ours = |t: &Value| {
            t["effect"] == "NoSchedule"
                && (t["key"] == NOT_READY_TAINT || t["key"] == UNREACHABLE_TAINT)
        };
        let key = condition_taint(&node);
        // The right taint stays where it is; the wrong one goes.
        let mut wanted: Vec<Value> = current
            .iter()
            .filter(|t| !ours(t) || key.is_some_and(|k| t["key"] == k))
            .cloned()
            .collect();
        if let Some(key) = key
            && !wanted.iter().any(|t| ours(t) && t["key"] == key)
        {
            wanted
                .push(json!({"key": key, "effect": "NoSchedule", "timeAdded": crate::meta::now()}));
        }
        if wanted == current {
            continue;
        }
        let taints = if wanted.is_empty() {
            Value::Null
        } else {
            json!(wanted)
        };
        let patch = json!({"metadata": {"resourceVersion": text(&node, "/metadata/resourceVersion")},
                           "spec": {"taints": taints}});
        let name = name_of(&node).1.to_string();
        if let Err(error) =
            api.write_as_controller(nodes_kind(), "", &name, &patch, CONTROLLER_MANAGER)
        {
            tracing::debug!(?error, node = name, "node taints");
        }
    }
}
