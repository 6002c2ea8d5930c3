//! A subscription as Kubernetes objects: what the reconciler applies.
//!
//! Everything here is pure: a template, the subscription's values and the
//! settings in, JSON objects out (server-side apply bodies). Names:
//! namespace `ms-<user id>`; per subscription `<name>-<component>` for the
//! workload and its Service, `<name>-<component>-<volume>` for claims,
//! `<name>-secrets` and an Ingress `<name>`. Subscription names are unique
//! across the installation, so names never collide inside a namespace and
//! host names never collide at all.

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::STANDARD};
use minispod_proto::v1 as pb;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::gate;
use crate::catalog::template;

mod network;

use network::network_policy;
pub use network::{ALWAYS_REFUSED, DNS_LABEL, DNS_NAMESPACE, parse_cidr, refused_ranges};

/// Label on every object the control plane makes for subscriptions.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "minispod");
/// Label naming the subscription (its id).
pub const SUBSCRIPTION_LABEL: &str = "minispod.dev/subscription";
/// Label naming the template component.
pub const COMPONENT_LABEL: &str = "minispod.dev/component";
/// Label naming the owner on namespaces.
pub const USER_LABEL: &str = "minispod.dev/user";
/// Pod annotation that changes on RestartSubscription (a rollout).
pub const RESTARTED_AT: &str = "minispod.dev/restarted-at";
/// Pod annotation with a hash of the Secret's data, so a changed secret
/// value rolls the pods that read it.
pub const SECRET_HASH: &str = "minispod.dev/secret-hash";
/// Name of the per-namespace quota, limit range and network policy.
pub const NAMESPACE_OBJECTS: &str = "minispod";

/// Cluster-wide settings of what is rendered.
#[derive(Debug, Clone)]
pub struct RenderSettings {
    /// Host names are `<subscription>.<apps_domain>`.
    pub apps_domain: String,
    /// spec.ingressClassName, or empty for the cluster's default (Traefik on K3s).
    pub ingress_class: String,
    /// A cert-manager ClusterIssuer for TLS, or empty for none.
    pub cert_issuer: String,
    /// The namespace the ingress controller runs in (allowed through the
    /// network policy).
    pub ingress_namespace: String,
    /// The cluster's pod, service and node address ranges (CIDRs, IPv4 or
    /// IPv6): customer pods may not open connections into them, except to
    /// their own namespace's pods and the cluster DNS.
    pub cluster_cidrs: Vec<String>,
    /// The user the cluster authenticates the control plane as: the
    /// subject of the RoleBinding in each customer namespace.
    pub control_plane_user: String,
    /// The image of the owner's gate (an unprivileged nginx, see
    /// `subscriptions::gate`).
    pub gate_image: String,
}

/// The Pod Security Admission level every customer namespace enforces
/// (and warns and audits at): every rendered pod meets it, whatever the
/// template, because templates cannot express what it forbids.
pub const POD_SECURITY_LEVEL: &str = "restricted";

/// One subscription as the renderer needs it.
#[derive(Debug, Clone)]
pub struct Instance<'a> {
    /// Subscription id.
    pub id: &'a str,
    /// Subscription name.
    pub name: &'a str,
    /// Owner.
    pub user_id: &'a str,
    /// The catalog slug (app.kubernetes.io/name).
    pub slug: &'a str,
    /// The template it was created with.
    pub template: &'a pb::ServiceTemplate,
    /// Variable values (effective, SECRET ones included).
    pub variables: &'a BTreeMap<String, String>,
    /// Generated values.
    pub generated: &'a BTreeMap<String, String>,
    /// Scaled to zero.
    pub suspended: bool,
    /// Components left running while `suspended` (a backup's hold of a
    /// template whose components say BACKUP_MODE_LIVE).
    pub live: &'a [String],
    /// Unix ms of the last restart, 0 for none.
    pub restarted_at: i64,
    /// The owner's gate token while the subscription is closed to all but
    /// its owner; None when it is open to everyone.
    pub gate: Option<&'a str>,
}

