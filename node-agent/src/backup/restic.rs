//! The restic driver: init, backup, restore, snapshots, forget and check
//! against one repository, each as one `restic` child process.
//!
//! - Secrets (the repository password, the bucket's credentials) go in the
//!   child's environment, which is cleared first, never on its command line,
//!   where `ps` would show them.
//! - restic's standard output is JSON lines (`--json`); a line longer than
//!   [`MAX_LINE`] is skipped, so a misbehaving binary cannot make the agent
//!   buffer without bound. Of its standard error only the last
//!   [`STDERR_TAIL`] bytes are kept, for the error message.
//! - Dropping an operation's future kills its process (SIGKILL): restic
//!   writes a snapshot only after every chunk it names is stored, so a
//!   killed backup leaves no snapshot, only chunks the next backup reuses or
//!   `forget --prune` removes, and a stale lock that [`Restic::unlock`]
//!   clears.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use minispod_support::secret::Secret;
use serde::Deserialize;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader},
    process::Command,
};

/// The longest line of restic's output the driver reads (a status line
/// names the files in progress; 64 KiB is hundreds of long paths).
pub const MAX_LINE: usize = 64 * 1024;
/// How much of restic's standard error is kept for an error message.
pub const STDERR_TAIL: usize = 4 * 1024;
/// The host name every snapshot is recorded under, so a volume's snapshots
/// do not depend on which machine took them.
pub const SNAPSHOT_HOST: &str = "minispod";

/// Where a repository is and how to open it.
#[derive(Clone)]
pub struct Repository {
    /// restic's repository string, e.g. `s3:https://s3.example.com/bucket/prefix`.
    pub location: String,
    /// The repository's password: the key its chunks are encrypted under.
    pub password: Secret,
    /// The backend's credentials, e.g. `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`.
    pub credentials: Vec<(String, Secret)>,
    /// Upload bandwidth limit, KiB/s (restic's `--limit-upload`).
    pub limit_upload_kib: Option<u32>,
    /// Download bandwidth limit, KiB/s (restic's `--limit-download`).
    pub limit_download_kib: Option<u32>,
    /// TLS files for a `rest:https://` repository on the control plane.
    pub tls: Option<ResticTls>,
}

/// What restic presents and trusts towards a REST server (the control
/// plane serving a directory destination).
#[derive(Debug, Clone)]
pub struct ResticTls {
    /// The CA certificates the server's is checked against (`--cacert`).
    pub ca_file: PathBuf,
    /// The client certificate and its key, one PEM file
    /// (`--tls-client-cert`).
    pub client_pem: PathBuf,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("location", &self.location)
            .field("password", &self.password)
            .field(
                "credentials",
                &self.credentials.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("limit_upload_kib", &self.limit_upload_kib)
            .field("limit_download_kib", &self.limit_download_kib)
            .field("tls", &self.tls)
            .finish()
    }
}

/// How far an operation is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes read (backup) or written (restore) so far.
    pub bytes_done: u64,
    /// Bytes in all (0 while restic is still counting).
    pub total_bytes: u64,
    /// Files done so far.
    pub files_done: u64,
    /// Files in all.
    pub total_files: u64,
    /// restic's estimate of the time left, when it has one.
    pub seconds_remaining: Option<u64>,
}

/// What a finished backup did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// The snapshot written (restic's full id).
    pub snapshot_id: String,
    /// Bytes of new chunks stored in the repository (after deduplication
    /// and compression): what this backup uploaded.
    pub data_added: u64,
    /// Bytes of the volume read.
    pub bytes_processed: u64,
    /// Files new, changed and unmodified since the parent snapshot.
    pub files_new: u64,
    /// See `files_new`.
    pub files_changed: u64,
    /// See `files_new`.
    pub files_unmodified: u64,
}

/// A snapshot in the repository.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Snapshot {
    /// Its full id.
    pub id: String,
    /// When it was taken (RFC 3339).
    pub time: String,
    /// Its tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A running restic's pid file, removed when dropped.
