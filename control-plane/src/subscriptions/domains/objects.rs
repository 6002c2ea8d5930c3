//! A customer's domains as Kubernetes objects, in the owner's namespace.
//! Pure: rows and settings in, server-side apply bodies out.
//!
//! - While any of the namespace's domains is PENDING, the token responder
//!   [`RESPONDER`]: a ConfigMap holding an nginx.conf and one key per
//!   pending token (its value the token), an unprivileged nginx (the
//!   owner's gate image) serving `/.well-known/minispod/<token>` from those
//!   keys, and a Service. The pod meets the namespace's restricted Pod
//!   Security profile, is covered by its NetworkPolicy (only the ingress
//!   controller's namespace and the namespace itself may reach it) and its
//!   share is added to the namespace's quota (`limits::quota`). A token
//!   added later reaches the running pod when the kubelet refreshes the
//!   ConfigMap volume (about a minute); the checks before that fail and are
//!   retried.
//! - Per domain, the Ingress [`ingress_name`]: while PENDING one Exact rule,
//!   `http://<host>/.well-known/minispod/<token>` → the responder; once
//!   verified, `<host>/` → the subscription's exposed Service (what its own
//!   Ingress routes to), with TLS in the Secret [`tls_secret`] through the
//!   custom-domain ClusterIssuer when one is configured.
//!
//! Names start `minispod--` and cannot be a subscription's: those are
//! `<name>` and `<name>-tls` (Ingress, TLS Secret; a name has at most 30
//! characters, ours 33 before `-tls`), `<name>-<component>...` (neither
//! part starts or ends with a dash, so `minispod--domains` is none).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{check::CHALLENGE_PREFIX, queries::DomainRow};
use crate::subscriptions::{
    gate,
    render::{MANAGED_BY, RenderSettings, SUBSCRIPTION_LABEL, USER_LABEL},
};

/// Name of the responder's ConfigMap, Deployment and Service.
pub const RESPONDER: &str = "minispod--domains";
/// Label naming the domain (its id) on its Ingress.
pub const DOMAIN_LABEL: &str = "minispod.dev/domain";
/// The responder's port (its container's, unprivileged) and its name.
const PORT: i32 = 8080;
const PORT_NAME: &str = "http";
/// Where the responder's config and tokens are mounted, and its scratch.
const CONF_DIR: &str = "/etc/minispod-domains/conf";
const TOKENS_DIR: &str = "/etc/minispod-domains/tokens";
const RUN_DIR: &str = "/tmp/minispod-domains/";
/// The ConfigMap key of the responder's nginx.conf.
const CONF_KEY: &str = "nginx.conf";
/// The user the responder runs as (the unprivileged nginx image's own).
const RESPONDER_UID: i64 = 101;
/// CPU the responder requests, millicores (added to the quota, not to the
/// customer's usage: it is the installation's).
pub const RESPONDER_CPU_MILLICORES: i64 = gate::CPU_REQUEST_MILLICORES;
/// Memory the responder may use, MiB (request and limit in the quota).
pub const RESPONDER_MEMORY_MB: i64 = gate::MEMORY_LIMIT_MB;

/// The Ingress of domain `id`.
pub fn ingress_name(id: &str) -> String {
    format!("minispod--domain-{}", short(id))
}

/// The TLS Secret of domain `id` (cert-manager names its Certificate the
/// same).
pub fn tls_secret(id: &str) -> String {
    format!("{}-tls", ingress_name(id))
}

/// The first 16 hex digits of a UUID: unique enough inside one namespace.
fn short(id: &str) -> String {
    id.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase()
}

fn labels(user_id: &str) -> Value {
    json!({
        MANAGED_BY.0: MANAGED_BY.1,
        USER_LABEL: user_id,
        "app.kubernetes.io/name": "minispod-domains",
    })
}

/// The responder's nginx.conf: `/.well-known/minispod/<32 hex>` answers the
/// file of that name from the tokens' mount (the token itself), anything
/// else 404. Paths relative to the `-p` prefix, as the gate's.
pub fn nginx_conf() -> String {
    format!(
        r#"# The domain ownership responder of a MiniSpod namespace, rendered by the
# control plane: it answers the tokens of the namespace's pending domains.
worker_processes 1;
pid nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path client_body;
    proxy_temp_path proxy;
    fastcgi_temp_path fastcgi;
    uwsgi_temp_path uwsgi;
    scgi_temp_path scgi;
    server {{
        listen {PORT};
        default_type text/plain;
        location ~ "^{prefix}([0-9a-f]{{32}})$" {{
            alias {TOKENS_DIR}/$1;
        }}
        location / {{
            return 404;
        }}
    }}
}}
"#,
        prefix = CHALLENGE_PREFIX.replace('.', "\\.")
    )
}

