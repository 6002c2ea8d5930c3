//! The StatefulSet controller: pods `<name>-<ordinal>` with their claims
//! from `volumeClaimTemplates`, created in order (OrderedReady: each once
//! the ones before it are Running and Ready; Parallel: all at once),
//! removed from the highest ordinal down, and replaced highest first when
//! the template changes (RollingUpdate; OnDelete leaves them). As the real
//! controller, an OrderedReady set whose pod is not Ready makes no
//! progress until that pod is deleted or becomes Ready.

use serde_json::{Value, json};

use super::{
    CONTROLLER_MANAGER, controller_uid, desired_replicas, owner_reference, pod_from_template,
    running_and_ready, set_counts, stateful_sets_kind, template_hash, terminating, text, uid_of,
    write_status,
};
use crate::api::Api;
use crate::kinds;
use crate::store::name_of;

/// The label naming a StatefulSet pod.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label with the revision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The label with a pod's ordinal.
pub const INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// The revision name of the set's current template: `<name>-<hash>`.
fn update_revision(sts: &Value) -> String {
    let template = sts
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    let collisions = sts
        .pointer("/status/collisionCount")
        .and_then(Value::as_i64);
    format!(
        "{}-{}",
        name_of(sts).1,
        template_hash(&template, collisions)
    )
}

/// Pods of the set by ordinal (pods of other names it controls are ignored).
fn pods_by_ordinal(api: &Api, sts: &Value) -> Vec<(i64, Value)> {
    let (namespace, name) = name_of(sts);
    let prefix = format!("{name}-");
    let mut pods: Vec<(i64, Value)> = api
        .store
        .list(kinds::pods(), Some(namespace))
        .into_iter()
        .filter(|p| controller_uid(p) == Some(uid_of(sts)))
        .filter_map(|p| {
            let ordinal = name_of(p).1.strip_prefix(&prefix)?.parse::<i64>().ok()?;
            Some((ordinal, p.clone()))
        })
        .collect();
    pods.sort_by_key(|(ordinal, _)| *ordinal);
    pods
}

fn claim_name(template: &Value, sts_name: &str, ordinal: i64) -> String {
    format!("{}-{sts_name}-{ordinal}", text(template, "/metadata/name"))
}

fn new_pod(sts: &Value, ordinal: i64, revision: &str) -> Value {
    let name = name_of(sts).1;
    let template = sts
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut pod = pod_from_template(&template, owner_reference(sts, stateful_sets_kind()));
    let pod_name = format!("{name}-{ordinal}");
    pod["metadata"]["name"] = json!(pod_name);
    pod["metadata"]["labels"][POD_NAME_LABEL] = json!(pod_name);
    pod["metadata"]["labels"][REVISION_LABEL] = json!(revision);
    pod["metadata"]["labels"][INDEX_LABEL] = json!(ordinal.to_string());
    pod["spec"]["hostname"] = json!(pod_name);
    if let Some(service) = sts.pointer("/spec/serviceName").and_then(Value::as_str)
        && !service.is_empty()
    {
        pod["spec"]["subdomain"] = json!(service);
    }
    let claims = sts
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !claims.is_empty() {
        let mut volumes: Vec<Value> = pod["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for claim in &claims {
            let volume = text(claim, "/metadata/name");
            volumes.retain(|v| v["name"] != volume);
            volumes.push(json!({"name": volume,
                "persistentVolumeClaim": {"claimName": claim_name(claim, name, ordinal)}}));
        }
        pod["spec"]["volumes"] = json!(volumes);
    }
    pod
}

/// Create the claims of one ordinal that do not exist yet.
fn create_claims(api: &mut Api, sts: &Value, ordinal: i64) {
    let (namespace, name) = name_of(sts);
    let (namespace, name) = (namespace.to_string(), name.to_string());
    let claims = sts
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let pvcs = super::kind("", "persistentvolumeclaims");
    for claim in claims {
        let claim_name = claim_name(&claim, &name, ordinal);
        if api.store.get(pvcs, &namespace, &claim_name).is_some() {
            continue;
        }
        let mut pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim_name}, "spec": claim.get("spec").cloned().unwrap_or_else(|| json!({}))});
        if let Some(labels) = sts.pointer("/spec/selector/matchLabels") {
            pvc["metadata"]["labels"] = labels.clone();
        }
        if let Err(error) = api.create(pvcs, &namespace, pvc, CONTROLLER_MANAGER) {
            tracing::debug!(?error, claim_name, "creating a claim failed");
        }
    }
}

