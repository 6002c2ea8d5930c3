//! Volumes and quotas: claims bound as a dynamic provisioner would bind
//! them, and ResourceQuota status as the quota controller computes it.

use serde_json::{Map, Value, json};

use super::scheduler::pod_requests;
use super::{CONTROLLER_MANAGER, kind, terminating, text, write_status};
use crate::api::Api;
use crate::kinds;
use crate::quantity;
use crate::store::name_of;

/// Claims still Pending become Bound with the capacity they request.
pub fn bind_claims(api: &mut Api) {
    let pvcs = kind("", "persistentvolumeclaims");
    let pending: Vec<Value> = api
        .store
        .list(pvcs, None)
        .into_iter()
        .filter(|c| text(c, "/status/phase") != "Bound" && !terminating(c))
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
        cpu += read("cpu").map_or(0, quantity::millicores);
        memory += read("memory").map_or(0, quantity::whole);
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
        "cpu" | "requests.cpu" => {
            quantity::format_millicores(pods.iter().map(|p| pod_requests(p).cpu).sum())
        }
        "memory" | "requests.memory" => {
            quantity::format_bytes(pods.iter().map(|p| pod_requests(p).memory).sum())
        }
        "limits.cpu" => quantity::format_millicores(pods.iter().map(|p| limits_of(p).0).sum()),
        "limits.memory" => quantity::format_bytes(pods.iter().map(|p| limits_of(p).1).sum()),
        "persistentvolumeclaims" | "count/persistentvolumeclaims" => pvcs.len().to_string(),
        "requests.storage" => quantity::format_bytes(
            pvcs.iter()
                .map(|c| quantity::whole(text(c, "/spec/resources/requests/storage")))
                .sum(),
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
