//! The node side: the kubelet's pod status (ContainerCreating, Running and
//! Ready after the readiness delay, or ErrImagePull then ImagePullBackOff
//! for unpullable images, or CrashLoopBackOff with a climbing restartCount
//! for crashing ones, or Running and never Ready for images whose
//! readiness probe fails), the node lifecycle controller marking pods on
//! unready nodes not Ready, and the taint manager deleting pods from nodes
//! with NoExecute taints they do not tolerate.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::scheduler::{tolerates, tolerations};
use super::{
    BehaviourState, CONTROLLER_MANAGER, KUBELET, Timers, fnv32a, keep_condition_times, nodes_kind,
    terminating, text, uid_of, write_status,
};
use crate::api::Api;
use crate::kinds;
use crate::logs::PodLogs;
use crate::meta;
use crate::store::name_of;

fn node_ready(node: Option<&Value>) -> bool {
    node.is_some_and(|n| super::condition_is_true(n, "Ready"))
}

/// The taint manager: delete pods that do not tolerate a NoExecute taint
/// of their node, at once or when their `tolerationSeconds` run out
/// (counted from the taint's `timeAdded`, or from when it was first seen).
pub fn evict_for_taints(
    api: &mut Api,
    evict_at: &mut HashMap<String, Instant>,
    now: Instant,
    timers: &mut Timers,
) {
    let mut doomed = Vec::new();
    for pod in api.store.list(kinds::pods(), None) {
        let node_name = text(pod, "/spec/nodeName");
        if node_name.is_empty() || terminating(pod) {
            continue;
        }
        let Some(node) = api.store.get(nodes_kind(), "", node_name) else {
            continue;
        };
        let taints: Vec<&Value> = node
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|t| t["effect"] == "NoExecute")
            .collect();
        let uid = uid_of(pod).to_string();
        if taints.is_empty() {
            evict_at.remove(&uid);
            continue;
        }
        let pod_tolerations = tolerations(pod);
        let mut untolerated = false;
        let mut shortest: Option<(i64, &str)> = None;
        for taint in &taints {
            let matching: Vec<&Value> = pod_tolerations
                .iter()
                .filter(|t| tolerates(t, taint))
                .collect();
            if matching.is_empty() {
                untolerated = true;
                break;
            }
            // A toleration without tolerationSeconds tolerates forever.
            if matching
                .iter()
                .all(|t| t.get("tolerationSeconds").is_some())
            {
                let seconds = matching
                    .iter()
                    .filter_map(|t| t["tolerationSeconds"].as_i64())
                    .min()
                    .unwrap_or(0);
                if shortest.is_none_or(|(s, _)| seconds < s) {
                    shortest = Some((seconds, text(taint, "/timeAdded")));
                }
            }
        }
        let due = if untolerated {
            Some(now)
        } else if let Some((seconds, added)) = shortest {
            let since = super::deployments::parse_time(added).map(|t| {
                (time::OffsetDateTime::now_utc() - t)
                    .whole_milliseconds()
                    .max(0) as u64
            });
            // tolerationSeconds comes from the pod spec: a figure too large
            // for the clock means a year.
            let due = *evict_at.entry(uid.clone()).or_insert_with(|| {
                let elapsed = Duration::from_millis(since.unwrap_or(0));
                let year = Duration::from_secs(86_400 * 365);
                now.checked_sub(elapsed)
                    .unwrap_or(now)
                    .checked_add(Duration::from_secs(seconds.max(0) as u64).min(year))
                    .unwrap_or(now + year)
            });
            Some(due)
        } else {
            evict_at.remove(&uid);
            None
        };
        match due {
            Some(due) if due <= now => doomed.push(pod.clone()),
            Some(due) => timers.at(due),
            None => {}
        }
    }
    for pod in doomed {
        // The taint manager says why before deleting (DisruptionTarget).
        let mut status = pod.get("status").cloned().unwrap_or_else(|| json!({}));
        let mut conditions: Vec<Value> =
            status["conditions"].as_array().cloned().unwrap_or_default();
        conditions.retain(|c| c["type"] != "DisruptionTarget");
        conditions.push(
            json!({"type": "DisruptionTarget", "status": "True", "lastProbeTime": null,
            "lastTransitionTime": meta::now(), "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint"}),
        );
        status["conditions"] = json!(conditions);
        write_status(api, kinds::pods(), &pod, status, CONTROLLER_MANAGER);
        super::delete(api, kinds::pods(), &pod);
    }
}

