//! The SMTP side: `--smtp-url` parsed into a lettre transport, and one mail
//! handed over.
//!
//! `smtp://host[:port]` (port 587) upgrades with STARTTLS and refuses a
//! server that does not offer it; `smtps://host[:port]` (port 465) speaks
//! TLS from the first byte; `smtp://host?tls=none` sends in the clear, for
//! a relay on the same machine. Credentials come from the URL's user
//! information (percent-encoded). Certificates are checked against the
//! system's roots and `--smtp-ca-file`.

use std::{fmt, path::Path, time::Duration};

use anyhow::{Context, bail};
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    },
};
use minispod_support::secret::Secret;

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// STARTTLS, required (`smtp://`).
    StartTls,
    /// TLS from the start (`smtps://`).
    Tls,
    /// None (`smtp://...?tls=none`).
    Plain,
}

/// A parsed `--smtp-url`; its password never reaches `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    /// How the connection is protected.
    pub security: Security,
    /// Server host name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// User name for AUTH, if any.
    pub user: Option<String>,
    /// Password for AUTH.
    pub password: Secret,
}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpUrl")
            .field("security", &self.security)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"[redacted]")
            .finish()
    }
}

impl fmt::Display for SmtpUrl {
    /// The URL without its credentials, for logs and errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.security == Security::Tls {
            "smtps"
        } else {
            "smtp"
        };
        write!(f, "{scheme}://{}:{}", self.host, self.port)?;
        if self.security == Security::Plain {
            f.write_str("?tls=none")?;
        }
        Ok(())
    }
}

impl SmtpUrl {
    /// Parses `smtp://[user[:password]@]host[:port][?tls=none]` or
    /// `smtps://...`. Errors never repeat the password.
    pub fn parse(url: &str) -> anyhow::Result<SmtpUrl> {
        let (scheme, rest) = url
            .split_once("://")
            .context("--smtp-url must look like smtp://host or smtps://host")?;
        let mut security = match scheme {
            "smtp" => Security::StartTls,
            "smtps" => Security::Tls,
            other => bail!("--smtp-url: unknown scheme `{other}`: use smtp:// or smtps://"),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair {
                "tls=none" if security == Security::StartTls => security = Security::Plain,
                "tls=required" if security == Security::StartTls => {}
                other => bail!(
                    "--smtp-url: unsupported parameter `{other}` (only smtp://...?tls=none, for a relay on this machine)"
                ),
            }
        }
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, Secret::default()),
            Some(u) => {
                let (name, pass) = u.split_once(':').unwrap_or((u, ""));
                (
                    Some(percent_decode(name).context("--smtp-url: bad user name")?),
                    Secret::new(percent_decode(pass).context("--smtp-url: bad password")?),
                )
            }
        };
        let default_port = if security == Security::Tls { 465 } else { 587 };
        let (host, port) = split_host_port(hostport, default_port)?;
        if host.is_empty() {
            bail!("--smtp-url: no host");
        }
        Ok(SmtpUrl {
            security,
            host,
            port,
            user,
            password,
        })
    }
}

fn split_host_port(hostport: &str, default_port: u16) -> anyhow::Result<(String, u16)> {
    if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']').context("--smtp-url: unclosed [")?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().context("--smtp-url: bad port")?,
            None => default_port,
        };
        return Ok((host.to_owned(), port));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_owned(), p.parse().context("--smtp-url: bad port")?)),
        None => Ok((hostport.to_owned(), default_port)),
    }
}

fn percent_decode(s: &str) -> anyhow::Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).context("truncated %-escape")?;
            out.push(u8::from_str_radix(hex, 16).context("bad %-escape")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("not UTF-8")
}

/// One mail, as the outbox keeps it.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// The recipient's address.
    pub to: &'a str,
    /// Subject line.
    pub subject: &'a str,
    /// Plain-text body.
    pub text: &'a str,
    /// HTML body; empty for text only.
    pub html: &'a str,
    /// The outbox message id, also the Message-ID's left part, so a mail
    /// sent twice after a crash can be told apart as the same one.
    pub id: &'a str,
}

