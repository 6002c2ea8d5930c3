//! Webhooks: one JSON event as an HTTPS POST, signed so the receiver can
//! tell it came from this control plane.
//!
//! Headers: `x-minispod-signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>">` (the timestamp lets a receiver refuse replays),
//! `x-minispod-event` (the purpose, e.g. `worker_offline`) and
//! `x-minispod-delivery` (the outbox message id: the same on a retry, so a
//! receiver can drop a duplicate). A 2xx answer is delivery; 408, 429 and
//! 5xx are retried; any other answer is final. Only the receiver's status
//! line is kept (in the outbox's `last_error`), never its body: a webhook
//! must not become a way to read what an internal service answers.
//!
//! Where a webhook may go ([`WebhookPolicy`]): the host is resolved once,
//! every address it resolves to is checked, and the connection goes to a
//! checked address (no second lookup a DNS answer could change between the
//! check and the use). Loopback, link-local (cloud metadata at
//! 169.254.169.254), private (RFC 1918, CGNAT 100.64.0.0/10, IPv6 ULA),
//! unspecified, multicast, reserved and the cluster's ranges
//! (`--cluster-*-cidrs`, and `--webhook-deny-range`) are refused, and plain http:// too, except to
//! ranges an operator allows with `--webhook-allow-range`.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use sha2::Sha256;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::smtp::SendError;
use crate::rate_limit::Cidr;

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "x-minispod-signature";

/// How long one delivery may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Names that only ever mean something inside a cluster or a machine.
const INTERNAL_SUFFIXES: [&str; 5] = [
    ".localhost",
    ".svc",
    ".cluster.local",
    ".internal",
    ".local",
];

/// Where webhooks may be sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookPolicy {
    /// Ranges allowed although internal, plain http:// included
    /// (`--webhook-allow-range`).
    pub allow: Vec<Cidr>,
    /// Ranges refused besides the built-in internal ones: the cluster's
    /// pod, service and node ranges (`--cluster-*-cidrs`) and
    /// `--webhook-deny-range`.
    pub deny: Vec<Cidr>,
}

/// Why `ip` is not on the public internet, if it is not.
pub fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) reaches the IPv4 address inside it.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return internal_v4(Ipv4Addr::new(a, b, c, d));
            }
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_loopback() {
                Some("loopback")
            } else if s[0] & 0xffc0 == 0xfe80 || s[0] & 0xffc0 == 0xfec0 {
                Some("link-local")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if s[0..6] == [0, 0, 0, 0, 0, 0] {
                // IPv4-compatible (deprecated) and the rest of ::/96.
                Some("reserved")
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some("documentation")
            } else {
                None
            }
        }
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_private() {
        Some("private")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (CGNAT)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if a >= 240 || (a == 192 && b == 0 && c == 0) || (a == 198 && (b == 18 || b == 19)) {
        // Class E and broadcast, IETF protocol assignments, benchmarking.
        Some("reserved")
    } else if ip.is_documentation() {
        Some("documentation")
    } else {
        None
    }
}

impl WebhookPolicy {
    /// Whether an operator allowed `ip`'s range.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|c| c.contains(ip))
    }

    /// Ok when a webhook may connect to `ip`; else why not.
    pub fn permits(&self, ip: IpAddr, tls: bool) -> Result<(), String> {
        if self.allowed(ip) {
            return Ok(());
        }
        if let Some(c) = self.deny.iter().find(|c| c.contains(ip)) {
            return Err(format!("{ip} is in the cluster's range {c}"));
        }
        if let Some(kind) = internal_kind(ip) {
            return Err(format!("{ip} is a {kind} address"));
        }
        if !tls {
            return Err(format!(
                "plain http:// to {ip}: only https:// leaves this network"
            ));
        }
        Ok(())
    }
}

/// The signature header value of `body` at `unix_seconds`.
pub fn signature(secret: &[u8], unix_seconds: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!("t={unix_seconds},v1={}", minispod_support::hex(&digest))
}

/// A webhook URL, parsed: http(s), a host, a port and a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

