//! Volumes and quotas: claims bound as a dynamic provisioner would bind
//! them, and ResourceQuota status as the quota controller computes it.

use serde_json::{Map, Value, json};

use super::scheduler::pod_requests;
use super::{CONTROLLER_MANAGER, kind, terminating, text, write_status};
use crate::api::Api;
use crate::kinds;
use crate::quantity;
use crate::store::name_of;

/// The annotation the scheduler puts on a claim whose storage class binds
/// on first use (WaitForFirstConsumer, as K3s's default `local-path`
/// does): the node the claim's first pod went to, where its volume is
/// provisioned.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// What the scheduler's volume binder does when it places `pod` on `node`:
/// each of the pod's claims not bound yet is given the node, as
/// `volume.kubernetes.io/selected-node`.
pub fn select_node(api: &mut Api, pod: &Value, node: &str) {
    let pvcs = kind("", "persistentvolumeclaims");
    let namespace = text(pod, "/metadata/namespace").to_string();
    let claims: Vec<String> = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/persistentVolumeClaim/claimName"))
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    for claim in claims {
        let Ok(current) = api.get(pvcs, &namespace, &claim) else {
            continue;
        };
        if text(&current, "/status/phase") == "Bound"
            || current
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(SELECTED_NODE))
                .is_some()
        {
            continue;
        }
        let patch = json!({"metadata": {"annotations": {SELECTED_NODE: node}}});
        if let Err(error) =
            api.write_as_controller(pvcs, &namespace, &claim, &patch, super::SCHEDULER)
        {
            tracing::debug!(?error, claim, "selecting a claim's node failed");
        }
    }
}

/// Claims still Pending whose node is chosen (see [`select_node`]) become
/// Bound with the capacity they request, as local-path's provisioner binds
/// them; a claim no pod uses yet stays Pending, as it does on K3s.
pub fn bind_claims(api: &mut Api) {
    let pvcs = kind("", "persistentvolumeclaims");
    let pending: Vec<Value> = api
        .store
        .list(pvcs, None)
        .into_iter()
        .filter(|c| text(c, "/status/phase") != "Bound" && !terminating(c))
        .filter(|c| {
            c.pointer("/metadata/annotations")
                .and_then(|a| a.get(SELECTED_NODE))
                .is_some()
        })
        .cloned()
        .collect();
    for claim in pending {
        let mut status = json!({"phase": "Bound"});
        if let Some(modes) = claim.pointer("/spec/accessModes") {
            status["accessModes"] = modes.clone();
        }
        if let Some(storage) = claim.pointer("/spec/resources/requests/storage") {
            status["capacity"] = json!({"storage": storage});
        }
        write_status(api, pvcs, &claim, status, CONTROLLER_MANAGER);
    }
}

fn limits_of(pod: &Value) -> (i64, i64) {
    let (mut cpu, mut memory) = (0, 0);
    for c in pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let limits = c.pointer("/resources/limits");
        let read = |r: &str| limits.and_then(|l| l.get(r)).and_then(Value::as_str);
        cpu = read("cpu")
            .map_or(0, quantity::millicores)
            .saturating_add(cpu);
        memory = read("memory")
            .map_or(0, quantity::whole)
            .saturating_add(memory);
    }
    (cpu, memory)
}

/// What the namespace uses of one quota resource; None for resources the
/// stand-in does not count.
fn used(api: &Api, namespace: &str, resource: &str) -> Option<String> {
    let pods: Vec<&Value> = api
        .store
        .list(kinds::pods(), Some(namespace))
        .into_iter()
        .filter(|p| !matches!(text(p, "/status/phase"), "Succeeded" | "Failed"))
        .collect();
    let count = |plural: &str| {
        kinds::KINDS
            .iter()
            .find(|k| k.plural == plural)
            .map_or(0, |k| api.store.list(k, Some(namespace)).len())
            .to_string()
    };
    let pvcs = api
        .store
        .list(kind("", "persistentvolumeclaims"), Some(namespace));
    Some(match resource {
        "pods" | "count/pods" => pods.len().to_string(),
        "cpu" | "requests.cpu" => quantity::format_millicores(
            pods.iter()
                .map(|p| pod_requests(p).cpu)
                .fold(0i64, i64::saturating_add),
        ),
        "memory" | "requests.memory" => quantity::format_bytes(
            pods.iter()
                .map(|p| pod_requests(p).memory)
                .fold(0i64, i64::saturating_add),
        ),
        "limits.cpu" => quantity::format_millicores(
            pods.iter()
                .map(|p| limits_of(p).0)
                .fold(0i64, i64::saturating_add),
        ),
        "limits.memory" => quantity::format_bytes(
            pods.iter()
                .map(|p| limits_of(p).1)
                .fold(0i64, i64::saturating_add),
        ),
        "persistentvolumeclaims" | "count/persistentvolumeclaims" => pvcs.len().to_string(),
        "requests.storage" => quantity::format_bytes(
            pvcs.iter()
                .map(|c| quantity::whole(text(c, "/spec/resources/requests/storage")))
                .fold(0i64, i64::saturating_add),
        ),
        "services" | "count/services" => count("services"),
        "secrets" | "count/secrets" => count("secrets"),
        "configmaps" | "count/configmaps" => count("configmaps"),
        other => {
            let plural = other.strip_prefix("count/")?;
            let (plural, group) = plural.split_once('.').unwrap_or((plural, ""));
            let k = kinds::KINDS
                .iter()
                .find(|k| k.plural == plural && k.group == group)?;
            api.store.list(k, Some(namespace)).len().to_string()
        }
    })
}

/// Every quota's status: `hard` as its spec, `used` as counted now.
pub fn quota_status(api: &mut Api) {
    let quotas_kind = kind("", "resourcequotas");
    let quotas: Vec<Value> = api
        .store
        .list(quotas_kind, None)
        .into_iter()
        .cloned()
        .collect();
    for quota in quotas {
        let namespace = name_of(&quota).0;
        let hard = quota
            .pointer("/spec/hard")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut used_map = Map::new();
        for resource in hard.keys() {
            if let Some(figure) = used(api, namespace, resource) {
                used_map.insert(resource.clone(), json!(figure));
            }
        }
        let status = json!({"hard": hard, "used": used_map});
        write_status(api, quotas_kind, &quota, status, CONTROLLER_MANAGER);
    }
}
