//! Where a subscription's volumes are: each claim's bound
//! PersistentVolume, its node (so the worker whose agent copies it) and its
//! directory on that node. Volumes on a node's disk (K3s's local-path
//! provisioner: `hostPath` or `local`, pinned to one node by its node
//! affinity) are supported; others (network storage) are refused with a
//! reason.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Api;
use minispod_proto::v1 as pb;

use crate::{cluster::ClusterLink, subscriptions::render};

/// One volume to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The claim's name.
    pub claim: String,
    /// The node whose disk holds it.
    pub node: String,
    /// The worker of that node.
    pub worker_id: String,
    /// Its directory on the node.
    pub path: String,
}

/// The claims a subscription named `name` with `template` has.
pub fn claims(name: &str, template: &pb::ServiceTemplate) -> Vec<String> {
    let mut out: Vec<String> = template
        .components
        .iter()
        .flat_map(|c| {
            c.volumes
                .iter()
                .map(move |v| render::volume_claim(name, &c.name, &v.name))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Why a claim's volume cannot be copied now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unlocated {
    /// Not yet: the claim is not bound (local-path binds a claim when its
    /// first pod is scheduled) or the cluster could not be read.
    Waiting(String),
    /// Never by a node agent (network storage, no node, not our node).
    Refused(String),
}

/// Finds where claim `claim` in namespace `ns` keeps its files.
pub async fn locate(link: &ClusterLink, ns: &str, claim: &str) -> Result<Volume, Unlocated> {
    let v = locate_inner(link, ns, claim).await;
    v.map_err(|(waiting, why)| {
        if waiting {
            Unlocated::Waiting(why)
        } else {
            Unlocated::Refused(why)
        }
    })
}

async fn locate_inner(link: &ClusterLink, ns: &str, claim: &str) -> Result<Volume, (bool, String)> {
    let wait = |why: String| (true, why);
    let refuse = |why: String| (false, why);
    let client = link
        .kube_client()
        .ok_or_else(|| refuse("no cluster is linked".to_owned()))?;
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get(claim)
        .await
        .map_err(|e| read_failed(&e, &format!("the claim {claim}")))?;
    let pv_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| wait(format!("the claim {claim} is not bound to a volume yet")))?;
    let pv = Api::<PersistentVolume>::all(client)
        .get(&pv_name)
        .await
        .map_err(|e| read_failed(&e, &format!("the volume {pv_name}")))?;
    let spec = pv
        .spec
        .as_ref()
        .ok_or_else(|| refuse(format!("the volume {pv_name} has no spec")))?;
    let path = spec
        .host_path
        .as_ref()
        .map(|h| h.path.clone())
        .or_else(|| spec.local.as_ref().map(|l| l.path.clone()))
        .ok_or_else(|| {
            refuse(format!(
                "the volume {pv_name} is not on a node's disk (network storage is not \
                 backed up by the node agents yet)"
            ))
        })?;
    let node = node_of(&pv).ok_or_else(|| {
        refuse(format!(
            "the volume {pv_name} names no node in its node affinity"
        ))
    })?;
    let worker_id = link.worker_of_node(&node).ok_or_else(|| {
        wait(format!(
            "the node {node} of the volume {pv_name} is not one of our workers"
        ))
    })?;
    Ok(Volume {
        claim: claim.to_owned(),
        node,
        worker_id,
        path,
    })
}

/// A failed read of `what`: refused at once when the cluster denies it
/// (401, 403: the ClusterRole lacks `get` on claims or volumes), waited for
/// otherwise (a claim not made yet, the API briefly away).
fn read_failed(e: &kube::Error, what: &str) -> (bool, String) {
    let denied = matches!(e, kube::Error::Api(s) if s.code == 401 || s.code == 403);
    (!denied, format!("reading {what}: {e}"))
}

/// The one node a local volume's required node affinity names
/// (`kubernetes.io/hostname In [node]`, as local-path writes it).
fn node_of(pv: &PersistentVolume) -> Option<String> {
    let terms = &pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .find(|e| e.key == "kubernetes.io/hostname" && e.operator == "In")
        .and_then(|e| e.values.as_ref()?.first().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denied_read_is_refused_and_a_missing_one_waited_for() {
        let api = |code: u16| {
            kube::Error::Api(
                kube::core::Status::failure("no", "Forbidden")
                    .with_code(code)
                    .boxed(),
            )
        };
        assert!(!read_failed(&api(403), "the claim c").0);
        assert!(!read_failed(&api(401), "the claim c").0);
        assert!(read_failed(&api(404), "the claim c").0);
        assert!(
            read_failed(&api(503), "the claim c")
                .1
                .starts_with("reading the claim c: ")
        );
    }

    #[test]
    fn the_node_is_read_from_the_local_path_affinity() {
        let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pvc-1"},
            "spec": {
                "hostPath": {"path": "/var/lib/rancher/k3s/storage/pvc-1_ns_data"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["w1"]}
                ]}]}}
            }
        }))
        .unwrap();
        assert_eq!(node_of(&pv).as_deref(), Some("w1"));
        let none: PersistentVolume =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}, "spec": {}}))
                .unwrap();
        assert_eq!(node_of(&none), None);
    }
}
