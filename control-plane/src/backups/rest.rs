//! A directory on the control plane's host as a backup destination: the
//! control plane serves it to the workers' agents in restic's REST protocol
//! (restic's `doc/REST_backend`, versions 1 and 2), under
//! `/restic/<destination id>/<user id>/` on the API's port, so the agents'
//! restic (`rest:https://<control plane>/restic/...`) copies volumes into
//! it as it does into a bucket, and the control plane's own restic (which
//! creates repositories and streams downloads) opens the directory
//! directly: the files are in restic's local layout (`config`, `keys/`,
//! `locks/`, `snapshots/`, `index/`, `data/<2 hex>/`).
//!
//! - Who: a request must carry a worker's client certificate (the one the
//!   store accepts for it, as on the agent stream), and that worker must
//!   have a transfer open (pending or running) into this customer's
//!   repository at this destination: a backup's or a forget's writes, a
//!   restore's or a drill check's only reads (and takes restic's locks).
//!   Anyone else gets 401 or 403. An admission, or a refusal of a
//!   certificate, is remembered for [`ADMISSION_TTL`] (so a worker whose
//!   transfer ended is refused within it); "no transfer open" is not, so a
//!   transfer ordered a moment later gets in at once. Each worker has at most [`PER_WORKER`] requests
//!   under way, counted before the store is asked (429 beyond; restic
//!   retries).
//! - Where: the destination's directory must be the one CreateBackupDestination
//!   checked: its marker file is there (an unmounted disk, or a replica
//!   without the shared mount, is refused rather than written under), it
//!   is a directory of the control plane's user that no group or other
//!   user may write, and no symlink is followed.
//! - What: only restic's names: the five file types, and 64-hex names
//!   (restic names every file but `config` by the SHA-256 of its content).
//!   An upload is checked against its name before it is kept, so a worker
//!   cannot store anything else under a file's name; nothing is replaced
//!   (a file already there is the same content; `config` is written once).
//! - How: an upload streams to a temporary file in the same directory
//!   (removed if the request is dropped; a crash's are swept at start),
//!   is synced to disk, checked, and linked into place, so a file is there
//!   whole or not at all; at most [`MAX_UPLOAD`] bytes, a sender silent
//!   for [`STALL`] or slower than [`UPLOAD_DEADLINE`] in all is cut off,
//!   and uploads stop (507) while the filesystem's free space is under
//!   [`reserve`]. A read streams the file (or the byte range restic asks
//!   for) [`CHUNK`] at a time.
//! - The server's request timeout does not bound these requests (a pack
//!   upload under a bandwidth limit can take minutes); the bounds above
//!   do.

use std::{
    collections::HashMap,
    io::SeekFrom,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tonic::{
    body::Body,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};

use super::{Backups, queries};
use crate::{error::AppError, workers::enrollment::Enrollment};

/// Where repositories are served.
pub const PREFIX: &str = "/restic/";
/// How long an admission is trusted before the store is asked again.
const ADMISSION_TTL: Duration = Duration::from_secs(5);
/// The largest file restic may store (its packs are at most 128 MiB).
const MAX_UPLOAD: u64 = 160 << 20;
/// The largest `config` (restic's is a few hundred bytes).
const MAX_CONFIG: u64 = 16 * 1024;
/// How long an upload may go without data, or a download unread.
const STALL: Duration = Duration::from_secs(60);
/// How long one upload may take in all.
const UPLOAD_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// How often an upload checks the free space again, bytes.
const SPACE_CHECK_EVERY: u64 = 32 << 20;
/// The file CreateBackupDestination leaves in a directory destination,
/// holding the destination's id.
pub const MARKER: &str = ".minispod-destination";
/// Temporary files of uploads start so (never a restic name).
const TEMP_PREFIX: &str = ".upload-";
/// Requests one worker may have under way.
const PER_WORKER: usize = 16;
/// The largest read of a file, and so the largest data frame.
const CHUNK: usize = 64 * 1024;
/// restic's file types, as directories.
const TYPES: [&str; 5] = ["data", "keys", "locks", "snapshots", "index"];
/// What a client asks for to get version 2 of the protocol.
const V2: &str = "application/vnd.x.restic.rest.v2";

/// The path agents reach `user`'s repository at destination `dest` under.
pub fn repository_path(dest: &str, user: &str) -> String {
    format!("{PREFIX}{dest}/{user}/")
}

/// Serves directory destinations to agents; cheap to clone.
#[derive(Clone)]
pub struct RestServer {
    backups: Backups,
    enrollment: Enrollment,
    state: Arc<Mutex<State>>,
}

/// The store's answer on a (worker, certificate, destination, user).
#[derive(Clone)]
enum Admission {
    /// In, to the repository's directory; `write` for a backup's or a
    /// forget's transfer, else reads (and locks) only.
    Open { root: PathBuf, write: bool },
    /// Out, with the answer.
    Refused(StatusCode, &'static str),
}

#[derive(Default)]
struct State {
    /// (worker, certificate serial, destination, user) → the store's
    /// answer, and until when it holds.
    admitted: HashMap<(String, String, String, String), (Admission, Instant)>,
    /// Requests under way per worker.
    busy: HashMap<String, usize>,
}

impl std::fmt::Debug for RestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestServer").finish_non_exhaustive()
    }
}

