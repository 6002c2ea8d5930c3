//! Small operational helpers both daemons share, none of them protobuf: the
//! systemd notify protocol and watchdog, a minimal HTTP endpoint for
//! Prometheus scrapes, folding a TOML config file into the command line,
//! durations, writing private files, lower-case hex, the names both share
//! in the Kubernetes cluster (`kubernetes`) and Kubernetes resource
//! quantities (`quantity`, which the stand-in API server uses too).

pub mod cidr;
pub mod kubernetes;
pub mod quantity;
pub mod secret;

pub use kubernetes::WORKER_ID_LABEL;

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// `bytes` as lower-case hex, two digits a byte (digests, fingerprints,
/// random ids).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Sends `state` (e.g. `READY=1`, `WATCHDOG=1`, `STOPPING=1`) to systemd
/// over `$NOTIFY_SOCKET`; does nothing when not started by systemd with
/// Type=notify. Returns whether a message was sent.
pub fn sd_notify(state: &str) -> bool {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => sd_notify_to(&path, state),
        None => false,
    }
}

/// Sends `state` to the notify socket at `path` (`@name` for an abstract one).
pub fn sd_notify_to(path: &std::ffi::OsStr, state: &str) -> bool {
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return false;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket (Linux): a leading NUL instead of '@'.
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(&path))
    };
    sent.is_ok()
}

/// How often to ping the systemd watchdog: half of `$WATCHDOG_USEC`, when
/// the unit has `WatchdogSec=` and the variable is meant for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}

/// Pings the systemd watchdog at half its timeout while `alive` says the
/// process is healthy; ends when `alive` returns false.
pub fn spawn_watchdog<F>(alive: F) -> Option<tokio::task::JoinHandle<()>>
where
    F: Fn() -> bool + Send + 'static,
{
    let every = watchdog_interval()?;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if !alive() {
                break;
            }
            sd_notify("WATCHDOG=1");
        }
    }))
}

/// Produces the metrics text at scrape time.
pub type Render = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

/// Serves `GET /metrics` (Prometheus text format 0.0.4) on `listener`; any
/// other path is 404. One request per connection, bounded in size and time.
pub async fn serve_metrics(listener: TcpListener, render: Render) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    let n = conn.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let line = String::from_utf8_lossy(&buf);
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let (status, body, kind) = if line.starts_with("GET ")
                && (path == "/metrics" || path.starts_with("/metrics?"))
            {
                (
                    "200 OK",
                    render().await,
                    "text/plain; version=0.0.4; charset=utf-8",
                )
            } else {
                (
                    "404 Not Found",
                    "not found\n".to_owned(),
                    "text/plain; charset=utf-8",
                )
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// Parses `250ms`, `90s`, `15m`, `12h`, `30d` or a plain number of
/// seconds: the duration syntax of every flag.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90s, 15m, 12h or 30d"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h, d)")),
    };
    Ok(Duration::from_secs(secs))
}