struct PidFile(PathBuf);

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What an operation failed on.
#[derive(Debug, thiserror::Error)]
pub enum ResticError {
    /// The password opens no key of the repository.
    #[error("the repository's password is wrong (no key opens it)")]
    WrongPassword,
    /// No repository at the location.
    #[error("no repository at {0}")]
    NoRepository(String),
    /// Anything else restic said, its last line of standard error.
    #[error("restic {verb} failed: {message}")]
    Failed {
        /// The restic command.
        verb: &'static str,
        /// What it said.
        message: String,
    },
}

/// Runs restic.
#[derive(Debug, Clone)]
pub struct Restic {
    binary: PathBuf,
    cache_dir: PathBuf,
    /// Where each running restic's pid is written (`with_pid_dir`).
    pid_dir: Option<PathBuf>,
}

/// One line of `restic backup --json`.
#[derive(Deserialize)]
#[serde(tag = "message_type", rename_all = "snake_case")]
enum BackupLine {
    Status {
        #[serde(default)]
        bytes_done: u64,
        #[serde(default)]
        total_bytes: u64,
        #[serde(default)]
        files_done: u64,
        #[serde(default)]
        total_files: u64,
        #[serde(default)]
        seconds_remaining: Option<u64>,
    },
    Summary {
        snapshot_id: String,
        #[serde(default)]
        data_added: u64,
        #[serde(default)]
        total_bytes_processed: u64,
        #[serde(default)]
        files_new: u64,
        #[serde(default)]
        files_changed: u64,
        #[serde(default)]
        files_unmodified: u64,
    },
    #[serde(other)]
    Other,
}

impl Restic {
    /// A driver for the `restic` at `binary` (found on `PATH` when it is a
    /// bare name), keeping restic's chunk index cache under `cache_dir`.
    pub fn new(binary: impl Into<PathBuf>, cache_dir: impl Into<PathBuf>) -> Restic {
        Restic {
            binary: binary.into(),
            cache_dir: cache_dir.into(),
            pid_dir: None,
        }
    }

    /// Records each running restic's pid as a file in `dir`, so that after
    /// a `kill -9` of this process (which its children survive) the next
    /// one stops them ([`Restic::kill_leftovers`]) before it copies again.
    pub fn with_pid_dir(mut self, dir: impl Into<PathBuf>) -> Restic {
        self.pid_dir = Some(dir.into());
        self
    }

