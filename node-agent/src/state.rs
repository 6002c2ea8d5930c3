//! The agent's state directory: what it keeps between runs.
//!
//! - `credentials.json`: worker id, certificate times, key (generated here,
//!   never sent), certificate and CA, in one file so that replacing it is one
//!   atomic rename: a new identity is written beside the old one and swapped
//!   in only once complete, and a crash at any point leaves the old identity
//!   or the new one, never a mix and never nothing. (Agents before #12 kept
//!   `identity.json`, `key.pem`, `cert.pem` and `ca.pem`; those are still
//!   read, and removed once a new identity is saved.)
//! - `spent-tokens`: SHA-256 (hex) of each enrollment token the agent
//!   enrolled with, one a line; such a token is never sent again.
//! - `k3s-join.json`: what the K3s join hook needs (server, token, worker
//!   id for the node label) and its last result, so a failed hook is
//!   retried (and the worker reported not ready) after a restart too.
//! - `machine-id`, on machines without /etc/machine-id.
//!
//! The directory is 0700 and every file 0600, created so from the start
//! (never widened then narrowed); files are replaced atomically.

use std::{
    collections::HashSet,
    fmt, fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// Now, Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `unix` seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC), for messages.
pub fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Writes `path` atomically, mode 0600 from its creation: a fresh temporary
/// file beside it (created 0600, so the contents are never readable by
/// others, not even for a moment), synced, renamed over `path`, and the
/// directory synced so the rename survives a crash.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    // A temporary file left by a crash may have another owner or mode;
    // start from a new one.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// SHA-256 of a token, hex: how spent tokens are recorded.
pub fn token_hash(token: &str) -> String {
    minispod_support::hex(&Sha256::digest(token.as_bytes()))
}

/// Who the control plane says this machine is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    /// The worker id (the certificate's common name).
    pub worker_id: String,
    /// When the certificate was issued, Unix seconds.
    pub issued_at: i64,
    /// When it expires, Unix seconds; 0 when unknown.
    pub expires_at: i64,
}

impl Identity {
    /// When to renew: two thirds into the certificate's life.
    pub fn renew_at(&self) -> i64 {
        self.issued_at + (self.expires_at - self.issued_at) * 2 / 3
    }

    /// True when the certificate has expired at `now` (Unix seconds).
    pub fn expired_at(&self, now: i64) -> bool {
        self.expires_at > 0 && now >= self.expires_at
    }
}

/// Everything needed to open an mTLS stream. `Debug` leaves the key out.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Worker id and certificate times.
    pub identity: Identity,
    /// PEM of the private key.
    pub key_pem: Secret,
    /// PEM of the client certificate.
    pub cert_pem: String,
    /// PEM of the control plane's CA.
    pub ca_pem: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity)
            .field("key_pem", &self.key_pem)
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .finish()
    }
}

/// `credentials.json` on disk.
#[derive(Serialize, Deserialize)]
struct CredentialsFile {
    identity: Identity,
    key_pem: String,
    cert_pem: String,
    ca_pem: String,
}

/// Files of the layout before `credentials.json`.
const LEGACY_FILES: [&str; 4] = ["identity.json", "key.pem", "cert.pem", "ca.pem"];

/// What the K3s join hook gets from enrollment, and how it last went.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct K3sJoin {
    /// K3s server URL; empty when the control plane has none.
    pub server_url: String,
    /// K3s join token.
    pub token: Secret,
    /// The worker id, the value of the node label the hook configures.
    pub worker_id: String,
    /// True once the hook has succeeded for these settings.
    pub succeeded: bool,
    /// The hook's last failure; empty when it has not failed.
    pub last_error: String,
}

