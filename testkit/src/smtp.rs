//! A real SMTP server for tests: aiosmtpd (`smtp_sink.py`) in a child
//! process, requiring STARTTLS with a certificate from its own CA and AUTH,
//! writing every mail it accepts, decoded, into a directory.
//!
//! Python comes from `MINISPOD_TEST_PYTHON`, else the test command's venv
//! (`.ci/.venv/bin/python`, where `.ci/test.sh` installs aiosmtpd).

use crate::process::free_port;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A mail the server accepted.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Received {
    /// Envelope sender.
    pub from: String,
    /// Envelope recipients.
    pub to: Vec<String>,
    /// Decoded subject.
    pub subject: String,
    /// Message-ID header.
    pub message_id: String,
    /// Decoded text body.
    pub text: String,
    /// Decoded HTML body.
    pub html: String,
    /// Whether the mail came over TLS.
    pub tls: bool,
    /// Whether the client authenticated.
    pub auth: bool,
}

impl Received {
    /// The first link in the text body that starts with `prefix`.
    pub fn link(&self, prefix: &str) -> Option<String> {
        self.text
            .split_whitespace()
            .find(|w| w.starts_with(prefix))
            .map(str::to_owned)
    }
}

/// User name the sink requires.
pub const SMTP_USER: &str = "mailer";
/// Password the sink requires.
pub const SMTP_PASSWORD: &str = "smtp-secret-pw";

/// The running server (killed when dropped).
pub struct SmtpSink {
    child: Option<Child>,
    /// Where mails land.
    pub dir: PathBuf,
    /// Its port (kept across [`SmtpSink::stop`] and [`SmtpSink::start_again`]).
    pub port: u16,
    /// The CA that signed its certificate, for `--smtp-ca-file`.
    pub ca_file: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    implicit_tls: bool,
}

pub(crate) fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MINISPOD_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/.venv/bin/python");
    assert!(
        venv.exists(),
        "the mail tests need aiosmtpd: run the README's test command, or \
         `python3 -m venv .ci/.venv && .ci/.venv/bin/pip install aiosmtpd==1.4.6`, \
         or set MINISPOD_TEST_PYTHON"
    );
    venv
}

impl SmtpSink {
    /// Starts a server with mails kept under `dir` (created), requiring
    /// STARTTLS.
    pub fn start(dir: &Path) -> SmtpSink {
        Self::start_with(dir, false)
    }

    /// Starts a server that speaks TLS from the first byte (`smtps://`).
    pub fn start_implicit_tls(dir: &Path) -> SmtpSink {
        Self::start_with(dir, true)
    }

    fn start_with(dir: &Path, implicit_tls: bool) -> SmtpSink {
        let mail_dir = dir.join("mail");
        std::fs::create_dir_all(&mail_dir).unwrap();
        // Its own CA and a certificate for localhost and 127.0.0.1.
        let pki_dir = dir.join("smtp-pki");
        let pki = minispod_control_plane::pki::Pki::load_or_create(&pki_dir, &[]).unwrap();
        let (cert, key, ca_file) = (
            pki_dir.join("server.crt"),
            pki_dir.join("server.key"),
            pki_dir.join("ca.pem"),
        );
        std::fs::write(&cert, &pki.server_chain_pem).unwrap();
        std::fs::write(&key, &pki.server_key_pem).unwrap();
        std::fs::write(&ca_file, pki.ca_cert_pem()).unwrap();
        let mut sink = SmtpSink {
            child: None,
            dir: mail_dir,
            port: free_port(),
            ca_file,
            cert,
            key,
            implicit_tls,
        };
        sink.start_again();
        sink
    }

    /// (Re)starts the server on its port.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("smtp_sink.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(["--port", &self.port.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--cert")
            .arg(&self.cert)
            .arg("--key")
            .arg(&self.key)
            .args(["--user", SMTP_USER, "--password", SMTP_PASSWORD])
            .args(self.implicit_tls.then_some("--implicit-tls"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the SMTP server (python with aiosmtpd)");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert!(
            line.starts_with("ready"),
            "SMTP server did not start: {line:?}"
        );
        self.child = Some(child);
    }

    /// Kills the server: connections to its port are refused until
    /// [`SmtpSink::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `--smtp-url` for it (STARTTLS required, or smtps://, with
    /// credentials).
    pub fn url(&self) -> String {
        let scheme = if self.implicit_tls { "smtps" } else { "smtp" };
        format!(
            "{scheme}://{SMTP_USER}:{SMTP_PASSWORD}@localhost:{}",
            self.port
        )
    }

    /// Every mail accepted so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        let mut names: Vec<_> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// The mails to `to`.
    pub fn received_by(&self, to: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to)))
            .collect()
    }

    /// Waits until `to` has received `n` mails; panics after `timeout`.
    pub async fn wait_for(&self, to: &str, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received_by(to);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{to} received {} mails in {timeout:?}, expected {n}: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}
