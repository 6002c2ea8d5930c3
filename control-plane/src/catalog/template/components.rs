//! The rules of a template's components: names, images, ports, resources,
//! environment, volumes, probes and who they run as.

use std::collections::BTreeSet;

use minispod_proto::v1 as pb;

use super::MAX_COMPONENTS;
use super::names::{check_pinned_image, is_dns_label, is_env_name, is_port_name};
use super::placeholders::check_placeholders;
use crate::error::Violations;

/// Names the control plane gives its own containers, ports and volumes in
/// a subscription's pods (the owner's gate): a template may not take them.
const RESERVED_PREFIX: &str = "minispod-";
const RESERVED: &str = "must not start with \"minispod-\": MiniSpod names its own parts so";

pub(super) fn validate_components(
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

        if pb::BackupMode::try_from(c.backup).is_err() {
            v.add(&format!("{p}.backup"), "is not a BackupMode");
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
