//! The deployment controller (Deployment → ReplicaSet per pod template)
//! and the replica set controller (ReplicaSet → Pods), with their status.
//!
//! Both strategies roll out as Recreate does: old ReplicaSets are scaled
//! to zero, and the new one is scaled up once their pods are gone
//! (RollingUpdate would overlap old and new pods within maxSurge and
//! maxUnavailable).

use serde_json::{Value, json};

use super::{
    CONTROLLER_MANAGER, controller_uid, deployments_kind, desired_replicas, keep_condition_times,
    owner_reference, pod_from_template, pods_of, replica_sets_kind, set_counts, template_hash,
    terminating, text, uid_of, write_status,
};
use crate::api::Api;
use crate::kinds;
use crate::meta;
use crate::store::name_of;

/// The label that tells a Deployment's ReplicaSets (and their pods) apart.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The annotation holding a Deployment's (and its ReplicaSets') revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The most pods a replica set controller creates in one pass (its real
/// counterpart batches creations too).
const CREATE_BATCH: i64 = 100;

fn revision(object: &Value) -> i64 {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The ReplicaSets a Deployment controls.
fn replica_sets_of(api: &Api, deployment: &Value) -> Vec<Value> {
    let (namespace, _) = name_of(deployment);
    api.store
        .list(replica_sets_kind(), Some(namespace))
        .into_iter()
        .filter(|rs| controller_uid(rs) == Some(uid_of(deployment)))
        .cloned()
        .collect()
}

fn hash_of(rs: &Value) -> &str {
    text(rs, "/metadata/labels/pod-template-hash")
}

/// The Deployment's template hash (from its template and collision count).
fn deployment_hash(deployment: &Value) -> String {
    let template = deployment
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    let collisions = deployment
        .pointer("/status/collisionCount")
        .and_then(Value::as_i64);
    template_hash(&template, collisions)
}

/// Create and scale the ReplicaSets of every Deployment.
pub fn reconcile_deployments(api: &mut Api) {
    let deployments: Vec<Value> = api
        .store
        .list(deployments_kind(), None)
        .into_iter()
        .filter(|d| !terminating(d))
        .cloned()
        .collect();
    for deployment in deployments {
        reconcile_deployment(api, &deployment);
    }
}

fn reconcile_deployment(api: &mut Api, deployment: &Value) {
    let (namespace, name) = name_of(deployment);
    let (namespace, name) = (namespace.to_string(), name.to_string());
    let hash = deployment_hash(deployment);
    let replica_sets = replica_sets_of(api, deployment);
    let max_revision = replica_sets.iter().map(revision).max().unwrap_or(0);
    let new_rs = replica_sets.iter().find(|rs| hash_of(rs) == hash).cloned();
    let replicas = desired_replicas(deployment);
    let paused = deployment.pointer("/spec/paused") == Some(&json!(true));

    // Old ReplicaSets go to zero first.
    let mut old_pods = 0;
    for rs in replica_sets.iter().filter(|rs| hash_of(rs) != hash) {
        if !paused && rs.pointer("/spec/replicas").and_then(Value::as_i64) != Some(0) {
            scale(api, &namespace, rs, 0);
        }
        old_pods += pods_of(api, &namespace, uid_of(rs)).len();
    }
    if paused {
        return;
    }
    let new_rs = match new_rs {
        Some(rs) => rs,
        None => match create_replica_set(api, deployment, &hash, max_revision + 1) {
            Some(rs) => rs,
            None => return,
        },
    };
    // Recreate: the new pods come once the old ones are gone.
    let target = if old_pods > 0 { 0 } else { replicas };
    if new_rs.pointer("/spec/replicas").and_then(Value::as_i64) != Some(target) && old_pods == 0 {
        scale(api, &namespace, &new_rs, target);
    }
    // The Deployment carries the revision of its newest ReplicaSet.
    let new_revision = revision(&new_rs).to_string();
    let current = deployment
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str);
    if current != Some(new_revision.as_str()) {
        let patch = json!({"metadata": {"annotations": {REVISION: new_revision}}});
        if let Err(error) = api.write_as_controller(
            deployments_kind(),
            &namespace,
            &name,
            &patch,
            CONTROLLER_MANAGER,
        ) {
            tracing::debug!(?error, name, "revision annotation failed");
        }
    }
}