    /// Kills the restic processes a previous run of this process left (see
    /// `with_pid_dir`); how many. A pid is killed only while it is still a
    /// restic (`/proc/<pid>/comm`), so a reused pid is left alone.
    pub fn kill_leftovers(&self) -> usize {
        let Some(dir) = &self.pid_dir else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut killed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let _ = std::fs::remove_file(e.path());
            let Ok(pid) = name.parse::<i32>() else {
                continue;
            };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() != "restic" {
                continue;
            }
            if let Some(pid) = rustix::process::Pid::from_raw(pid)
                && rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok()
            {
                killed += 1;
            }
        }
        killed
    }

    /// Runs `verb` with `args`, feeding every stdout line to `line`; an
    /// exit other than 0 is a [`ResticError`] from its standard error.
    async fn run(
        &self,
        repo: &Repository,
        verb: &'static str,
        args: &[&std::ffi::OsStr],
        cwd: Option<&Path>,
        mut line: impl FnMut(&[u8]),
    ) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.binary);
        cmd.env_clear()
            .env("RESTIC_PASSWORD", repo.password.expose())
            .env("RESTIC_REPOSITORY", &repo.location)
            .env("RESTIC_PROGRESS_FPS", "2")
            .arg(verb)
            .arg("--cache-dir")
            .arg(&self.cache_dir);
        if let Some(kib) = repo.limit_upload_kib {
            cmd.arg("--limit-upload").arg(kib.to_string());
        }
        if let Some(kib) = repo.limit_download_kib {
            cmd.arg("--limit-download").arg(kib.to_string());
        }
        if let Some(tls) = &repo.tls {
            cmd.arg("--cacert")
                .arg(&tls.ca_file)
                .arg("--tls-client-cert")
                .arg(&tls.client_pem);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in &repo.credentials {
            cmd.env(k, v.expose());
        }
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start {}", self.binary.display()))?;
        let pid_file = match (&self.pid_dir, child.id()) {
            (Some(dir), Some(pid)) => {
                let f = dir.join(pid.to_string());
                std::fs::create_dir_all(dir)
                    .and_then(|()| std::fs::write(&f, b""))
                    .ok()
                    .map(|()| PidFile(f))
            }
            _ => None,
        };
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let tail = tokio::spawn(stderr_tail(stderr));
        read_lines(stdout, &mut line).await?;
        let status = child.wait().await?;
        drop(pid_file);
        let tail = tail.await.unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        Err(classify(verb, &repo.location, &tail).into())
    }

    /// Opens the repository, creating it (and, on S3, its bucket) when there
    /// is none. Fails on a wrong password: an existing repository is never
    /// created again.
    pub async fn ensure_repository(&self, repo: &Repository) -> anyhow::Result<()> {
        match self
            .run(repo, "cat", &["config".as_ref()], None, |_| {})
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => match e.downcast_ref::<ResticError>() {
                Some(ResticError::NoRepository(_)) => {
                    self.run(repo, "init", &[], None, |_| {}).await
                }
                _ => Err(e),
            },
        }
    }

    /// Backs up the directory `dir` (its contents, stored relative to it),
    /// tagged with `tags`, calling `progress` as restic reports. The
    /// snapshot exists once this returns Ok.
    pub async fn backup(
        &self,
        repo: &Repository,
        dir: &Path,
        tags: &[String],
        mut progress: impl FnMut(&Progress),
    ) -> anyhow::Result<BackupSummary> {
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["--json".as_ref(), "--host".as_ref(), SNAPSHOT_HOST.as_ref()];
        for t in tags {
            args.push("--tag".as_ref());
            args.push(t.as_ref());
        }
        args.push(".".as_ref());
        let mut summary = None;
        self.run(
            repo,
            "backup",
            &args,
            Some(dir),
            |line| match serde_json::from_slice::<BackupLine>(line) {
                Ok(BackupLine::Status {
                    bytes_done,
                    total_bytes,
                    files_done,
                    total_files,
                    seconds_remaining,
                }) => progress(&Progress {
                    bytes_done,
                    total_bytes,
                    files_done,
                    total_files,
                    seconds_remaining,
                }),
                Ok(BackupLine::Summary {
                    snapshot_id,
                    data_added,
                    total_bytes_processed,
                    files_new,
                    files_changed,
                    files_unmodified,
                }) => {
                    summary = Some(BackupSummary {
                        snapshot_id,
                        data_added,
                        bytes_processed: total_bytes_processed,
                        files_new,
                        files_changed,
                        files_unmodified,
                    })
                }
                Ok(BackupLine::Other) | Err(_) => {}
            },
        )
        .await?;
        let Some(mut summary) = summary else {
            bail!("restic backup ended without a summary");
        };
        // The summary names the short id; the full one is what restore and
        // forget take without ambiguity.
        let full = self
            .snapshots(repo, tags)
            .await?
            .into_iter()
            .find(|s| s.id.starts_with(&summary.snapshot_id))
            .with_context(|| format!("snapshot {} not listed", summary.snapshot_id))?;
        summary.snapshot_id = full.id;
        Ok(summary)
    }

    /// The snapshots carrying every tag in `tags`, oldest first.
    pub async fn snapshots(
        &self,
        repo: &Repository,
        tags: &[String],
    ) -> anyhow::Result<Vec<Snapshot>> {
        let joined = tags.join(",");
        let mut args: Vec<&std::ffi::OsStr> = vec!["--json".as_ref()];
        if !tags.is_empty() {
            args.push("--tag".as_ref());
            args.push(joined.as_ref());
        }
        let mut out = Vec::new();
        self.run(repo, "snapshots", &args, None, |line| {
            out.extend_from_slice(line)
        })
        .await?;
        if out.is_empty() {
            return Ok(Vec::new());
        }
        Ok(serde_json::from_slice::<Option<Vec<Snapshot>>>(&out)
            .context("restic snapshots: unexpected output")?
            .unwrap_or_default())
    }

    /// Restores snapshot `id` into `target` (created), the volume's files
    /// directly under it. `progress` gets the bytes written so far, measured
    /// on disk every second against the snapshot's size (restic 0.14 reports
    /// no restore progress of its own).
    pub async fn restore(
        &self,
        repo: &Repository,
        id: &str,
        target: &Path,
        mut progress: impl FnMut(&Progress),
    ) -> anyhow::Result<()> {
        let total = self.snapshot_size(repo, id).await?;
        tokio::fs::create_dir_all(target).await?;
        let args: Vec<&std::ffi::OsStr> = vec![id.as_ref(), "--target".as_ref(), target.as_ref()];
        let restore = self.run(repo, "restore", &args, None, |_| {});
        tokio::pin!(restore);
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                done = &mut restore => {
                    done?;
                    progress(&Progress { bytes_done: total.0, total_bytes: total.0, files_done: total.1, total_files: total.1, seconds_remaining: Some(0) });
                    return Ok(());
                }
                _ = tick.tick() => {
                    let t = target.to_owned();
                    let (bytes, files) = tokio::task::spawn_blocking(move || disk_usage(&t)).await.unwrap_or((0, 0));
                    let secs = started.elapsed().as_secs_f64();
                    let left = (bytes > 0 && total.0 > bytes).then(|| ((total.0 - bytes) as f64 * secs / bytes as f64) as u64);
                    progress(&Progress { bytes_done: bytes.min(total.0), total_bytes: total.0, files_done: files.min(total.1), total_files: total.1, seconds_remaining: left });
                }
            }
        }
    }

    /// Bytes and files in snapshot `id` (`restic stats`, restore size).
    pub async fn snapshot_size(&self, repo: &Repository, id: &str) -> anyhow::Result<(u64, u64)> {
        #[derive(Deserialize)]
        struct Stats {
            #[serde(default)]
            total_size: u64,
            #[serde(default)]
            total_file_count: u64,
        }
        let mut out = Vec::new();
        let args: Vec<&std::ffi::OsStr> = vec!["--json".as_ref(), id.as_ref()];
        self.run(repo, "stats", &args, None, |l| out.extend_from_slice(l))
            .await?;
        let s: Stats = serde_json::from_slice(&out).context("restic stats: unexpected output")?;
        Ok((s.total_size, s.total_file_count))
    }

    /// Keeps, of the snapshots tagged `tags`, the newest of each of the last
    /// `daily` days and `weekly` weeks, forgets the rest and removes the
    /// chunks no snapshot names any more.
    pub async fn forget(
        &self,
        repo: &Repository,
        tags: &[String],
        daily: u32,
        weekly: u32,
    ) -> anyhow::Result<()> {
        let joined = tags.join(",");
        let (d, w) = (daily.to_string(), weekly.to_string());
        let args: Vec<&std::ffi::OsStr> = vec![
            "--tag".as_ref(),
            joined.as_ref(),
            "--group-by".as_ref(),
            "tags".as_ref(),
            "--keep-daily".as_ref(),
            d.as_ref(),
            "--keep-weekly".as_ref(),
            w.as_ref(),
            "--prune".as_ref(),
        ];
        self.run(repo, "forget", &args, None, |_| {}).await
    }

    /// Forgets the snapshots `ids` and prunes the data only they used
    /// (prune takes the repository's exclusive lock).
    pub async fn forget_ids(&self, repo: &Repository, ids: &[String]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut args: Vec<&std::ffi::OsStr> = vec!["--prune".as_ref()];
        args.extend(ids.iter().map(|i| std::ffi::OsStr::new(i.as_str())));
        self.run(repo, "forget", &args, None, |_| {}).await
    }

    /// Verifies the repository's structure and reads back `read_data_subset`
    /// of its data (e.g. "10%", or "100%" for all), checking every chunk's
    /// hash and authentication.
    pub async fn check(&self, repo: &Repository, read_data_subset: &str) -> anyhow::Result<()> {
        let sub = format!("--read-data-subset={read_data_subset}");
        self.run(repo, "check", &[sub.as_ref()], None, |_| {}).await
    }

    /// Removes locks left by restic processes that no longer run (a killed
    /// backup's).
    pub async fn unlock(&self, repo: &Repository) -> anyhow::Result<()> {
        self.run(repo, "unlock", &[], None, |_| {}).await
    }
}

