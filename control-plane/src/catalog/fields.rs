//! The rules of a catalog entry, checked once for create and update alike.

use std::collections::BTreeMap;

use minispod_proto::v1 as pb;

use super::template;
use crate::error::{AppResult, Violations};

/// A catalog entry whose every field passed its rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    /// URL name.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Lower-case category.
    pub category: String,
    /// Application version.
    pub version: String,
    /// Container image reference.
    pub image: String,
    /// Container port.
    pub port: i32,
    /// CPU request, millicores.
    pub cpu_millicores: i32,
    /// Memory request, MiB.
    pub memory_mb: i32,
    /// Storage request, GiB.
    pub storage_gb: i32,
    /// Environment template.
    pub env_template: BTreeMap<String, String>,
    /// Price per month, cents.
    pub monthly_price_cents: i64,
    /// Visible to customers.
    pub active: bool,
    /// Sorted, distinct, lower-case tags.
    pub tags: Vec<String>,
    /// Icon URL or empty.
    pub icon_url: String,
    /// Documentation URL or empty.
    pub docs_url: String,
    /// How a subscription is deployed; None for an entry that is listed but
    /// not deployable. With one, image, port, resources and env_template
    /// are derived from it by [`ServiceSpec::validated`].
    pub template: Option<pb::ServiceTemplate>,
}

impl ServiceSpec {
    /// Normalises (trim, lower-case where the rule says so, sort tags),
    /// derives image, port, resources and env_template from the template
    /// when there is one, and checks every field, reporting all violations
    /// at once.
    pub fn validated(mut self) -> AppResult<ServiceSpec> {
        let mut v = Violations::new();
        // Derived fields were checked as parts of the template, at its paths.
        let derived = self.template.is_some();
        self.slug = self.slug.trim().to_owned();
        if let Err(e) = check_slug(&self.slug) {
            v.add("slug", e);
        }
        self.name = self.name.trim().to_owned();
        let n = self.name.chars().count();
        if n == 0 || n > 100 {
            v.add("name", "must be 1 to 100 characters");
        }
        if self.description.chars().count() > 5000 {
            v.add("description", "must be at most 5000 characters");
        }
        self.category = self.category.trim().to_lowercase();
        let c = self.category.chars().count();
        if c == 0
            || c > 50
            || !self
                .category
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == ' ')
        {
            v.add(
                "category",
                "must be 1 to 50 lower-case letters, digits, dashes or spaces",
            );
        }
        self.version = self.version.trim().to_owned();
        if self.version.is_empty()
            || self.version.len() > 64
            || self
                .version
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control())
        {
            v.add("version", "must be 1 to 64 characters without spaces");
        }
        if !derived {
            self.image = self.image.trim().to_owned();
            if let Err(e) = check_image(&self.image) {
                v.add("image", e);
            }
            if !(1..=65535).contains(&self.port) {
                v.add("port", "must be between 1 and 65535");
            }
            if !(1..=64_000).contains(&self.cpu_millicores) {
                v.add("resources.cpu_millicores", "must be between 1 and 64000");
            }
            if !(1..=262_144).contains(&self.memory_mb) {
                v.add("resources.memory_mb", "must be between 1 and 262144");
            }
            if !(1..=16_384).contains(&self.storage_gb) {
                v.add("resources.storage_gb", "must be between 1 and 16384");
            }
            if self.env_template.len() > 100 {
                v.add("env_template", "must have at most 100 entries");
            }
            for (k, val) in &self.env_template {
                let key_ok = !k.is_empty()
                    && k.len() <= 128
                    && k.chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !key_ok {
                    v.add(
                        "env_template",
                        format!("key {k:?} is not an environment variable name"),
                    );
                }
                if val.len() > 4096 {
                    v.add(
                        "env_template",
                        format!("value of {k} must be at most 4096 bytes"),
                    );
                }
            }
        }
        if !(0..=1_000_000_000).contains(&self.monthly_price_cents) {
            v.add("monthly_price_cents", "must be between 0 and 1000000000");
        }
        let mut tags: Vec<String> = self.tags.iter().map(|t| t.trim().to_lowercase()).collect();
        tags.sort();
        tags.dedup();
        if tags.len() > 20 {
            v.add("tags", "must be at most 20");
        }
        for t in &tags {
            if t.is_empty()
                || t.len() > 32
                || !t
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                v.add(
                    "tags",
                    format!("{t:?} must be 1 to 32 lower-case letters, digits or dashes"),
                );
            }
        }
        self.tags = tags;
        for (field, url) in [
            ("icon_url", &mut self.icon_url),
            ("docs_url", &mut self.docs_url),
        ] {
            *url = url.trim().to_owned();
            if !url.is_empty() && !is_http_url(url) {
                v.add(field, "must be an http(s) URL of at most 2048 characters");
            }
        }
        if let Some(t) = &self.template {
            template::validate(t, &mut v);
            let d = template::derived(t);
            // The entry's totals have the bounds of ResourceRequests.
            for (what, total, max) in [
                ("CPU requests", d.cpu_millicores, 64_000),
                ("memory requests", d.memory_mb, 262_144),
                ("volume sizes", d.storage_gb, 16_384),
            ] {
                if total > max {
                    v.add(
                        "template.components",
                        format!("the components' {what} add up to {total}, more than {max}"),
                    );
                }
            }
            self.image = d.image;
            self.port = d.port;
            self.cpu_millicores = d.cpu_millicores;
            self.memory_mb = d.memory_mb;
            self.storage_gb = d.storage_gb;
            self.env_template = d.env;
        }
        v.finish()?;
        Ok(self)
    }
}

