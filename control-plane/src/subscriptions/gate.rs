//! The owner's gate: a new subscription is reachable only by its owner
//! until the owner opens it to everyone.
//!
//! n8n, Ghost and WordPress each let the first visitor create the
//! instance's administrator, so whoever finds `<name>.<apps-domain>` first
//! would own it. While a subscription is closed, the Service of its exposed
//! component leads to a small nginx in the same pod (the gate) instead of
//! the application. The gate answers 403 to everyone but a browser that
//! holds the owner's token in a cookie; the owner's console shows a link
//! (`https://<host>/.minispod/open?token=…`) that sets that cookie and goes
//! on to the application. Opening the subscription to everyone renders the
//! Service straight to the application again, and the gate's container goes.
//!
//! Why a gate in the pod rather than forward auth at the ingress
//! controller: it works with any ingress controller (Traefik's forward auth
//! needs its Middleware CRD, ingress-nginx its own annotations), the
//! cluster never needs to reach the control plane (which may sit outside
//! it, behind NAT), and it needs no permission beyond the tenant objects.
//! Its cost is one small container (and its image) per closed subscription.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use minispod_proto::v1 as pb;
use rand::RngCore;
use serde_json::{Value, json};

/// The gate's container, port and volume names (templates may not use the
/// `minispod-` prefix, see `catalog::template::validate`).
pub const CONTAINER: &str = "minispod-gate";
/// Name of the gate's container port; the Service's target while closed.
pub const PORT_NAME: &str = "minispod-gate";
/// Key of the gate's nginx.conf in the subscription's Secret.
pub const CONF_KEY: &str = "minispod-gate.conf";
/// Path the owner's link opens.
pub const OPEN_PATH: &str = "/.minispod/open";
/// The cookie that lets the owner's browser through.
pub const COOKIE: &str = "minispod_owner";
/// Where the gate's config is mounted, read-only.
pub const CONF_DIR: &str = "/etc/minispod-gate";
/// The gate's writable prefix (pid file, temporary files): an emptyDir.
pub const RUN_DIR: &str = "/tmp/minispod-gate/";
/// CPU the gate requests, millicores (counted in the customer's usage).
pub const CPU_REQUEST_MILLICORES: i64 = 10;
/// Memory the gate requests, MiB.
pub const MEMORY_REQUEST_MB: i64 = 16;
/// Memory the gate may use, MiB (counted in the customer's usage).
pub const MEMORY_LIMIT_MB: i64 = 32;

/// A new owner's token: 32 random bytes, base64url (safe in a cookie, a
/// query string and an nginx string without escaping).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The owner's link through the gate of the subscription served at `url`.
pub fn owner_url(url: &str, token: &str) -> String {
    format!("{url}{OPEN_PATH}?token={token}")
}

/// The port the gate listens on in `c`'s pod: the first from 8080 up that
/// none of the component's ports takes (the pod shares one network
/// namespace).
pub fn port(c: &pb::TemplateComponent) -> i32 {
    (8080..)
        .find(|p| c.ports.iter().all(|x| x.container_port != *p))
        .unwrap_or(8080)
}

/// The gate's nginx.conf: listen on `listen`, let through to
/// `127.0.0.1:upstream` only requests that carry `token` in the cookie;
/// [`OPEN_PATH`]`?token=<token>` sets the cookie. Paths are relative to
/// the prefix nginx runs with (`-p`, [`RUN_DIR`] in the pod).
pub fn nginx_conf(token: &str, listen: i32, upstream: i32) -> String {
    debug_assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    format!(
        r#"# The owner's gate of a MiniSpod subscription, rendered by the control
# plane: only the owner's browser gets through until the owner opens the
# subscription to everyone.
worker_processes 1;
pid nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path client_body;
    proxy_temp_path proxy;
    fastcgi_temp_path fastcgi;
    uwsgi_temp_path uwsgi;
    scgi_temp_path scgi;
    # The application decides what it takes; nothing is buffered here.
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    map $cookie_{COOKIE} $minispod_owner {{ default 0; "{token}" 1; }}
    map $arg_token $minispod_token {{ default 0; "{token}" 1; }}
    map $http_upgrade $minispod_connection {{ default upgrade; "" ""; }}
    map $http_x_forwarded_proto $minispod_secure {{ default ""; https "; Secure"; }}
    server {{
        listen {listen};
        absolute_redirect off;
        error_page 403 @closed;
        location = {OPEN_PATH} {{
            if ($minispod_token = 0) {{ return 403; }}
            add_header Set-Cookie "{COOKIE}={token}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax$minispod_secure" always;
            add_header Cache-Control "no-store" always;
            add_header Referrer-Policy "no-referrer" always;
            return 303 /;
        }}
        location / {{
            if ($minispod_owner = 0) {{ return 403; }}
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $minispod_connection;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
        location @closed {{
            default_type "text/html; charset=utf-8";
            add_header Cache-Control "no-store" always;
            return 403 "<!doctype html><html lang=en><meta charset=utf-8><title>Not open yet</title><h1>Not open yet</h1><p>Its owner is setting this application up. If it is yours, open it from your MiniSpod console.</p></html>\n";
        }}
    }}
}}
"#
    )
}

/// The gate's container, listening on `port`, running `image`.
pub fn container(image: &str, port: i32, security_context: Value) -> Value {
    json!({
        "name": CONTAINER,
        "image": image,
        // nginx itself, not the image's entrypoint (whose scripts rewrite
        // files under /etc/nginx).
        "command": ["nginx"],
        "args": ["-p", RUN_DIR, "-c", format!("{CONF_DIR}/nginx.conf"), "-e", "stderr", "-g", "daemon off;"],
        "ports": [{ "name": PORT_NAME, "containerPort": port, "protocol": "TCP" }],
        "resources": {
            "requests": {
                "cpu": format!("{CPU_REQUEST_MILLICORES}m"),
                "memory": format!("{MEMORY_REQUEST_MB}Mi"),
            },
            "limits": { "memory": format!("{MEMORY_LIMIT_MB}Mi") },
        },
        "readinessProbe": { "tcpSocket": { "port": PORT_NAME }, "periodSeconds": 10 },
        "volumeMounts": [
            { "name": "minispod-gate-conf", "mountPath": CONF_DIR, "readOnly": true },
            { "name": "minispod-gate-run", "mountPath": RUN_DIR },
        ],
        "securityContext": security_context,
    })
}

/// The gate's volumes: its config from the subscription's Secret `secret`
/// and a small scratch directory.
pub fn volumes(secret: &str) -> [Value; 2] {
    [
        json!({
            "name": "minispod-gate-conf",
            "secret": { "secretName": secret, "items": [{ "key": CONF_KEY, "path": "nginx.conf" }] },
        }),
        json!({ "name": "minispod-gate-run", "emptyDir": { "sizeLimit": "64Mi" } }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_safe_in_a_config() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn the_gate_listens_where_the_component_does_not() {
        let mut c = pb::TemplateComponent {
            ports: vec![pb::ComponentPort {
                name: "http".into(),
                container_port: 80,
            }],
            ..Default::default()
        };
        assert_eq!(port(&c), 8080);
        c.ports[0].container_port = 8080;
        c.ports.push(pb::ComponentPort {
            name: "admin".into(),
            container_port: 8081,
        });
        assert_eq!(port(&c), 8082);
    }
}
