//! The K3s join hook: after enrollment, write the K3s agent configuration
//! and run the configured command. A failing hook is reported (the worker
//! shows NOT_READY with the error), never fatal.

use std::{os::unix::fs::PermissionsExt, path::Path, process::Stdio, time::Duration};

/// Writes `server` and `token` to `config_path` (mode 0600) and runs
/// `command` with K3S_URL and K3S_TOKEN set. Ok(()) when there is nothing to
/// do; Err(message) when a step failed.
pub async fn join(
    config_path: &Path,
    command: &str,
    server: &str,
    token: &str,
) -> Result<(), String> {
    if server.is_empty() && command.is_empty() {
        return Ok(());
    }
    if !server.is_empty() {
        if let Some(dir) = config_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let yaml = format!("server: \"{server}\"\ntoken: \"{token}\"\n");
        std::fs::write(config_path, yaml)
            .map_err(|e| format!("write {}: {e}", config_path.display()))?;
        std::fs::set_permissions(config_path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("restrict {}: {e}", config_path.display()))?;
    }
    if command.is_empty() {
        return Ok(());
    }
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("K3S_URL", server)
        .env("K3S_TOKEN", token)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_hook_writes_the_config_and_reports_failures() {
        let dir = std::env::temp_dir().join(format!("k3s-hook-{}", uuid::Uuid::new_v4()));
        let cfg = dir.join("k3s/config.yaml");
        let marker = dir.join("ran");
        let cmd = format!("test \"$K3S_TOKEN\" = secret && touch {}", marker.display());
        join(&cfg, &cmd, "https://k3s:6443", "secret")
            .await
            .unwrap();
        assert!(
            std::fs::read_to_string(&cfg)
                .unwrap()
                .contains("server: \"https://k3s:6443\"")
        );
        assert!(marker.exists());
        let err = join(&cfg, "echo boom >&2; exit 3", "https://k3s:6443", "t")
            .await
            .unwrap_err();
        assert!(err.contains("boom"), "{err}");
        assert!(join(&cfg, "", "", "").await.is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