/// Checks a slug: 2 to 63 lower-case letters, digits and inner dashes.
pub fn check_slug(s: &str) -> Result<(), String> {
    let ok = (2..=63).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err("must be 2 to 63 lower-case letters, digits and inner dashes".into())
    }
}

/// Checks a container image reference as Docker parses it:
/// `[host[:port]/]name[/name...][:tag][@sha256:<64 hex>]`.
pub fn check_image(s: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("is not a container image reference: {why}"));
    if s.is_empty() {
        return bad("empty");
    }
    if s.len() > 255 {
        return bad("longer than 255 characters");
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let ok = d.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64 && h.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
        });
        if !ok {
            return bad("digest must be sha256:<64 hex digits>");
        }
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return bad("bad tag");
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            let (host, port) = first.split_once(':').unwrap_or((first, ""));
            let host_ok = !host.is_empty()
                && host.split('.').all(|l| {
                    !l.is_empty()
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            let port_ok = first.split_once(':').is_none()
                || (!port.is_empty()
                    && port.len() <= 5
                    && port.chars().all(|c| c.is_ascii_digit()));
            if !host_ok || !port_ok {
                return bad("bad registry host");
            }
            parts.remove(0);
        }
    }
    for p in parts {
        if !path_component_ok(p) {
            return bad(
                "repository names are lower-case letters and digits separated by '.', '_', '__' or dashes",
            );
        }
    }
    Ok(())
}

fn path_component_ok(p: &str) -> bool {
    let b = p.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            i += 1;
            continue;
        }
        // Separators: '.', '_', '__', or a run of '-'.
        let start = i;
        match c {
            b'.' => i += 1,
            b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start
            || !b
                .get(i)
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return false;
        }
    }
    true
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    s.len() <= 2048
        && rest.is_some_and(|r| {
            let host = r.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !r.chars().any(|c| c.is_whitespace() || c.is_control())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_image_references_pass() {
        for ok in [
            "n8nio/n8n:1.64.0",
            "docker.io/library/ghost:5-alpine",
            "wordpress:6.6-apache",
            "ghcr.io/org/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "localhost:5000/my_app__x/y-z:latest",
            "redis",
        ] {
            assert!(check_image(ok).is_ok(), "{ok} refused");
        }
    }

    #[test]
    fn malformed_image_references_fail() {
        for bad in [
            "",
            "Ghost:5",
            "ghost:",
            "ghost:-x",
            "a b",
            "ghost@sha256:xyz",
            "-bad/x",
            "x//y",
            "reg.io:port/x",
        ] {
            assert!(check_image(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn slugs_follow_dns_label_rules() {
        assert!(check_slug("n8n").is_ok());
        assert!(check_slug("my-app-2").is_ok());
        for bad in ["a", "-x", "x-", "Upper", "under_score", &"a".repeat(64)] {
            assert!(check_slug(bad).is_err(), "{bad:?} accepted");
        }
    }
}
