//! The control plane's own certificate authority and its TLS identity.
//!
//! On first start a CA (ECDSA P-256, ten years) is generated into
//! `<data-dir>/pki/` (`ca.crt`, `ca.key` with mode 0600). Every start issues
//! a fresh server certificate from it covering localhost, 127.0.0.1, ::1, the
//! host name and the configured extra names, so a new `--tls-san` takes
//! effect on restart. Clients trust `ca.crt`, or pin it by hash.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::Context;
use minispod_support::hex;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// Common name of the CA certificate.
const CA_COMMON_NAME: &str = "MiniSpod CA";

/// The CA and the server identity issued from it.
pub struct Pki {
    ca_cert_pem: String,
    ca_cert_der: Vec<u8>,
    ca_key: KeyPair,
    /// PEM of the server certificate followed by the CA certificate.
    pub server_chain_pem: String,
    /// PEM of the server's private key.
    pub server_key_pem: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("ca_hash", &self.ca_hash())
            .finish_non_exhaustive()
    }
}

/// Directory of the PKI files inside a data dir.
pub fn pki_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pki")
}

/// `sha256:<hex>` of a certificate's DER: the CA pin agents check.
pub fn ca_hash_of(der: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(der)))
}

impl Pki {
    /// Loads the CA from `<data_dir>/pki/`, creating it on first start, and
    /// issues a server certificate for `extra_sans` besides the defaults.
    pub fn load_or_create(data_dir: &Path, extra_sans: &[String]) -> anyhow::Result<Pki> {
        let dir = pki_dir(data_dir);
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restrict {}", dir.display()))?;
        let (crt_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));

        let (ca_cert_pem, ca_key) = if crt_path.exists() && key_path.exists() {
            let key_pem = fs::read_to_string(&key_path)
                .with_context(|| format!("read {}", key_path.display()))?;
            let key = KeyPair::from_pem(&key_pem).context("parse CA key")?;
            let crt = fs::read_to_string(&crt_path)
                .with_context(|| format!("read {}", crt_path.display()))?;
            (crt, key)
        } else {
            let key = KeyPair::generate().context("generate CA key")?;
            let now = OffsetDateTime::now_utc();
            let mut params = ca_params();
            params.not_before = now - Duration::hours(1);
            params.not_after = now + Duration::days(3650);
            let cert = params.self_signed(&key).context("self-sign CA")?;
            // Key first: a crash between the two writes leaves no certificate
            // without its key.
            write_private(&key_path, key.serialize_pem().as_bytes())?;
            write_private(&crt_path, cert.pem().as_bytes())?;
            fs::set_permissions(&crt_path, fs::Permissions::from_mode(0o644))?;
            tracing::info!(path = %crt_path.display(), "created certificate authority");
            (cert.pem(), key)
        };
        let ca_cert_der = pem_to_der(&ca_cert_pem).context("parse CA certificate")?;

        let mut pki = Pki {
            ca_cert_pem,
            ca_cert_der,
            ca_key,
            server_chain_pem: String::new(),
            server_key_pem: String::new(),
        };
        pki.issue_server_identity(extra_sans)?;
        Ok(pki)
    }

    /// The CA certificate, PEM.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The CA certificate, DER.
    pub fn ca_cert_der(&self) -> &[u8] {
        &self.ca_cert_der
    }

    /// The CA pin, `sha256:<hex>`.
    pub fn ca_hash(&self) -> String {
        ca_hash_of(&self.ca_cert_der)
    }

    /// The CA as an issuer of leaf certificates.
    pub fn issuer(&self) -> Issuer<'static, &KeyPair> {
        Issuer::new(ca_params(), &self.ca_key)
    }

    fn issue_server_identity(&mut self, extra_sans: &[String]) -> anyhow::Result<()> {
        let mut sans = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        if let Some(host) = hostname() {
            sans.push(host);
        }
        for s in extra_sans {
            let s = s.trim();
            if !s.is_empty() && !sans.iter().any(|x| x == s) {
                sans.push(s.to_owned());
            }
        }
        let mut params = CertificateParams::new(sans).context("server certificate names")?;
        params
            .distinguished_name
            .push(DnType::CommonName, "MiniSpod control plane");
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(365);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().context("generate server key")?;
        let cert = params
            .signed_by(&key, &self.issuer())
            .context("sign server certificate")?;
        self.server_chain_pem = format!("{}{}", cert.pem(), self.ca_cert_pem);
        self.server_key_pem = key.serialize_pem();
        Ok(())
    }
}

