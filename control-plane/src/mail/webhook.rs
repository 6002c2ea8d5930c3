//! Webhooks: one JSON event as an HTTPS POST, signed so the receiver can
//! tell it came from this control plane.
//!
//! Headers: `x-minispod-signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>">` (the timestamp lets a receiver refuse replays),
//! `x-minispod-event` (the purpose, e.g. `worker_offline`) and
//! `x-minispod-delivery` (the outbox message id: the same on a retry, so a
//! receiver can drop a duplicate). A 2xx answer is delivery; 408, 429 and
//! 5xx are retried; any other answer is final.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, bail};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use sha2::Sha256;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::smtp::SendError;

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "x-minispod-signature";

/// How long one delivery may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The most of a receiver's answer read back (for the error shown).
const MAX_ANSWER_BYTES: usize = 2048;

/// The signature header value of `body` at `unix_seconds`.
pub fn signature(secret: &[u8], unix_seconds: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix_seconds},v1={hex}")
}

/// A webhook URL, checked: https, or http to a loopback address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

impl WebhookUrl {
    /// Parses and checks `url`; the error says what is wrong.
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
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback());
        if !tls && !loopback {
            return Err("must be https:// (http:// only to this machine)".into());
        }
        Ok(WebhookUrl {
            tls,
            host,
            port,
            path,
        })
    }
}

/// Sends signed webhooks.
#[derive(Clone)]
pub struct WebhookClient {
    tls: TlsConnector,
}

impl std::fmt::Debug for WebhookClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookClient")
    }
}

impl WebhookClient {
    /// A client trusting the system's roots and `extra_ca` (PEM), if any.
    pub fn new(extra_ca: Option<&std::path::Path>) -> anyhow::Result<WebhookClient> {
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
        })
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
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| transient("cannot connect to", &e))?;
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
        let mut answer = Vec::new();
        let mut body = response.into_body();
        while answer.len() < MAX_ANSWER_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        answer.extend_from_slice(data);
                    }
                }
                _ => break,
            }
        }
        answer.truncate(MAX_ANSWER_BYTES);
        let said = String::from_utf8_lossy(&answer);
        let message = format!("{} answered {status}: {}", url.host, said.trim());
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
    fn urls_must_be_https_unless_local() {
        assert!(WebhookUrl::parse("https://chat.example.org/hooks/abc").is_ok());
        assert!(WebhookUrl::parse("http://127.0.0.1:8080/x").is_ok());
        assert!(WebhookUrl::parse("http://localhost/x").is_ok());
        assert!(WebhookUrl::parse("http://chat.example.org/x").is_err());
        assert!(WebhookUrl::parse("ftp://x").is_err());
        assert!(WebhookUrl::parse("https://user:pw@x/").is_err());
        assert!(WebhookUrl::parse("https:///x").is_err());
        let u = WebhookUrl::parse("https://[::1]:8443?a=b").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 8443, "/?a=b")
        );
    }
}