/// How the registry a pull goes to names an image: `nginx` is
/// `docker.io/library/nginx:latest`.
pub fn normalized_image(image: &str) -> String {
    let (first, _) = image.split_once('/').unwrap_or(("", image));
    let has_domain =
        !first.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if has_domain {
        image.to_string()
    } else if image.contains('/') {
        format!("docker.io/{image}")
    } else {
        format!("docker.io/library/{image}")
    };
    let last = full.rsplit('/').next().unwrap_or_default();
    if !last.contains(':') && !full.contains('@') {
        full.push_str(":latest");
    }
    full
}

fn digest(seed: &str) -> String {
    (0..8u8)
        .map(|i| format!("{:08x}", fnv32a(format!("{i}{seed}").as_bytes())))
        .collect()
}

/// How long a failed pull shows ErrImagePull before the kubelet's next
/// attempt backs off: the readiness delay, at least half a second (so
/// that a client polling can see it).
fn back_off_after(delay: Duration) -> Duration {
    delay.max(Duration::from_millis(500))
}

/// What the kubelet has done with one container.
enum ContainerState {
    Creating,
    Running,
    PullFailed,
    BackOff,
    /// Exited as it started, this many times.
    Crashing(i64),
}

/// The kubelet's status of one of its pods at `elapsed` after it saw it.
fn pod_status(
    pod: &Value,
    node: Option<&Value>,
    elapsed: Duration,
    behaviour: &BehaviourState,
    started_at: &str,
) -> (Value, Vec<(String, String)>) {
    let delay = behaviour.ready_delay;
    let old = pod.get("status");
    let now = meta::now();
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut statuses = Vec::new();
    let mut unready = Vec::new();
    let mut waiting = 0;
    let mut newly_running = Vec::new();
    let sandbox_ready = elapsed >= delay;
    for container in &containers {
        let name = text(container, "/name");
        let image = text(container, "/image");
        let full = normalized_image(image);
        let state = if behaviour.unpullable.contains(image) {
            if elapsed < delay {
                ContainerState::Creating
            } else if elapsed < delay.saturating_add(back_off_after(delay)) {
                ContainerState::PullFailed
            } else {
                ContainerState::BackOff
            }
        } else if sandbox_ready && behaviour.crashing.contains(image) {
            let period = back_off_after(delay).as_millis().max(1);
            let restarts = (elapsed.saturating_sub(delay).as_millis() / period) as i64;
            ContainerState::Crashing(restarts)
        } else if sandbox_ready {
            ContainerState::Running
        } else {
            ContainerState::Creating
        };
        let previous = old
            .and_then(|s| s.get("containerStatuses"))
            .and_then(Value::as_array)
            .and_then(|l| l.iter().find(|c| c["name"] == name));
        let mut status = json!({"name": name, "image": full, "imageID": "", "ready": false,
                                "restartCount": 0, "started": false, "lastState": {}});
        match state {
            ContainerState::Running => {
                let since = previous
                    .and_then(|p| p.pointer("/state/running/startedAt"))
                    .cloned()
                    .unwrap_or_else(|| {
                        newly_running.push((name.to_string(), full.clone()));
                        json!(now)
                    });
                status["state"] = json!({"running": {"startedAt": since}});
                // A readiness probe that keeps failing: the container runs
                // (started, no startup probe) and is never Ready; a
                // container without a readiness probe is Ready once running.
                let probe_fails = behaviour.readiness_failing.contains(image)
                    && container.get("readinessProbe").is_some();
                if probe_fails {
                    unready.push(name.to_string());
                }
                status["ready"] = json!(!probe_fails);
                status["started"] = json!(true);
                let repository = full
                    .rsplit_once(':')
                    .filter(|(_, tag)| !tag.contains('/'))
                    .map_or(full.as_str(), |(r, _)| r);
                let repository = repository.split('@').next().unwrap_or(repository);
                status["imageID"] = json!(format!("{repository}@sha256:{}", digest(&full)));
                status["containerID"] = json!(format!(
                    "containerd://{}",
                    digest(&format!("{}{name}", uid_of(pod)))
                ));
            }
            ContainerState::Creating => {
                waiting += 1;
                unready.push(name.to_string());
                status["state"] = json!({"waiting": {"reason": "ContainerCreating"}});
            }
            ContainerState::PullFailed => {
                waiting += 1;
                unready.push(name.to_string());
                status["state"] = json!({"waiting": {"reason": "ErrImagePull", "message": format!(
                    "rpc error: code = NotFound desc = failed to pull and unpack image \"{full}\": failed to resolve reference \"{full}\": {full}: not found"
                )}});
            }
            ContainerState::Crashing(restarts) => {
                // Phase stays Running: the pod's containers did start.
                unready.push(name.to_string());
                status["restartCount"] = json!(restarts);
                status["state"] = json!({"waiting": {"reason": "CrashLoopBackOff",
                    "message": format!("back-off restarting failed container {name} in pod {}", text(pod, "/metadata/name"))}});
                status["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error"}});
            }
            ContainerState::BackOff => {
                waiting += 1;
                unready.push(name.to_string());
                status["state"] = json!({"waiting": {"reason": "ImagePullBackOff",
                    "message": format!("Back-off pulling image \"{image}\"")}});
            }
        }
        statuses.push(status);
    }
    let phase = if waiting > 0 { "Pending" } else { "Running" };
    let all_ready = unready.is_empty();
    let condition = |kind: &str, ok: bool| {
        let mut c = json!({"type": kind, "status": if ok { "True" } else { "False" },
                           "lastProbeTime": null, "lastTransitionTime": now});
        if !ok && (kind == "Ready" || kind == "ContainersReady") {
            c["reason"] = json!("ContainersNotReady");
            c["message"] = json!(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            ));
        }
        c
    };
    let mut conditions = vec![
        condition("PodReadyToStartContainers", sandbox_ready),
        condition("Initialized", true),
        condition("Ready", all_ready),
        condition("ContainersReady", all_ready),
        condition("PodScheduled", true),
    ];
    if !node_ready(node)
        && let Some(ready) = conditions.iter_mut().find(|c| c["type"] == "Ready")
    {
        // As the node lifecycle controller marks them.
        ready["status"] = json!("False");
    }
    keep_condition_times(&mut conditions, old.and_then(|s| s.get("conditions")));
    let host_ip = node
        .and_then(|n| n.pointer("/status/addresses"))
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
        .and_then(|a| a["address"].as_str())
        .unwrap_or("10.0.0.1")
        .to_string();
    let hash = fnv32a(uid_of(pod).as_bytes());
    let pod_ip = format!("10.42.{}.{}", (hash >> 8) % 256, (hash % 254) + 1);
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "startTime": started_at,
        "containerStatuses": statuses,
        "qosClass": old.and_then(|s| s.get("qosClass")).cloned().unwrap_or(json!("BestEffort")),
    });
    if sandbox_ready {
        status["podIP"] = json!(pod_ip);
        status["podIPs"] = json!([{"ip": pod_ip}]);
    }
    (status, newly_running)
}