impl WebhookUrl {
    /// Parses `url` (its syntax only: where it leads is checked by
    /// [`WebhookUrl::check`] and, after DNS, at each delivery); the error
    /// says what is wrong.
    pub fn parse(url: &str) -> Result<WebhookUrl, String> {
        if url.len() > 2048 {
            return Err("is longer than 2048 characters".into());
        }
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("must be an https:// URL".into());
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        if authority.contains('@') {
            return Err("must not carry credentials; the signature authenticates".into());
        }
        let default = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("has an unclosed [")?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| "has a bad port")?,
                None => default,
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| "has a bad port")?),
                None => (authority.to_owned(), default),
            }
        };
        if host.is_empty() {
            return Err("has no host".into());
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("has spaces or control characters".into());
        }
        Ok(WebhookUrl {
            tls,
            host,
            port,
            path,
        })
    }

    /// Parses `url` and refuses what `policy` obviously refuses, before
    /// any lookup: an internal address, an internal name (`localhost`,
    /// `*.svc`, `*.cluster.local`, `*.internal`...) while no range is
    /// allowed, plain http:// outside the allowed ranges. A name that
    /// passes is checked again, after DNS, at each delivery.
    pub fn parse_for(url: &str, policy: &WebhookPolicy) -> Result<WebhookUrl, String> {
        let u = WebhookUrl::parse(url)?;
        let host = u.host.to_ascii_lowercase();
        let host = host.trim_end_matches('.');
        let literal = if host == "localhost" || host.ends_with(".localhost") {
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        } else {
            host.parse::<IpAddr>().ok()
        };
        let refused = |why: String| {
            format!(
                "must lead to the public internet over https:// ({why}; an operator can allow a \
                 range with --webhook-allow-range)"
            )
        };
        match literal {
            Some(ip) => policy.permits(ip, u.tls).map_err(refused)?,
            None => {
                if policy.allow.is_empty()
                    && (INTERNAL_SUFFIXES.iter().any(|s| host.ends_with(s)) || !host.contains('.'))
                {
                    return Err(refused(format!("{host} names an internal host")));
                }
                // Plain http:// needs an address in an allowed range, which
                // a name cannot show before it is resolved.
                if !u.tls {
                    return Err(refused("plain http:// to a name".into()));
                }
            }
        }
        Ok(u)
    }
}

/// Sends signed webhooks where [`WebhookPolicy`] allows.
#[derive(Clone)]
pub struct WebhookClient {
    tls: TlsConnector,
    policy: Arc<WebhookPolicy>,
}

impl std::fmt::Debug for WebhookClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookClient")
    }
}

impl WebhookClient {
    /// A client trusting the system's roots and `extra_ca` (PEM), if any,
    /// sending where `policy` allows.
    pub fn new(
        extra_ca: Option<&std::path::Path>,
        policy: WebhookPolicy,
    ) -> anyhow::Result<WebhookClient> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A broken system certificate must not stop webhooks.
            let _ = roots.add(cert);
        }
        if let Some(path) = extra_ca {
            let pem = std::fs::read(path)
                .with_context(|| format!("read --webhook-ca-file {}", path.display()))?;
            let mut added = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                roots
                    .add(cert.with_context(|| format!("--webhook-ca-file {}", path.display()))?)
                    .context("add --webhook-ca-file certificate")?;
                added += 1;
            }
            if added == 0 {
                bail!("--webhook-ca-file {} holds no certificate", path.display());
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("webhook TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(WebhookClient {
            tls: TlsConnector::from(Arc::new(config)),
            policy: Arc::new(policy),
        })
    }

    /// Where this client may send.
    pub fn policy(&self) -> &WebhookPolicy {
        &self.policy
    }

    /// Resolves `url`'s host once and connects to the first address the
    /// policy permits; Permanent when it permits none (nothing is sent).
    async fn connect(&self, url: &WebhookUrl) -> Result<TcpStream, SendError> {
        let addrs: Vec<SocketAddr> = match url.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, url.port)],
            Err(_) => tokio::net::lookup_host((url.host.as_str(), url.port))
                .await
                .map_err(|e| SendError::Transient(format!("cannot resolve {}: {e}", url.host)))?
                .collect(),
        };
        let mut refused = Vec::new();
        let mut failed = None;
        for addr in addrs {
            if let Err(why) = self.policy.permits(addr.ip(), url.tls) {
                refused.push(why);
                continue;
            }
            match TcpStream::connect(addr).await {
                Ok(tcp) => return Ok(tcp),
                Err(e) => failed = Some(format!("cannot connect to {addr}: {e}")),
            }
        }
        match failed {
            Some(why) => Err(SendError::Transient(why)),
            None if refused.is_empty() => Err(SendError::Transient(format!(
                "{} resolves to no address",
                url.host
            ))),
            None => Err(SendError::Permanent(format!(
                "refused to send to {}: {} (--webhook-allow-range allows a range)",
                url.host,
                refused.join("; ")
            ))),
        }
    }

    /// POSTs `body` to `url`, signed with `secret`.
    pub async fn send(
        &self,
        url: &str,
        secret: &[u8],
        event: &str,
        delivery_id: &str,
        body: &str,
    ) -> Result<(), SendError> {
        let url = WebhookUrl::parse(url)
            .map_err(|e| SendError::Permanent(format!("the webhook URL {e}")))?;
        match tokio::time::timeout(TIMEOUT, self.post(&url, secret, event, delivery_id, body)).await
        {
            Ok(result) => result,
            Err(_) => Err(SendError::Transient(format!(
                "no answer from {}:{} within {} s",
                url.host,
                url.port,
                TIMEOUT.as_secs()
            ))),
        }
    }

    async fn post(
        &self,
        url: &WebhookUrl,
        secret: &[u8],
        event: &str,
        delivery_id: &str,
        body: &str,
    ) -> Result<(), SendError> {
        let transient = |what: &str, e: &dyn std::fmt::Display| {
            SendError::Transient(format!("{what} {}:{}: {e}", url.host, url.port))
        };
        let tcp = self.connect(url).await?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let host_header = if (url.tls && url.port == 443) || (!url.tls && url.port == 80) {
            url.host.clone()
        } else {
            format!("{}:{}", url.host, url.port)
        };
        let request = http::Request::post(url.path.as_str())
            .header(http::header::HOST, host_header)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "minispod-control-plane")
            .header(SIGNATURE_HEADER, signature(secret, now, body.as_bytes()))
            .header("x-minispod-event", event)
            .header("x-minispod-delivery", delivery_id)
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .map_err(|e| SendError::Permanent(format!("cannot build the request: {e}")))?;
        let response = if url.tls {
            let name = ServerName::try_from(url.host.clone())
                .map_err(|e| SendError::Permanent(format!("bad host name: {e}")))?;
            let stream = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| transient("TLS handshake with", &e))?;
            exchange(TokioIo::new(stream), request).await
        } else {
            exchange(TokioIo::new(tcp), request).await
        }
        .map_err(|e| transient("request to", &e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // The status line only: the body stays unread.
        let message = format!("{} answered {status}", url.host);
        if status.is_server_error()
            || status == http::StatusCode::REQUEST_TIMEOUT
            || status == http::StatusCode::TOO_MANY_REQUESTS
        {
            Err(SendError::Transient(message))
        } else {
            Err(SendError::Permanent(message))
        }
    }
}

