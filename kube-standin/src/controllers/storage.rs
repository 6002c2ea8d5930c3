//! Volumes and quotas: claims provisioned and bound as K3s's local-path
//! provisioner does, claims and volumes let go as their protection
//! controllers and the Delete reclaim policy do, and ResourceQuota status
//! as the quota controller computes it.

use std::path::Path;

use serde_json::{Map, Value, json};

use super::scheduler::pod_requests;
use super::{CONTROLLER_MANAGER, kind, terminating, text, write_status};
use crate::admission::{PV_PROTECTION, PVC_PROTECTION};
use crate::api::Api;
use crate::kinds::{self, Kind};
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

/// The provisioner named on the volumes, as K3s's local-path names itself.
pub const PROVISIONER: &str = "rancher.io/local-path";
/// Where K3s's local-path keeps volumes on each node.
pub const K3S_STORAGE: &str = "/var/lib/rancher/k3s/storage";

/// Claims still Pending whose node is chosen (see [`select_node`]) are
/// provisioned as K3s's local-path provisions them: a PersistentVolume
/// `pvc-<claim uid>` with a `hostPath` directory on that node (made under
/// `storage_root` when there is one, see `Settings::storage_root`), node
/// affinity to it, reclaim policy Delete and a `claimRef`; then the claim
/// gets `spec.volumeName` and turns Bound with the capacity it requests.
/// A claim no pod uses yet stays Pending, as it does on K3s.
pub fn bind_claims(api: &mut Api, storage_root: Option<&Path>) {
    let pvcs = kind("", "persistentvolumeclaims");
    let pvs = kind("", "persistentvolumes");
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
        let (namespace, name) = name_of(&claim);
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        let uid = text(&claim, "/metadata/uid").to_owned();
        let node = claim
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(SELECTED_NODE))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let volume = format!("pvc-{uid}");
        let dir_name = format!("{volume}_{namespace}_{name}");
        let path = match storage_root {
            Some(root) => root.join(&node).join(&dir_name),
            None => Path::new(K3S_STORAGE).join(&dir_name),
        };
        let storage = claim
            .pointer("/spec/resources/requests/storage")
            .cloned()
            .unwrap_or(json!("0"));
        let modes = claim
            .pointer("/spec/accessModes")
            .cloned()
            .unwrap_or(json!(["ReadWriteOnce"]));
        if api.store.get(pvs, "", &volume).is_none() {
            if storage_root.is_some()
                && let Err(error) = std::fs::create_dir_all(&path)
            {
                tracing::warn!(?error, path = %path.display(), "making a volume's directory failed");
                continue;
            }
            let pv = json!({
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": volume, "annotations": {
                    "pv.kubernetes.io/provisioned-by": PROVISIONER,
                    "local.path.provisioner/selected-node": node,
                }},
                "spec": {
                    "capacity": {"storage": storage},
                    "accessModes": modes,
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": claim.pointer("/spec/storageClassName").cloned().unwrap_or(json!("local-path")),
                    "volumeMode": "Filesystem",
                    "hostPath": {"path": path.to_string_lossy(), "type": "DirectoryOrCreate"},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                    ]}]}},
                    "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "namespace": namespace, "name": name, "uid": uid},
                },
            });
            match api.create(pvs, "", pv, PROVISIONER) {
                Ok(created) => write_status(
                    api,
                    pvs,
                    &created,
                    json!({"phase": "Bound"}),
                    CONTROLLER_MANAGER,
                ),
                Err(error) => {
                    tracing::debug!(?error, volume, "provisioning a volume failed");
                    continue;
                }
            }
        }
        let patch = json!({
            "metadata": {"annotations": {
                "pv.kubernetes.io/bind-completed": "yes",
                "pv.kubernetes.io/bound-by-controller": "yes",
                "volume.kubernetes.io/storage-provisioner": PROVISIONER,
            }},
            "spec": {"volumeName": volume},
        });
        let Ok(claim) =
            api.write_as_controller(pvcs, &namespace, &name, &patch, CONTROLLER_MANAGER)
        else {
            continue;
        };
        let mut status = json!({"phase": "Bound", "accessModes": modes});
        status["capacity"] = json!({"storage": storage});
        write_status(api, pvcs, &claim, status, CONTROLLER_MANAGER);
    }
}

