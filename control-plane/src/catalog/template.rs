//! Deployable catalog templates: the placeholder syntax, the rules of a
//! template (checked when an administrator saves one), the rules of a
//! customer's variable values (checked when they subscribe), and the figures
//! a catalog entry derives from its template.
//!
//! Placeholders are `${NAME}` with NAME in upper snake case; `$${` writes a
//! literal `${`. A name is a variable, a generated value, a built-in
//! ([`BUILT_INS`]) or a component's host ([`host_placeholder`]).

use std::collections::{BTreeMap, BTreeSet};

use minispod_proto::v1 as pb;

use super::fields::check_image;
use crate::error::Violations;

/// The placeholders every subscription defines: its name, its host name and
/// its `https://` URL.
pub const BUILT_INS: [&str; 3] = ["SUBSCRIPTION_NAME", "DOMAIN", "PUBLIC_URL"];

/// Most components in a template.
pub const MAX_COMPONENTS: usize = 8;
/// Most characters of a customer's variable value.
pub const MAX_VALUE_CHARS: usize = 1000;
/// Length of a generated value whose `length` is 0.
pub const DEFAULT_GENERATED_LENGTH: usize = 32;

/// The placeholder naming component `component`'s host: upper case, dashes
/// as underscores, then `_HOST` ("db" gives `DB_HOST`, "my-db" `MY_DB_HOST`).
pub fn host_placeholder(component: &str) -> String {
    format!("{}_HOST", component.to_ascii_uppercase().replace('-', "_"))
}

/// One piece of a text with placeholders.
enum Piece<'a> {
    /// Literal text (an escaped `$${` comes out as `${`).
    Text(&'a str),
    /// A `${NAME}` placeholder's name.
    Name(&'a str),
}

/// Splits `text` into literal text and placeholder names.
fn pieces(text: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(found) = text[pos..].find("${") {
        let at = pos + found;
        // `$${` is an escape: everything before the first `$`, then `${`.
        if at > pos && text.as_bytes()[at - 1] == b'$' {
            out.push(Piece::Text(&text[pos..at - 1]));
            out.push(Piece::Text("${"));
            pos = at + 2;
            continue;
        }
        out.push(Piece::Text(&text[pos..at]));
        let start = at + 2;
        let Some(len) = text[start..].find('}') else {
            return Err(format!(
                "unclosed \"${{\" at character {} (write \"$${{\" for a literal \"${{\")",
                text[..at].chars().count() + 1
            ));
        };
        let name = &text[start..start + len];
        if !is_upper_snake(name, 64) {
            return Err(format!(
                "\"${{{name}}}\" is not a placeholder: names are 1 to 64 upper-case \
                 letters, digits and underscores, starting with a letter"
            ));
        }
        out.push(Piece::Name(name));
        pos = start + len + 1;
    }
    out.push(Piece::Text(&text[pos..]));
    Ok(out)
}

/// The names of the `${NAME}` placeholders of `text`, in order (repeats
/// included); `$${` is a literal `${`. Err says what is malformed: an
/// unclosed `${` or a name that is not upper snake case.
pub fn placeholders(text: &str) -> Result<Vec<String>, String> {
    Ok(pieces(text)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Name(n) => Some(n.to_owned()),
            Piece::Text(_) => None,
        })
        .collect())
}

/// `text` with every placeholder replaced by its value in `values` and each
/// `$${` by `${`. Err names a placeholder `values` lacks, or says what is
/// malformed.
pub fn expand(text: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for p in pieces(text)? {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Name(n) => match values.get(n) {
                Some(v) => out.push_str(v),
                None => return Err(format!("unknown placeholder ${{{n}}}")),
            },
        }
    }
    Ok(out)
}