impl fmt::Debug for K3sJoin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("K3sJoin")
            .field("server_url", &self.server_url)
            .field("token", &self.token)
            .field("worker_id", &self.worker_id)
            .field("succeeded", &self.succeeded)
            .field("last_error", &self.last_error)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct K3sJoinFile {
    server_url: String,
    token: String,
    /// Recorded since #13; files from before have the credentials' id.
    #[serde(default)]
    worker_id: String,
    succeeded: bool,
    last_error: String,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Opens (creating, 0700) the directory.
    pub fn open(path: &Path) -> anyhow::Result<StateDir> {
        fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restrict {}", path.display()))?;
        Ok(StateDir {
            path: path.to_owned(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self, name: &str) -> anyhow::Result<Option<String>> {
        match fs::read_to_string(self.path.join(name)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("read {name}")),
        }
    }

    fn remove(&self, name: &str) -> anyhow::Result<()> {
        match fs::remove_file(self.path.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("remove {name}"))
            }
            _ => Ok(()),
        }
    }

    /// Writes `name` atomically with mode 0600.
    pub fn write(&self, name: &str, contents: &str) -> anyhow::Result<()> {
        let path = self.path.join(name);
        write_private(&path, contents.as_bytes())
            .with_context(|| format!("write {}", path.display()))
    }

    /// The stored credentials, if the agent has enrolled.
    pub fn credentials(&self) -> anyhow::Result<Option<Credentials>> {
        if let Some(text) = self.read("credentials.json")? {
            let c: CredentialsFile =
                serde_json::from_str(&text).context("parse credentials.json")?;
            return Ok(Some(Credentials {
                identity: c.identity,
                key_pem: Secret::new(c.key_pem),
                cert_pem: c.cert_pem,
                ca_pem: c.ca_pem,
            }));
        }
        let (Some(id), Some(key_pem), Some(cert_pem), Some(ca_pem)) = (
            self.read("identity.json")?,
            self.read("key.pem")?,
            self.read("cert.pem")?,
            self.read("ca.pem")?,
        ) else {
            return Ok(None);
        };
        let identity = serde_json::from_str(&id).context("parse identity.json")?;
        Ok(Some(Credentials {
            identity,
            key_pem: Secret::new(key_pem),
            cert_pem,
            ca_pem,
        }))
    }

    /// Replaces the stored credentials with `c` in one atomic rename; the
    /// old ones stay in place until then (and files of the old layout are
    /// removed only after).
    pub fn save_credentials(&self, c: &Credentials) -> anyhow::Result<()> {
        let file = CredentialsFile {
            identity: c.identity.clone(),
            key_pem: c.key_pem.expose().to_owned(),
            cert_pem: c.cert_pem.clone(),
            ca_pem: c.ca_pem.clone(),
        };
        self.write("credentials.json", &serde_json::to_string_pretty(&file)?)?;
        for f in LEGACY_FILES {
            self.remove(f)?;
        }
        Ok(())
    }

    /// SHA-256 (hex) of the tokens this agent enrolled with.
    pub fn spent_tokens(&self) -> anyhow::Result<HashSet<String>> {
        Ok(self
            .read("spent-tokens")?
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// True when the agent has enrolled with `token` before.
    pub fn token_spent(&self, token: &str) -> anyhow::Result<bool> {
        Ok(self.spent_tokens()?.contains(&token_hash(token)))
    }

    /// Records `token` as spent (its SHA-256 only).
    pub fn record_spent_token(&self, token: &str) -> anyhow::Result<()> {
        let hash = token_hash(token);
        let mut text = self.read("spent-tokens")?.unwrap_or_default();
        if text.lines().any(|l| l.trim() == hash) {
            return Ok(());
        }
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&hash);
        text.push('\n');
        self.write("spent-tokens", &text)
    }

    /// The K3s join settings and last result; None before the first
    /// enrollment that recorded them (agents before #12 did not). Settings
    /// recorded before the worker id was (#13) take it from the
    /// credentials.
    pub fn k3s_join(&self) -> anyhow::Result<Option<K3sJoin>> {
        let Some(text) = self.read("k3s-join.json")? else {
            return Ok(None);
        };
        let j: K3sJoinFile = serde_json::from_str(&text).context("parse k3s-join.json")?;
        let worker_id = match j.worker_id {
            id if id.is_empty() => self
                .credentials()?
                .map(|c| c.identity.worker_id)
                .unwrap_or_default(),
            id => id,
        };
        Ok(Some(K3sJoin {
            server_url: j.server_url,
            token: Secret::new(j.token),
            worker_id,
            succeeded: j.succeeded,
            last_error: j.last_error,
        }))
    }

    /// Stores the K3s join settings and result.
    pub fn save_k3s_join(&self, j: &K3sJoin) -> anyhow::Result<()> {
        let file = K3sJoinFile {
            server_url: j.server_url.clone(),
            token: j.token.expose().to_owned(),
            worker_id: j.worker_id.clone(),
            succeeded: j.succeeded,
            last_error: j.last_error.clone(),
        };
        self.write("k3s-join.json", &serde_json::to_string_pretty(&file)?)
    }

    /// The machine id: /etc/machine-id, else one generated once and kept here.
    pub fn machine_id(&self) -> anyhow::Result<String> {
        if let Ok(id) = fs::read_to_string("/etc/machine-id") {
            let id = id.trim();
            if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Ok(id.to_owned());
            }
        }
        self.generated_machine_id()
    }

    /// The machine id generated for this state directory.
    pub fn generated_machine_id(&self) -> anyhow::Result<String> {
        if let Some(id) = self.read("machine-id")? {
            return Ok(id.trim().to_owned());
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.write("machine-id", &id)?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_state() -> (PathBuf, StateDir) {
        let dir = std::env::temp_dir().join(format!("agent-state-{}", uuid::Uuid::new_v4()));
        let s = StateDir::open(&dir).unwrap();
        (dir, s)
    }

    fn creds(worker: &str, key: &str) -> Credentials {
        Credentials {
            identity: Identity {
                worker_id: worker.into(),
                issued_at: 0,
                expires_at: 300,
            },
            key_pem: Secret::new(key),
            cert_pem: format!("cert of {worker}"),
            ca_pem: "a".into(),
        }
    }

    #[test]
    fn credentials_round_trip_with_private_modes() {
        let (dir, s) = temp_state();
        assert!(s.credentials().unwrap().is_none());
        let c = creds("w", "k");
        s.save_credentials(&c).unwrap();
        assert_eq!(s.credentials().unwrap().unwrap(), c);
        assert_eq!(c.identity.renew_at(), 200);
        for f in ["credentials.json", "spent-tokens", "k3s-join.json"] {
            match f {
                "spent-tokens" => s.record_spent_token("t").unwrap(),
                "k3s-join.json" => s.save_k3s_join(&K3sJoin::default()).unwrap(),
                _ => {}
            }
            let mode = fs::metadata(dir.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let id = s.generated_machine_id().unwrap();
        assert_eq!(s.generated_machine_id().unwrap(), id);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_new_identity_replaces_the_old_only_once_it_is_complete() {
        let (dir, s) = temp_state();
        // The old layout, as agents before #12 left it.
        let old = creds("old", "old-key");
        s.write(
            "identity.json",
            &serde_json::to_string(&old.identity).unwrap(),
        )
        .unwrap();
        s.write("key.pem", "old-key").unwrap();
        s.write("cert.pem", &old.cert_pem).unwrap();
        s.write("ca.pem", &old.ca_pem).unwrap();
        assert_eq!(s.credentials().unwrap().unwrap(), old);

        // A crash while writing the new identity leaves a temporary file
        // behind; the old identity is still what the agent loads.
        fs::write(dir.join(".credentials.json.tmp"), "{\"identity\":").unwrap();
        assert_eq!(s.credentials().unwrap().unwrap(), old);

        let new = creds("new", "new-key");
        s.save_credentials(&new).unwrap();
        assert_eq!(s.credentials().unwrap().unwrap(), new);
        for f in LEGACY_FILES {
            assert!(!dir.join(f).exists(), "{f} is discarded after the swap");
        }
        assert!(!dir.join(".credentials.json.tmp").exists());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn k3s_settings_from_before_the_worker_id_was_recorded_take_the_credentials_one() {
        let (dir, s) = temp_state();
        // k3s-join.json as agents of #12 wrote it.
        s.write(
            "k3s-join.json",
            r#"{"server_url":"https://k3s:6443","token":"t","succeeded":false,"last_error":""}"#,
        )
        .unwrap();
        assert_eq!(s.k3s_join().unwrap().unwrap().worker_id, "");
        s.save_credentials(&creds("w-7", "k")).unwrap();
        assert_eq!(s.k3s_join().unwrap().unwrap().worker_id, "w-7");
        let j = K3sJoin {
            worker_id: "w-8".into(),
            ..s.k3s_join().unwrap().unwrap()
        };
        s.save_k3s_join(&j).unwrap();
        assert_eq!(s.k3s_join().unwrap().unwrap(), j, "the recorded id wins");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn spent_tokens_are_recorded_by_hash_only() {
        let (dir, s) = temp_state();
        assert!(!s.token_spent("abc.secret").unwrap());
        s.record_spent_token("abc.secret").unwrap();
        s.record_spent_token("abc.secret").unwrap();
        s.record_spent_token("def.other").unwrap();
        assert!(s.token_spent("abc.secret").unwrap());
        assert!(s.token_spent("def.other").unwrap());
        let text = fs::read_to_string(dir.join("spent-tokens")).unwrap();
        assert!(!text.contains("secret"), "{text}");
        assert_eq!(text.lines().count(), 2);
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = creds("w", "-----BEGIN PRIVATE KEY----- sekrit");
        let j = K3sJoin {
            server_url: "https://k3s:6443".into(),
            token: Secret::new("K10sekrit"),
            ..K3sJoin::default()
        };
        let out = format!("{c:?} {j:?}");
        assert!(!out.contains("sekrit"), "{out}");
        assert!(
            out.contains("[redacted]") && out.contains("https://k3s:6443"),
            "{out}"
        );
    }

    #[test]
    fn times_are_printed_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_083_199), "2026-11-30T23:59:59Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        let id = Identity {
            worker_id: "w".into(),
            issued_at: 0,
            expires_at: 100,
        };
        assert!(!id.expired_at(99) && id.expired_at(100));
        assert!(
            !Identity {
                expires_at: 0,
                ..id
            }
            .expired_at(i64::MAX)
        );
    }
}