/// A client certificate issued to a worker.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// PEM of the certificate.
    pub pem: String,
    /// Hex of its serial number: the one the store accepts for the worker.
    pub serial: String,
    /// When it expires, Unix ms.
    pub expires_at_ms: i64,
}

impl Pki {
    /// Signs a worker's CSR: the subject becomes `CN=<worker_id>`, usage
    /// client authentication only, lifetime `ttl`; whatever else the CSR
    /// asked for (names, usages) is ignored. The key pair stays the agent's.
    pub fn sign_worker_csr(
        &self,
        csr_pem: &str,
        worker_id: &str,
        ttl: std::time::Duration,
    ) -> Result<IssuedCert, String> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| format!("is not a PEM certificate signing request: {e}"))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, worker_id);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "MiniSpod workers");
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        let expires = now + Duration::seconds(ttl.as_secs() as i64);
        params.not_after = expires;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let mut serial = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut serial);
        // First byte in 0x40..=0x7f: positive and without a leading zero, so
        // the DER integer holds exactly these 16 bytes and the serial read
        // back from a client certificate matches the stored one.
        serial[0] = 0x40 | (serial[0] & 0x3f);
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        csr.params = params;
        let cert = csr
            .signed_by(&self.issuer())
            .map_err(|e| format!("cannot be signed: {e}"))?;
        Ok(IssuedCert {
            pem: cert.pem(),
            serial: hex(&serial),
            expires_at_ms: expires.unix_timestamp() * 1000,
        })
    }
}

/// Who a verified client certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's common name: the worker id.
    pub worker_id: String,
    /// Hex of the serial number.
    pub serial: String,
}

/// Reads the worker id and serial of a client certificate that the TLS
/// layer already verified against the CA.
pub fn peer_identity(der: &[u8]) -> Option<PeerIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    let raw = cert.raw_serial();
    // DER may carry a leading zero byte to keep the integer positive.
    let raw = if raw.len() > 1 && raw[0] == 0 {
        &raw[1..]
    } else {
        raw
    };
    Some(PeerIdentity {
        worker_id: cn,
        serial: hex(raw),
    })
}

/// The CA's parameters. Signing needs only its name, key identifier method
/// and key usages, so the same function rebuilds the issuer on every start
/// without parsing the stored certificate.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, "MiniSpod");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// The host's name, from the kernel.
pub fn hostname() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// DER of the first certificate in a PEM text.
pub fn pem_to_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    let mut reader = std::io::BufReader::new(pem.as_bytes());
    let cert = rustls_pemfile::certs(&mut reader)
        .next()
        .context("no certificate in PEM")??;
    Ok(cert.to_vec())
}

/// Writes a file readable by its owner only, atomically.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    minispod_support::write_private(path, contents)
        .with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_created_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("minispod-pki-{}", uuid::Uuid::new_v4()));
        let first = Pki::load_or_create(&dir, &[]).unwrap();
        let second = Pki::load_or_create(&dir, &["example.org".into()]).unwrap();
        assert_eq!(first.ca_hash(), second.ca_hash());
        assert!(first.ca_hash().starts_with("sha256:") && first.ca_hash().len() == 71);
        let mode = fs::metadata(dir.join("pki/ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn worker_csrs_are_signed_with_the_worker_id_and_serial() {
        let dir = std::env::temp_dir().join(format!("minispod-pki-{}", uuid::Uuid::new_v4()));
        let pki = Pki::load_or_create(&dir, &[]).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut req = CertificateParams::new(vec!["evil.example".into()]).unwrap();
        req.distinguished_name
            .push(DnType::CommonName, "someone-else");
        let csr = req.serialize_request(&key).unwrap().pem().unwrap();
        let issued = pki
            .sign_worker_csr(&csr, "worker-1", std::time::Duration::from_secs(3600))
            .unwrap();
        let der = pem_to_der(&issued.pem).unwrap();
        let id = peer_identity(&der).unwrap();
        assert_eq!(id.worker_id, "worker-1");
        assert_eq!(id.serial, issued.serial);
        assert!(
            pki.sign_worker_csr("garbage", "w", std::time::Duration::from_secs(60))
                .is_err()
        );
        // Every serial reads back as issued (a leading zero byte would not).
        for _ in 0..300 {
            let issued = pki
                .sign_worker_csr(&csr, "worker-1", std::time::Duration::from_secs(3600))
                .unwrap();
            let id = peer_identity(&pem_to_der(&issued.pem).unwrap()).unwrap();
            assert_eq!(id.serial, issued.serial);
        }
        fs::remove_dir_all(dir).unwrap();
    }
}