/// The customer's namespace.
pub fn namespace_of(user_id: &str) -> String {
    format!("ms-{}", user_id.to_ascii_lowercase())
}

/// The host name of a subscription.
pub fn host(name: &str, s: &RenderSettings) -> String {
    format!("{name}.{}", s.apps_domain)
}

/// Workload and Service name of a component.
pub fn component_object(sub: &str, component: &str) -> String {
    format!("{sub}-{component}")
}

/// The claim of a component's volume.
pub fn volume_claim(sub: &str, component: &str, volume: &str) -> String {
    format!("{sub}-{component}-{volume}")
}

/// The Secret of a subscription.
pub fn secret_name(sub: &str) -> String {
    format!("{sub}-secrets")
}

/// Every value a placeholder can name, for `inst`.
pub fn values(inst: &Instance<'_>, s: &RenderSettings) -> BTreeMap<String, String> {
    let mut v = inst.variables.clone();
    v.extend(inst.generated.iter().map(|(k, x)| (k.clone(), x.clone())));
    let domain = host(inst.name, s);
    v.insert("SUBSCRIPTION_NAME".into(), inst.name.to_owned());
    v.insert("PUBLIC_URL".into(), format!("https://{domain}"));
    v.insert("DOMAIN".into(), domain);
    for c in &inst.template.components {
        v.insert(
            template::host_placeholder(&c.name),
            component_object(inst.name, &c.name),
        );
    }
    v
}

/// The post-install notes with placeholders filled (secrets are not).
pub fn notes(inst: &Instance<'_>, s: &RenderSettings) -> String {
    let mut v = values(inst, s);
    for n in template::secret_names(inst.template) {
        v.insert(n, "(secret)".into());
    }
    template::expand(&inst.template.notes, &v).unwrap_or_else(|_| inst.template.notes.clone())
}

fn labels(inst: &Instance<'_>, component: Option<&str>) -> Value {
    let mut l = json!({
        MANAGED_BY.0: MANAGED_BY.1,
        SUBSCRIPTION_LABEL: inst.id,
        "app.kubernetes.io/name": inst.slug,
        "app.kubernetes.io/instance": inst.name,
    });
    if let Some(c) = component {
        l[COMPONENT_LABEL] = json!(c);
        l["app.kubernetes.io/component"] = json!(c);
    }
    l
}

fn selector(inst: &Instance<'_>, component: &str) -> Value {
    json!({ SUBSCRIPTION_LABEL: inst.id, COMPONENT_LABEL: component })
}

fn meta(name: &str, namespace: &str, labels: Value) -> Value {
    json!({ "name": name, "namespace": namespace, "labels": labels })
}

/// Objects shared by a customer's subscriptions: namespace, quota (the
/// sums of `totals`), limit range and network policy.
pub fn namespace_objects(user_id: &str, quota: &Quota, s: &RenderSettings) -> Vec<Value> {
    let ns = namespace_of(user_id);
    let labels = json!({ MANAGED_BY.0: MANAGED_BY.1, USER_LABEL: user_id });
    let mut ns_labels = labels.clone();
    for mode in ["enforce", "warn", "audit"] {
        ns_labels[format!("pod-security.kubernetes.io/{mode}")] = json!(POD_SECURITY_LEVEL);
        ns_labels[format!("pod-security.kubernetes.io/{mode}-version")] = json!("latest");
    }
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": ns, "labels": ns_labels },
        }),
        tenant_role_binding(&ns, &labels, &s.control_plane_user),
        json!({
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": meta(NAMESPACE_OBJECTS, &ns, labels.clone()),
            "spec": { "hard": {
                "requests.cpu": format!("{}m", quota.cpu_millicores),
                "requests.memory": format!("{}Mi", quota.memory_mb),
                "limits.memory": format!("{}Mi", quota.memory_mb),
                "requests.storage": format!("{}Gi", quota.storage_gb),
                "persistentvolumeclaims": quota.claims.to_string(),
                "pods": quota.pods.to_string(),
            }},
        }),
        // Containers always carry requests and a memory limit; the range
        // covers anything else started in the namespace. No default CPU
        // limit: a template may run without one.
        json!({
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": meta(NAMESPACE_OBJECTS, &ns, labels.clone()),
            "spec": { "limits": [{
                "type": "Container",
                "defaultRequest": { "cpu": "100m", "memory": "128Mi" },
                "default": { "memory": "256Mi" },
            }]},
        }),
        network_policy(&ns, labels, s),
    ]
}

