//! The K3s join hook: after enrollment, write the K3s agent configuration
//! (server, token, and the node label `minispod.dev/worker-id=<worker id>`
//! by which the control plane finds this worker's node) and run the
//! configured command. A failing hook is reported (the worker shows
//! NOT_READY with the error), never fatal, and retried with backoff until
//! it succeeds; its last result is kept in the state directory so a restart
//! neither forgets the failure nor claims readiness.
//!
//! Agents that already run on a node of the cluster (`--kubernetes-node`,
//! the DaemonSet) have no hook: they name their node in the hello instead.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use minispod_support::kubernetes::{WORKER_ID_LABEL, is_label_value};
use tokio::sync::watch;

use crate::{
    backoff::Backoff,
    state::{K3sJoin, StateDir, write_private},
};

/// The hook as configured on this machine.
#[derive(Debug, Clone)]
pub struct JoinHook {
    /// Where the K3s agent configuration goes (`--k3s-config`).
    pub config_path: PathBuf,
    /// Command run after writing it (`--k3s-join-command`); empty: none.
    pub command: String,
}

/// The readiness the agent reports: ready only once the hook succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// True when the worker may be scheduled on.
    pub ready: bool,
    /// Why not, when not.
    pub join_error: String,
}

impl Readiness {
    /// Readiness from the recorded join settings. None (nothing recorded:
    /// an agent enrolled before the hook's result was kept) counts as
    /// ready, as it did then.
    pub fn of(join: Option<&K3sJoin>) -> Readiness {
        match join {
            Some(j) if !j.succeeded => Readiness {
                ready: false,
                join_error: if j.last_error.is_empty() {
                    "the K3s join hook has not succeeded yet".into()
                } else {
                    j.last_error.clone()
                },
            },
            _ => Readiness {
                ready: true,
                join_error: String::new(),
            },
        }
    }
}

/// `s` as a YAML double-quoted scalar: quotes, backslashes, line breaks
/// and every other control character escaped, so no value can end its
/// string or start another key.
pub fn yaml_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // C0, DEL, C1 (with NEL), YAML's own line and paragraph
            // separators and the BOM.
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Checks the K3s server URL the control plane sent: `https://host[:port]`
/// with nothing that could smuggle in other settings.
pub fn check_server_url(url: &str) -> Result<(), String> {
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("the K3s server URL contains spaces or control characters".into());
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("the K3s server URL {url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!(
            "the K3s server URL {url:?} must start with https://"
        ));
    }
    match uri.authority() {
        Some(a) if !a.host().is_empty() && !a.as_str().contains('@') => Ok(()),
        _ => Err(format!("the K3s server URL {url:?} has no host")),
    }
}

/// Checks the worker id the control plane sent before it goes into the
/// node label: a non-empty Kubernetes label value, or K3s would fail to
/// register the node.
pub fn check_worker_id(worker_id: &str) -> Result<(), String> {
    if worker_id.is_empty() || !is_label_value(worker_id) {
        return Err(format!(
            "the worker id {worker_id:?} cannot be the value of the node label {WORKER_ID_LABEL}"
        ));
    }
    Ok(())
}

/// The K3s agent configuration for `server`, `token` and the node label
/// that carries `worker_id` (K3s applies `node-label` when the node
/// registers).
pub fn config_yaml(server: &str, token: &str, worker_id: &str) -> String {
    format!(
        "server: {}\ntoken: {}\nnode-label:\n  - {}\n",
        yaml_quoted(server),
        yaml_quoted(token),
        yaml_quoted(&format!("{WORKER_ID_LABEL}={worker_id}"))
    )
}

/// Writes the K3s agent configuration for `settings` (server, token,
/// worker id) to `config_path` (created 0600, replaced atomically) and runs
/// `command` with K3S_URL and K3S_TOKEN set. Ok(()) when there is nothing
/// to do; Err(message) when a step failed.
pub async fn join(config_path: &Path, command: &str, settings: &K3sJoin) -> Result<(), String> {
    let (server, token) = (settings.server_url.as_str(), &settings.token);
    if server.is_empty() && command.is_empty() {
        return Ok(());
    }
    if !server.is_empty() {
        check_server_url(server)?;
        check_worker_id(&settings.worker_id)?;
        if let Some(dir) = config_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let yaml = config_yaml(server, token.expose(), &settings.worker_id);
        write_private(config_path, yaml.as_bytes())
            .map_err(|e| format!("write {}: {e}", config_path.display()))?;
    }
    if command.is_empty() {
        return Ok(());
    }
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("K3S_URL", server)
        .env("K3S_TOKEN", token.expose())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("start join command: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(300), child.wait_with_output()).await {
        Err(_) => Err("join command timed out after 300 s".into()),
        Ok(Err(e)) => Err(format!("join command: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(format!(
                "join command failed ({}): {}",
                out.status,
                stderr.trim().chars().take(500).collect::<String>()
            ))
        }
    }
}

