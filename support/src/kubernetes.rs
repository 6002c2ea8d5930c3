//! Names the agent and the control plane must agree on in the Kubernetes
//! cluster, and the syntax rules of the values they put there.

/// The label on each worker's Kubernetes Node that carries its worker id
/// (`minispod.dev/worker-id=<worker id>`): the agent's K3s join hook puts it
/// in the K3s agent configuration (`node-label`), so the node registers
/// with it, and the control plane finds a worker's node by it.
pub const WORKER_ID_LABEL: &str = "minispod.dev/worker-id";

/// True when `s` is a valid label value: at most 63 characters of ASCII
/// letters, digits, `-`, `_` and `.`, beginning and ending with a letter
/// or digit (the empty value is valid too; Kubernetes'
/// `IsValidLabelValue`).
pub fn is_label_value(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.is_empty()
        || (s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && alnum(s.chars().next())
            && alnum(s.chars().last()))
}

/// True when `s` is a valid Node name: a DNS subdomain (RFC 1123) of at
/// most 253 characters, lower-case letters, digits, `-` and `.`, each
/// dot-separated part beginning and ending with a letter or digit
/// (Kubernetes' `IsDNS1123Subdomain`).
pub fn is_node_name(s: &str) -> bool {
    let label_ok = |l: &str| {
        let edge =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        !l.is_empty()
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && edge(l.chars().next())
            && edge(l.chars().last())
    };
    !s.is_empty() && s.len() <= 253 && s.split('.').all(label_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ids_are_valid_label_values_and_injections_are_not() {
        assert!(is_label_value("0b5e7c2a-4d1f-4a8e-9c3b-2f6d8e1a7b90"));
        assert!(is_label_value("w0") && is_label_value("a.b_c-d") && is_label_value(""));
        for bad in [
            "-w",
            "w-",
            "w\"",
            "w\nnode-taint: x",
            "w=v",
            "ü",
            &"a".repeat(64),
        ] {
            assert!(!is_label_value(bad), "{bad:?}");
        }
        assert!(is_label_value(&"a".repeat(63)));
    }

    #[test]
    fn node_names_follow_dns_subdomain_rules() {
        for good in ["node-a", "k3s-worker-1.example.org", "10.0.0.7", "a"] {
            assert!(is_node_name(good), "{good:?}");
        }
        for bad in [
            "",
            "Node-A",
            "node_a",
            "-node",
            "node-",
            "a..b",
            ".a",
            "a b",
            &"a".repeat(254),
        ] {
            assert!(!is_node_name(bad), "{bad:?}");
        }
    }
}