/// A customer namespace's ResourceQuota (`subscriptions::limits::quota`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// CPU requests in all, millicores: the customer's limit.
    pub cpu_millicores: i64,
    /// Memory requests and limits in all, MiB: the customer's limit.
    pub memory_mb: i64,
    /// Storage requests in all, GiB: the customer's limit.
    pub storage_gb: i64,
    /// PersistentVolumeClaims: those of live subscriptions and retained ones.
    pub claims: i64,
    /// Pods: one per component of the live subscriptions.
    pub pods: i64,
}

/// The pod's securityContext: never root, the runtime's default seccomp
/// profile, the template's user and groups, and unprivileged low ports for
/// a component that listens below 1024.
fn pod_security_context(c: &pb::TemplateComponent) -> Value {
    let mut sc = json!({
        "runAsNonRoot": true,
        "seccompProfile": { "type": "RuntimeDefault" },
    });
    if let Some((uid, gid, fs_group)) = template::run_as(c) {
        sc["runAsUser"] = json!(uid);
        sc["runAsGroup"] = json!(gid);
        sc["fsGroup"] = json!(fs_group);
        sc["fsGroupChangePolicy"] = json!("OnRootMismatch");
    }
    if c.ports.iter().any(|p| p.container_port < 1024) {
        // A safe, namespaced sysctl (allowed by the restricted profile and
        // by every kubelet): the pod's own network namespace lets non-root
        // processes bind any port, with no capability needed.
        sc["sysctls"] = json!([{ "name": "net.ipv4.ip_unprivileged_port_start", "value": "0" }]);
    }
    sc
}

/// The container's securityContext: no privilege escalation (setuid
/// binaries do not gain), no capabilities, non-root, RuntimeDefault seccomp.
fn container_security_context() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "capabilities": { "drop": ["ALL"] },
        "privileged": false,
        "runAsNonRoot": true,
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

/// The RoleBinding `minispod-control-plane` that gives `user` (the control
/// plane) the ClusterRole `minispod-tenant` in the customer's namespace
/// `ns`: what it may do with tenant objects there, and nowhere else
/// (deploy/kubernetes/control-plane-rbac.yaml). A service account's user
/// name (`system:serviceaccount:<namespace>:<name>`) becomes a
/// ServiceAccount subject, any other a User.
pub fn tenant_role_binding(ns: &str, labels: &Value, user: &str) -> Value {
    let subject = match user
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    {
        Some((namespace, name)) => {
            json!({ "kind": "ServiceAccount", "name": name, "namespace": namespace })
        }
        None => json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }),
    };
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta("minispod-control-plane", ns, labels.clone()),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "minispod-tenant",
        },
        "subjects": [subject],
    })
}

/// What a template asks of a namespace's quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Sum of CPU requests.
    pub cpu_request_millicores: i64,
    /// Sum of memory requests.
    pub memory_request_mb: i64,
    /// Sum of memory limits.
    pub memory_limit_mb: i64,
    /// Sum of volume sizes.
    pub storage_gb: i64,
    /// Number of volumes.
    pub volumes: i64,
    /// Number of pods (one per component).
    pub pods: i64,
}