/// One request's place in its worker's [`PER_WORKER`]; given back when
/// dropped.
struct Busy {
    state: Arc<Mutex<State>>,
    worker: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = s.busy.get_mut(&self.worker) {
            *n -= 1;
            if *n == 0 {
                s.busy.remove(&self.worker);
            }
        }
    }
}

/// What a request names inside a repository.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    /// The repository itself (`POST ?create=true`).
    Root,
    /// `config`.
    Config,
    /// A type's listing, `data/`.
    List(&'static str),
    /// One file, `data/<name>`.
    File(&'static str, &'a str),
}

/// `(destination, user, target)` of a path under [`PREFIX`].
fn parse(path: &str) -> Option<(&str, &str, Target<'_>)> {
    let rest = path.strip_prefix(PREFIX)?;
    let mut parts = rest.splitn(3, '/');
    let (dest, user) = (parts.next()?, parts.next()?);
    if !is_id(dest) || !is_id(user) {
        return None;
    }
    let target = match parts.next() {
        None | Some("") => Target::Root,
        Some("config") => Target::Config,
        Some(t) => {
            let (kind, name) = t.split_once('/')?;
            let kind = TYPES.into_iter().find(|k| *k == kind)?;
            if name.is_empty() {
                Target::List(kind)
            } else if is_hex_name(name) {
                Target::File(kind, name)
            } else {
                return None;
            }
        }
    };
    Some((dest, user, target))
}

/// A store id: 1 to 64 of `[0-9a-z-]`.
fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
}

/// A restic file name: 64 lower-case hex digits.
fn is_hex_name(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Where file `name` of `kind` is kept under repository `root`.
fn file_path(root: &Path, kind: &str, name: &str) -> PathBuf {
    if kind == "data" {
        root.join(kind).join(&name[..2]).join(name)
    } else {
        root.join(kind).join(name)
    }
}

fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::new(Full::new(Bytes::from(message.into() + "\n"))))
        .expect("valid headers")
}

fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "not found")
}

fn io_error(what: &str, e: &std::io::Error) -> Response<Body> {
    if e.kind() == std::io::ErrorKind::NotFound {
        return not_found();
    }
    tracing::warn!(error = %e, "backup directory: {what} failed");
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the control plane could not {what}"),
    )
}

impl RestServer {
    /// The server over `backups`' directory destinations, admitting the
    /// workers `enrollment` accepts.
    pub fn new(backups: Backups, enrollment: Enrollment) -> RestServer {
        RestServer {
            backups,
            enrollment,
            state: Arc::default(),
        }
    }

