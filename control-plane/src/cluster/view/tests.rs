//! The index and views as plain data.

use super::*;
use k8s_openapi::api::core::v1::{
    Container, NodeCondition, NodeSpec, NodeStatus, PodSpec, PodStatus, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;

fn q(pairs: &[(&str, &str)]) -> Option<std::collections::BTreeMap<String, Quantity>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), Quantity((*v).into())))
            .collect(),
    )
}

fn node(name: &str, worker: Option<&str>, ready: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: worker.map(|w| [(WORKER_ID_LABEL.to_owned(), w.to_owned())].into()),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            capacity: q(&[
                ("cpu", "4"),
                ("memory", "8Gi"),
                ("ephemeral-storage", "100Gi"),
                ("pods", "110"),
            ]),
            allocatable: q(&[
                ("cpu", "3800m"),
                ("memory", "7Gi"),
                ("ephemeral-storage", "90Gi"),
                ("pods", "110"),
            ]),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: ready.into(),
                reason: Some("NodeStatusUnknown".into()),
                message: Some("Kubelet stopped posting node status.".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn pod(node: &str, cpu: &str, memory: &str, phase: &str) -> Pod {
    Pod {
        metadata: ObjectMeta::default(),
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![
                Container {
                    name: "a".into(),
                    resources: Some(ResourceRequirements {
                        requests: q(&[("cpu", cpu), ("memory", memory)]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Container {
                    name: "b".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        }),
    }
}

#[test]
fn a_workers_figures_follow_its_node_and_pods() {
    let mut ix = Index::default();
    assert_eq!(
        ix.put_node(NodeView::of(
            &node("n1", Some("w1"), "True"),
            Timestamp::default()
        )),
        vec!["w1"]
    );
    ix.put_node(NodeView::of(
        &node("other", None, "True"),
        Timestamp::default(),
    ));
    assert_eq!(
        ix.put_pod(
            "ns/a".into(),
            PodView::of(&pod("n1", "250m", "128Mi", "Running"))
        ),
        vec!["w1"]
    );
    ix.put_pod(
        "ns/b".into(),
        PodView::of(&pod("n1", "1", "1Gi", "Pending")),
    );
    ix.put_pod(
        "ns/c".into(),
        PodView::of(&pod("n1", "1", "1Gi", "Succeeded")),
    );
    ix.put_pod(
        "ns/d".into(),
        PodView::of(&pod("other", "2", "1Gi", "Running")),
    );
    let f = ix.figures("w1").unwrap();
    assert_eq!(
        f.allocated,
        Resources {
            cpu: 1250,
            memory: (128 << 20) + (1 << 30),
            storage: 0,
            pods: 2
        }
    );
    assert_eq!(f.allocatable.cpu, 3800);
    assert_eq!(f.capacity.pods, 110);
    assert!(f.ready.0);

    // A pod that finishes gives its requests back.
    ix.put_pod(
        "ns/b".into(),
        PodView::of(&pod("n1", "1", "1Gi", "Succeeded")),
    );
    assert_eq!(ix.figures("w1").unwrap().allocated.pods, 1);
    ix.put_pod("ns/a".into(), None);
    assert_eq!(ix.figures("w1").unwrap().allocated, Resources::default());

    // The label moves to another node: the worker follows it.
    ix.put_node(NodeView::of(
        &node("n1", None, "True"),
        Timestamp::default(),
    ));
    assert!(ix.figures("w1").is_none());
    assert_eq!(ix.counts(), (2, 0));
}

fn claim(node: Option<&str>, requested: &str, bound: Option<&str>) -> PersistentVolumeClaim {
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimSpec, PersistentVolumeClaimStatus, VolumeResourceRequirements,
    };
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            annotations: node.map(|n| [(SELECTED_NODE_ANNOTATION.to_owned(), n.to_owned())].into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            resources: Some(VolumeResourceRequirements {
                requests: q(&[("storage", requested)]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: Some(PersistentVolumeClaimStatus {
            phase: Some(if bound.is_some() { "Bound" } else { "Pending" }.into()),
            capacity: bound.and_then(|b| q(&[("storage", b)])),
            ..Default::default()
        }),
    }
}

#[test]
fn claims_provisioned_on_a_node_count_as_its_allocated_storage() {
    let mut ix = Index::default();
    ix.put_node(NodeView::of(
        &node("n1", Some("w1"), "True"),
        Timestamp::default(),
    ));
    ix.put_pod(
        "ns/a".into(),
        PodView::of(&pod("n1", "250m", "128Mi", "Running")),
    );
    // No node chosen (network storage, or no pod used it yet): nothing.
    assert!(claim_view(&claim(None, "5Gi", Some("5Gi"))).is_none());
    // Chosen but still provisioning: what it requests; bound: its capacity.
    assert_eq!(
        ix.put_claim(
            "ns/data".into(),
            claim_view(&claim(Some("n1"), "1Gi", None))
        ),
        vec!["w1"]
    );
    assert_eq!(ix.figures("w1").unwrap().allocated.storage, 1 << 30);
    ix.put_claim(
        "ns/data".into(),
        claim_view(&claim(Some("n1"), "1Gi", Some("2Gi"))),
    );
    ix.put_claim(
        "ns/db".into(),
        claim_view(&claim(Some("n1"), "8Gi", Some("8Gi"))),
    );
    let f = ix.figures("w1").unwrap();
    assert_eq!((f.allocated.storage, f.allocated.pods), (10 << 30, 1));
    assert_eq!(f.allocatable.headroom(f.allocated).storage, 80 << 30);

    // A pod relist leaves the claims' storage alone, and a claim relist
    // the pods' requests.
    ix.replace_pods(Vec::new());
    assert_eq!(ix.figures("w1").unwrap().allocated.storage, 10 << 30);
    assert_eq!(ix.figures("w1").unwrap().allocated.pods, 0);
    ix.put_pod(
        "ns/a".into(),
        PodView::of(&pod("n1", "250m", "128Mi", "Running")),
    );
    let kept = claim_view(&claim(Some("n1"), "8Gi", Some("8Gi"))).unwrap();
    assert_eq!(ix.replace_claims(vec![("ns/db".into(), kept)]), vec!["w1"]);
    let f = ix.figures("w1").unwrap();
    assert_eq!((f.allocated.storage, f.allocated.cpu), (8 << 30, 250));

    // A deleted claim gives its storage back.
    ix.put_claim("ns/db".into(), None);
    assert_eq!(ix.figures("w1").unwrap().allocated.storage, 0);
}

#[test]
fn a_node_named_by_its_agent_queues_the_worker_until_it_carries_the_label() {
    let mut ix = Index::default();
    // The agent named its node before the watch saw the node.
    ix.name_node("n1", "w1");
    let unlabelled = NodeView::of(&node("n1", None, "True"), Timestamp::default());
    assert_eq!(ix.put_node(unlabelled.clone()), vec!["w1".to_owned()]);
    assert_eq!(ix.put_node(unlabelled), vec!["w1".to_owned()]);
    let labelled = NodeView::of(&node("n1", Some("w1"), "True"), Timestamp::default());
    assert_eq!(ix.put_node(labelled.clone()), vec!["w1".to_owned()]);
    // Labelled: the label names the worker; the note is gone.
    let unlabelled = NodeView::of(&node("n1", None, "True"), Timestamp::default());
    assert_eq!(ix.put_node(unlabelled), vec!["w1".to_owned()]);
    assert!(ix.named.is_empty());
    // Naming a node that already carries the worker's label notes nothing.
    ix.put_node(labelled);
    ix.name_node("n1", "w1");
    assert!(ix.named.is_empty());
}

#[test]
fn readiness_reads_the_kubelets_words() {
    let v = NodeView::of(&node("n1", Some("w1"), "Unknown"), Timestamp::default());
    assert_eq!(
        v.ready,
        (
            false,
            "node not ready: kubelet stopped posting node status".into()
        )
    );
    assert!(!readiness(&[]).0);
}

#[test]
fn init_containers_and_sidecars_count_as_the_scheduler_counts() {
    let mut p = pod("n1", "500m", "1Gi", "Running");
    let spec = p.spec.as_mut().unwrap();
    spec.init_containers = Some(vec![
        Container {
            name: "init".into(),
            resources: Some(ResourceRequirements {
                requests: q(&[("cpu", "2")]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Container {
            name: "sidecar".into(),
            restart_policy: Some("Always".into()),
            resources: Some(ResourceRequirements {
                requests: q(&[("memory", "1Gi")]),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]);
    let v = PodView::of(&p).unwrap();
    assert_eq!(
        v.requests.cpu, 2000,
        "the init container needs more than the containers"
    );
    assert_eq!(v.requests.memory, 2 << 30, "the sidecar runs beside them");
}
