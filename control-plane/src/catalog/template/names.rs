//! The shapes of the names and strings a template holds: placeholder and
//! environment names, DNS labels, port names, pinned images, patterns and
//! email addresses.

use crate::catalog::fields::check_image;

/// Upper snake case: `A-Z` first, then `A-Z`, `0-9`, `_`; 1 to `max` bytes.
pub(super) fn is_upper_snake(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_uppercase())
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// A DNS label that is also a Kubernetes Service name (RFC 1035): lower-case
/// letters, digits and inner dashes, starting with a letter, 1 to `max`.
pub(super) fn is_dns_label(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// An IANA service name as Kubernetes checks port names: 1 to 15 lower-case
/// letters, digits and single inner dashes, with at least one letter.
pub(super) fn is_port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// A C identifier of 1 to 128 bytes (an environment variable's name).
pub(super) fn is_env_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks that `image` is pinned: a tag other than `latest`, or a digest.
pub(super) fn check_pinned_image(image: &str) -> Result<(), String> {
    if image.chars().any(char::is_whitespace) {
        return Err("must not contain whitespace".into());
    }
    check_image(image)?;
    if image.contains("@sha256:") {
        return Ok(());
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) => Err("must be pinned: \"latest\" moves; name a version".into()),
        Some(_) => Ok(()),
        None => Err("must be pinned: give a tag (e.g. \":1.2.3\") or a @sha256: digest".into()),
    }
}

/// Compiles a variable's pattern for a whole-value match, with bounds on
/// the compiled size so a pattern cannot take the server's memory.
pub(super) fn compile_pattern(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| format!("is not a valid regular expression: {e}"))
}

/// A basic email shape: one `@`, a non-empty local part, a dotted domain,
/// no whitespace, at most 254 bytes.
pub(super) fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    s.len() <= 254
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|l| !l.is_empty())
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}