/// Writes a file readable by its owner only (0600), atomically: a temporary
/// file in the same directory, synced, then renamed over the target.
pub fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads `--config FILE` (or `$MINISPOD_CONFIG`) given to `subcommand` and
/// turns its TOML settings into flags, so one parser handles all three
/// sources with the precedence flags > environment > file > defaults.
///
/// Keys are the long flag names (`listen`, `data-dir` or `data_dir`);
/// values are strings, numbers, booleans or arrays (repeated flags). An
/// unknown key is an error, as is a setting of the wrong type.
pub fn apply_config_file(
    command: &clap::Command,
    subcommand: &str,
    args: Vec<std::ffi::OsString>,
) -> Result<Vec<std::ffi::OsString>, String> {
    use std::ffi::OsString;
    let Some(pos) = args.iter().position(|a| a == subcommand) else {
        return Ok(args);
    };
    let mut path: Option<OsString> = std::env::var_os("MINISPOD_CONFIG");
    let mut rest = Vec::with_capacity(args.len());
    let mut i = pos + 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--config" {
            path = Some(args.get(i + 1).cloned().ok_or("--config needs a file")?);
            i += 2;
            continue;
        }
        if let Some(p) = a.strip_prefix("--config=") {
            path = Some(p.into());
            i += 1;
            continue;
        }
        rest.push(args[i].clone());
        i += 1;
    }
    let mut out: Vec<OsString> = args[..=pos].to_vec();
    let Some(path) = path else {
        out.extend(rest);
        return Ok(out);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.to_string_lossy()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("config file {}: {e}", path.to_string_lossy()))?;
    let sub = command
        .find_subcommand(subcommand)
        .ok_or_else(|| format!("no subcommand {subcommand}"))?;
    let given: Vec<String> = rest
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let arg = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .ok_or_else(|| format!("config file: unknown setting `{key}`"))?;
        let flag = format!("--{long}");
        let on_cli = given
            .iter()
            .any(|g| *g == flag || g.starts_with(&format!("{flag}=")));
        let in_env = arg.get_env().is_some_and(|e| std::env::var_os(e).is_some());
        if on_cli || in_env {
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items,
            v => vec![v],
        };
        for v in values {
            match v {
                toml::Value::Boolean(true) => out.push(flag.clone().into()),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => {
                    out.push(flag.clone().into());
                    out.push(s.into());
                }
                toml::Value::Integer(n) => {
                    out.push(flag.clone().into());
                    out.push(n.to_string().into());
                }
                other => {
                    return Err(format!(
                        "config file: `{key}` cannot be {}",
                        other.type_str()
                    ));
                }
            }
        }
    }
    // The command line comes last and wins.
    out.extend(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_two_lower_case_digits_a_byte() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff, 0x5c]), "000fa0ff5c");
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&all), expected);
    }

    #[test]
    fn notify_reaches_a_listening_socket() {
        let dir = std::env::temp_dir().join(format!("notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        assert!(sd_notify_to(path.as_os_str(), "READY=1"));
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(!sd_notify_to(
            dir.join("absent.sock").as_os_str(),
            "READY=1"
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_config_file_fills_in_what_flags_do_not_say() {
        use clap::{Arg, ArgAction, Command};
        let cmd = Command::new("x").subcommand(
            Command::new("serve")
                .arg(Arg::new("listen").long("listen").env("X_TEST_UNSET_LISTEN"))
                .arg(Arg::new("data-dir").long("data-dir"))
                .arg(
                    Arg::new("plaintext")
                        .long("plaintext")
                        .action(ArgAction::SetTrue),
                )
                .arg(
                    Arg::new("tls-san")
                        .long("tls-san")
                        .action(ArgAction::Append),
                ),
        );
        let dir = std::env::temp_dir().join(format!("cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "listen = \"1.2.3.4:1\"\ndata_dir = \"/srv\"\nplaintext = true\ntls-san = [\"a\", \"b\"]\n").unwrap();
        let args = [
            "x",
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--data-dir",
            "/cli",
        ]
        .map(std::ffi::OsString::from)
        .to_vec();
        let out: Vec<String> = apply_config_file(&cmd, "serve", args)
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let m = cmd.clone().get_matches_from(&out);
        let m = m.subcommand_matches("serve").unwrap();
        assert_eq!(m.get_one::<String>("listen").unwrap(), "1.2.3.4:1");
        assert_eq!(
            m.get_one::<String>("data-dir").unwrap(),
            "/cli",
            "the flag wins"
        );
        assert!(m.get_flag("plaintext"));
        assert_eq!(
            m.get_many::<String>("tls-san").unwrap().collect::<Vec<_>>(),
            ["a", "b"]
        );
        std::fs::write(&file, "nonsense = 1\n").unwrap();
        let args = ["x", "serve", "--config", file.to_str().unwrap()]
            .map(std::ffi::OsString::from)
            .to_vec();
        assert!(
            apply_config_file(&cmd, "serve", args)
                .unwrap_err()
                .contains("unknown setting")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