fn scale(api: &mut Api, namespace: &str, rs: &Value, replicas: i64) {
    let name = name_of(rs).1.to_string();
    let patch = json!({"spec": {"replicas": replicas}});
    if let Err(error) = api.write_as_controller(
        replica_sets_kind(),
        namespace,
        &name,
        &patch,
        CONTROLLER_MANAGER,
    ) {
        tracing::debug!(?error, name, "scaling a replica set failed");
    }
}

fn create_replica_set(
    api: &mut Api,
    deployment: &Value,
    hash: &str,
    revision: i64,
) -> Option<Value> {
    let (namespace, name) = name_of(deployment);
    let mut template = deployment
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    template["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(hash);
    let mut selector = deployment
        .pointer("/spec/selector")
        .cloned()
        .unwrap_or_else(|| json!({}));
    selector["matchLabels"][POD_TEMPLATE_HASH] = json!(hash);
    let mut labels = template["metadata"]["labels"].clone();
    labels[POD_TEMPLATE_HASH] = json!(hash);
    let replicas = desired_replicas(deployment);
    let mut spec = json!({"replicas": 0, "selector": selector, "template": template});
    if let Some(min_ready) = deployment.pointer("/spec/minReadySeconds") {
        spec["minReadySeconds"] = min_ready.clone();
    }
    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{name}-{hash}"),
            "labels": labels,
            "annotations": {
                REVISION: revision.to_string(),
                "deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                "deployment.kubernetes.io/max-replicas": replicas.to_string(),
            },
            "ownerReferences": [owner_reference(deployment, deployments_kind())],
        },
        "spec": spec,
    });
    let namespace = namespace.to_string();
    match api.create(replica_sets_kind(), &namespace, rs, CONTROLLER_MANAGER) {
        Ok(rs) => Some(rs),
        Err(error) => {
            tracing::debug!(?error, "creating a replica set failed");
            None
        }
    }
}

/// Create and delete pods so each ReplicaSet has its replicas.
pub fn reconcile_replica_sets(api: &mut Api) {
    let replica_sets: Vec<Value> = api
        .store
        .list(replica_sets_kind(), None)
        .into_iter()
        .filter(|rs| !terminating(rs))
        .cloned()
        .collect();
    for rs in replica_sets {
        let (namespace, name) = name_of(&rs);
        let (namespace, name) = (namespace.to_string(), name.to_string());
        let mut pods: Vec<Value> = pods_of(api, &namespace, uid_of(&rs))
            .into_iter()
            .cloned()
            .collect();
        let wanted = desired_replicas(&rs);
        let have = pods.len() as i64;
        let mut failure = None;
        if have < wanted {
            let template = rs
                .pointer("/spec/template")
                .cloned()
                .unwrap_or_else(|| json!({}));
            for _ in 0..(wanted - have).min(CREATE_BATCH) {
                let mut pod =
                    pod_from_template(&template, owner_reference(&rs, replica_sets_kind()));
                pod["metadata"]["generateName"] = json!(format!("{name}-"));
                if let Err(error) = api.create(kinds::pods(), &namespace, pod, CONTROLLER_MANAGER) {
                    tracing::debug!(?error, name, "creating a pod failed");
                    failure = Some(error.message);
                    break;
                }
            }
        } else if have > wanted {
            // As the controller ranks them: unscheduled, then not ready,
            // then the newest go first.
            pods.sort_by_key(|p| {
                (
                    !text(p, "/spec/nodeName").is_empty(),
                    super::running_and_ready(p),
                    std::cmp::Reverse(text(p, "/metadata/creationTimestamp").to_string()),
                )
            });
            for pod in pods.iter().take((have - wanted) as usize) {
                super::delete(api, kinds::pods(), pod);
            }
        }
        set_replica_failure(api, &namespace, &name, failure);
    }
}