/// Feeds each line of `r` (newline removed) to `line`, skipping any longer
/// than [`MAX_LINE`].
async fn read_lines(
    r: impl AsyncRead + Unpin,
    line: &mut impl FnMut(&[u8]),
) -> std::io::Result<()> {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    let mut skipping = false;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            if !skipping && !buf.is_empty() {
                line(&buf);
            }
            return Ok(());
        }
        let (take, end) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !skipping {
            let body = &chunk[..if end { take - 1 } else { take }];
            if buf.len() + body.len() > MAX_LINE {
                skipping = true;
                buf.clear();
            } else {
                buf.extend_from_slice(body);
            }
        }
        r.consume(take);
        if end {
            if !skipping {
                line(&buf);
            }
            buf.clear();
            skipping = false;
        }
    }
}

/// The last [`STDERR_TAIL`] bytes of `r`.
async fn stderr_tail(mut r: impl AsyncRead + Unpin) -> String {
    let mut tail = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = r.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&chunk[..n]);
        if tail.len() > STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// What restic's standard error says went wrong.
fn classify(verb: &'static str, location: &str, stderr: &str) -> ResticError {
    if stderr.contains("wrong password or no key found") {
        return ResticError::WrongPassword;
    }
    if stderr.contains("unable to open config file") || stderr.contains("Is there a repository at")
    {
        return ResticError::NoRepository(location.to_owned());
    }
    let message = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .find(|l| l.starts_with("Fatal:"))
        .or_else(|| stderr.lines().map(str::trim).rfind(|l| !l.is_empty()))
        .unwrap_or("no message")
        .to_owned();
    ResticError::Failed { verb, message }
}