impl Totals {
    /// What `t` asks for.
    pub fn of(t: &pb::ServiceTemplate) -> Totals {
        let mut out = Totals::default();
        for c in &t.components {
            let r = pod_resources(c);
            out.cpu_request_millicores += r.cpu_request_millicores;
            out.memory_request_mb += r.memory_request_mb;
            out.memory_limit_mb += r.memory_limit_mb;
            out.storage_gb += c.volumes.iter().map(|v| i64::from(v.size_gb)).sum::<i64>();
            out.volumes += c.volumes.len() as i64;
            out.pods += 1;
        }
        out
    }

    /// Adds `o`.
    pub fn add(&mut self, o: Totals) {
        self.cpu_request_millicores += o.cpu_request_millicores;
        self.memory_request_mb += o.memory_request_mb;
        self.memory_limit_mb += o.memory_limit_mb;
        self.storage_gb += o.storage_gb;
        self.volumes += o.volumes;
        self.pods += o.pods;
    }
}

/// What the pod of component `c` requests and may use (only the CPU and
/// memory figures of the [`Totals`] are set): its container's and, for
/// the exposed component, the owner's gate's. The gate runs while the
/// subscription is closed, and it may be closed again any time, so it is
/// always counted: in admission, the customer's usage and the quota.
pub fn pod_resources(c: &pb::TemplateComponent) -> Totals {
    let r = c.resources.unwrap_or_default();
    let mut out = Totals {
        cpu_request_millicores: i64::from(r.cpu_request_millicores),
        memory_request_mb: i64::from(r.memory_request_mb),
        memory_limit_mb: i64::from(r.memory_limit_mb.max(r.memory_request_mb)),
        ..Totals::default()
    };
    if !c.expose_port.is_empty() {
        out.cpu_request_millicores += gate::CPU_REQUEST_MILLICORES;
        out.memory_request_mb += gate::MEMORY_REQUEST_MB;
        out.memory_limit_mb += gate::MEMORY_LIMIT_MB;
    }
    out
}

/// Secret data key of a component's environment variable.
fn secret_key(component: &str, env: &str) -> String {
    format!("{component}.{env}")
}

fn probe(p: &pb::Probe) -> Value {
    let mut out = match &p.check {
        Some(pb::probe::Check::HttpPath(path)) => {
            json!({ "httpGet": { "path": path, "port": p.port } })
        }
        _ => json!({ "tcpSocket": { "port": p.port } }),
    };
    out["initialDelaySeconds"] = json!(p.initial_delay_seconds);
    out["periodSeconds"] = json!(if p.period_seconds > 0 {
        p.period_seconds
    } else {
        10
    });
    out["failureThreshold"] = json!(if p.failure_threshold > 0 {
        p.failure_threshold
    } else {
        3
    });
    out
}