/// The ReplicaFailure condition a failed pod creation leaves on its
/// ReplicaSet (reason FailedCreate, the API's error as message), removed
/// once a pass creates what it needs, as the replica set controller's
/// `calculateStatus` does.
fn set_replica_failure(api: &mut Api, namespace: &str, name: &str, failure: Option<String>) {
    let Some(rs) = api.store.get(replica_sets_kind(), namespace, name).cloned() else {
        return;
    };
    let mut status = rs.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut conditions: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let had = conditions.iter().any(|c| c["type"] == "ReplicaFailure");
    match failure {
        Some(message) if !had => conditions.push(json!({
            "type": "ReplicaFailure", "status": "True", "lastTransitionTime": meta::now(),
            "reason": "FailedCreate", "message": message,
        })),
        None if had => conditions.retain(|c| c["type"] != "ReplicaFailure"),
        _ => return,
    }
    if conditions.is_empty() {
        if let Some(s) = status.as_object_mut() {
            s.remove("conditions");
        }
    } else {
        status["conditions"] = json!(conditions);
    }
    write_status(api, replica_sets_kind(), &rs, status, CONTROLLER_MANAGER);
}

/// The ReplicaFailure condition of `rs`, if any.
fn replica_failure(rs: &Value) -> Option<&Value> {
    rs.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "ReplicaFailure"))
}

/// Whether a pod has been Ready for `min_ready_seconds`.
fn available(pod: &Value, min_ready_seconds: i64) -> bool {
    if !super::running_and_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    let since = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["lastTransitionTime"].as_str())
        .and_then(parse_time);
    since
        .is_some_and(|t| (time::OffsetDateTime::now_utc() - t).whole_seconds() >= min_ready_seconds)
}

