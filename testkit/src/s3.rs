//! A real S3-compatible server for tests: moto's server (`moto[server]` from
//! PyPI, installed by `.ci/test.sh` into `.ci/.venv`) in a child process on
//! a random port, with its data in memory. Requests are plain HTTP on
//! loopback; moto accepts any credentials.

use crate::process::free_port;

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The credentials clients present (moto checks none).
pub const ACCESS_KEY: &str = "minispod-test";
/// See [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "minispod-test-secret";
/// The region clients name.
pub const REGION: &str = "us-east-1";

/// The running server (killed when dropped).
pub struct S3Server {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl S3Server {
    /// Starts a server and waits until it answers.
    pub fn start() -> S3Server {
        let port = free_port();
        let child = Command::new(crate::smtp::python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto's S3 server (python with moto[server])");
        let server = S3Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.request("GET", "/", b"").is_err() {
            assert!(
                Instant::now() < deadline,
                "moto's S3 server did not answer on port {port}: run the README's \
                 test command, which installs moto[server] into .ci/.venv"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// The endpoint, e.g. `http://127.0.0.1:4567`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket`.
    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = self.request("PUT", &format!("/{bucket}"), b"").unwrap();
        assert_eq!(status, 200, "create bucket {bucket}: {body}");
    }

    /// The objects under `prefix` in `bucket`: (count, bytes), from
    /// ListObjectsV2, following continuation tokens.
    pub fn usage(&self, bucket: &str, prefix: &str) -> (u64, u64) {
        let (mut count, mut bytes) = (0, 0);
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{bucket}?list-type=2&prefix={prefix}");
            if let Some(t) = &token {
                path.push_str("&continuation-token=");
                path.push_str(&percent(t));
            }
            let (status, body) = self.request("GET", &path, b"").unwrap();
            assert_eq!(status, 200, "list {bucket}: {body}");
            for size in between_all(&body, "<Size>", "</Size>") {
                count += 1;
                bytes += size.parse::<u64>().unwrap();
            }
            token = between_all(&body, "<NextContinuationToken>", "</NextContinuationToken>")
                .into_iter()
                .next()
                .map(str::to_owned);
            if token.is_none() {
                return (count, bytes);
            }
        }
    }

    /// One HTTP/1.1 request; the status and the body as text.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        )?;
        s.write_all(body)?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn between_all<'a>(s: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find(open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(close) else { break };
        out.push(&rest[..j]);
        rest = &rest[j + close.len()..];
    }
    out
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
