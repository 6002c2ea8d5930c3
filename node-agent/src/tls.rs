//! TLS towards the control plane: trust by CA pin (before enrollment) or by
//! the CA file (after), the client certificate for mTLS, and a tonic
//! channel over that TLS.
//!
//! The pin is how `kubeadm join --discovery-token-ca-cert-hash` works: the
//! server presents its chain (leaf + CA); the agent accepts it only if a CA
//! in the chain has the pinned SHA-256 and the leaf verifies against that
//! CA for the server's name.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use hyper_util::rt::TokioIo;
use rustls::{
    DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime},
};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::secret::Secret;

/// How the agent trusts the control plane.
#[derive(Debug, Clone)]
pub enum Trust {
    /// A CA whose certificate has this SHA-256 (`sha256:<hex>`).
    Pin(String),
    /// These CA certificates (PEM).
    CaPem(String),
}

/// A client certificate and its key, PEM. `Debug` hides the key.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// Certificate chain.
    pub cert_pem: String,
    /// Private key.
    pub key_pem: Secret,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `sha256:<hex>` of DER.
pub fn pin_of(der: &[u8]) -> String {
    format!("sha256:{}", minispod_support::hex(&Sha256::digest(der)))
}

/// Checks a pin's format.
pub fn parse_pin(pin: &str) -> anyhow::Result<String> {
    let pin = pin.trim().to_ascii_lowercase();
    let hex = pin
        .strip_prefix("sha256:")
        .context("the CA hash must look like sha256:<64 hex digits>")?;
    anyhow::ensure!(
        hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "the CA hash must look like sha256:<64 hex digits>"
    );
    Ok(pin)
}

#[derive(Debug)]
struct PinnedCaVerifier {
    pin: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| pin_of(c.as_ref()) == self.pin)
            .ok_or_else(|| {
                rustls::Error::General(
                    "no certificate in the server's chain matches the CA hash".into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn certs(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parse PEM certificates")?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in PEM");
    Ok(certs)
}

/// Checks the CA bundle a control plane handed out (Enroll,
/// RenewCertificate) against what the agent trusts: every certificate in it
/// must be the pinned CA (`Trust::Pin`) or one of the trusted CAs
/// (`Trust::CaPem`). The agent trusts the saved bundle from then on, so a
/// bundle with another CA in it would widen that trust behind the pin's
/// back; such a response is refused, not saved. (A new CA therefore needs a
/// new pin and enrollment.)
pub fn check_ca_bundle(trust: &Trust, bundle_pem: &str) -> anyhow::Result<()> {
    let allowed: Vec<String> = match trust {
        Trust::Pin(pin) => vec![parse_pin(pin)?],
        Trust::CaPem(pem) => certs(pem)?.iter().map(|c| pin_of(c.as_ref())).collect(),
    };
    let bundle = certs(bundle_pem).context("the CA bundle the control plane sent")?;
    for c in &bundle {
        let pin = pin_of(c.as_ref());
        anyhow::ensure!(
            allowed.contains(&pin),
            "the control plane sent a CA ({pin}) that does not match the pinned CA ({}); refusing it",
            allowed.join(", ")
        );
    }
    Ok(())
}

/// rustls client settings for `trust`, presenting `identity` when given.
pub fn client_config(
    trust: &Trust,
    identity: Option<&ClientIdentity>,
) -> anyhow::Result<rustls::ClientConfig> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    let builder = match trust {
        Trust::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier {
                pin: parse_pin(pin)?,
                algorithms: provider.signature_verification_algorithms,
            })),
        Trust::CaPem(pem) => {
            let mut roots = RootCertStore::empty();
            for c in certs(pem)? {
                roots.add(c).context("add CA")?;
            }
            builder.with_root_certificates(roots)
        }
    };
    let mut config = match identity {
        Some(id) => {
            let key: PrivateKeyDer<'static> =
                rustls_pemfile::private_key(&mut id.key_pem.expose().as_bytes())
                    .context("parse key")?
                    .context("no private key in PEM")?;
            builder
                .with_client_auth_cert(certs(&id.cert_pem)?, key)
                .context("client certificate")?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A gRPC channel to `server` (an https:// URL) over our own TLS, with
/// HTTP/2 keepalive so a dead path is noticed within seconds.
pub async fn channel(server: &str, config: rustls::ClientConfig) -> anyhow::Result<Channel> {
    let uri: Uri = server
        .parse()
        .with_context(|| format!("bad server URL {server}"))?;
    anyhow::ensure!(
        uri.scheme_str() == Some("https"),
        "the server URL must start with https://"
    );
    let host = uri.host().context("the server URL has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let connector = TlsConnector::from(Arc::new(config));
    let name =
        ServerName::try_from(host.trim_matches(['[', ']']).to_owned()).context("server name")?;
    let make = tower::service_fn(move |_: Uri| {
        let (connector, name, host) = (connector.clone(), name.clone(), host.clone());
        async move {
            let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    // The connector does TLS; the endpoint's own scheme only labels requests.
    let endpoint =
        Endpoint::from_shared(format!("http://{}", uri.authority().context("authority")?))?
            .connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
    endpoint
        .connect_with_connector(make)
        .await
        .context("connect")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), pin_of(cert.der()))
    }

    #[test]
    fn a_ca_bundle_that_does_not_match_the_pin_is_refused() {
        let (ours, our_pin) = ca_pem("ours");
        let (theirs, _) = ca_pem("theirs");
        assert!(check_ca_bundle(&Trust::Pin(our_pin.clone()), &ours).is_ok());
        let err = check_ca_bundle(&Trust::Pin(our_pin.clone()), &theirs).unwrap_err();
        assert!(
            format!("{err:#}").contains("does not match the pinned CA"),
            "{err:#}"
        );
        // Adding a second CA next to ours is refused too.
        let both = format!("{ours}{theirs}");
        assert!(check_ca_bundle(&Trust::Pin(our_pin), &both).is_err());
        // After enrollment the saved CA is the pin.
        assert!(check_ca_bundle(&Trust::CaPem(ours.clone()), &ours).is_ok());
        assert!(check_ca_bundle(&Trust::CaPem(ours.clone()), &theirs).is_err());
        assert!(check_ca_bundle(&Trust::CaPem(ours), "").is_err());
    }

    #[test]
    fn pins_must_be_sha256_hex() {
        assert!(parse_pin(&format!("sha256:{}", "ab".repeat(32))).is_ok());
        assert!(parse_pin("sha256:xyz").is_err());
        assert!(parse_pin(&"ab".repeat(32)).is_err());
    }
}