/// An RFC 3339 time as Kubernetes writes them.
pub(super) fn parse_time(text: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

fn min_ready_seconds(object: &Value) -> i64 {
    object
        .pointer("/spec/minReadySeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// ReplicaSet status: replicas, fullyLabeledReplicas, readyReplicas,
/// availableReplicas, observedGeneration.
pub fn replica_set_status(api: &mut Api) {
    let replica_sets: Vec<Value> = api
        .store
        .list(replica_sets_kind(), None)
        .into_iter()
        .cloned()
        .collect();
    for rs in replica_sets {
        let namespace = name_of(&rs).0;
        let pods = pods_of(api, namespace, uid_of(&rs));
        let min_ready = min_ready_seconds(&rs);
        let ready = pods.iter().filter(|p| super::running_and_ready(p)).count() as i64;
        let available = pods.iter().filter(|p| available(p, min_ready)).count() as i64;
        let count = pods.len() as i64;
        let mut status = json!({"replicas": count});
        set_counts(
            &mut status,
            &[
                ("fullyLabeledReplicas", count),
                ("readyReplicas", ready),
                ("availableReplicas", available),
            ],
        );
        status["observedGeneration"] = rs
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        if let Some(failure) = replica_failure(&rs) {
            status["conditions"] = json!([failure]);
        }
        write_status(api, replica_sets_kind(), &rs, status, CONTROLLER_MANAGER);
    }
}

/// `deploymentutil.MaxUnavailable`: 0 for Recreate, else the
/// RollingUpdate figure (25% by default) rounded down.
fn max_unavailable(deployment: &Value, replicas: i64) -> i64 {
    if text(deployment, "/spec/strategy/type") == "Recreate" || replicas == 0 {
        return 0;
    }
    let value = deployment
        .pointer("/spec/strategy/rollingUpdate/maxUnavailable")
        .cloned()
        .unwrap_or(json!("25%"));
    let figure = match &value {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
            .map_or(0, |p| p.saturating_mul(replicas) / 100),
        _ => 0,
    };
    figure.clamp(0, replicas)
}

/// Deployment status as the deployment controller's `calculateStatus`
/// and its Available / Progressing conditions.
pub fn deployment_status(api: &mut Api) {
    let deployments: Vec<Value> = api
        .store
        .list(deployments_kind(), None)
        .into_iter()
        .cloned()
        .collect();
    let now = meta::now();
    for deployment in deployments {
        let namespace = name_of(&deployment).0.to_string();
        let hash = deployment_hash(&deployment);
        let replica_sets = replica_sets_of(api, &deployment);
        let min_ready = min_ready_seconds(&deployment);
        let mut replicas = 0;
        let mut updated = 0;
        let mut ready = 0;
        let mut available_count = 0;
        let mut scaled = 0;
        let mut new_rs_name = None;
        for rs in &replica_sets {
            let pods = pods_of(api, &namespace, uid_of(rs));
            replicas += pods.len() as i64;
            ready += pods.iter().filter(|p| super::running_and_ready(p)).count() as i64;
            available_count += pods.iter().filter(|p| available(p, min_ready)).count() as i64;
            scaled += desired_replicas(rs);
            if hash_of(rs) == hash {
                updated += pods.len() as i64;
                new_rs_name = Some(name_of(rs).1.to_string());
            }
        }
        let desired = desired_replicas(&deployment);
        let unavailable = (scaled - available_count).max(0);
        let mut status = json!({});
        status["observedGeneration"] = deployment
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        set_counts(
            &mut status,
            &[
                ("replicas", replicas),
                ("updatedReplicas", updated),
                ("readyReplicas", ready),
                ("availableReplicas", available_count),
                ("unavailableReplicas", unavailable),
            ],
        );
        if let Some(count) = deployment.pointer("/status/collisionCount") {
            status["collisionCount"] = count.clone();
        }
        let condition = |kind: &str, status: &str, reason: &str, message: String| {
            json!({"type": kind, "status": status, "lastUpdateTime": now,
                   "lastTransitionTime": now, "reason": reason, "message": message})
        };
        let available_condition =
            if available_count >= desired - max_unavailable(&deployment, desired) {
                condition(
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.".into(),
                )
            } else {
                condition(
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.".into(),
                )
            };
        let rs_name = new_rs_name.unwrap_or_default();
        let complete = updated == desired && replicas == desired && available_count == desired;
        let old_conditions = deployment.pointer("/status/conditions");
        let previous_progressing = old_conditions
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(|c| c["type"] == "Progressing"));
        let deadline = deployment
            .pointer("/spec/progressDeadlineSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(600);
        let counts_changed = [
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
        ]
        .iter()
        .any(|f| deployment.pointer(&format!("/status/{f}")) != status.get(*f));
        let progressing = if complete {
            condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            )
        } else if previous_progressing.is_none() {
            condition(
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                format!("Created new replica set \"{rs_name}\""),
            )
        } else {
            let last_update = previous_progressing
                .and_then(|c| c["lastUpdateTime"].as_str())
                .and_then(parse_time);
            let timed_out = !counts_changed
                && last_update.is_some_and(|t| {
                    (time::OffsetDateTime::now_utc() - t).whole_seconds() > deadline
                });
            let was_timed_out =
                previous_progressing.is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded");
            if (timed_out || was_timed_out) && !counts_changed {
                condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                )
            } else {
                condition(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{rs_name}\" is progressing."),
                )
            }
        };
        let mut conditions = vec![available_condition, progressing];
        // The deployment controller moves its ReplicaSets' failure here.
        if let Some(failure) = replica_sets.iter().find_map(replica_failure) {
            conditions.push(condition(
                "ReplicaFailure",
                "True",
                failure["reason"].as_str().unwrap_or("FailedCreate"),
                failure["message"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        keep_condition_times(&mut conditions, old_conditions);
        // Progress (counts moving) is an update of the Progressing condition.
        if counts_changed && let Some(p) = conditions.get_mut(1) {
            p["lastUpdateTime"] = json!(now);
        }
        status["conditions"] = json!(conditions);
        write_status(
            api,
            deployments_kind(),
            &deployment,
            status,
            CONTROLLER_MANAGER,
        );
    }
}