/// The PVC protection controller (pkg/controller/volume/pvcprotection): a
/// Terminating claim loses `kubernetes.io/pvc-protection`, and so goes,
/// once no pod that is not finished names it.
pub fn release_protected_claims(api: &mut Api) {
    let pvcs = kind("", "persistentvolumeclaims");
    let doomed: Vec<(String, String)> = api
        .store
        .list(pvcs, None)
        .into_iter()
        .filter(|c| terminating(c) && has_finalizer(c, PVC_PROTECTION))
        .map(|c| {
            let (ns, name) = name_of(c);
            (ns.to_owned(), name.to_owned())
        })
        .collect();
    for (namespace, name) in doomed {
        let used = api
            .store
            .list(kinds::pods(), Some(&namespace))
            .into_iter()
            .filter(|p| !matches!(text(p, "/status/phase"), "Succeeded" | "Failed"))
            .any(|p| {
                p.pointer("/spec/volumes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|v| v.pointer("/persistentVolumeClaim/claimName") == Some(&json!(name)))
            });
        if !used {
            drop_finalizer(api, pvcs, &namespace, &name, PVC_PROTECTION);
        }
    }
}

/// What the volume binder and local-path do once a volume's claim is gone:
/// the volume turns Released and, its reclaim policy being Delete, its
/// directory is removed (under `storage_root` only) and the volume deleted
/// (the PV protection controller lets it go: no claim is bound to it).
pub fn reclaim_volumes(api: &mut Api, storage_root: Option<&Path>) {
    let pvs = kind("", "persistentvolumes");
    let pvcs = kind("", "persistentvolumeclaims");
    let volumes: Vec<Value> = api.store.list(pvs, None).into_iter().cloned().collect();
    for pv in volumes {
        let claim_ns = text(&pv, "/spec/claimRef/namespace");
        let claim_name = text(&pv, "/spec/claimRef/name");
        let claim_uid = text(&pv, "/spec/claimRef/uid");
        let bound = api
            .store
            .get(pvcs, claim_ns, claim_name)
            .is_some_and(|c| text(c, "/metadata/uid") == claim_uid);
        if bound || claim_name.is_empty() {
            continue;
        }
        let name = name_of(&pv).1.to_owned();
        if text(&pv, "/spec/persistentVolumeReclaimPolicy") != "Delete" {
            write_status(
                api,
                pvs,
                &pv,
                json!({"phase": "Released"}),
                CONTROLLER_MANAGER,
            );
            continue;
        }
        if let Some(root) = storage_root {
            let path = Path::new(text(&pv, "/spec/hostPath/path"));
            if path.starts_with(root)
                && let Err(error) = std::fs::remove_dir_all(path)
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(?error, path = %path.display(), "removing a volume's directory failed");
                continue;
            }
        }
        if !terminating(&pv) {
            super::delete(api, pvs, &pv);
        }
        drop_finalizer(api, pvs, "", &name, PV_PROTECTION);
    }
}

fn has_finalizer(object: &Value, finalizer: &str) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

fn drop_finalizer(
    api: &mut Api,
    kind: &'static Kind,
    namespace: &str,
    name: &str,
    finalizer: &str,
) {
    let Ok(live) = api.get(kind, namespace, name) else {
        return;
    };
    let rest: Vec<Value> = live
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    let patch = json!({"metadata": {"finalizers": rest}});
    if let Err(error) = api.write_as_controller(kind, namespace, name, &patch, CONTROLLER_MANAGER) {
        tracing::debug!(?error, name, "removing a finalizer failed");
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
