//! The ownership check: fetch `http://<host>/.well-known/minispod/<token>`
//! and compare the answer with the domain's token.
//!
//! Plain HTTP on port 80, as the ingress controller serves a name before it
//! has a certificate (cert-manager's HTTP-01 challenge needs the same). No
//! redirect is followed: an ingress that redirects every HTTP request to
//! HTTPS fails the check with the status it answered. The host resolves
//! through the system's resolver, and the answer must be a public address
//! (the cluster's public ingress); `--domain-check-resolve` names where a
//! host (or every host, `*`) is reached instead, for operators behind split
//! DNS and for tests. One connection, 5 s in all, at most 1 KiB of body.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub use crate::config::ResolveRule;
use crate::mail::webhook::internal_kind;

/// The path under which tokens are served; the token follows.
pub const CHALLENGE_PREFIX: &str = "/.well-known/minispod/";
/// How long one check may take, connection and answer included.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an answer's body read.
const MAX_BODY: usize = 1024;

/// The URL the check fetches for `host` and `token`.
pub fn check_url(host: &str, token: &str) -> String {
    format!("http://{host}{CHALLENGE_PREFIX}{token}")
}

/// Whether `host` answers `token` at its check URL: Ok, or what the check
/// saw, in words for the customer.
pub async fn check(host: &str, token: &str, resolve: &[ResolveRule]) -> Result<(), String> {
    match tokio::time::timeout(TIMEOUT, fetch(host, token, resolve)).await {
        Ok(out) => out,
        Err(_) => Err(format!(
            "no answer from {host} within {} s",
            TIMEOUT.as_secs()
        )),
    }
}

/// The addresses to try for `host`: the first matching rule's, else the
/// public addresses DNS gives.
async fn addresses(host: &str, resolve: &[ResolveRule]) -> Result<Vec<SocketAddr>, String> {
    let rule = resolve
        .iter()
        .find(|r| r.host == host)
        .or_else(|| resolve.iter().find(|r| r.host == "*"));
    if let Some(r) = rule {
        return Ok(vec![r.addr]);
    }
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, 80))
        .await
        .map_err(|e| format!("{host} does not resolve: {e}"))?
        .collect();
    let mut internal = None;
    let public: Vec<SocketAddr> = found
        .into_iter()
        .filter(|a| match internal_kind(a.ip()) {
            Some(kind) => {
                internal.get_or_insert((a.ip(), kind));
                false
            }
            None => true,
        })
        .collect();
    match (public.is_empty(), internal) {
        (false, _) => Ok(public),
        (true, Some((ip, kind))) => Err(format!(
            "{host} resolves to {ip}, a {kind} address, not to the cluster's public ingress"
        )),
        (true, None) => Err(format!("{host} resolves to no address")),
    }
}

async fn fetch(host: &str, token: &str, resolve: &[ResolveRule]) -> Result<(), String> {
    let mut failed = None;
    let mut tcp = None;
    for addr in addresses(host, resolve).await? {
        match TcpStream::connect(addr).await {
            Ok(t) => {
                tcp = Some(t);
                break;
            }
            Err(e) => failed = Some(format!("cannot connect to {host} on port 80: {e}")),
        }
    }
    let Some(tcp) = tcp else {
        return Err(failed.unwrap_or_else(|| format!("{host} resolves to no address")));
    };
    let path = format!("{CHALLENGE_PREFIX}{token}");
    let request = http::Request::get(path.as_str())
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "minispod-domain-check")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("http://{host}: {e}"))?;
    let driver = tokio::spawn(connection);
    let out = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("http://{host}{CHALLENGE_PREFIX}…: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!(
                "http://{host}{CHALLENGE_PREFIX}… answered {status}"
            ));
        }
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|_| {
                format!("http://{host}{CHALLENGE_PREFIX}… answered more than {MAX_BODY} bytes")
            })?
            .to_bytes();
        if body.trim_ascii() == token.as_bytes() {
            Ok(())
        } else {
            Err(format!(
                "http://{host}{CHALLENGE_PREFIX}… answered, but not with this domain's token: \
                 {host} does not point at this installation yet"
            ))
        }
    }
    .await;
    driver.abort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-request HTTP server answering `status` and `body`; the
    /// request's head comes back through the handle.
    async fn answer(
        status: &'static str,
        body: &'static str,
    ) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(reply.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&head).into_owned()
        });
        (addr, task)
    }

    #[tokio::test]
    async fn the_check_asks_for_the_token_under_the_host_and_wants_it_back() {
        let token = "0123456789abcdef0123456789abcdef";
        let (addr, seen) = answer("200 OK", "0123456789abcdef0123456789abcdef\n").await;
        let rules = [ResolveRule {
            host: "shop.example.com".into(),
            addr,
        }];
        check("shop.example.com", token, &rules).await.unwrap();
        let head = seen.await.unwrap().to_ascii_lowercase();
        assert!(
            head.starts_with(&format!("get /.well-known/minispod/{token} http/1.1")),
            "{head}"
        );
        assert!(head.contains("host: shop.example.com\r\n"), "{head}");

        let (addr, _) = answer("200 OK", "something else").await;
        let rules = [ResolveRule {
            host: "*".into(),
            addr,
        }];
        let e = check("shop.example.com", token, &rules).await.unwrap_err();
        assert!(e.contains("not with this domain's token"), "{e}");

        let (addr, _) = answer("404 Not Found", "").await;
        let rules = [ResolveRule {
            host: "*".into(),
            addr,
        }];
        let e = check("shop.example.com", token, &rules).await.unwrap_err();
        assert!(e.contains("answered 404"), "{e}");
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_an_internal_address_is_not_fetched() {
        let e = check("localhost", "t", &[]).await.unwrap_err();
        assert!(e.contains("loopback"), "{e}");
    }
}
