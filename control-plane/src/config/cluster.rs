//! Cluster: the `serve` flags of [`ClusterArgs`].

use std::{path::PathBuf, time::Duration};

use clap::Args;
use minispod_support::parse_duration;

use super::parse_cidr;

/// The linked cluster: how to reach it, its networks, its offline taint and the retries of the control loops.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Kubeconfig of the K3s (or any Kubernetes) cluster the workers join,
    /// e.g. /etc/rancher/k3s/k3s.yaml on the K3s server. With it the control
    /// plane watches Nodes and Pods (the worker records show their
    /// conditions, capacity and allocated resources) and applies cordons,
    /// labels, taints, drains and its offline taint to the nodes. Without
    /// it (and without --kube-in-cluster) no cluster is linked.
    #[arg(long, env = "MINISPOD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Link to the cluster the control plane runs in, with its pod's
    /// service account (deploy/kubernetes/control-plane-rbac.yaml).
    #[arg(long, env = "MINISPOD_KUBE_IN_CLUSTER", conflicts_with = "kubeconfig")]
    pub kube_in_cluster: bool,

    /// The user the cluster authenticates the control plane as (what
    /// `kubectl auth whoami` says with its kubeconfig). The control plane
    /// binds the ClusterRole minispod-tenant to this user in each customer
    /// namespace it makes; the default is the ServiceAccount of
    /// deploy/kubernetes/control-plane-rbac.yaml. A
    /// `system:serviceaccount:<namespace>:<name>` name is bound as that
    /// ServiceAccount.
    #[arg(
        long,
        env = "MINISPOD_KUBE_USER",
        default_value = "system:serviceaccount:minispod-system:minispod-control-plane"
    )]
    pub kube_user: String,

    /// How long a worker's stream may be gone before its node is tainted
    /// minispod.dev/offline:NoExecute, so that Kubernetes moves its pods
    /// (Kubernetes alone waits about 40 s to call a node NotReady and 300 s
    /// more to evict). Short blips stay below it and move nothing.
    #[arg(long, env = "MINISPOD_OFFLINE_TAINT_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub offline_taint_grace: Duration,

    /// The cluster's pod network (CIDRs, comma-separated): customer pods
    /// may not connect into it, except to their own namespace's pods and
    /// the cluster DNS. K3s' default --cluster-cidr.
    #[arg(
        long,
        env = "MINISPOD_CLUSTER_POD_CIDRS",
        value_delimiter = ',',
        default_value = "10.42.0.0/16",
        value_parser = parse_cidr
    )]
    pub cluster_pod_cidrs: Vec<String>,

    /// The cluster's service network (CIDRs, comma-separated), refused to
    /// customer pods as the pod network. K3s' default --service-cidr.
    #[arg(
        long,
        env = "MINISPOD_CLUSTER_SERVICE_CIDRS",
        value_delimiter = ',',
        default_value = "10.43.0.0/16",
        value_parser = parse_cidr
    )]
    pub cluster_service_cidrs: Vec<String>,

    /// Where the nodes (API server, kubelets, the control plane) and
    /// other internal hosts live (CIDRs, comma-separated), refused to
    /// customer pods. The default is every private range (RFC 1918, the
    /// shared 100.64.0.0/10 of CGNAT and Tailscale, and IPv6 unique-local
    /// fc00::/7, where AWS's fd00:ec2::254 metadata lives) because nodes'
    /// addresses differ per installation and a private range is rarely
    /// something a customer's app needs; add public node addresses when
    /// nodes have them. 169.254.0.0/16 and fe80::/10 are always refused.
    #[arg(
        long,
        env = "MINISPOD_CLUSTER_NODE_CIDRS",
        value_delimiter = ',',
        default_value = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7",
        value_parser = parse_cidr
    )]
    pub cluster_node_cidrs: Vec<String>,

    /// The first retry of a control loop's failed pass (a subscription's
    /// objects, a worker's node) comes after this long; each further
    /// failure doubles the ceiling up to --kube-retry-max, each retry
    /// drawn at random between this and the ceiling; a success resets it.
    #[arg(long, env = "MINISPOD_KUBE_RETRY_BASE", default_value = "1s", value_parser = parse_duration)]
    pub kube_retry_base: Duration,

    /// The longest wait between retries of a failed pass (see
    /// --kube-retry-base): against an API server that refuses everything,
    /// each subscription costs about one request per half of this.
    #[arg(long, env = "MINISPOD_KUBE_RETRY_MAX", default_value = "2m", value_parser = parse_duration)]
    pub kube_retry_max: Duration,

    /// No offline taint this soon after the control plane starts (or
    /// restarts): its agents need a moment to reconnect, and a restart must
    /// not move every pod in the cluster.
    #[arg(long, env = "MINISPOD_OFFLINE_TAINT_AFTER_START", default_value = "30s", value_parser = parse_duration)]
    pub offline_taint_after_start: Duration,
}
