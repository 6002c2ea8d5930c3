//! What a customer namespace may reach: the refused address ranges and the
//! NetworkPolicy that enforces them.

use std::net::IpAddr;

use serde_json::{Value, json};

use super::{NAMESPACE_OBJECTS, RenderSettings, meta};

/// Ranges no customer pod may reach whatever the settings: link-local,
/// where clouds answer metadata requests (169.254.169.254, fd00:ec2::254
/// lies in fc00::/7, which the node default covers), and IPv6 link-local.
pub const ALWAYS_REFUSED: [&str; 2] = ["169.254.0.0/16", "fe80::/10"];

/// The namespace and labels of the cluster DNS pods (kube-dns or CoreDNS,
/// which keeps the `k8s-app: kube-dns` label; K3s's too).
pub const DNS_NAMESPACE: &str = "kube-system";
/// Label selecting the cluster DNS pods.
pub const DNS_LABEL: (&str, &str) = ("k8s-app", "kube-dns");

pub use minispod_support::cidr::{masked, parse_cidr};

/// Whether range `outer` contains range `inner`.
fn contains(outer: (IpAddr, u8), inner: (IpAddr, u8)) -> bool {
    outer.0.is_ipv4() == inner.0.is_ipv4()
        && outer.1 <= inner.1
        && masked(inner.0, outer.1) == outer.0
}

/// The ranges customer pods may not reach: [`ALWAYS_REFUSED`] and `cidrs`,
/// as (IPv4, IPv6) lists without a range another one contains (in order,
/// duplicates once). An invalid CIDR is an error.
pub fn refused_ranges(cidrs: &[String]) -> Result<(Vec<String>, Vec<String>), String> {
    let mut all = Vec::new();
    for c in ALWAYS_REFUSED
        .iter()
        .copied()
        .chain(cidrs.iter().map(String::as_str))
    {
        all.push(parse_cidr(c)?);
    }
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for (i, r) in all.iter().enumerate() {
        let covered = all
            .iter()
            .enumerate()
            .any(|(j, o)| j != i && contains(*o, *r) && (o != r || j < i));
        if covered {
            continue;
        }
        let text = format!("{}/{}", r.0, r.1);
        if r.0.is_ipv4() {
            v4.push(text);
        } else {
            v6.push(text);
        }
    }
    Ok((v4, v6))
}

/// The namespace's NetworkPolicy. In: only pods of the same namespace and
/// the ingress controller's (other customers cannot reach a customer's
/// pods). Out: the namespace's own pods, the cluster DNS (UDP and TCP 53)
/// and every address outside the refused ranges (link-local metadata, the
/// cluster's pod, service and node ranges; so other customers, the API
/// server, the kubelets and the control plane too).
pub(super) fn network_policy(ns: &str, labels: Value, s: &RenderSettings) -> Value {
    let mut egress = vec![
        json!({ "to": [{ "podSelector": {} }] }),
        json!({
            "to": [{
                "namespaceSelector": { "matchLabels": {
                    "kubernetes.io/metadata.name": DNS_NAMESPACE,
                }},
                "podSelector": { "matchLabels": { DNS_LABEL.0: DNS_LABEL.1 } },
            }],
            "ports": [
                { "protocol": "UDP", "port": 53 },
                { "protocol": "TCP", "port": 53 },
            ],
        }),
    ];
    // The settings are checked at start; were they not valid, nothing
    // beyond the namespace and DNS is allowed rather than too much.
    match refused_ranges(&s.cluster_cidrs) {
        Ok((v4, v6)) => egress.push(json!({ "to": [
            { "ipBlock": { "cidr": "0.0.0.0/0", "except": v4 } },
            { "ipBlock": { "cidr": "::/0", "except": v6 } },
        ]})),
        Err(e) => tracing::error!(error = %e, "no internet egress: invalid cluster ranges"),
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(NAMESPACE_OBJECTS, ns, labels),
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                { "from": [{ "podSelector": {} }] },
                { "from": [{ "namespaceSelector": { "matchLabels": {
                    "kubernetes.io/metadata.name": s.ingress_namespace,
                }}}]},
            ],
            "egress": egress,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_ranges_split_by_family_and_drop_contained_ones() {
        let cidrs: Vec<String> = [
            "10.42.0.0/16",
            "10.43.0.0/16",
            "10.0.0.0/8",
            "192.168.0.0/16",
            "fc00::/7",
            "10.0.0.0/8",
        ]
        .map(String::from)
        .to_vec();
        let (v4, v6) = refused_ranges(&cidrs).unwrap();
        assert_eq!(v4, ["169.254.0.0/16", "10.0.0.0/8", "192.168.0.0/16"]);
        assert_eq!(v6, ["fe80::/10", "fc00::/7"]);
        assert!(
            refused_ranges(&["10.42.0.1/16".into()]).is_err(),
            "host bits"
        );
        assert!(refused_ranges(&["10.42.0.0".into()]).is_err());
        assert!(refused_ranges(&["10.42.0.0/33".into()]).is_err());
        assert!(refused_ranges(&["::/129".into()]).is_err());
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap().1, 0);
    }
}