/// Run the pods the stand-in's scheduler bound: write their status as
/// their kubelet would, and the first lines of each container's log.
pub fn run_pods(
    api: &mut Api,
    scheduled: &HashSet<String>,
    started: &mut HashMap<String, Instant>,
    behaviour: &BehaviourState,
    logs: &PodLogs,
    now: Instant,
    timers: &mut Timers,
) {
    let pods: Vec<Value> = api
        .store
        .list(kinds::pods(), None)
        .into_iter()
        .filter(|p| scheduled.contains(uid_of(p)) && !terminating(p))
        .cloned()
        .collect();
    for pod in pods {
        let uid = uid_of(&pod).to_string();
        let seen = *started.entry(uid.clone()).or_insert(now);
        let elapsed = now.saturating_duration_since(seen);
        let delay = behaviour.ready_delay;
        for step in [delay, delay.saturating_add(back_off_after(delay))] {
            if elapsed < step
                && let Some(when) = seen.checked_add(step)
            {
                timers.at(when);
            }
        }
        let node = api
            .store
            .get(nodes_kind(), "", text(&pod, "/spec/nodeName"))
            .cloned();
        let started_at = pod
            .pointer("/status/startTime")
            .and_then(Value::as_str)
            .map_or_else(meta::now, str::to_string);
        let (status, newly_running) =
            pod_status(&pod, node.as_ref(), elapsed, behaviour, &started_at);
        for (container, image) in newly_running {
            logs.append(
                &uid,
                &container,
                &[
                    format!("Starting {image}"),
                    format!("{container} is running on {}", text(&pod, "/spec/nodeName")),
                ],
            );
        }
        write_status(api, kinds::pods(), &pod, status, KUBELET);
    }
}

