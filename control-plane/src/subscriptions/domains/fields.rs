//! A customer's host name, parsed once.

use std::net::IpAddr;

/// The longest DNS name (RFC 1035, without the root's dot).
pub const MAX_HOST_LEN: usize = 253;
/// The longest DNS label.
const MAX_LABEL_LEN: usize = 63;

/// `raw` as a host name a customer may attach to a subscription, or why
/// not (a field violation's words). Lower-cased, a trailing dot dropped;
/// two labels at least (`shop.example.com`, `example.com`); letters,
/// digits and inner dashes only (an IDN in its `xn--` form); not an IP
/// address, not a wildcard, not `localhost`; and not `apps_domain` or a
/// name under it, which are the installation's own.
pub fn parse_host(raw: &str, apps_domain: &str) -> Result<String, String> {
    let host = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return Err("is required".into());
    }
    if host.len() > MAX_HOST_LEN {
        return Err(format!("must be at most {MAX_HOST_LEN} characters"));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() {
        return Err("must be a DNS name, not an IP address".into());
    }
    if host.contains('*') {
        return Err("must be one name: wildcards are not supported".into());
    }
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() < 2 {
        return Err("must be a full DNS name such as shop.example.com".into());
    }
    for label in &labels {
        let ok = (1..=MAX_LABEL_LEN).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(format!(
                "must be labels of 1 to {MAX_LABEL_LEN} letters, digits and inner dashes \
                 separated by dots (an international name in its xn-- form)"
            ));
        }
    }
    let top = labels[labels.len() - 1];
    if top.bytes().all(|b| b.is_ascii_digit()) {
        return Err("must end in a top-level domain, not a number".into());
    }
    if top == "localhost" {
        return Err("must be a public name, not localhost".into());
    }
    let apps = apps_domain.trim_end_matches('.').to_ascii_lowercase();
    if !apps.is_empty() && (host == apps || host.ends_with(&format!(".{apps}"))) {
        return Err(format!(
            "must not be {apps} or a name under it: those are the installation's own addresses"
        ));
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPS: &str = "apps.example.com";

    #[test]
    fn names_are_lowered_and_a_trailing_dot_dropped() {
        assert_eq!(
            parse_host(" Shop.Example.COM. ", APPS).unwrap(),
            "shop.example.com"
        );
        assert_eq!(parse_host("example.org", APPS).unwrap(), "example.org");
        assert_eq!(
            parse_host("xn--bcher-kva.example", APPS).unwrap(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn addresses_wildcards_single_labels_and_bad_labels_are_refused() {
        for bad in [
            "",
            "203.0.113.7",
            "::1",
            "[2001:db8::1]",
            "*.example.com",
            "localhost",
            "shop.localhost",
            "example",
            "-shop.example.com",
            "shop-.example.com",
            "sh_op.example.com",
            "shop..example.com",
            "bücher.example",
            "shop.example.123",
            "shop.example.com/path",
            "shop.example.com:8080",
        ] {
            assert!(parse_host(bad, APPS).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(parse_host(&long, APPS).is_err());
        let too_long = format!("{}com", "abcdefghi.".repeat(26));
        assert!(too_long.len() > MAX_HOST_LEN);
        assert!(parse_host(&too_long, APPS).is_err());
    }

    #[test]
    fn the_apps_domain_and_names_under_it_are_the_installations_own() {
        assert!(parse_host("apps.example.com", APPS).is_err());
        assert!(parse_host("blog.apps.example.com", APPS).is_err());
        assert!(parse_host("BLOG.Apps.Example.com.", APPS).is_err());
        // A name that merely ends the same way is someone else's.
        assert!(parse_host("myapps.example.com", APPS).is_ok());
        assert!(parse_host("example.com", APPS).is_ok());
    }
}