/// Why a mail was not handed over.
#[derive(Debug)]
pub enum SendError {
    /// Worth retrying: the server is down, busy, or answered 4xx.
    Transient(String),
    /// Retrying cannot help: 5xx, or the mail cannot be built.
    Permanent(String),
}

/// A connection-pooling SMTP client.
#[derive(Clone)]
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    url: String,
}

impl fmt::Debug for Smtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Smtp").field("url", &self.url).finish()
    }
}

/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

impl Smtp {
    /// A client for `url`, sending as `from`, trusting `ca_file` besides
    /// the system's roots.
    pub fn new(url: &SmtpUrl, from: &str, ca_file: Option<&Path>) -> anyhow::Result<Smtp> {
        let from: Mailbox = from
            .parse()
            .with_context(|| format!("--mail-from `{from}` is not a mail address"))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&url.host)
            .port(url.port)
            .timeout(Some(SMTP_TIMEOUT));
        if url.security != Security::Plain {
            let mut tls = TlsParameters::builder(url.host.clone());
            if let Some(path) = ca_file {
                let pem = std::fs::read(path)
                    .with_context(|| format!("read --smtp-ca-file {}", path.display()))?;
                tls = tls.add_root_certificate(
                    Certificate::from_pem(&pem)
                        .with_context(|| format!("--smtp-ca-file {}", path.display()))?,
                );
            }
            let tls = tls.build_rustls().context("SMTP TLS settings")?;
            builder = builder.tls(match url.security {
                Security::Tls => Tls::Wrapper(tls),
                _ => Tls::Required(tls),
            });
        }
        if let Some(user) = &url.user {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                url.password.expose().to_owned(),
            ));
        }
        Ok(Smtp {
            transport: builder.build(),
            from,
            url: url.to_string(),
        })
    }

    /// The server, without credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The sender address.
    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// Hands `mail` to the server.
    pub async fn send(&self, mail: &Outgoing<'_>) -> Result<(), SendError> {
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|e| SendError::Permanent(format!("bad recipient address: {e}")))?;
        let domain = self
            .from
            .email
            .domain()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject)
            .message_id(Some(format!("<{}@{domain}>", mail.id)));
        let message = if mail.html.is_empty() {
            builder
                .header(lettre::message::header::ContentType::TEXT_PLAIN)
                .body(mail.text.to_owned())
        } else {
            builder.multipart(MultiPart::alternative_plain_html(
                mail.text.to_owned(),
                mail.html.to_owned(),
            ))
        }
        .map_err(|e| SendError::Permanent(format!("cannot build the mail: {e}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::Permanent(describe(&e))),
            Err(e) => Err(SendError::Transient(describe(&e))),
        }
    }
}

/// The error with its causes, on one line.
fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_their_defaults() {
        let u = SmtpUrl::parse("smtp://mail.example.org").unwrap();
        assert_eq!(
            (u.security, u.host.as_str(), u.port),
            (Security::StartTls, "mail.example.org", 587)
        );
        let u = SmtpUrl::parse("smtps://me%40x.org:p%3Ass@mail.example.org:2465").unwrap();
        assert_eq!(
            (u.security, u.port, u.user.as_deref()),
            (Security::Tls, 2465, Some("me@x.org"))
        );
        assert_eq!(u.password.expose(), "p:ss");
        let u = SmtpUrl::parse("smtp://127.0.0.1:2525?tls=none").unwrap();
        assert_eq!((u.security, u.port), (Security::Plain, 2525));
        let u = SmtpUrl::parse("smtp://[::1]:25?tls=none").unwrap();
        assert_eq!(u.host, "::1");
        assert!(SmtpUrl::parse("http://x").is_err());
        assert!(SmtpUrl::parse("smtps://x?tls=none").is_err());
        assert!(SmtpUrl::parse("smtp://x:port").is_err());
    }

    #[test]
    fn the_password_stays_out_of_debug_and_display() {
        let u = SmtpUrl::parse("smtp://user:hunter2-secret@mail.example.org").unwrap();
        let shown = format!("{u:?} {u}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(u.to_string(), "smtp://mail.example.org:587");
    }
}
