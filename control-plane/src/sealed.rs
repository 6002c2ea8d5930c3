//! Secrets the store must be able to give back (a subscription's generated
//! passwords and SECRET variables), sealed with AES-256-GCM under a key in
//! the data dir (`secrets.key`, made on first start, mode 0600), so a copy
//! of the database alone — a backup, a replica's dump — does not hold them.
//!
//! A sealed value is `sealed:v1:<base64url(nonce ‖ ciphertext ‖ tag)>`; the
//! row's id is the associated data, so a sealed value moved to another row
//! does not open. Values without the prefix (rows from before sealing) are
//! read as they are and sealed when next written. Replicas share the key
//! the way they share the CA and the JWT key: one data dir.
//!
//! The same key also derives (HKDF-SHA256, then HMAC-SHA256) the recovery
//! password of each customer's backup repository (`recovery_password`):
//! with `secrets.key` alone, a fresh control plane opens the repositories
//! a lost one made (ImportBackups).

use std::{fmt, path::Path, sync::Arc};

use anyhow::Context;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    hkdf, hmac,
    rand::{SecureRandom, SystemRandom},
};

const PREFIX: &str = "sealed:v1:";
/// The HKDF salt of the recovery passwords' key.
const RECOVERY_SALT: &[u8] = b"minispod backup recovery v1";

/// Seals and opens values; cheap to clone.
#[derive(Clone)]
pub struct Sealer {
    key: Arc<LessSafeKey>,
    recovery: hmac::Key,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    /// The sealer of the key at `path`, made (32 random bytes) if absent.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Sealer> {
        let key = crate::auth::tokens::load_or_create_secret(path)?;
        Sealer::from_key(&key[..32])
    }

    /// A sealer over `key` (32 bytes).
    pub fn from_key(key: &[u8]) -> anyhow::Result<Sealer> {
        let aead = UnboundKey::new(&AES_256_GCM, key)
            .map_err(|_| anyhow::anyhow!("a sealing key is 32 bytes"))?;
        // A key of its own for the recovery passwords, not the AES key
        // itself: HKDF under a label no other use shares.
        let recovery: hmac::Key = hkdf::Salt::new(hkdf::HKDF_SHA256, RECOVERY_SALT)
            .extract(key)
            .expand(&[b"restic repository password"], hmac::HMAC_SHA256)
            .map_err(|_| anyhow::anyhow!("HKDF cannot expand to an HMAC key"))?
            .into();
        Ok(Sealer {
            key: Arc::new(LessSafeKey::new(aead)),
            recovery,
        })
    }

    /// The tag that vouches for `data`, a record stored in the repository
    /// whose path ends in `repository`: only a holder of this key makes
    /// one, and it holds for that repository only.
    pub fn recovery_tag(&self, repository: &str, data: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.recovery, &tagged(repository, data)).as_ref())
    }

    /// Whether `tag` is `recovery_tag(repository, data)`, compared in
    /// constant time.
    pub fn verify_recovery_tag(&self, repository: &str, data: &[u8], tag: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(tag)
            .is_ok_and(|tag| hmac::verify(&self.recovery, &tagged(repository, data), &tag).is_ok())
    }

    /// Whether `stored` is a sealed value (not a row from before sealing).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }

    /// The recovery password of the backup repository whose path ends in
    /// `repository` (its customer's id where it was made): the same for
    /// every control plane holding this key, and only for them.
    pub fn recovery_password(&self, repository: &str) -> String {
        let tag = hmac::sign(&self.recovery, repository.as_bytes());
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// `plain` sealed for the row `row_id`.
    pub fn seal(&self, row_id: &str, plain: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random source works");
        let mut data = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(row_id.as_bytes()),
                &mut data,
            )
            .expect("AES-GCM seals any value that fits in memory");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// The value `stored` for the row `row_id`: opened when sealed, as it
    /// is otherwise. An error for a value sealed under another key or for
    /// another row.
    pub fn open(&self, row_id: &str, stored: &str) -> anyhow::Result<String> {
        let Some(encoded) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let raw = URL_SAFE_NO_PAD
            .decode(encoded)
            .context("a sealed value is not base64url")?;
        anyhow::ensure!(raw.len() >= NONCE_LEN, "a sealed value is too short");
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let mut data = sealed.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| anyhow::anyhow!("a sealed value has a bad nonce"))?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(row_id.as_bytes()), &mut data)
            .map_err(|_| {
                anyhow::anyhow!(
                    "a sealed value does not open: another data dir's secrets.key, or another row's value"
                )
            })?;
        String::from_utf8(plain.to_vec()).context("a sealed value is not UTF-8")
    }
}

/// A record's tagged bytes: apart from a password's input (a path
/// segment, which holds no NUL).
fn tagged(repository: &str, data: &[u8]) -> Vec<u8> {
    let mut out = b"record\0".to_vec();
    out.extend_from_slice(repository.as_bytes());
    out.push(0);
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_for_its_row_under_its_key_only() {
        let sealer = Sealer::from_key(&[7; 32]).unwrap();
        let sealed = sealer.seal("row-1", r#"{"DB_PASSWORD":"s3cret"}"#);
        assert!(sealed.starts_with("sealed:v1:"));
        assert!(!sealed.contains("s3cret"));
        assert_eq!(
            sealer.open("row-1", &sealed).unwrap(),
            r#"{"DB_PASSWORD":"s3cret"}"#
        );
        // Two seals of one value differ (fresh nonces).
        assert_ne!(sealed, sealer.seal("row-1", r#"{"DB_PASSWORD":"s3cret"}"#));
        assert!(sealer.open("row-2", &sealed).is_err());
        let other = Sealer::from_key(&[8; 32]).unwrap();
        assert!(other.open("row-1", &sealed).is_err());
        // Rows from before sealing read as they are.
        assert_eq!(sealer.open("row-1", "{}").unwrap(), "{}");
    }

    #[test]
    fn a_recovery_password_is_the_keys_and_the_repositorys_only() {
        let sealer = Sealer::from_key(&[7; 32]).unwrap();
        let again = Sealer::from_key(&[7; 32]).unwrap();
        let p = sealer.recovery_password("user-1");
        assert_eq!(p, again.recovery_password("user-1"), "derived, not random");
        assert_eq!(p.len(), 43, "256 bits, base64url");
        assert_ne!(p, sealer.recovery_password("user-2"));
        assert_ne!(
            p,
            Sealer::from_key(&[8; 32])
                .unwrap()
                .recovery_password("user-1")
        );
        let tag = sealer.recovery_tag("user-1", b"{}");
        assert!(again.verify_recovery_tag("user-1", b"{}", &tag));
        assert!(
            !sealer.verify_recovery_tag("user-2", b"{}", &tag),
            "another repository's"
        );
        assert!(
            !sealer.verify_recovery_tag("user-1", b"{ }", &tag),
            "other bytes"
        );
        let other = Sealer::from_key(&[8; 32]).unwrap();
        assert!(
            !other.verify_recovery_tag("user-1", b"{}", &tag),
            "another key's"
        );
        assert!(!sealer.verify_recovery_tag("user-1", b"{}", "not base64!"));
    }
}