async fn exchange<S>(
    io: TokioIo<S>,
    request: http::Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await;
    driver.abort();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // python3 -c 'import hmac,hashlib;
        //   print(hmac.new(b"key",b"1700000000.{}",hashlib.sha256).hexdigest())'
        assert_eq!(
            signature(b"key", 1_700_000_000, b"{}"),
            "t=1700000000,v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }

    #[test]
    fn urls_must_be_https_to_the_internet_unless_a_range_is_allowed() {
        let none = WebhookPolicy::default();
        let parse = |u: &str| WebhookUrl::parse_for(u, &none);
        assert!(parse("https://chat.example.org/hooks/abc").is_ok());
        assert!(
            parse("https://203.0.113.9/x").is_err(),
            "documentation range"
        );
        assert!(parse("https://8.8.8.8/x").is_ok());
        for refused in [
            "http://127.0.0.1:8080/x",
            "https://127.0.0.1:8080/x",
            "http://localhost/x",
            "https://localhost/x",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/",
            "https://[::1]/",
            "https://[fd00::1]/",
            "https://[::ffff:192.168.1.1]/",
            "https://kubernetes.default.svc/",
            "https://kubernetes.default.svc.cluster.local./",
            "https://metadata.google.internal/",
            "https://intranet/",
            "http://chat.example.org/x",
        ] {
            assert!(parse(refused).is_err(), "{refused} should be refused");
        }
        let local = WebhookPolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            deny: vec![],
        };
        assert!(WebhookUrl::parse_for("http://127.0.0.1:8080/x", &local).is_ok());
        assert!(WebhookUrl::parse_for("https://localhost:8443/x", &local).is_ok());
        assert!(WebhookUrl::parse_for("http://10.0.0.1/x", &local).is_err());
        assert!(WebhookUrl::parse("ftp://x").is_err());
        assert!(WebhookUrl::parse("https://user:pw@x/").is_err());
        assert!(WebhookUrl::parse("https:///x").is_err());
        let u = WebhookUrl::parse("https://[::1]:8443?a=b").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 8443, "/?a=b")
        );
    }

    #[test]
    fn internal_addresses_are_named() {
        let kind = |s: &str| internal_kind(s.parse().unwrap());
        for (ip, expected) in [
            ("127.0.0.1", Some("loopback")),
            ("169.254.169.254", Some("link-local")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("192.168.0.1", Some("private")),
            ("100.64.0.1", Some("shared (CGNAT)")),
            ("100.128.0.1", None),
            ("0.0.0.0", Some("unspecified")),
            ("224.0.0.1", Some("multicast")),
            ("255.255.255.255", Some("reserved")),
            ("8.8.8.8", None),
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("fe80::1", Some("link-local")),
            ("fd12::1", Some("private (unique local)")),
            ("ff02::1", Some("multicast")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("64:ff9b::a9fe:a9fe", Some("link-local")),
            ("2606:4700::1111", None),
        ] {
            assert_eq!(kind(ip), expected, "{ip}");
        }
        let policy = WebhookPolicy {
            allow: vec![],
            deny: vec!["100.128.0.0/16".parse().unwrap()],
        };
        assert!(
            policy
                .permits("100.128.0.1".parse().unwrap(), true)
                .is_err()
        );
        assert!(policy.permits("8.8.8.8".parse().unwrap(), false).is_err());
        assert!(policy.permits("8.8.8.8".parse().unwrap(), true).is_ok());
    }
}