    /// Answers one request under [`PREFIX`].
    pub async fn serve<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: std::fmt::Display,
    {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        let Some((dest, user, target)) = parse(&path) else {
            return not_found();
        };
        let (root, write, busy) = match self.admit(&parts, dest, user).await {
            Ok(admitted) => admitted,
            Err(response) => return response,
        };
        let method = parts.method.clone();
        if !allowed(&method, &target, write) {
            return text(
                StatusCode::FORBIDDEN,
                "this worker's transfer into this repository only reads it",
            );
        }
        let v2 = parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains(V2));
        let range = parts
            .headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let create = parts.uri.query() == Some("create=true");
        match (method, target) {
            (Method::POST, Target::Root) if create => create_layout(&root).await,
            (m @ (Method::HEAD | Method::GET), Target::Config) => {
                read(root.join("config"), None, busy, m == Method::GET).await
            }
            (Method::POST, Target::Config) => store(body, root.join("config"), None, busy).await,
            (Method::GET, Target::List(kind)) => list(&root, kind, v2).await,
            (m @ (Method::HEAD | Method::GET), Target::File(kind, name)) => {
                read(
                    file_path(&root, kind, name),
                    range.as_deref(),
                    busy,
                    m == Method::GET,
                )
                .await
            }
            (Method::POST, Target::File(kind, name)) => {
                store(body, file_path(&root, kind, name), Some(name), busy).await
            }
            (Method::DELETE, Target::File(kind, name)) => {
                match tokio::fs::remove_file(file_path(&root, kind, name)).await {
                    Ok(()) => text(StatusCode::OK, "deleted"),
                    Err(e) => io_error("delete a file", &e),
                }
            }
            _ => text(
                StatusCode::METHOD_NOT_ALLOWED,
                "not a request of restic's REST protocol this server takes",
            ),
        }
    }

    /// The repository's directory and whether the caller may change it,
    /// if the caller is a worker with a transfer open into it; else the
    /// refusal.
    async fn admit(
        &self,
        req: &http::request::Parts,
        dest: &str,
        user: &str,
    ) -> Result<(PathBuf, bool, Busy), Response<Body>> {
        let mut probe = tonic::Request::new(());
        if let Some(tls) = req
            .extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .cloned()
        {
            probe.extensions_mut().insert(tls);
        }
        let Some(identity) = crate::workers::enrollment::request_identity(&probe) else {
            return Err(text(
                StatusCode::UNAUTHORIZED,
                "a worker's client certificate is required",
            ));
        };
        // The worker's place first (its certificate verified against the
        // CA), so that refused requests too are bounded.
        let busy = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let n = s.busy.entry(identity.worker_id.clone()).or_default();
            if *n >= PER_WORKER {
                return Err(text(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many requests of this worker under way",
                ));
            }
            *n += 1;
            Busy {
                state: self.state.clone(),
                worker: identity.worker_id.clone(),
            }
        };
        let key = (
            identity.worker_id,
            identity.serial,
            dest.to_owned(),
            user.to_owned(),
        );
        let cached = {
            let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.admitted
                .get(&key)
                .filter(|(_, until)| *until > Instant::now())
                .map(|(a, _)| a.clone())
        };
        let admission = match cached {
            Some(a) => a,
            None => {
                let a = self.ask_store(&probe, dest, user).await?;
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                s.admitted.retain(|_, (_, until)| *until > now);
                s.admitted.insert(key, (a.clone(), now + ADMISSION_TTL));
                a
            }
        };
        match admission {
            Admission::Open { root, write } => Ok((root, write, busy)),
            Admission::Refused(status, why) => Err(text(status, why)),
        }
    }

    /// What the store says of this caller and repository; Err for what is
    /// not remembered (the store unavailable, no transfer open).
    async fn ask_store(
        &self,
        probe: &tonic::Request<()>,
        dest: &str,
        user: &str,
    ) -> Result<Admission, Response<Body>> {
        let unavailable = || text(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable");
        let worker = match self.enrollment.authenticate_peer(probe).await {
            Ok((_, worker)) => worker,
            Err(AppError::Internal(_)) => return Err(unavailable()),
            Err(_) => {
                return Ok(Admission::Refused(
                    StatusCode::FORBIDDEN,
                    "this certificate is not a current worker's",
                ));
            }
        };
        let db = self.backups.db();
        let directory = match queries::destination(db, dest)
            .await
            .map_err(|_| unavailable())?
        {
            Some(d) if d.id == dest && !d.directory.is_empty() => d.directory,
            _ => return Ok(Admission::Refused(StatusCode::NOT_FOUND, "not found")),
        };
        let (open, writers) = queries::worker_transfers_into(db, &worker.id, user, dest)
            .await
            .map_err(|_| unavailable())?;
        if open == 0 {
            // Not remembered: a transfer ordered a moment later must get
            // in at once (the worker's place bounds these requests).
            return Err(text(
                StatusCode::FORBIDDEN,
                "this worker has no transfer open into this repository",
            ));
        }
        let (dir, dest_id, user) = (PathBuf::from(directory), dest.to_owned(), user.to_owned());
        let checked = tokio::task::spawn_blocking(move || {
            check_destination_dir(&dir, &dest_id)?;
            let root = dir.join(&user);
            match std::fs::symlink_metadata(&root) {
                Ok(m) if !m.is_dir() => Err(std::io::Error::other(format!(
                    "{} is not a directory",
                    root.display()
                ))),
                Ok(_) => Ok(root),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(root),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|_| unavailable())?;
        match checked {
            Ok(root) => Ok(Admission::Open {
                root,
                write: writers > 0,
            }),
            Err(e) => {
                tracing::error!(destination = %dest, error = %e,
                    "a directory backup destination cannot be served");
                Ok(Admission::Refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the destination's directory is missing or unsafe on this control plane \
                     (see its log)",
                ))
            }
        }
    }

    /// Removes what uploads a crash cut short left in the directory
    /// destinations (temporary files older than an hour).
    pub fn spawn_sweep(&self) -> tokio::task::JoinHandle<()> {
        let backups = self.backups.clone();
        tokio::spawn(async move {
            let Ok(destinations) = queries::destinations(backups.db()).await else {
                return;
            };
            for d in destinations.into_iter().filter(|d| !d.directory.is_empty()) {
                let dir = PathBuf::from(&d.directory);
                let removed = tokio::task::spawn_blocking(move || sweep(&dir, 0))
                    .await
                    .unwrap_or(0);
                if removed > 0 {
                    tracing::info!(destination = %d.id, removed,
                        "removed the temporary files of uploads cut short");
                }
            }
        })
    }
}

/// Whether `dir` is a directory destination's, for destination `id`: a
/// real directory (no symlink) of this process's user that neither group
/// nor others may write, holding the marker CreateBackupDestination wrote.
pub fn check_destination_dir(dir: &Path, id: &str) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(dir)?;
    if !m.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory (or is a symlink)",
            dir.display()
        )));
    }
    if m.uid() != rustix::process::geteuid().as_raw() || m.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(format!(
            "{} must belong to the control plane's user and be writable by no one else",
            dir.display()
        )));
    }
    let marker = std::fs::read_to_string(dir.join(MARKER)).map_err(|e| {
        std::io::Error::other(format!(
            "{} has no {MARKER} ({e}): is the disk mounted?",
            dir.display()
        ))
    })?;
    if marker.trim() != id {
        return Err(std::io::Error::other(format!(
            "{}'s {MARKER} names another destination",
            dir.display()
        )));
    }
    Ok(())
}