/// How long the stand-in's kubelet takes to stop a deleted pod's
/// containers (they exit on SIGTERM) before it deletes the pod for good;
/// never longer than the pod's grace period.
pub const POD_STOP_DELAY: Duration = Duration::from_millis(200);

/// The kubelet's end of a graceful deletion: a Terminating pod it runs
/// (on a node that is Ready, or whose Node object is gone while the
/// machine still runs) is deleted with `gracePeriodSeconds=0` and its
/// uid as precondition once its containers have stopped
/// (pkg/kubelet/status/status_manager.go `canBeDeleted`/`deletePod`).
/// On a node that is not Ready nothing happens: the pod stays
/// Terminating, as on a real cluster.
pub fn finalize_terminating(
    api: &mut Api,
    scheduled: &HashSet<String>,
    stopping: &mut HashMap<String, Instant>,
    now: Instant,
    timers: &mut Timers,
) {
    let mut done = Vec::new();
    for pod in api.store.list(kinds::pods(), None) {
        let uid = uid_of(pod);
        let Some(grace) = pod
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
        else {
            continue;
        };
        if grace == 0 || !scheduled.contains(uid) {
            continue;
        }
        let node = api.store.get(nodes_kind(), "", text(pod, "/spec/nodeName"));
        if node.is_some() && !node_ready(node) {
            continue;
        }
        let delay = POD_STOP_DELAY.min(Duration::from_secs(grace.max(0) as u64));
        let due = *stopping.entry(uid.to_string()).or_insert(now) + delay;
        if due > now {
            timers.at(due);
            continue;
        }
        done.push(pod.clone());
    }
    for pod in done {
        let (namespace, name) = name_of(&pod);
        let options = json!({"gracePeriodSeconds": 0, "preconditions": {"uid": uid_of(&pod)}});
        if let Err(error) = api.delete(kinds::pods(), namespace, name, Some(&options)) {
            tracing::debug!(?error, name, "kubelet delete failed");
        }
    }
}

/// The node lifecycle controller: pods on nodes whose Ready condition is
/// not True get Ready=False (pods the stand-in's kubelet runs get it from
/// their status above; this covers the others).
pub fn mark_pods_on_unready_nodes(api: &mut Api) {
    let mut marked = Vec::new();
    for pod in api.store.list(kinds::pods(), None) {
        let node_name = text(pod, "/spec/nodeName");
        if node_name.is_empty() || terminating(pod) || !super::condition_is_true(pod, "Ready") {
            continue;
        }
        let node = api.store.get(nodes_kind(), "", node_name);
        if node.is_none() || node_ready(node) {
            continue;
        }
        let mut status = pod.get("status").cloned().unwrap_or_else(|| json!({}));
        if let Some(conditions) = status["conditions"].as_array_mut() {
            for c in conditions.iter_mut().filter(|c| c["type"] == "Ready") {
                c["status"] = json!("False");
                c["lastTransitionTime"] = json!(meta::now());
            }
        }
        marked.push((pod.clone(), status));
    }
    for (pod, status) in marked {
        tracing::debug!(
            pod = name_of(&pod).1,
            "marking a pod on an unready node not Ready"
        );
        write_status(api, kinds::pods(), &pod, status, CONTROLLER_MANAGER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_named_as_the_registry_does() {
        assert_eq!(normalized_image("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(normalized_image("n8nio/n8n:1.0"), "docker.io/n8nio/n8n:1.0");
        assert_eq!(normalized_image("ghcr.io/a/b:2"), "ghcr.io/a/b:2");
        assert_eq!(
            normalized_image("localhost:5000/x"),
            "localhost:5000/x:latest"
        );
        assert_eq!(
            normalized_image("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
    }
}