/// Reconcile every StatefulSet's pods.
pub fn reconcile(api: &mut Api) {
    let sets: Vec<Value> = api
        .store
        .list(stateful_sets_kind(), None)
        .into_iter()
        .filter(|s| !terminating(s))
        .cloned()
        .collect();
    for sts in sets {
        reconcile_one(api, &sts);
    }
}

fn reconcile_one(api: &mut Api, sts: &Value) {
    let namespace = name_of(sts).0.to_string();
    let replicas = desired_replicas(sts);
    let revision = update_revision(sts);
    let monotonic = text(sts, "/spec/podManagementPolicy") != "Parallel";
    let pods = pods_by_ordinal(api, sts);
    let pod = |ordinal: i64| pods.iter().find(|(o, _)| *o == ordinal).map(|(_, p)| p);

    // Create missing pods in order; failed ones are replaced.
    for ordinal in 0..replicas {
        match pod(ordinal) {
            None => {
                create_claims(api, sts, ordinal);
                let created = api.create(
                    kinds::pods(),
                    &namespace,
                    new_pod(sts, ordinal, &revision),
                    CONTROLLER_MANAGER,
                );
                if let Err(error) = created {
                    tracing::debug!(?error, "creating a stateful set pod failed");
                }
                if monotonic {
                    return;
                }
            }
            Some(p) if text(p, "/status/phase") == "Failed" && !terminating(p) => {
                super::delete(api, kinds::pods(), p);
                if monotonic {
                    return;
                }
            }
            Some(p) if monotonic && (terminating(p) || !running_and_ready(p)) => return,
            Some(_) => {}
        }
    }
    // Condemned pods go from the highest ordinal down.
    for (_, p) in pods.iter().rev().filter(|(o, _)| *o >= replicas) {
        if !terminating(p) {
            super::delete(api, kinds::pods(), p);
            if monotonic {
                return;
            }
        }
    }
    if text(sts, "/spec/updateStrategy/type") == "OnDelete" {
        return;
    }
    let partition = sts
        .pointer("/spec/updateStrategy/rollingUpdate/partition")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    for ordinal in (partition.max(0)..replicas).rev() {
        let Some(p) = pod(ordinal) else { return };
        if text(p, "/metadata/labels/controller-revision-hash") != revision && !terminating(p) {
            super::delete(api, kinds::pods(), p);
            return;
        }
        if !running_and_ready(p) {
            return;
        }
    }
}

/// StatefulSet status: replicas, readyReplicas, currentReplicas,
/// updatedReplicas, availableReplicas, currentRevision, updateRevision,
/// collisionCount, observedGeneration.
pub fn status(api: &mut Api) {
    let sets: Vec<Value> = api
        .store
        .list(stateful_sets_kind(), None)
        .into_iter()
        .cloned()
        .collect();
    for sts in sets {
        let pods: Vec<Value> = pods_by_ordinal(api, &sts)
            .into_iter()
            .map(|(_, p)| p)
            .filter(|p| !terminating(p))
            .collect();
        let update = update_revision(&sts);
        let revision_of =
            |p: &Value| text(p, "/metadata/labels/controller-revision-hash").to_string();
        let updated = pods.iter().filter(|p| revision_of(p) == update).count() as i64;
        let replicas = pods.len() as i64;
        // The current revision becomes the update revision once every pod
        // runs it.
        let previous_current = text(&sts, "/status/currentRevision").to_string();
        let current = if previous_current.is_empty()
            || (updated == replicas && replicas == desired_replicas(&sts))
        {
            update.clone()
        } else {
            previous_current
        };
        let current_count = pods.iter().filter(|p| revision_of(p) == current).count() as i64;
        let ready = pods.iter().filter(|p| running_and_ready(p)).count() as i64;
        let mut status = json!({
            "replicas": replicas,
            "currentRevision": current,
            "updateRevision": update,
            "collisionCount": sts.pointer("/status/collisionCount").cloned().unwrap_or(json!(0)),
            "observedGeneration": sts.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        });
        set_counts(
            &mut status,
            &[
                ("readyReplicas", ready),
                ("currentReplicas", current_count),
                ("updatedReplicas", updated),
                ("availableReplicas", ready),
            ],
        );
        write_status(api, stateful_sets_kind(), &sts, status, CONTROLLER_MANAGER);
    }
}