/// Whether `method` on `target` is for a caller whose transfer writes
/// (`write`) or only reads: a restore or a check reads, and takes and
/// drops restic's locks.
fn allowed(method: &Method, target: &Target<'_>, write: bool) -> bool {
    let changes = matches!(*method, Method::POST | Method::DELETE);
    !changes || write || matches!(target, Target::File("locks", _))
}

/// Removes temporary upload files older than an hour under `dir`; how
/// many. Follows no symlink.
fn sweep(dir: &Path, depth: usize) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let Ok(kind) = e.file_type() else { continue };
        let name = e.file_name();
        if kind.is_dir() && depth < 3 {
            removed += sweep(&e.path(), depth + 1);
        } else if kind.is_file()
            && name.to_string_lossy().starts_with(TEMP_PREFIX)
            && e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(3600)))
            && std::fs::remove_file(e.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Creates the repository's directories (restic then stores its config
/// and key); answers OK when they exist.
async fn create_layout(root: &Path) -> Response<Body> {
    let mut dirs: Vec<PathBuf> = TYPES.iter().map(|t| root.join(t)).collect();
    dirs.extend((0..=255u8).map(|b| root.join("data").join(format!("{b:02x}"))));
    for d in dirs {
        if let Err(e) = make_dir(&d).await {
            return io_error("create the repository", &e);
        }
    }
    text(StatusCode::OK, "created")
}

async fn make_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        // The new entry itself on disk.
        match dir.parent() {
            Some(parent) => std::fs::File::open(parent)?.sync_all(),
            None => Ok(()),
        }
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The files of `kind`: names (v1) or names and sizes (v2).
async fn list(root: &Path, kind: &'static str, v2: bool) -> Response<Body> {
    let base = root.join(kind);
    let listed = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<(String, u64)>> {
        let mut dirs = vec![base.clone()];
        if kind == "data" {
            dirs = match std::fs::read_dir(&base) {
                Ok(entries) => entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e),
            };
        }
        let mut files = Vec::new();
        for dir in dirs {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // Temporary files of uploads under way are not listed.
                if !is_hex_name(&name) {
                    continue;
                }
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                files.push((name, size));
            }
        }
        Ok(files)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    let files = match listed {
        Ok(files) => files,
        Err(e) => return io_error("list the repository", &e),
    };
    let (content_type, json) = if v2 {
        let entries: Vec<serde_json::Value> = files
            .into_iter()
            .map(|(name, size)| serde_json::json!({ "name": name, "size": size }))
            .collect();
        (V2, serde_json::to_vec(&entries))
    } else {
        let names: Vec<String> = files.into_iter().map(|(n, _)| n).collect();
        (
            "application/vnd.x.restic.rest.v1",
            serde_json::to_vec(&names),
        )
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::new(Full::new(Bytes::from(
            json.expect("strings and numbers serialize"),
        ))))
        .expect("valid headers")
}

