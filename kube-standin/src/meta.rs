//! Object metadata the server sets: timestamps, uids, generated names, and
//! name validation.

use rand::Rng;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, as Kubernetes writes times (RFC 3339, whole seconds, UTC).
pub fn now() -> String {
    format(OffsetDateTime::now_utc())
}

/// A time as Kubernetes writes it (RFC 3339, whole seconds, UTC).
pub fn format(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// A fresh uid.
pub fn uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `generateName` plus five random characters from apimachinery's alphabet.
pub fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    // Prefixes are cut so the name stays within 63 characters.
    let keep = prefix.len().min(58);
    format!("{}{suffix}", &prefix[..keep])
}

/// Why a name is not a lowercase RFC 1123 subdomain (the rule for most
/// kinds), or None when it is one.
pub fn invalid_subdomain(name: &str) -> Option<String> {
    let valid = name.len() <= 253
        && !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    (!valid).then(|| {
        format!(
            "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )
    })
}

/// Why a name is not a valid path segment (the rule for RBAC objects,
/// whose names may hold ':' as in `system:discovery`), or None.
pub fn invalid_path_segment(name: &str) -> Option<String> {
    if name == "." || name == ".." {
        return Some(format!("Invalid value: {name:?}: may not be '{name}'"));
    }
    ["/", "%"]
        .iter()
        .find(|c| name.contains(*c))
        .map(|c| format!("Invalid value: {name:?}: may not contain '{c}'"))
}

/// Why a name is not an RFC 1123 label (namespaces, services), or None.
pub fn invalid_label(name: &str) -> Option<String> {
    if name.len() <= 63 && !name.contains('.') && invalid_subdomain(name).is_none() {
        return None;
    }
    Some(format!(
        "Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rfc_1123() {
        assert!(invalid_subdomain("web-1.example").is_none());
        assert!(invalid_subdomain("Web").is_some());
        assert!(invalid_subdomain("-a").is_some());
        assert!(invalid_label("a.b").is_some());
        assert!(invalid_label("kube-system").is_none());
        assert!(generate_name("web-").starts_with("web-"));
        assert_eq!(generate_name("web-").len(), 9);
        assert!(now().ends_with('Z'));
    }
}