/// Upper snake case: `A-Z` first, then `A-Z`, `0-9`, `_`; 1 to `max` bytes.
fn is_upper_snake(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_uppercase())
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// A DNS label that is also a Kubernetes Service name (RFC 1035): lower-case
/// letters, digits and inner dashes, starting with a letter, 1 to `max`.
fn is_dns_label(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// An IANA service name as Kubernetes checks port names: 1 to 15 lower-case
/// letters, digits and single inner dashes, with at least one letter.
fn is_port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// A C identifier of 1 to 128 bytes (an environment variable's name).
fn is_env_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks that `image` is pinned: a tag other than `latest`, or a digest.
fn check_pinned_image(image: &str) -> Result<(), String> {
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
fn compile_pattern(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| format!("is not a valid regular expression: {e}"))
}

/// A basic email shape: one `@`, a non-empty local part, a dotted domain,
/// no whitespace, at most 254 bytes.
fn is_email(s: &str) -> bool {
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

/// The effective type of a variable (UNSPECIFIED is STRING); None for a
/// number no VariableType has.
fn variable_type(var: &pb::TemplateVariable) -> Option<pb::VariableType> {
    match pb::VariableType::try_from(var.r#type).ok()? {
        pb::VariableType::Unspecified => Some(pb::VariableType::String),
        t => Some(t),
    }
}

/// Checks one non-empty value of `var` against its type, options and
/// pattern (`pattern` compiled by the caller, if any).
fn check_value(
    var: &pb::TemplateVariable,
    pattern: Option<&regex::Regex>,
    value: &str,
) -> Result<(), String> {
    if value.chars().count() > MAX_VALUE_CHARS {
        return Err(format!("must be at most {MAX_VALUE_CHARS} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err("must be one line without control characters".into());
    }
    let type_error = match variable_type(var) {
        Some(pb::VariableType::Number) => {
            let digits = value.strip_prefix('-').unwrap_or(value);
            let integer = !digits.is_empty()
                && digits.chars().all(|c| c.is_ascii_digit())
                && value.parse::<i64>().is_ok();
            (!integer).then(|| "must be an integer".to_owned())
        }
        Some(pb::VariableType::Boolean) => (value != "true" && value != "false")
            .then(|| "must be \"true\" or \"false\"".to_owned()),
        Some(pb::VariableType::Select) => (!var.options.iter().any(|o| o == value))
            .then(|| format!("must be one of {}", var.options.join(", "))),
        Some(pb::VariableType::Email) => {
            (!is_email(value)).then(|| "must be an email address".to_owned())
        }
        _ => None,
    };
    if let Some(e) = type_error {
        return Err(e);
    }
    if let Some(re) = pattern
        && !re.is_match(value)
    {
        return Err(format!("must match the pattern {}", var.pattern));
    }
    Ok(())
}

/// Records a violation per malformed or unknown placeholder of `text`.
fn check_placeholders(
    text: &str,
    known: &BTreeSet<String>,
    forbidden: &BTreeSet<String>,
    why_forbidden: &str,
    field: &str,
    v: &mut Violations,
) {
    match placeholders(text) {
        Err(e) => v.add(field, e),
        Ok(names) => {
            let mut reported = BTreeSet::new();
            for n in names {
                if !reported.insert(n.clone()) {
                    continue;
                }
                if forbidden.contains(&n) {
                    v.add(field, format!("${{{n}}} {why_forbidden}"));
                } else if !known.contains(&n) {
                    v.add(
                        field,
                        format!(
                            "unknown placeholder ${{{n}}}: not a variable, generated value, \
                             built-in or component host"
                        ),
                    );
                }
            }
        }
    }
}

/// Names the control plane gives its own containers, ports and volumes in
/// a subscription's pods (the owner's gate): a template may not take them.
const RESERVED_PREFIX: &str = "minispod-";
const RESERVED: &str = "must not start with \"minispod-\": MiniSpod names its own parts so";

/// Checks a template against every rule the proto states, adding one
/// violation per broken rule with paths such as
/// `template.components[0].image` or `template.variables[2].pattern`.
pub fn validate(t: &pb::ServiceTemplate, v: &mut Violations) {
    // The names a placeholder may use, gathered first so components may
    // refer to each other and to every variable.
    let hosts: BTreeSet<String> = t
        .components
        .iter()
        .filter(|c| is_dns_label(&c.name, 20))
        .map(|c| host_placeholder(&c.name))
        .collect();
    let mut known: BTreeSet<String> = BUILT_INS.iter().map(|s| (*s).to_owned()).collect();
    known.extend(hosts.iter().cloned());
    known.extend(t.variables.iter().map(|x| x.name.clone()));
    known.extend(t.generated.iter().map(|g| g.name.clone()));
    let no_forbidden = BTreeSet::new();

    validate_components(t, &known, &no_forbidden, v);

    // Variables and generated values share one namespace, and must not
    // shadow a built-in or a component host.
    let mut names = BTreeSet::new();
    let mut check_name = |name: &str, field: &str, v: &mut Violations| {
        if !is_upper_snake(name, 64) {
            v.add(
                field,
                "must be 1 to 64 upper-case letters, digits and underscores, starting with a letter",
            );
        } else if BUILT_INS.contains(&name) {
            v.add(field, format!("{name} is a built-in placeholder"));
        } else if hosts.contains(name) {
            v.add(
                field,
                format!("{name} is the host placeholder of a component"),
            );
        } else if !names.insert(name.to_owned()) {
            v.add(
                field,
                format!("{name} is used by another variable or generated value"),
            );
        }
    };

    if t.variables.len() > 32 {
        v.add("template.variables", "must have at most 32 variables");
    }
    for (i, var) in t.variables.iter().enumerate() {
        let p = format!("template.variables[{i}]");
        check_name(&var.name, &format!("{p}.name"), v);
        let label = var.label.chars().count();
        if label == 0 || label > 100 || var.label.trim().is_empty() {
            v.add(&format!("{p}.label"), "must be 1 to 100 characters");
        }
        if var.description.chars().count() > 500 {
            v.add(
                &format!("{p}.description"),
                "must be at most 500 characters",
            );
        }
        let ty = variable_type(var);
        if ty.is_none() {
            v.add(&format!("{p}.type"), "is not a VariableType");
        }
        if ty == Some(pb::VariableType::Select) {
            if var.options.is_empty() || var.options.len() > 50 {
                v.add(
                    &format!("{p}.options"),
                    "a SELECT variable must have 1 to 50 options",
                );
            }
            let mut seen = BTreeSet::new();
            for (j, o) in var.options.iter().enumerate() {
                if o.is_empty()
                    || o.chars().count() > MAX_VALUE_CHARS
                    || o.chars().any(char::is_control)
                {
                    v.add(
                        &format!("{p}.options[{j}]"),
                        format!("must be 1 to {MAX_VALUE_CHARS} characters on one line"),
                    );
                } else if !seen.insert(o) {
                    v.add(
                        &format!("{p}.options[{j}]"),
                        format!("{o:?} is listed twice"),
                    );
                }
            }
        } else if !var.options.is_empty() {
            v.add(
                &format!("{p}.options"),
                "only SELECT variables have options",
            );
        }
        let mut pattern = None;
        if !var.pattern.is_empty() {
            if var.pattern.chars().count() > 200 {
                v.add(&format!("{p}.pattern"), "must be at most 200 characters");
            } else {
                pattern = v.take(&format!("{p}.pattern"), compile_pattern(&var.pattern));
            }
        }
        if !var.default_value.is_empty()
            && ty.is_some()
            && (pattern.is_some() || var.pattern.is_empty())
            && let Err(e) = check_value(var, pattern.as_ref(), &var.default_value)
        {
            v.add(&format!("{p}.default_value"), e);
        }
    }

    if t.generated.len() > 16 {
        v.add(
            "template.generated",
            "must have at most 16 generated values",
        );
    }
    for (i, g) in t.generated.iter().enumerate() {
        let p = format!("template.generated[{i}]");
        check_name(&g.name, &format!("{p}.name"), v);
        if pb::GeneratedValueKind::try_from(g.kind).is_err() {
            v.add(&format!("{p}.kind"), "is not a GeneratedValueKind");
        }
        if g.length != 0 && !(16..=128).contains(&g.length) {
            v.add(
                &format!("{p}.length"),
                "must be 0 (32) or between 16 and 128",
            );
        }
    }

    if t.notes.chars().count() > 5000 {
        v.add("template.notes", "must be at most 5000 characters");
    }
    // Notes are shown to the customer: secrets stay out of them.
    let secret = secret_names(t);
    check_placeholders(
        &t.notes,
        &known,
        &secret,
        "is a secret (a generated value or a SECRET variable), not shown in notes",
        "template.notes",
        v,
    );
}

fn validate_components(
    t: &pb::ServiceTemplate,
    known: &BTreeSet<String>,
    no_forbidden: &BTreeSet<String>,
    v: &mut Violations,
) {
    if t.components.is_empty() || t.components.len() > MAX_COMPONENTS {
        v.add(
            "template.components",
            format!("must have 1 to {MAX_COMPONENTS} components"),
        );
    }
    let exposing = t
        .components
        .iter()
        .filter(|c| !c.expose_port.is_empty())
        .count();
    if !t.components.is_empty() && exposing != 1 {
        v.add(
            "template.components",
            format!("exactly one component must set expose_port ({exposing} do)"),
        );
    }
    let mut component_names = BTreeSet::new();
    for (i, c) in t.components.iter().enumerate() {
        let p = format!("template.components[{i}]");
        if !is_dns_label(&c.name, 20) {
            v.add(
                &format!("{p}.name"),
                "must be 1 to 20 lower-case letters, digits and inner dashes, starting with a letter",
            );
        } else if !component_names.insert(c.name.as_str()) {
            v.add(
                &format!("{p}.name"),
                format!("{:?} is the name of another component", c.name),
            );
        }
        if c.name.starts_with(RESERVED_PREFIX) {
            v.add(&format!("{p}.name"), RESERVED);
        }
        if let Err(e) = check_pinned_image(&c.image) {
            v.add(&format!("{p}.image"), e);
        }

        if c.ports.is_empty() || c.ports.len() > 8 {
            v.add(&format!("{p}.ports"), "must have 1 to 8 ports");
        }
        let mut port_names = BTreeSet::new();
        let mut port_numbers = BTreeSet::new();
        for (j, port) in c.ports.iter().enumerate() {
            let pp = format!("{p}.ports[{j}]");
            if !is_port_name(&port.name) {
                v.add(
                    &format!("{pp}.name"),
                    "must be 1 to 15 lower-case letters, digits and single inner dashes, with a letter",
                );
            } else if !port_names.insert(port.name.as_str()) {
                v.add(
                    &format!("{pp}.name"),
                    format!("{:?} names another port of this component", port.name),
                );
            }
            if port.name.starts_with(RESERVED_PREFIX) {
                v.add(&format!("{pp}.name"), RESERVED);
            }
            if !(1..=65535).contains(&port.container_port) {
                v.add(
                    &format!("{pp}.container_port"),
                    "must be between 1 and 65535",
                );
            } else if !port_numbers.insert(port.container_port) {
                v.add(
                    &format!("{pp}.container_port"),
                    format!("{} is listed twice", port.container_port),
                );
            }
        }
        if !c.expose_port.is_empty() && !port_names.contains(c.expose_port.as_str()) {
            v.add(
                &format!("{p}.expose_port"),
                format!("{:?} is not one of this component's ports", c.expose_port),
            );
        }

        if c.env.len() > 100 {
            v.add(&format!("{p}.env"), "must have at most 100 variables");
        }
        let mut env_names = BTreeSet::new();
        for (j, e) in c.env.iter().enumerate() {
            let ep = format!("{p}.env[{j}]");
            if !is_env_name(&e.name) {
                v.add(
                    &format!("{ep}.name"),
                    "must be 1 to 128 letters, digits and underscores, not starting with a digit",
                );
            } else if !env_names.insert(e.name.as_str()) {
                v.add(&format!("{ep}.name"), format!("{} is set twice", e.name));
            }
            if e.value.chars().count() > 4096 {
                v.add(&format!("{ep}.value"), "must be at most 4096 characters");
            }
            check_placeholders(&e.value, known, no_forbidden, "", &format!("{ep}.value"), v);
        }

        if c.volumes.len() > 4 {
            v.add(&format!("{p}.volumes"), "must have at most 4 volumes");
        }
        let mut volume_names = BTreeSet::new();
        let mut mounts = BTreeSet::new();
        for (j, vol) in c.volumes.iter().enumerate() {
            let vp = format!("{p}.volumes[{j}]");
            if !is_dns_label(&vol.name, 20) {
                v.add(
                    &format!("{vp}.name"),
                    "must be 1 to 20 lower-case letters, digits and inner dashes, starting with a letter",
                );
            } else if !volume_names.insert(vol.name.as_str()) {
                v.add(
                    &format!("{vp}.name"),
                    format!("{:?} names another volume of this component", vol.name),
                );
            }
            if vol.name.starts_with(RESERVED_PREFIX) {
                v.add(&format!("{vp}.name"), RESERVED);
            }
            let mount = vol.mount_path.trim_end_matches('/');
            if !vol.mount_path.starts_with('/')
                || vol.mount_path.len() > 1024
                || vol
                    .mount_path
                    .chars()
                    .any(|ch| ch.is_whitespace() || ch.is_control() || ch == ':')
                || vol.mount_path.split('/').any(|s| s == "..")
            {
                v.add(
                    &format!("{vp}.mount_path"),
                    "must be an absolute path without spaces, ':' or '..'",
                );
            } else if mount.is_empty() {
                v.add(&format!("{vp}.mount_path"), "must not be /");
            } else if let Some(f) = forbidden_mount(mount) {
                v.add(
                    &format!("{vp}.mount_path"),
                    format!("must not be {f} or under it: that belongs to the kernel, the runtime or the kubelet"),
                );
            } else if !mounts.insert(mount) {
                v.add(
                    &format!("{vp}.mount_path"),
                    format!("{mount} is mounted twice in this component"),
                );
            }
            if !(1..=16_384).contains(&vol.size_gb) {
                v.add(&format!("{vp}.size_gb"), "must be between 1 and 16384");
            }
        }

        for (field, probe) in [
            ("readiness_probe", &c.readiness_probe),
            ("liveness_probe", &c.liveness_probe),
        ] {
            if let Some(probe) = probe {
                validate_probe(probe, &port_names, &format!("{p}.{field}"), v);
            }
        }

        match &c.resources {
            None => v.add(&format!("{p}.resources"), "is required"),
            Some(r) => {
                let rp = format!("{p}.resources");
                if !(1..=64_000).contains(&r.cpu_request_millicores) {
                    v.add(
                        &format!("{rp}.cpu_request_millicores"),
                        "must be between 1 and 64000",
                    );
                }
                if !(1..=262_144).contains(&r.memory_request_mb) {
                    v.add(
                        &format!("{rp}.memory_request_mb"),
                        "must be between 1 and 262144",
                    );
                }
                if r.cpu_limit_millicores != 0
                    && !(r.cpu_request_millicores.max(1)..=64_000).contains(&r.cpu_limit_millicores)
                {
                    v.add(
                        &format!("{rp}.cpu_limit_millicores"),
                        "must be 0 (no limit) or between the request and 64000",
                    );
                }
                if r.memory_limit_mb != 0
                    && !(r.memory_request_mb.max(1)..=262_144).contains(&r.memory_limit_mb)
                {
                    v.add(
                        &format!("{rp}.memory_limit_mb"),
                        "must be 0 (the request) or between the request and 262144",
                    );
                }
            }
        }

        if c.args.len() > 32 {
            v.add(&format!("{p}.args"), "must have at most 32 arguments");
        }
        for (j, a) in c.args.iter().enumerate() {
            let ap = format!("{p}.args[{j}]");
            if a.chars().count() > 4096 {
                v.add(&ap, "must be at most 4096 characters");
            }
            check_placeholders(a, known, no_forbidden, "", &ap, v);
        }

        if pb::WorkloadKind::try_from(c.workload).is_err() {
            v.add(&format!("{p}.workload"), "is not a WorkloadKind");
        }
        if let Some(sec) = &c.security {
            validate_security(sec, &format!("{p}.security"), v);
        }
    }
}

/// Mount paths a volume may not cover: the kernel's and the runtime's own
/// file systems, where Kubernetes puts service account tokens and secrets,
/// and the files the kubelet writes into every container.
pub const FORBIDDEN_MOUNTS: [&str; 9] = [
    "/proc",
    "/sys",
    "/dev",
    "/run/secrets",
    "/var/run/secrets",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/run/containerd",
];

/// The forbidden mount `mount` (without a trailing slash) is or lies under.
fn forbidden_mount(mount: &str) -> Option<&'static str> {
    FORBIDDEN_MOUNTS.into_iter().find(|f| {
        mount == *f
            || mount
                .strip_prefix(f)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Highest uid or gid a template may name (Kubernetes' limit).
pub const MAX_ID: i64 = 2_147_483_647;

fn validate_security(s: &pb::ComponentSecurity, p: &str, v: &mut Violations) {
    if s.run_as_user == 0 {
        v.add(
            &format!("{p}.run_as_user"),
            "must not be 0: components never run as root",
        );
    } else if !(1..=MAX_ID).contains(&s.run_as_user) {
        v.add(
            &format!("{p}.run_as_user"),
            format!("must be between 1 and {MAX_ID}"),
        );
    }
    for (field, id) in [("run_as_group", s.run_as_group), ("fs_group", s.fs_group)] {
        if !(0..=MAX_ID).contains(&id) {
            v.add(
                &format!("{p}.{field}"),
                format!("must be 0 (the default) or between 1 and {MAX_ID}"),
            );
        }
    }
}

/// Who a component runs as: (uid, gid, fs group), each defaulted as the
/// proto says; None when the template leaves it to the image.
pub fn run_as(c: &pb::TemplateComponent) -> Option<(i64, i64, i64)> {
    let s = c.security.as_ref()?;
    let gid = if s.run_as_group > 0 {
        s.run_as_group
    } else {
        s.run_as_user
    };
    let fs_group = if s.fs_group > 0 { s.fs_group } else { gid };
    Some((s.run_as_user, gid, fs_group))
}

fn validate_probe(probe: &pb::Probe, ports: &BTreeSet<&str>, p: &str, v: &mut Violations) {
    match &probe.check {
        None | Some(pb::probe::Check::Tcp(false)) => {
            v.add(&format!("{p}.check"), "give http_path or tcp: true");
        }
        Some(pb::probe::Check::HttpPath(path)) => {
            if !path.starts_with('/')
                || path.len() > 1024
                || path.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                v.add(
                    &format!("{p}.http_path"),
                    "must start with \"/\" and have no spaces (at most 1024 characters)",
                );
            }
        }
        Some(pb::probe::Check::Tcp(true)) => {}
    }
    if !ports.contains(probe.port.as_str()) {
        v.add(
            &format!("{p}.port"),
            format!("{:?} is not one of this component's ports", probe.port),
        );
    }
    if !(0..=3600).contains(&probe.initial_delay_seconds) {
        v.add(
            &format!("{p}.initial_delay_seconds"),
            "must be between 0 and 3600",
        );
    }
    if !(0..=3600).contains(&probe.period_seconds) {
        v.add(&format!("{p}.period_seconds"), "must be between 0 and 3600");
    }
    if !(0..=100).contains(&probe.failure_threshold) {
        v.add(
            &format!("{p}.failure_threshold"),
            "must be between 0 and 100",
        );
    }
}

/// The names whose values are secrets: every generated value and every
/// SECRET variable. An environment value that uses one is delivered from
/// the subscription's Secret; notes may not use them.
pub fn secret_names(t: &pb::ServiceTemplate) -> BTreeSet<String> {
    t.generated
        .iter()
        .map(|g| g.name.clone())
        .chain(
            t.variables
                .iter()
                .filter(|x| variable_type(x) == Some(pb::VariableType::Secret))
                .map(|x| x.name.clone()),
        )
        .collect()
}

/// Checks a customer's variable values against template `t` (field paths
/// `variables.NAME`) and returns the effective values: one entry for every
/// variable of `t`, the given value, else its default, else empty. An empty
/// given value counts as none. Unknown names, missing required values and
/// values that break their variable's type, options, pattern or length
/// (at most [`MAX_VALUE_CHARS`]) are violations.
pub fn validate_values(
    t: &pb::ServiceTemplate,
    given: &BTreeMap<String, String>,
    v: &mut Violations,
) -> BTreeMap<String, String> {
    for name in given.keys() {
        if !t.variables.iter().any(|x| &x.name == name) {
            let shown: String = name.chars().take(64).collect();
            v.add(
                &format!("variables.{shown}"),
                "is not a variable of this service",
            );
        }
    }
    let mut out = BTreeMap::new();
    for var in &t.variables {
        let field = format!("variables.{}", var.name);
        let value = match given.get(&var.name) {
            Some(x) if !x.is_empty() => x.clone(),
            _ => var.default_value.clone(),
        };
        if value.is_empty() {
            if var.required {
                v.add(&field, "is required");
            }
        } else {
            let pattern = if var.pattern.is_empty() {
                Ok(None)
            } else {
                compile_pattern(&var.pattern).map(Some)
            };
            match pattern {
                Ok(re) => {
                    if let Err(e) = check_value(var, re.as_ref(), &value) {
                        v.add(&field, e);
                    }
                }
                // Only a template saved before its rules were checked gets here.
                Err(e) => v.add(&field, format!("the service's pattern {e}")),
            }
        }
        out.insert(var.name.clone(), value);
    }
    out
}

/// What a catalog entry shows of its template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// The exposed component's image.
    pub image: String,
    /// The exposed component's exposed container port.
    pub port: i32,
    /// Sum of every component's CPU request.
    pub cpu_millicores: i32,
    /// Sum of every component's memory request.
    pub memory_mb: i32,
    /// Sum of every volume's size, at least 1.
    pub storage_gb: i32,
    /// The exposed component's environment, as written.
    pub env: BTreeMap<String, String>,
}

/// The exposed component of `t`: the first that sets expose_port.
pub fn exposed(t: &pb::ServiceTemplate) -> Option<&pb::TemplateComponent> {
    t.components.iter().find(|c| !c.expose_port.is_empty())
}

/// The image and port of the exposed component, the sums of requests and
/// volume sizes (storage at least 1 GiB) and the exposed environment. Meant
/// for a template that passed [`validate`]; for another, missing pieces are
/// empty or 0.
pub fn derived(t: &pb::ServiceTemplate) -> Derived {
    let exposed = exposed(t);
    let port = exposed
        .and_then(|c| c.ports.iter().find(|p| p.name == c.expose_port))
        .map_or(0, |p| p.container_port);
    let sum = |f: fn(&pb::TemplateComponent) -> i32| {
        t.components
            .iter()
            .map(f)
            .fold(0i32, |a, b| a.saturating_add(b.max(0)))
    };
    Derived {
        image: exposed.map(|c| c.image.clone()).unwrap_or_default(),
        port,
        cpu_millicores: sum(|c| c.resources.as_ref().map_or(0, |r| r.cpu_request_millicores)),
        memory_mb: sum(|c| c.resources.as_ref().map_or(0, |r| r.memory_request_mb)),
        storage_gb: sum(|c| {
            c.volumes
                .iter()
                .fold(0i32, |a, v| a.saturating_add(v.size_gb.max(0)))
        })
        .max(1),
        env: exposed
            .map(|c| {
                c.env
                    .iter()
                    .map(|e| (e.name.clone(), e.value.clone()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::AppError;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The fields of every violation `check` records.
    fn violated(check: impl FnOnce(&mut Violations)) -> Vec<String> {
        let mut v = Violations::new();
        check(&mut v);
        match v.finish() {
            Ok(()) => vec![],
            Err(AppError::InvalidArgument { violations, .. }) => {
                violations.into_iter().map(|x| x.field).collect()
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }

    fn port(name: &str, n: i32) -> pb::ComponentPort {
        pb::ComponentPort {
            name: name.into(),
            container_port: n,
        }
    }

    fn env(name: &str, value: &str) -> pb::TemplateEnvVar {
        pb::TemplateEnvVar {
            name: name.into(),
            value: value.into(),
        }
    }

    fn resources(cpu: i32, mem: i32) -> Option<pb::ComponentResources> {
        Some(pb::ComponentResources {
            cpu_request_millicores: cpu,
            memory_request_mb: mem,
            cpu_limit_millicores: 0,
            memory_limit_mb: mem * 2,
        })
    }

    fn sample() -> pb::ServiceTemplate {
        pb::ServiceTemplate {
            components: vec![
                pb::TemplateComponent {
                    name: "web".into(),
                    image: "docker.io/library/wordpress:6.6-apache".into(),
                    ports: vec![port("http", 80)],
                    env: vec![
                        env("WORDPRESS_DB_HOST", "${DB_HOST}"),
                        env("WORDPRESS_DB_PASSWORD", "${DB_PASSWORD}"),
                        env("SITE", "${PUBLIC_URL}/ $${LITERAL}"),
                    ],
                    volumes: vec![pb::ComponentVolume {
                        name: "html".into(),
                        mount_path: "/var/www/html".into(),
                        size_gb: 5,
                    }],
                    readiness_probe: Some(pb::Probe {
                        check: Some(pb::probe::Check::HttpPath("/".into())),
                        port: "http".into(),
                        ..Default::default()
                    }),
                    liveness_probe: None,
                    resources: resources(250, 256),
                    expose_port: "http".into(),
                    args: vec![],
                    workload: pb::WorkloadKind::Deployment as i32,
                    security: Some(pb::ComponentSecurity {
                        run_as_user: 33,
                        run_as_group: 0,
                        fs_group: 0,
                    }),
                },
                pb::TemplateComponent {
                    name: "db".into(),
                    image: "docker.io/library/mariadb:11.4".into(),
                    ports: vec![port("mysql", 3306)],
                    env: vec![env("MARIADB_PASSWORD", "${DB_PASSWORD}")],
                    volumes: vec![pb::ComponentVolume {
                        name: "data".into(),
                        mount_path: "/var/lib/mysql".into(),
                        size_gb: 3,
                    }],
                    readiness_probe: Some(pb::Probe {
                        check: Some(pb::probe::Check::Tcp(true)),
                        port: "mysql".into(),
                        ..Default::default()
                    }),
                    resources: resources(250, 512),
                    workload: pb::WorkloadKind::StatefulSet as i32,
                    ..Default::default()
                },
            ],
            variables: vec![pb::TemplateVariable {
                name: "ADMIN_EMAIL".into(),
                label: "Administrator email".into(),
                r#type: pb::VariableType::Email as i32,
                ..Default::default()
            }],
            generated: vec![pb::GeneratedValue {
                name: "DB_PASSWORD".into(),
                kind: pb::GeneratedValueKind::Password as i32,
                length: 0,
            }],
            notes: "Open ${PUBLIC_URL}/wp-admin (${ADMIN_EMAIL}).".into(),
        }
    }

    #[test]
    fn placeholders_are_listed_in_order_with_the_escape_skipped() {
        assert_eq!(
            placeholders("a ${B} $${C} ${D_2}${B}").unwrap(),
            ["B", "D_2", "B"]
        );
        assert_eq!(
            placeholders("no placeholders, $ and {} alone").unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(placeholders("$$${X}").unwrap(), Vec::<String>::new());
        assert_eq!(placeholders("").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn malformed_placeholders_are_errors() {
        let e = placeholders("x ${OPEN").unwrap_err();
        assert!(e.contains("unclosed"), "{e}");
        for bad in ["${}", "${lower}", "${1X}", "${A-B}", "${ A}", "${A${B}}"] {
            assert!(placeholders(bad).is_err(), "{bad:?} accepted");
        }
        assert!(placeholders(&format!("${{{}}}", "A".repeat(65))).is_err());
    }

    #[test]
    fn expand_substitutes_and_unescapes() {
        let vals = values(&[("DOMAIN", "a.example.org"), ("N", "")]);
        assert_eq!(
            expand("https://${DOMAIN}/$${DOMAIN}/${N}end", &vals).unwrap(),
            "https://a.example.org/${DOMAIN}/end"
        );
        // A value is not expanded again.
        let vals = values(&[("A", "${B}")]);
        assert_eq!(expand("${A}", &vals).unwrap(), "${B}");
        let e = expand("${MISSING}", &vals).unwrap_err();
        assert!(e.contains("MISSING"), "{e}");
        assert!(expand("${A", &vals).is_err());
    }

    #[test]
    fn host_placeholders_use_underscores() {
        assert_eq!(host_placeholder("db"), "DB_HOST");
        assert_eq!(host_placeholder("my-db2"), "MY_DB2_HOST");
    }

    #[test]
    fn a_sound_template_passes_and_derives_its_figures() {
        let t = sample();
        assert_eq!(violated(|v| validate(&t, v)), Vec::<String>::new());
        let d = derived(&t);
        assert_eq!(d.image, "docker.io/library/wordpress:6.6-apache");
        assert_eq!(d.port, 80);
        assert_eq!((d.cpu_millicores, d.memory_mb, d.storage_gb), (500, 768, 8));
        assert_eq!(d.env["WORDPRESS_DB_HOST"], "${DB_HOST}");
        let mut no_volumes = t.clone();
        for c in &mut no_volumes.components {
            c.volumes.clear();
        }
        assert_eq!(derived(&no_volumes).storage_gb, 1);
        assert_eq!(
            secret_names(&t).into_iter().collect::<Vec<_>>(),
            ["DB_PASSWORD"]
        );
    }

    #[test]
    fn the_names_of_the_owners_gate_are_not_a_templates_to_take() {
        let mut t = sample();
        t.components[0].name = "minispod-gate".into();
        t.components[0].ports[0].name = "minispod-gate".into();
        t.components[0].expose_port = "minispod-gate".into();
        t.components[0].readiness_probe = None;
        t.components[0].volumes[0].name = "minispod-gate-run".into();
        assert_eq!(
            violated(|v| validate(&t, v)),
            [
                "template.components[0].name",
                "template.components[0].ports[0].name",
                "template.components[0].volumes[0].name",
            ]
        );
    }

    #[test]
    fn every_broken_rule_of_a_component_is_reported_at_its_path() {
        let mut t = sample();
        let web = &mut t.components[0];
        web.image = "docker.io/library/wordpress:latest".into();
        web.ports.push(port("http", 70000));
        web.env.push(env("1BAD", "${NOPE}"));
        web.volumes.push(pb::ComponentVolume {
            name: "html".into(),
            mount_path: "/var/www/html/".into(),
            size_gb: 0,
        });
        web.readiness_probe = Some(pb::Probe {
            check: Some(pb::probe::Check::HttpPath("healthz".into())),
            port: "nope".into(),
            initial_delay_seconds: 4000,
            period_seconds: -1,
            failure_threshold: 101,
        });
        web.resources = Some(pb::ComponentResources {
            cpu_request_millicores: 500,
            memory_request_mb: 0,
            cpu_limit_millicores: 100,
            memory_limit_mb: 0,
        });
        web.args = vec!["--x=${UNCLOSED".into()];
        let db = &mut t.components[1];
        db.name = "Db".into();
        db.image = "docker.io/library/mariadb".into();
        db.resources = None;
        db.expose_port = "mysql".into();
        db.workload = 9;
        assert_eq!(
            violated(|v| validate(&t, v)),
            [
                "template.components",
                "template.components[0].image",
                "template.components[0].ports[1].name",
                "template.components[0].ports[1].container_port",
                // DB_HOST is unknown: "Db" is not a component name.
                "template.components[0].env[0].value",
                "template.components[0].env[3].name",
                "template.components[0].env[3].value",
                "template.components[0].volumes[1].name",
                "template.components[0].volumes[1].mount_path",
                "template.components[0].volumes[1].size_gb",
                "template.components[0].readiness_probe.http_path",
                "template.components[0].readiness_probe.port",
                "template.components[0].readiness_probe.initial_delay_seconds",
                "template.components[0].readiness_probe.period_seconds",
                "template.components[0].readiness_probe.failure_threshold",
                "template.components[0].resources.memory_request_mb",
                "template.components[0].resources.cpu_limit_millicores",
                "template.components[0].args[0]",
                "template.components[1].name",
                "template.components[1].image",
                "template.components[1].resources",
                "template.components[1].workload",
            ]
        );
    }

    #[test]
    fn variable_and_generated_rules_are_reported_at_their_paths() {
        let mut t = sample();
        let var = |name: &str, ty: pb::VariableType| pb::TemplateVariable {
            name: name.into(),
            label: "Label".into(),
            r#type: ty as i32,
            ..Default::default()
        };
        t.variables = vec![
            var("DOMAIN", pb::VariableType::String),
            var("DB_HOST", pb::VariableType::String),
            pb::TemplateVariable {
                pattern: "[a-".into(),
                ..var("PATTERNED", pb::VariableType::String)
            },
            pb::TemplateVariable {
                options: vec![],
                ..var("PICK", pb::VariableType::Select)
            },
            pb::TemplateVariable {
                options: vec!["a".into(), "a".into()],
                default_value: "b".into(),
                ..var("PICK_TWO", pb::VariableType::Select)
            },
            pb::TemplateVariable {
                options: vec!["x".into()],
                default_value: "12x".into(),
                ..var("COUNT", pb::VariableType::Number)
            },
            pb::TemplateVariable {
                label: String::new(),
                pattern: "[a-z]+".into(),
                default_value: "ABC".into(),
                ..var("lower", pb::VariableType::String)
            },
            pb::TemplateVariable {
                r#type: 42,
                ..var("TYPED", pb::VariableType::String)
            },
            var("DB_PASSWORD", pb::VariableType::Secret),
            var("API_TOKEN", pb::VariableType::Secret),
        ];
        t.generated.push(pb::GeneratedValue {
            name: "KEY".into(),
            kind: 7,
            length: 8,
        });
        t.notes = "${DB_PASSWORD} ${API_TOKEN} ${WHO}".into();
        assert_eq!(
            violated(|v| validate(&t, v)),
            [
                "template.variables[0].name",
                "template.variables[1].name",
                "template.variables[2].pattern",
                "template.variables[3].options",
                "template.variables[4].options[1]",
                "template.variables[4].default_value",
                "template.variables[5].options",
                "template.variables[5].default_value",
                "template.variables[6].name",
                "template.variables[6].label",
                "template.variables[6].default_value",
                "template.variables[7].type",
                "template.generated[0].name",
                "template.generated[1].kind",
                "template.generated[1].length",
                "template.notes",
                "template.notes",
                "template.notes",
            ]
        );
    }

    #[test]
    fn root_and_mounts_over_the_systems_own_paths_are_refused() {
        let mut t = sample();
        t.components[0].security = Some(pb::ComponentSecurity {
            run_as_user: 0,
            run_as_group: -1,
            fs_group: MAX_ID + 1,
        });
        t.components[1].security = Some(pb::ComponentSecurity {
            run_as_user: -5,
            ..Default::default()
        });
        for (i, path) in [
            "/proc",
            "/sys/fs",
            "/dev/",
            "/var/run/secrets/kubernetes.io",
        ]
        .into_iter()
        .enumerate()
        {
            t.components[0].volumes.push(pb::ComponentVolume {
                name: format!("v{i}"),
                mount_path: path.into(),
                size_gb: 1,
            });
        }
        // Not under a forbidden path: a prefix of the name only.
        t.components[1].volumes[0].mount_path = "/devdata".into();
        assert_eq!(
            violated(|v| validate(&t, v)),
            [
                "template.components[0].volumes",
                "template.components[0].volumes[1].mount_path",
                "template.components[0].volumes[2].mount_path",
                "template.components[0].volumes[3].mount_path",
                "template.components[0].volumes[4].mount_path",
                "template.components[0].security.run_as_user",
                "template.components[0].security.run_as_group",
                "template.components[0].security.fs_group",
                "template.components[1].security.run_as_user",
            ]
        );
        let mut v = Violations::new();
        validate(&t, &mut v);
        let e = v.finish().unwrap_err().to_string();
        assert!(e.contains("never run as root"), "{e}");
        assert_eq!(
            run_as(&sample().components[0]),
            Some((33, 33, 33)),
            "group and fs group default to the user"
        );
        assert_eq!(run_as(&sample().components[1]), None);
    }

    #[test]
    fn pinned_images_only() {
        for ok in [
            "docker.io/library/ghost:5.96-alpine",
            "localhost:5000/app:1",
            "ghcr.io/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(check_pinned_image(ok).is_ok(), "{ok} refused");
        }
        for bad in [
            "ghost",
            "ghost:latest",
            "localhost:5000/app",
            " ghost:5",
            "ghost:5 ",
        ] {
            assert!(check_pinned_image(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn exactly_one_component_exposes_a_port() {
        let mut t = sample();
        t.components[0].expose_port.clear();
        assert_eq!(violated(|v| validate(&t, v)), ["template.components"]);
        t.components.clear();
        assert_eq!(violated(|v| validate(&t, v)), ["template.components"]);
    }

    #[test]
    fn customer_values_are_checked_and_defaults_applied() {
        let var = |name: &str, ty: pb::VariableType| pb::TemplateVariable {
            name: name.into(),
            label: "Label".into(),
            r#type: ty as i32,
            ..Default::default()
        };
        let t = pb::ServiceTemplate {
            variables: vec![
                pb::TemplateVariable {
                    default_value: "UTC".into(),
                    ..var("TIMEZONE", pb::VariableType::String)
                },
                pb::TemplateVariable {
                    required: true,
                    ..var("ADMIN_EMAIL", pb::VariableType::Email)
                },
                var("WORKERS", pb::VariableType::Number),
                var("DEBUG", pb::VariableType::Boolean),
                pb::TemplateVariable {
                    options: vec!["small".into(), "large".into()],
                    default_value: "small".into(),
                    ..var("SIZE", pb::VariableType::Select)
                },
                pb::TemplateVariable {
                    pattern: "[a-z]{3,8}".into(),
                    ..var("HANDLE", pb::VariableType::String)
                },
                var("OPTIONAL", pb::VariableType::String),
            ],
            ..Default::default()
        };
        let mut v = Violations::new();
        let out = validate_values(
            &t,
            &values(&[
                ("ADMIN_EMAIL", "ada@example.org"),
                ("WORKERS", "-4"),
                ("DEBUG", "true"),
                ("HANDLE", "ada"),
                ("TIMEZONE", ""),
            ]),
            &mut v,
        );
        assert!(v.finish().is_ok());
        assert_eq!(
            out,
            values(&[
                ("TIMEZONE", "UTC"),
                ("ADMIN_EMAIL", "ada@example.org"),
                ("WORKERS", "-4"),
                ("DEBUG", "true"),
                ("SIZE", "small"),
                ("HANDLE", "ada"),
                ("OPTIONAL", ""),
            ])
        );

        let long = "a".repeat(MAX_VALUE_CHARS + 1);
        let given = values(&[
            ("WORKERS", "4.5"),
            ("DEBUG", "yes"),
            ("SIZE", "medium"),
            // Whole-value match: a match inside is not enough.
            ("HANDLE", "adam-lovelace"),
            ("OPTIONAL", &long),
            ("EXTRA", "x"),
        ]);
        assert_eq!(
            violated(|v| {
                validate_values(&t, &given, v);
            }),
            [
                "variables.EXTRA",
                "variables.ADMIN_EMAIL",
                "variables.WORKERS",
                "variables.DEBUG",
                "variables.SIZE",
                "variables.HANDLE",
                "variables.OPTIONAL",
            ]
        );
        for bad in [
            "ada",
            "ada@",
            "@x.org",
            "ada@org",
            "a da@x.org",
            "a@b@c.org",
            "a@x..org",
        ] {
            let given = values(&[("ADMIN_EMAIL", bad)]);
            assert_eq!(
                violated(|v| {
                    validate_values(&t, &given, v);
                }),
                ["variables.ADMIN_EMAIL"],
                "{bad:?} accepted"
            );
        }
        let given = values(&[
            ("ADMIN_EMAIL", "a@x.org"),
            ("WORKERS", "99999999999999999999"),
        ]);
        assert_eq!(
            violated(|v| {
                validate_values(&t, &given, v);
            }),
            ["variables.WORKERS"]
        );
    }
}