/// `bytes=<start>-[<end>]` of a file of `len` bytes: the first byte and
/// how many; None when it is not one satisfiable range.
fn byte_range(range: &str, len: u64) -> Option<(u64, u64)> {
    let spec = range.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    if start >= len {
        return None;
    }
    let end = match end.trim() {
        "" => len - 1,
        e => e.parse::<u64>().ok()?.min(len - 1),
    };
    (end >= start).then(|| (start, end - start + 1))
}

/// A file's content (or its length only, for HEAD), the range asked for
/// as 206.
async fn read(path: PathBuf, range: Option<&str>, busy: Busy, body: bool) -> Response<Body> {
    let mut file = match tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .await
    {
        Ok(f) => f,
        Err(e) => return io_error("read a file", &e),
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => return io_error("read a file", &e),
    };
    let (status, start, count) = match range {
        None => (StatusCode::OK, 0, len),
        Some(r) => match byte_range(r, len) {
            Some((start, count)) => (StatusCode::PARTIAL_CONTENT, start, count),
            None => {
                return Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                    .body(Body::empty())
                    .expect("valid headers");
            }
        },
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, count)
        .header(header::ACCEPT_RANGES, "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", start + count - 1),
        );
    }
    if !body || count == 0 {
        return builder.body(Body::empty()).expect("valid headers");
    }
    if let Err(e) = file.seek(SeekFrom::Start(start)).await {
        return io_error("read a file", &e);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(2);
    tokio::spawn(async move {
        let _busy = busy;
        let mut left = count;
        while left > 0 {
            let mut buf = vec![0u8; CHUNK.min(left as usize)];
            let frame = match file.read(&mut buf).await {
                Ok(0) => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was read",
                )),
                Ok(n) => {
                    left -= n as u64;
                    buf.truncate(n);
                    Ok(http_body::Frame::data(Bytes::from(buf)))
                }
                Err(e) => Err(e),
            };
            let failed = frame.is_err();
            match tokio::time::timeout(STALL, tx.send(frame)).await {
                Ok(Ok(())) if !failed => {}
                _ => return,
            }
        }
    });
    builder
        .body(Body::new(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
        .expect("valid headers")
}

/// Removes a temporary file when dropped (a request dropped mid-upload
/// included).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The free space uploads leave on a filesystem of `total` bytes: 5 %,
/// and at least 1 GiB.
fn reserve(total: u64) -> u64 {
    (total / 20).max(1 << 30)
}

/// The 507 when the filesystem of `dir` has no room for `more` bytes
/// above its [`reserve`].
fn no_room_for(dir: &Path, more: u64) -> Option<Response<Body>> {
    let stat = match rustix::fs::statvfs(dir) {
        Ok(stat) => stat,
        Err(e) => return Some(io_error("check free space", &e.into())),
    };
    let total = stat.f_blocks.saturating_mul(stat.f_frsize);
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    if free.saturating_sub(more) < reserve(total) {
        tracing::warn!(dir = %dir.display(), free, "a directory backup destination is full");
        return Some(text(
            StatusCode::INSUFFICIENT_STORAGE,
            "the backup directory's filesystem is full",
        ));
    }
    None
}

/// Stores `body` at `path` whole or not at all, and never over a file
/// there: a temporary file beside it, checked against `name` (its SHA-256)
/// when given, synced, linked into place.
async fn store<B>(body: B, path: PathBuf, name: Option<&str>, busy: Busy) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    let _busy = busy;
    let limit = if name.is_some() {
        MAX_UPLOAD
    } else {
        MAX_CONFIG
    };
    if name.is_none() && tokio::fs::symlink_metadata(&path).await.is_ok() {
        return text(
            StatusCode::FORBIDDEN,
            "the repository's config is written once",
        );
    }
    let dir = path.parent().expect("a file in a directory").to_owned();
    if let Err(e) = make_dir(&dir).await {
        return io_error("store a file", &e);
    }
    let announced = body.size_hint().exact().unwrap_or(0);
    if announced > limit {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a file is at most {limit} bytes"),
        );
    }
    if let Some(full) = no_room_for(&dir, announced) {
        return full;
    }
    let temp = TempFile(dir.join(format!("{TEMP_PREFIX}{}", crate::store::new_id())));
    let received =
        match tokio::time::timeout(UPLOAD_DEADLINE, receive(body, &temp.0, &dir, limit)).await {
            Ok(r) => r,
            Err(_) => Err(text(
                StatusCode::REQUEST_TIMEOUT,
                "the upload took too long",
            )),
        };
    let digest = match received {
        Ok(digest) => digest,
        Err(refusal) => return refusal,
    };
    if name.is_some_and(|n| n != minispod_support::hex(&digest)) {
        return text(
            StatusCode::BAD_REQUEST,
            "the content does not match its name (its SHA-256)",
        );
    }
    // A link, unlike a rename, never replaces a file there.
    match tokio::fs::hard_link(&temp.0, &path).await {
        Ok(()) => {}
        // The same name is the same content (checked above).
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && name.is_some() => {
            return text(StatusCode::OK, "stored already");
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return text(
                StatusCode::FORBIDDEN,
                "the repository's config is written once",
            );
        }
        Err(e) => return io_error("store a file", &e),
    }
    drop(temp);
    // The new entry itself on disk before restic is told it is stored.
    let synced = tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
    match synced {
        Ok(()) => text(StatusCode::OK, "stored"),
        Err(e) => io_error("sync a directory", &e),
    }
}