/// The responder of namespace `ns` (owner `user_id`) serving `tokens`:
/// ConfigMap, Deployment and Service, in apply order.
pub fn responder(ns: &str, user_id: &str, tokens: &BTreeSet<String>, image: &str) -> Vec<Value> {
    let labels = labels(user_id);
    let mut data = serde_json::Map::new();
    data.insert(CONF_KEY.into(), json!(nginx_conf()));
    for t in tokens {
        data.insert(t.clone(), json!(format!("{t}\n")));
    }
    let selector =
        json!({ "app.kubernetes.io/name": "minispod-domains", MANAGED_BY.0: MANAGED_BY.1 });
    let meta = json!({ "name": RESPONDER, "namespace": ns, "labels": labels });
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "data": data,
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "strategy": { "type": "Recreate" },
                "selector": { "matchLabels": selector },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": {
                        "enableServiceLinks": false,
                        "automountServiceAccountToken": false,
                        "securityContext": {
                            "runAsNonRoot": true,
                            "runAsUser": RESPONDER_UID,
                            "runAsGroup": RESPONDER_UID,
                            "seccompProfile": { "type": "RuntimeDefault" },
                        },
                        "containers": [{
                            "name": "responder",
                            "image": image,
                            "command": ["nginx"],
                            "args": ["-p", RUN_DIR, "-c", format!("{CONF_DIR}/{CONF_KEY}"), "-e", "stderr", "-g", "daemon off;"],
                            "ports": [{ "name": PORT_NAME, "containerPort": PORT, "protocol": "TCP" }],
                            "resources": {
                                "requests": {
                                    "cpu": format!("{RESPONDER_CPU_MILLICORES}m"),
                                    "memory": format!("{}Mi", gate::MEMORY_REQUEST_MB),
                                },
                                "limits": { "memory": format!("{RESPONDER_MEMORY_MB}Mi") },
                            },
                            "readinessProbe": { "tcpSocket": { "port": PORT_NAME }, "periodSeconds": 10 },
                            "volumeMounts": [
                                { "name": "conf", "mountPath": CONF_DIR, "readOnly": true },
                                { "name": "tokens", "mountPath": TOKENS_DIR, "readOnly": true },
                                { "name": "run", "mountPath": RUN_DIR },
                            ],
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "capabilities": { "drop": ["ALL"] },
                                "privileged": false,
                                "runAsNonRoot": true,
                                "seccompProfile": { "type": "RuntimeDefault" },
                            },
                        }],
                        "volumes": [
                            { "name": "conf", "configMap": { "name": RESPONDER, "items": [{ "key": CONF_KEY, "path": CONF_KEY }] } },
                            { "name": "tokens", "configMap": { "name": RESPONDER } },
                            { "name": "run", "emptyDir": { "sizeLimit": "16Mi" } },
                        ],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [{ "name": PORT_NAME, "port": 80, "targetPort": PORT_NAME, "protocol": "TCP" }],
            },
        }),
    ]
}

fn ingress(ns: &str, d: &DomainRow, s: &RenderSettings, path: Value) -> Value {
    let mut ingress = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": ingress_name(&d.id),
            "namespace": ns,
            "labels": {
                MANAGED_BY.0: MANAGED_BY.1,
                SUBSCRIPTION_LABEL: d.subscription_id,
                DOMAIN_LABEL: d.id,
            },
        },
        "spec": { "rules": [{ "host": d.host, "http": { "paths": [path] } }] },
    });
    if !s.ingress_class.is_empty() {
        ingress["spec"]["ingressClassName"] = json!(s.ingress_class);
    }
    ingress
}

/// The Ingress of PENDING domain `d`: only its check URL, to the responder.
pub fn challenge_ingress(ns: &str, d: &DomainRow, s: &RenderSettings) -> Value {
    ingress(
        ns,
        d,
        s,
        json!({
            "path": format!("{CHALLENGE_PREFIX}{}", d.token),
            "pathType": "Exact",
            "backend": { "service": { "name": RESPONDER, "port": { "name": PORT_NAME } } },
        }),
    )
}

/// The Ingress of verified domain `d`: every path to `service`'s port
/// `port` (the subscription's exposed component), with TLS through
/// `issuer` (a cert-manager ClusterIssuer) unless it is empty.
pub fn serving_ingress(
    ns: &str,
    d: &DomainRow,
    s: &RenderSettings,
    service: &str,
    port: &str,
    issuer: &str,
) -> Value {
    let mut ingress = ingress(
        ns,
        d,
        s,
        json!({
            "path": "/",
            "pathType": "Prefix",
            "backend": { "service": { "name": service, "port": { "name": port } } },
        }),
    );
    if !issuer.is_empty() {
        ingress["metadata"]["annotations"] = json!({ "cert-manager.io/cluster-issuer": issuer });
        ingress["spec"]["tls"] = json!([{ "hosts": [d.host], "secretName": tls_secret(&d.id) }]);
    }
    ingress
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_a_label_and_cannot_be_a_subscriptions() {
        let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert_eq!(ingress_name(id), "minispod--domain-0f8fad5bd9cb469f");
        assert_eq!(tls_secret(id), "minispod--domain-0f8fad5bd9cb469f-tls");
        assert!(tls_secret(id).len() <= 63);
    }

    #[test]
    fn the_responder_serves_only_token_shaped_paths_from_its_mount() {
        let conf = nginx_conf();
        assert!(
            conf.contains(r#"location ~ "^/\.well-known/minispod/([0-9a-f]{32})$""#),
            "{conf}"
        );
        assert!(conf.contains("alias /etc/minispod-domains/tokens/$1;"));
        let tokens = BTreeSet::from(["ab".repeat(16)]);
        let objects = responder("ms-u", "u", &tokens, "nginx");
        assert_eq!(
            objects[0]["data"]["abababababababababababababababab"],
            "abababababababababababababababab\n"
        );
        assert_eq!(objects[0]["data"]["nginx.conf"], conf);
    }
}