/// Runs the hook once for `settings` and records the result in `state`.
pub async fn join_once(
    hook: &JoinHook,
    state: &StateDir,
    settings: &mut K3sJoin,
) -> Result<(), String> {
    let result = join(&hook.config_path, &hook.command, settings).await;
    settings.succeeded = result.is_ok();
    settings.last_error = result.clone().err().unwrap_or_default();
    if let Err(e) = state.save_k3s_join(settings) {
        tracing::error!(error = %format!("{e:#}"), "could not record the K3s join hook's result");
    }
    result
}

/// Keeps the hook run until it has succeeded for the latest settings
/// (`settings` changes after each enrollment), retrying with backoff up to
/// `max_backoff` (the first retry of a hook that already failed waits too),
/// and publishes the readiness that results.
pub async fn keep_joined(
    hook: JoinHook,
    state: StateDir,
    mut settings: watch::Receiver<Option<K3sJoin>>,
    readiness: Arc<watch::Sender<Readiness>>,
    max_backoff: Duration,
) {
    'settings: loop {
        let current = settings.borrow_and_update().clone();
        if let Some(mut j) = current.filter(|j| !j.succeeded) {
            let mut backoff = Backoff::new(Duration::from_secs(1), max_backoff);
            loop {
                if !j.last_error.is_empty() {
                    let delay = backoff.next_delay();
                    tracing::info!(retry_in = ?delay, last_error = %j.last_error, "K3s join hook failed before; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        changed = settings.changed() => match changed {
                            Ok(()) => continue 'settings,
                            Err(_) => return,
                        },
                    }
                }
                let result = join_once(&hook, &state, &mut j).await;
                readiness.send_replace(Readiness::of(Some(&j)));
                match result {
                    Ok(()) => {
                        tracing::info!("K3s join hook succeeded; the worker reports ready");
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "K3s join hook failed; the worker reports not ready");
                    }
                }
            }
        }
        if settings.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("k3s-hook-{}", uuid::Uuid::new_v4()))
    }

    const WORKER: &str = "0b5e7c2a-4d1f-4a8e-9c3b-2f6d8e1a7b90";

    fn settings(server: &str, token: &str) -> K3sJoin {
        K3sJoin {
            server_url: server.into(),
            token: token.into(),
            worker_id: WORKER.into(),
            ..K3sJoin::default()
        }
    }

    #[tokio::test]
    async fn the_hook_writes_the_config_and_reports_failures() {
        let dir = temp_dir();
        let cfg = dir.join("k3s/config.yaml");
        let marker = dir.join("ran");
        let cmd = format!("test \"$K3S_TOKEN\" = secret && touch {}", marker.display());
        join(&cfg, &cmd, &settings("https://k3s:6443", "secret"))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&cfg).unwrap(),
            format!(
                "server: \"https://k3s:6443\"\ntoken: \"secret\"\n\
                 node-label:\n  - \"minispod.dev/worker-id={WORKER}\"\n"
            )
        );
        assert!(marker.exists());
        let err = join(
            &cfg,
            "echo boom >&2; exit 3",
            &settings("https://k3s:6443", "t"),
        )
        .await
        .unwrap_err();
        assert!(err.contains("boom"), "{err}");
        assert!(join(&cfg, "", &K3sJoin::default()).await.is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_config_labels_the_node_with_the_worker_id_as_k3s_reads_it() {
        let yaml = config_yaml("https://k3s:6443", "K10t", WORKER);
        // K3s's config.yaml: `node-label` is a list of `key=value` strings,
        // like repeated --node-label flags.
        let (_, list) = yaml
            .split_once("\nnode-label:\n")
            .expect("a node-label key");
        assert_eq!(
            list.lines().collect::<Vec<_>>(),
            [format!("  - \"{WORKER_ID_LABEL}={WORKER}\"")]
        );
        assert_eq!(WORKER_ID_LABEL, "minispod.dev/worker-id");
    }

    #[tokio::test]
    async fn a_worker_id_that_is_no_label_value_is_refused_and_nothing_is_written() {
        for bad in ["", "w\"\nnode-taint: x", "-w", &"a".repeat(64)] {
            assert!(check_worker_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_worker_id(WORKER).is_ok() && check_worker_id("w0").is_ok());
        let dir = temp_dir();
        let cfg = dir.join("config.yaml");
        let marker = dir.join("ran");
        let mut j = settings("https://k3s:6443", "t");
        j.worker_id = "evil\nnode-taint: x".into();
        let err = join(&cfg, &format!("touch {}", marker.display()), &j)
            .await
            .unwrap_err();
        assert!(err.contains("node label"), "{err}");
        assert!(!cfg.exists() && !marker.exists(), "nothing written or run");
    }

    #[test]
    fn values_are_quoted_so_they_cannot_add_keys() {
        let token = "K10abc\"\nserver: \"https://evil\\\r\u{85}\u{2028}\u{1b}";
        let yaml = config_yaml("https://k3s:6443", token, "w-1");
        assert_eq!(
            yaml,
            "server: \"https://k3s:6443\"\n\
             token: \"K10abc\\\"\\nserver: \\\"https://evil\\\\\\r\\u0085\\u2028\\u001b\"\n\
             node-label:\n  - \"minispod.dev/worker-id=w-1\"\n"
        );
        assert_eq!(yaml.lines().count(), 4);
        // A worker id that tried to end the label's string is quoted too
        // (and `join` refuses it before writing anything, see below).
        let yaml = config_yaml("https://k3s:6443", "t", "w\"\nnode-taint: x");
        assert!(
            yaml.ends_with("  - \"minispod.dev/worker-id=w\\\"\\nnode-taint: x\"\n"),
            "{yaml}"
        );
        assert_eq!(yaml.lines().count(), 4);
        assert_eq!(
            yaml_quoted("plain K10::server:x"),
            "\"plain K10::server:x\""
        );
    }

    #[tokio::test]
    async fn only_an_https_k3s_server_is_accepted() {
        for bad in [
            "http://k3s:6443",
            "k3s:6443",
            "https://k3s:6443\ntoken: x",
            "https://k3s:6443 x",
            "https://user@k3s:6443",
            "https://",
            "",
        ] {
            assert!(check_server_url(bad).is_err(), "{bad:?}");
        }
        assert!(check_server_url("https://k3s.example.org:6443").is_ok());
        assert!(check_server_url("https://[fd00::1]:6443").is_ok());
        let dir = temp_dir();
        let cfg = dir.join("config.yaml");
        let err = join(&cfg, "", &settings("http://k3s:6443", "t"))
            .await
            .unwrap_err();
        assert!(err.contains("https://"), "{err}");
        assert!(!cfg.exists(), "nothing is written for a refused URL");
    }

    #[tokio::test]
    async fn the_config_is_created_private_and_replaced_not_rewritten() {
        let dir = temp_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("config.yaml");
        // A world-readable config from an earlier install, with a second
        // name: writing in place (then chmod) would expose the new token
        // through it.
        std::fs::write(&cfg, "old").unwrap();
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
        let other_name = dir.join("hard-link");
        std::fs::hard_link(&cfg, &other_name).unwrap();
        // And a stale temporary file, world-readable too.
        let tmp = dir.join(".config.yaml.tmp");
        std::fs::write(&tmp, "stale").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();

        join(&cfg, "", &settings("https://k3s:6443", "new-secret"))
            .await
            .unwrap();
        assert!(
            std::fs::read_to_string(&cfg)
                .unwrap()
                .contains("new-secret")
        );
        let mode = std::fs::metadata(&cfg).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&other_name).unwrap(), "old");
        assert!(!tmp.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_failed_hook_is_remembered_and_retried_until_it_succeeds() {
        let dir = temp_dir();
        let state = StateDir::open(&dir.join("state")).unwrap();
        let gate = dir.join("k3s-can-start");
        let hook = JoinHook {
            config_path: dir.join("config.yaml"),
            command: format!(
                "test -e {} || {{ echo k3s not there >&2; exit 1; }}",
                gate.display()
            ),
        };
        let mut settings = settings("https://k3s:6443", "t");
        // The hook fails once; as after a restart, only the state remains.
        assert!(join_once(&hook, &state, &mut settings).await.is_err());
        let recorded = state.k3s_join().unwrap();
        let r = Readiness::of(recorded.as_ref());
        assert!(!r.ready && r.join_error.contains("k3s not there"), "{r:?}");

        let (_settings_tx, settings_rx) = watch::channel(recorded);
        let (ready_tx, mut ready_rx) = watch::channel(r);
        let ready_tx = Arc::new(ready_tx);
        let task = tokio::spawn(keep_joined(
            hook,
            state.clone(),
            settings_rx,
            ready_tx,
            Duration::from_millis(200),
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!ready_rx.borrow().ready, "not ready while the hook fails");
        std::fs::write(&gate, "").unwrap();
        tokio::time::timeout(Duration::from_secs(10), ready_rx.wait_for(|r| r.ready))
            .await
            .expect("ready once the hook succeeds")
            .unwrap();
        assert!(state.k3s_join().unwrap().unwrap().succeeded);
        task.abort();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