/// Writes `body` (at most `limit` bytes) to `temp` in `dir` and syncs it;
/// its SHA-256.
async fn receive<B>(
    mut body: B,
    temp: &Path,
    dir: &Path,
    limit: u64,
) -> Result<Vec<u8>, Response<Body>>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(temp)
        .map(tokio::fs::File::from_std)
        .map_err(|e| io_error("store a file", &e))?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut next_check = SPACE_CHECK_EVERY;
    loop {
        let frame = match tokio::time::timeout(STALL, body.frame()).await {
            Err(_) => {
                return Err(text(StatusCode::REQUEST_TIMEOUT, "the upload stalled"));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(text(
                    StatusCode::BAD_REQUEST,
                    format!("the upload broke off: {e}"),
                ));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        size += data.len() as u64;
        if size > limit {
            return Err(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a file is at most {limit} bytes"),
            ));
        }
        if size >= next_check {
            if let Some(full) = no_room_for(dir, 0) {
                return Err(full);
            }
            next_check += SPACE_CHECK_EVERY;
        }
        hasher.update(&data);
        file.write_all(&data)
            .await
            .map_err(|e| io_error("store a file", &e))?;
    }
    // tokio's write hands the last bytes to a background write: flush
    // reports its error, which sync_all would not.
    file.flush()
        .await
        .map_err(|e| io_error("store a file", &e))?;
    file.sync_all()
        .await
        .map_err(|e| io_error("store a file", &e))?;
    let on_disk = file
        .metadata()
        .await
        .map_err(|e| io_error("store a file", &e))?
        .len();
    if on_disk != size {
        return Err(io_error(
            "store a file",
            &std::io::Error::other(format!("{on_disk} bytes written of {size}")),
        ));
    }
    Ok(hasher.finalize().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn only_restic_paths_are_taken() {
        let base = "/restic/0190-dest/0190-user/";
        assert_eq!(parse(base), Some(("0190-dest", "0190-user", Target::Root)));
        assert_eq!(parse(&format!("{base}config")).unwrap().2, Target::Config);
        assert_eq!(
            parse(&format!("{base}data/")).unwrap().2,
            Target::List("data")
        );
        assert_eq!(
            parse(&format!("{base}locks/{NAME}")).unwrap().2,
            Target::File("locks", NAME)
        );
        for bad in [
            "/restic/../etc/".to_owned(),
            "/restic/dest/".to_owned(),
            "/restic/Dest/user/".to_owned(),
            format!("{base}data/../../x"),
            format!("{base}data/{}", &NAME[..63]),
            format!("{base}data/{}", NAME.to_uppercase()),
            format!("{base}other/{NAME}"),
            format!("{base}data/{NAME}/x"),
        ] {
            assert_eq!(parse(&bad), None, "{bad}");
        }
    }

    #[test]
    fn data_files_are_kept_under_their_first_two_digits() {
        assert_eq!(
            file_path(Path::new("/b/u"), "data", NAME),
            PathBuf::from(format!("/b/u/data/01/{NAME}"))
        );
        assert_eq!(
            file_path(Path::new("/b/u"), "index", NAME),
            PathBuf::from(format!("/b/u/index/{NAME}"))
        );
    }

    fn busy() -> Busy {
        Busy {
            state: Arc::default(),
            worker: "w".into(),
        }
    }

    fn body(bytes: &'static [u8]) -> Full<Bytes> {
        Full::new(Bytes::from_static(bytes))
    }

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("minispod-rest-{}", crate::store::new_id()));
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_file_is_stored_whole_under_its_hash_and_never_replaced() {
        let root = scratch();
        let content: &'static [u8] = b"an encrypted pack";
        let name = minispod_support::hex(&Sha256::digest(content));
        let path = file_path(&root, "data", &name);
        let stored = store(body(content), path.clone(), Some(&name), busy()).await;
        assert_eq!(stored.status(), StatusCode::OK);
        assert_eq!(std::fs::read(&path).unwrap(), content);
        // Again (a retry): the same content, answered OK, left as it is.
        let again = store(body(content), path.clone(), Some(&name), busy()).await;
        assert_eq!(again.status(), StatusCode::OK);
        // Other bytes under that name are refused, and nothing is left.
        let forged = store(body(b"something else"), path.clone(), Some(&name), busy()).await;
        assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
        assert_eq!(std::fs::read(&path).unwrap(), content);
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from(&name)],
            "no temporary file left"
        );
        // The config is written once.
        let config = root.join("config");
        assert_eq!(
            store(body(b"v1"), config.clone(), None, busy())
                .await
                .status(),
            StatusCode::OK
        );
        assert_eq!(
            store(body(b"v2"), config.clone(), None, busy())
                .await
                .status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(std::fs::read(&config).unwrap(), b"v1");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn only_a_marked_private_real_directory_is_served() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch();
        let set_mode =
            |mode| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        set_mode(0o700);
        assert!(
            check_destination_dir(&dir, "d1").is_err(),
            "no marker: not mounted?"
        );
        std::fs::write(dir.join(MARKER), "d1").unwrap();
        check_destination_dir(&dir, "d1").unwrap();
        assert!(check_destination_dir(&dir, "d2").is_err(), "another's");
        set_mode(0o770);
        assert!(check_destination_dir(&dir, "d1").is_err(), "group-writable");
        set_mode(0o700);
        let link = dir.with_extension("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(check_destination_dir(&link, "d1").is_err(), "a symlink");
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reading_transfer_changes_nothing_but_its_locks() {
        let pack = Target::File("data", NAME);
        let lock = Target::File("locks", NAME);
        for target in [&pack, &lock, &Target::Config, &Target::List("snapshots")] {
            for m in [Method::GET, Method::HEAD] {
                assert!(allowed(&m, target, false), "{m} {target:?} to read");
            }
        }
        for (m, target) in [
            (Method::POST, &pack),
            (Method::DELETE, &pack),
            (Method::POST, &Target::Config),
            (Method::POST, &Target::Root),
            (Method::DELETE, &Target::File("snapshots", NAME)),
        ] {
            assert!(
                !allowed(&m, target, false),
                "{m} {target:?} refused a reader"
            );
            assert!(allowed(&m, target, true), "{m} {target:?} to a writer");
        }
        assert!(allowed(&Method::POST, &lock, false));
        assert!(allowed(&Method::DELETE, &lock, false));
    }

    #[test]
    fn uploads_stop_short_of_the_reserve() {
        assert_eq!(reserve(10 << 30), 1 << 30, "at least 1 GiB");
        assert_eq!(reserve(100 << 30), 5 << 30, "5 %");
        let dir = scratch();
        assert!(no_room_for(&dir, 0).is_none(), "this disk has room");
        let full = no_room_for(&dir, u64::MAX / 2).expect("no room for that much");
        assert_eq!(full.status(), StatusCode::INSUFFICIENT_STORAGE);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A body that never sends anything.
    struct Silent;

    impl http_body::Body for Silent {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_upload_is_cut_off_and_leaves_nothing() {
        let root = scratch();
        let path = file_path(&root, "data", NAME);
        let cut = store(Silent, path.clone(), Some(NAME), busy()).await;
        assert_eq!(cut.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(!path.exists());
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            0,
            "no temporary file left"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_crashs_temporary_files_are_swept_when_old() {
        let dir = scratch();
        let sub = dir.join("data/01");
        std::fs::create_dir_all(&sub).unwrap();
        let old = sub.join(format!("{TEMP_PREFIX}old"));
        let fresh = sub.join(format!("{TEMP_PREFIX}fresh"));
        let pack = sub.join(NAME);
        for f in [&old, &fresh, &pack] {
            std::fs::write(f, b"x").unwrap();
        }
        let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
        for f in [&old, &pack] {
            std::fs::File::options()
                .write(true)
                .open(f)
                .unwrap()
                .set_modified(two_hours_ago)
                .unwrap();
        }
        assert_eq!(sweep(&dir, 0), 1);
        assert!(!old.exists(), "an old upload's leftover goes");
        assert!(fresh.exists(), "an upload under way stays");
        assert!(pack.exists(), "restic's files stay");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ranges_are_read_as_restic_asks() {
        assert_eq!(byte_range("bytes=0-9", 100), Some((0, 10)));
        assert_eq!(byte_range("bytes=90-", 100), Some((90, 10)));
        assert_eq!(byte_range("bytes=90-200", 100), Some((90, 10)));
        assert_eq!(byte_range("bytes=100-", 100), None);
        assert_eq!(byte_range("bytes=5-4", 100), None);
        assert_eq!(byte_range("bytes=-5", 100), None);
        assert_eq!(byte_range("items=0-1", 100), None);
    }
}
