//! The control plane's own restic (`--backup-restic`): it creates a
//! customer's repository once, before the first transfer into it is
//! ordered, and streams downloads (`download.rs`). The volumes' copies
//! are the node agents' (`minispod-agent --restic`).

use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::{Backups, Repository};

/// How long creating a repository may take (restic retries an unreachable
/// endpoint for much longer).
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

impl Backups {
    /// restic `verb` against `repo`: secrets in its environment only, no
    /// cache, nothing inherited.
    pub(super) fn restic(&self, repo: &Repository, verb: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.inner.settings.restic);
        // Nothing inherited but PATH (where `restic` is looked up).
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RESTIC_PASSWORD", &repo.password)
            .env("RESTIC_REPOSITORY", &repo.location)
            .envs(repo.environment.iter().map(|(k, v)| (k, v)))
            .args([verb, "--no-cache", "--quiet"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Opens `repo`, creating it (and, on S3, its bucket) when there is
    /// none; why not. A wrong password is an error: an existing repository
    /// is never created again.
    pub(super) async fn create_repository(&self, repo: &Repository) -> Result<(), String> {
        // A directory destination's repository only under its checked
        // directory: never created on an unmounted disk's mount point.
        if let Some((dir, id)) = repo.directory.clone() {
            tokio::task::spawn_blocking(move || super::rest::check_destination_dir(&dir, &id))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
        let run = |verb: &'static str, args: &'static [&'static str]| {
            let mut cmd = self.restic(repo, verb);
            cmd.args(args);
            async move {
                let out = tokio::time::timeout(CREATE_TIMEOUT, cmd.output())
                    .await
                    .map_err(|_| format!("restic {verb} took over {}s", CREATE_TIMEOUT.as_secs()))?
                    .map_err(|e| {
                        format!("cannot run {}: {e}", self.inner.settings.restic.display())
                    })?;
                if out.status.success() {
                    return Ok(());
                }
                let tail = String::from_utf8_lossy(&out.stderr);
                let tail = tail.trim();
                let mut from = tail.len().saturating_sub(400);
                while !tail.is_char_boundary(from) {
                    from += 1;
                }
                Err(tail[from..].to_owned())
            }
        };
        let Err(opening) = run("cat", &["config"]).await else {
            return Ok(());
        };
        // "Is there a repository at the following location?" (or no
        // bucket) means there is nothing yet: create it. Anything else (a
        // wrong key, an unreachable endpoint) is the answer.
        if !is_missing(&opening) {
            return Err(opening);
        }
        match run("init", &[]).await {
            Ok(()) => Ok(()),
            Err(e) if e.contains("already") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Stops a restic the way its Ctrl-C does (SIGINT: it removes its lock
/// from the repository), then for good if it has not ended in 2 s.
pub(super) async fn interrupt(child: &mut tokio::process::Child) {
    if let Some(pid) = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        if tokio::time::timeout(Duration::from_secs(2), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

/// Logs a warning when `restic` cannot be run here: downloads and the
/// first backup of each customer to a destination need it.
pub(super) async fn check_installed(restic: &std::path::Path) {
    let mut cmd = tokio::process::Command::new(restic);
    cmd.arg("version")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(10), cmd.output()).await {
        Ok(Ok(out)) if out.status.success() => {
            tracing::debug!(version = %String::from_utf8_lossy(&out.stdout).trim(), "restic found");
        }
        _ => tracing::warn!(restic = %restic.display(),
            "restic cannot be run (--backup-restic): backups to a new repository and downloads \
             will fail; install Debian's restic package"),
    }
}

/// Whether restic's complaint says there is no repository at all.
pub(super) fn is_missing(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("does not exist")
        || s.contains("is there a repository")
        || s.contains("nosuchbucket")
        || s.contains("no such bucket")
        || s.contains("key does not exist")
        || s.contains("unable to open config file")
}

/// The last 2 KiB `r` writes.
pub(super) async fn stderr_tail(mut r: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 2048 {
            tail.drain(..tail.len() - 2048);
        }
    }
    String::from_utf8_lossy(&tail).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_repository_is_told_from_a_wrong_key() {
        assert!(is_missing(
            "Fatal: unable to open config file: Stat: The specified key does not exist.\nIs there a repository at the following location?"
        ));
        assert!(!is_missing("Fatal: wrong password or no key found"));
    }
}