/// Bytes and regular files under `dir` (symlinks not followed).
fn disk_usage(dir: &Path) -> (u64, u64) {
    let mut stack = vec![dir.to_owned()];
    let (mut bytes, mut files) = (0, 0);
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => {
                    files += 1;
                    bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                }
                _ => {}
            }
        }
    }
    (bytes, files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_longer_than_the_bound_are_skipped_and_the_rest_read() {
        let long = vec![b'x'; MAX_LINE + 10];
        let mut input = b"{\"a\":1}\n".to_vec();
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\nlast");
        let mut seen = Vec::new();
        read_lines(&input[..], &mut |l: &[u8]| seen.push(l.to_vec()))
            .await
            .unwrap();
        assert_eq!(seen, vec![b"{\"a\":1}".to_vec(), b"last".to_vec()]);
    }

    #[test]
    fn restic_errors_are_told_apart() {
        assert!(matches!(
            classify("cat", "s3:x", "Fatal: wrong password or no key found\n"),
            ResticError::WrongPassword
        ));
        assert!(matches!(
            classify(
                "cat",
                "s3:x",
                "Fatal: unable to open config file: Stat: ...\nIs there a repository at the following location?\ns3:x\n"
            ),
            ResticError::NoRepository(_)
        ));
        let ResticError::Failed { message, .. } = classify(
            "backup",
            "s3:x",
            "open repository\nFatal: unable to save snapshot: quota\n",
        ) else {
            panic!("not Failed")
        };
        assert_eq!(message, "Fatal: unable to save snapshot: quota");
    }

    #[test]
    fn a_repositorys_debug_hides_its_secrets() {
        let repo = Repository {
            location: "s3:http://h/b".into(),
            password: Secret::new("hunter2"),
            credentials: vec![("AWS_SECRET_ACCESS_KEY".into(), Secret::new("s3cret"))],
            limit_upload_kib: None,
            limit_download_kib: None,
            tls: None,
        };
        let s = format!("{repo:?}");
        assert!(!s.contains("hunter2") && !s.contains("s3cret"), "{s}");
        assert!(s.contains("AWS_SECRET_ACCESS_KEY"));
    }
}
