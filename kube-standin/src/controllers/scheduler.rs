//! The scheduler: binds pending pods to nodes that pass the default
//! filters the control plane's objects can meet (NodeUnschedulable,
//! TaintToleration, node selector, NodeResourcesFit for cpu, memory and
//! pod count), preferring the least requested node; explains a pod that
//! fits nowhere in the PodScheduled condition as kube-scheduler words it.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Value, json};

use super::{SCHEDULER, keep_condition_times, nodes_kind, terminating, text, uid_of, write_status};
use crate::api::Api;
use crate::kinds;
use crate::meta;
use crate::quantity;
use crate::store::name_of;

/// Requests (or room) in millicores, bytes and pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Pods.
    pub pods: i64,
}

impl Resources {
    fn add(&mut self, other: Resources) {
        self.cpu = self.cpu.saturating_add(other.cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.pods = self.pods.saturating_add(other.pods);
    }
}

fn figure<'a>(map: Option<&'a Value>, resource: &str) -> Option<&'a str> {
    map.and_then(|m| m.get(resource)).and_then(Value::as_str)
}

/// What a container requests: its requests, or its limits where a
/// request is missing (as defaulting does).
fn container_requests(container: &Value) -> (i64, i64) {
    let requests = container.pointer("/resources/requests");
    let limits = container.pointer("/resources/limits");
    let read = |resource: &str| figure(requests, resource).or(figure(limits, resource));
    (
        read("cpu").map_or(0, quantity::millicores),
        read("memory").map_or(0, quantity::whole),
    )
}