/// The objects of one subscription, in apply order (Secret and claims
/// before the workloads that use them, the Ingress last). Err names a
/// placeholder the template and values cannot fill.
pub fn subscription_objects(inst: &Instance<'_>, s: &RenderSettings) -> Result<Vec<Value>, String> {
    let ns = namespace_of(inst.user_id);
    let values = values(inst, s);
    let secrets = template::secret_names(inst.template);
    let mut secret_data = BTreeMap::new();
    for g in inst.generated {
        secret_data.insert(format!("generated.{}", g.0), g.1.clone());
    }
    let mut objects = Vec::new();
    let mut workloads = Vec::new();
    for c in &inst.template.components {
        let mut env = Vec::new();
        for e in &c.env {
            let used = template::placeholders(&e.value)?;
            let value = template::expand(&e.value, &values)?;
            if used.iter().any(|u| secrets.contains(u)) {
                let key = secret_key(&c.name, &e.name);
                secret_data.insert(key.clone(), value);
                env.push(json!({ "name": e.name, "valueFrom": { "secretKeyRef": {
                    "name": secret_name(inst.name), "key": key,
                }}}));
            } else {
                env.push(json!({ "name": e.name, "value": value }));
            }
        }
        let args = c
            .args
            .iter()
            .map(|a| template::expand(a, &values))
            .collect::<Result<Vec<_>, _>>()?;
        let r = c.resources.unwrap_or_default();
        let mut limits =
            json!({ "memory": format!("{}Mi", r.memory_limit_mb.max(r.memory_request_mb)) });
        if r.cpu_limit_millicores > 0 {
            limits["cpu"] = json!(format!("{}m", r.cpu_limit_millicores));
        }
        let mut container = json!({
            "name": c.name,
            "image": c.image,
            "ports": c.ports.iter().map(|p| json!({
                "name": p.name, "containerPort": p.container_port, "protocol": "TCP",
            })).collect::<Vec<_>>(),
            "env": env,
            "resources": {
                "requests": {
                    "cpu": format!("{}m", r.cpu_request_millicores),
                    "memory": format!("{}Mi", r.memory_request_mb),
                },
                "limits": limits,
            },
            "volumeMounts": c.volumes.iter().map(|v| json!({
                "name": v.name, "mountPath": v.mount_path,
            })).collect::<Vec<_>>(),
            "securityContext": container_security_context(),
        });
        if !args.is_empty() {
            container["args"] = json!(args);
        }
        if let Some(p) = &c.readiness_probe {
            container["readinessProbe"] = probe(p);
        }
        if let Some(p) = &c.liveness_probe {
            container["livenessProbe"] = probe(p);
        }
        for v in &c.volumes {
            objects.push(json!({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": meta(&volume_claim(inst.name, &c.name, &v.name), &ns, labels(inst, Some(&c.name))),
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": { "requests": { "storage": format!("{}Gi", v.size_gb) } },
                },
            }));
        }
        let mut containers = vec![container];
        let mut volumes = c
            .volumes
            .iter()
            .map(|v| json!({
                "name": v.name,
                "persistentVolumeClaim": { "claimName": volume_claim(inst.name, &c.name, &v.name) },
            }))
            .collect::<Vec<_>>();
        let gated = inst.gate.filter(|_| !c.expose_port.is_empty());
        if let Some(token) = gated {
            let listen = gate::port(c);
            let upstream = c
                .ports
                .iter()
                .find(|p| p.name == c.expose_port)
                .map_or(0, |p| p.container_port);
            secret_data.insert(
                gate::CONF_KEY.into(),
                gate::nginx_conf(token, listen, upstream),
            );
            containers.push(gate::container(
                &s.gate_image,
                listen,
                container_security_context(),
            ));
            volumes.extend(gate::volumes(&secret_name(inst.name)));
        }
        let pod_spec = json!({
            "containers": containers,
            "volumes": volumes,
            // Service links would put FOO_PORT=tcp://... into the
            // environment, which apps such as n8n read as their own settings.
            "enableServiceLinks": false,
            // Customer code gets no credentials for the API server.
            "automountServiceAccountToken": false,
            "securityContext": pod_security_context(c),
        });
        let name = component_object(inst.name, &c.name);
        let stateful = c.workload() == pb::WorkloadKind::StatefulSet;
        let mut spec = json!({
            "replicas": if inst.suspended && !inst.live.contains(&c.name) { 0 } else { 1 },
            "selector": { "matchLabels": selector(inst, &c.name) },
            "template": {
                "metadata": { "labels": labels(inst, Some(&c.name)), "annotations": {} },
                "spec": pod_spec,
            },
        });
        if stateful {
            spec["serviceName"] = json!(name);
        } else {
            // One replica and quota-bounded namespaces: a surge pod would
            // not fit, and a ReadWriteOnce volume has one writer.
            spec["strategy"] = json!({ "type": "Recreate" });
        }
        if inst.restarted_at > 0 {
            spec["template"]["metadata"]["annotations"][RESTARTED_AT] =
                json!(inst.restarted_at.to_string());
        }
        workloads.push((c, name, stateful, spec, gated.is_some()));
    }
    let hash = {
        let mut h = Sha256::new();
        for (k, v) in &secret_data {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        minispod_support::hex(&h.finalize()[..8])
    };
    let mut out = vec![json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(&secret_name(inst.name), &ns, labels(inst, None)),
        "type": "Opaque",
        "data": secret_data.iter().map(|(k, v)| (k.clone(), json!(STANDARD.encode(v)))).collect::<serde_json::Map<_, _>>(),
    })];
    out.append(&mut objects);
    let mut exposed = None;
    for (c, name, stateful, mut spec, gated) in workloads {
        spec["template"]["metadata"]["annotations"][SECRET_HASH] = json!(hash);
        out.push(json!({
            "apiVersion": "apps/v1",
            "kind": if stateful { "StatefulSet" } else { "Deployment" },
            "metadata": meta(&name, &ns, labels(inst, Some(&c.name))),
            "spec": spec,
        }));
        out.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(&name, &ns, labels(inst, Some(&c.name))),
            "spec": {
                "type": "ClusterIP",
                "selector": selector(inst, &c.name),
                // While the owner's gate is closed, the exposed port leads
                // to the gate, which alone reaches the application.
                "ports": c.ports.iter().map(|p| json!({
                    "name": p.name,
                    "port": p.container_port,
                    "targetPort": if gated && p.name == c.expose_port { gate::PORT_NAME } else { p.name.as_str() },
                    "protocol": "TCP",
                })).collect::<Vec<_>>(),
            },
        }));
        if !c.expose_port.is_empty() {
            exposed = Some((name, c.expose_port.clone()));
        }
    }
    if let Some((service, port)) = exposed {
        let host = host(inst.name, s);
        let mut ingress = json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": meta(inst.name, &ns, labels(inst, None)),
            "spec": { "rules": [{ "host": host, "http": { "paths": [{
                "path": "/",
                "pathType": "Prefix",
                "backend": { "service": { "name": service, "port": { "name": port } } },
            }]}}]},
        });
        if !s.ingress_class.is_empty() {
            ingress["spec"]["ingressClassName"] = json!(s.ingress_class);
        }
        if !s.cert_issuer.is_empty() {
            ingress["metadata"]["annotations"] =
                json!({ "cert-manager.io/cluster-issuer": s.cert_issuer });
            ingress["spec"]["tls"] =
                json!([{ "hosts": [host], "secretName": format!("{}-tls", inst.name) }]);
        }
        out.push(ingress);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(port: i32, security: Option<pb::ComponentSecurity>) -> pb::TemplateComponent {
        pb::TemplateComponent {
            name: "web".into(),
            ports: vec![pb::ComponentPort {
                name: "http".into(),
                container_port: port,
            }],
            security,
            ..Default::default()
        }
    }

    #[test]
    fn pods_run_as_the_template_says_and_low_ports_get_the_sysctl() {
        let sc = pod_security_context(&component(
            80,
            Some(pb::ComponentSecurity {
                run_as_user: 33,
                run_as_group: 0,
                fs_group: 0,
            }),
        ));
        assert_eq!(
            sc,
            json!({
                "runAsNonRoot": true,
                "runAsUser": 33, "runAsGroup": 33, "fsGroup": 33,
                "fsGroupChangePolicy": "OnRootMismatch",
                "seccompProfile": { "type": "RuntimeDefault" },
                "sysctls": [{ "name": "net.ipv4.ip_unprivileged_port_start", "value": "0" }],
            })
        );
        // Without security: the image's user, which must not be root.
        let sc = pod_security_context(&component(8080, None));
        assert_eq!(
            sc,
            json!({ "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } })
        );
    }
}
