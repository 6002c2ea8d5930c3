//! The agent's state directory: what it keeps between runs.
//!
//! `key.pem` (generated here, never sent), `cert.pem`, `ca.pem`,
//! `identity.json` (worker id and certificate times) and, on machines
//! without /etc/machine-id, `machine-id`. The directory is 0700 and every
//! file 0600; files are replaced atomically.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Who the control plane says this machine is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    /// The worker id (the certificate's common name).
    pub worker_id: String,
    /// When the certificate was issued, Unix seconds.
    pub issued_at: i64,
    /// When it expires, Unix seconds.
    pub expires_at: i64,
}

impl Identity {
    /// When to renew: two thirds into the certificate's life.
    pub fn renew_at(&self) -> i64 {
        self.issued_at + (self.expires_at - self.issued_at) * 2 / 3
    }
}

/// Everything needed to open an mTLS stream.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Worker id and certificate times.
    pub identity: Identity,
    /// PEM of the private key.
    pub key_pem: String,
    /// PEM of the client certificate.
    pub cert_pem: String,
    /// PEM of the control plane's CA.
    pub ca_pem: String,
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

    /// Writes `name` atomically with mode 0600.
    pub fn write(&self, name: &str, contents: &str) -> anyhow::Result<()> {
        let path = self.path.join(name);
        minispod_proto::support::write_private(&path, contents.as_bytes())
            .with_context(|| format!("write {}", path.display()))
    }

    /// The stored credentials, if the agent has enrolled.
    pub fn credentials(&self) -> anyhow::Result<Option<Credentials>> {
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
            key_pem,
            cert_pem,
            ca_pem,
        }))
    }

    /// Stores credentials; the key and certificate first, the identity last,
    /// so a crash in between leaves the old identity or none, never a mix.
    pub fn save_credentials(&self, c: &Credentials) -> anyhow::Result<()> {
        self.write("key.pem", &c.key_pem)?;
        self.write("cert.pem", &c.cert_pem)?;
        self.write("ca.pem", &c.ca_pem)?;
        self.write("identity.json", &serde_json::to_string_pretty(&c.identity)?)
    }

    /// Forgets the enrollment (before enrolling again).
    pub fn forget_credentials(&self) -> anyhow::Result<()> {
        match fs::remove_file(self.path.join("identity.json")) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
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

    #[test]
    fn credentials_round_trip_with_private_modes() {
        let dir = std::env::temp_dir().join(format!("agent-state-{}", uuid::Uuid::new_v4()));
        let s = StateDir::open(&dir).unwrap();
        assert!(s.credentials().unwrap().is_none());
        let c = Credentials {
            identity: Identity {
                worker_id: "w".into(),
                issued_at: 0,
                expires_at: 300,
            },
            key_pem: "k".into(),
            cert_pem: "c".into(),
            ca_pem: "a".into(),
        };
        s.save_credentials(&c).unwrap();
        assert_eq!(s.credentials().unwrap().unwrap().identity, c.identity);
        assert_eq!(c.identity.renew_at(), 200);
        for f in ["key.pem", "cert.pem", "identity.json"] {
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
}