/// A pod's requests: the sum over its containers, or the largest init
/// container's when that is more.
pub fn pod_requests(pod: &Value) -> Resources {
    let list = |name: &str| {
        pod.pointer(&format!("/spec/{name}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (mut cpu, mut memory) = (0, 0);
    for c in list("containers") {
        let (c_cpu, c_mem) = container_requests(&c);
        cpu = c_cpu.saturating_add(cpu);
        memory = c_mem.saturating_add(memory);
    }
    for c in list("initContainers") {
        let (c_cpu, c_mem) = container_requests(&c);
        cpu = cpu.max(c_cpu);
        memory = memory.max(c_mem);
    }
    Resources {
        cpu,
        memory,
        pods: 1,
    }
}

fn allocatable(node: &Value) -> Resources {
    let map = node.pointer("/status/allocatable");
    Resources {
        cpu: figure(map, "cpu").map_or(0, quantity::millicores),
        memory: figure(map, "memory").map_or(0, quantity::whole),
        pods: figure(map, "pods").map_or(0, quantity::whole),
    }
}

/// Whether a pod has finished (its requests no longer count).
fn finished(pod: &Value) -> bool {
    matches!(text(pod, "/status/phase"), "Succeeded" | "Failed")
}

/// Whether a toleration tolerates a taint: same key (or an empty key with
/// Exists), Exists or Equal with the same value, same effect (or none).
pub fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let effect = text(toleration, "/effect");
    if !effect.is_empty() && effect != text(taint, "/effect") {
        return false;
    }
    let key = text(toleration, "/key");
    if !key.is_empty() && key != text(taint, "/key") {
        return false;
    }
    match text(toleration, "/operator") {
        "Exists" => true,
        "" | "Equal" => !key.is_empty() && text(toleration, "/value") == text(taint, "/value"),
        _ => false,
    }
}

/// The pod's tolerations.
pub fn tolerations(pod: &Value) -> Vec<Value> {
    pod.pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The taints the node lifecycle controller would put on a node whose
/// Ready condition is False (not-ready) or Unknown or missing
/// (unreachable), for scheduling; the stand-in does not write them.
fn readiness_taint(node: &Value) -> Option<Value> {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map(|c| text(c, "/status").to_string());
    match ready.as_deref() {
        Some("True") => None,
        Some("False") => {
            Some(json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}))
        }
        _ => Some(json!({"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"})),
    }
}

/// Why a node cannot take a pod, in kube-scheduler's words (the first
/// failing filter's reasons); empty when it can.
fn misfits(pod: &Value, node: &Value, used: Resources) -> Vec<String> {
    let tolerations = tolerations(pod);
    if node.pointer("/spec/unschedulable") == Some(&json!(true)) {
        let unschedulable =
            json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"});
        if !tolerations.iter().any(|t| tolerates(t, &unschedulable)) {
            return vec!["node(s) were unschedulable".into()];
        }
    }
    let mut taints: Vec<Value> = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    taints.extend(readiness_taint(node));
    for taint in &taints {
        let effect = text(taint, "/effect");
        if (effect == "NoSchedule" || effect == "NoExecute")
            && !tolerations.iter().any(|t| tolerates(t, taint))
        {
            return vec![format!(
                "node(s) had untolerated taint {{{}: {}}}",
                text(taint, "/key"),
                text(taint, "/value")
            )];
        }
    }
    if let Some(selector) = pod.pointer("/spec/nodeSelector").and_then(Value::as_object) {
        let labels = node.pointer("/metadata/labels");
        let matches = selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
        if !matches {
            return vec!["node(s) didn't match Node's node affinity/selector".into()];
        }
    }
    let wanted = pod_requests(pod);
    let room = allocatable(node);
    let mut reasons = Vec::new();
    if used.pods.saturating_add(1) > room.pods {
        reasons.push("Too many pods".to_string());
    }
    if wanted.cpu > 0 && used.cpu.saturating_add(wanted.cpu) > room.cpu {
        reasons.push("Insufficient cpu".into());
    }
    if wanted.memory > 0 && used.memory.saturating_add(wanted.memory) > room.memory {
        reasons.push("Insufficient memory".into());
    }
    reasons
}

/// LeastAllocated: the mean free fraction of cpu and memory after placing
/// the pod, in parts per million.
fn score(pod: &Value, node: &Value, used: Resources) -> i64 {
    let wanted = pod_requests(pod);
    let room = allocatable(node);
    let free = |total: i64, taken: i64| -> i64 {
        if total <= 0 {
            0
        } else {
            let free = i128::from(total.saturating_sub(taken).max(0));
            (free * 1_000_000 / i128::from(total)) as i64
        }
    };
    (free(room.cpu, used.cpu.saturating_add(wanted.cpu))
        + free(room.memory, used.memory.saturating_add(wanted.memory)))
        / 2
}

/// `0/N nodes are available: ...` with the preemption postscript.
fn unschedulable_message(
    node_count: usize,
    reasons: &BTreeMap<String, usize>,
    resource_nodes: usize,
) -> String {
    let mut counted: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    counted.sort();
    if node_count == 0 {
        return "no nodes available to schedule pods".into();
    }
    let mut preemption = Vec::new();
    if resource_nodes > 0 {
        preemption.push(format!(
            "{resource_nodes} No preemption victims found for incoming pod"
        ));
    }
    if node_count > resource_nodes {
        preemption.push(format!(
            "{} Preemption is not helpful for scheduling",
            node_count - resource_nodes
        ));
    }
    preemption.sort();
    format!(
        "0/{node_count} nodes are available: {}. preemption: 0/{node_count} nodes are available: {}.",
        counted.join(", "),
        preemption.join(", ")
    )
}

/// Bind every pending pod that fits somewhere; mark the others.
pub fn schedule(api: &mut Api, scheduled: &mut HashSet<String>) {
    let mut pending: Vec<Value> = api
        .store
        .list(kinds::pods(), None)
        .into_iter()
        .filter(|p| {
            text(p, "/spec/nodeName").is_empty()
                && !terminating(p)
                && !finished(p)
                && matches!(text(p, "/spec/schedulerName"), "" | "default-scheduler")
        })
        .cloned()
        .collect();
    if pending.is_empty() {
        return;
    }
    pending.sort_by(|a, b| {
        text(a, "/metadata/creationTimestamp")
            .cmp(text(b, "/metadata/creationTimestamp"))
            .then_with(|| name_of(a).1.cmp(name_of(b).1))
    });
    let nodes: Vec<Value> = api
        .store
        .list(nodes_kind(), None)
        .into_iter()
        .cloned()
        .collect();
    let mut used: BTreeMap<String, Resources> = BTreeMap::new();
    for pod in api.store.list(kinds::pods(), None) {
        let node = text(pod, "/spec/nodeName");
        if node.is_empty() || finished(pod) {
            continue;
        }
        let wanted = pod_requests(pod);
        let entry = used.entry(node.to_string()).or_default();
        entry.add(wanted);
    }
    for pod in pending {
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut resource_nodes = 0;
        let mut best: Option<(i64, &Value)> = None;
        for node in &nodes {
            let node_used = used.get(name_of(node).1).copied().unwrap_or_default();
            let why = misfits(&pod, node, node_used);
            if why.is_empty() {
                let s = score(&pod, node, node_used);
                if best.is_none_or(|(b, _)| s > b) {
                    best = Some((s, node));
                }
            } else {
                if why
                    .iter()
                    .any(|w| w.starts_with("Insufficient") || w == "Too many pods")
                {
                    resource_nodes += 1;
                }
                for w in why {
                    *reasons.entry(w).or_default() += 1;
                }
            }
        }
        let (namespace, name) = name_of(&pod);
        let (namespace, name) = (namespace.to_string(), name.to_string());
        match best {
            Some((_, node)) => {
                let node_name = name_of(node).1.to_string();
                match api.bind(&namespace, &name, &node_name, SCHEDULER) {
                    Ok(_) => {
                        super::storage::select_node(api, &pod, &node_name);
                        scheduled.insert(uid_of(&pod).to_string());
                        let wanted = pod_requests(&pod);
                        let entry = used.entry(node_name).or_default();
                        entry.add(wanted);
                    }
                    Err(error) => tracing::debug!(?error, name, "binding failed"),
                }
            }
            None => {
                let message = unschedulable_message(nodes.len(), &reasons, resource_nodes);
                let mut status = pod.get("status").cloned().unwrap_or_else(|| json!({}));
                let mut conditions: Vec<Value> = status["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|c| c["type"] != "PodScheduled")
                    .collect();
                let mut scheduled_condition = vec![json!({
                    "type": "PodScheduled", "status": "False", "lastProbeTime": null,
                    "lastTransitionTime": meta::now(), "reason": "Unschedulable", "message": message,
                })];
                keep_condition_times(&mut scheduled_condition, pod.pointer("/status/conditions"));
                conditions.extend(scheduled_condition);
                status["conditions"] = json!(conditions);
                status["phase"] = json!("Pending");
                write_status(api, kinds::pods(), &pod, status, SCHEDULER);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerations_match_taints_by_key_value_and_effect() {
        let taint = json!({"key": "minispod.dev/offline", "value": "", "effect": "NoExecute"});
        assert!(tolerates(
            &json!({"key": "minispod.dev/offline", "operator": "Exists"}),
            &taint
        ));
        assert!(tolerates(&json!({"operator": "Exists"}), &taint));
        assert!(tolerates(
            &json!({"key": "minispod.dev/offline", "operator": "Equal", "value": ""}),
            &taint
        ));
        assert!(!tolerates(
            &json!({"key": "minispod.dev/offline", "value": "x"}),
            &taint
        ));
        assert!(!tolerates(
            &json!({"key": "minispod.dev/offline", "operator": "Exists", "effect": "NoSchedule"}),
            &taint
        ));
        assert!(!tolerates(
            &json!({"key": "other", "operator": "Exists"}),
            &taint
        ));
    }

    #[test]
    fn requests_sum_containers_and_fall_back_to_limits() {
        let pod = json!({"spec": {"containers": [
            {"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
            {"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
        ], "initContainers": [{"resources": {"requests": {"cpu": "2"}}}]}});
        let r = pod_requests(&pod);
        assert_eq!((r.cpu, r.memory), (2000, (1 << 30) + (64 << 20)));
    }

    #[test]
    fn the_message_counts_reasons_as_the_scheduler_does() {
        let reasons = BTreeMap::from([
            ("node(s) were unschedulable".to_string(), 1),
            ("Insufficient cpu".to_string(), 2),
        ]);
        assert_eq!(
            unschedulable_message(3, &reasons, 2),
            "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
        );
    }
}
