use minispod_kube_standin::StandIn;

use crate::standin;

async fn get(standin: &StandIn, token: Option<&str>) -> (u16, serde_json::Value) {
    // A raw TLS client: kube always sends its token, so speak HTTP by hand.
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        let der = rustls_pemfile_der(standin.ca_pem());
        roots.add(der).unwrap();
        roots
    };
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(standin.addr())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET /api/v1/namespaces HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    let code: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json = body.lines().find(|l| l.starts_with('{')).unwrap_or("null");
    (
        code,
        serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
    )
}

fn rustls_pemfile_der(pem: &str) -> rustls::pki_types::CertificateDer<'static> {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    rustls::pki_types::CertificateDer::from(der)
}

#[tokio::test]
async fn requests_without_the_token_are_unauthorized() {
    let (standin, _client) = standin().await;
    let (code, status) = get(&standin, None).await;
    assert_eq!(code, 401);
    assert_eq!(status["reason"], "Unauthorized");
    assert_eq!(get(&standin, Some("wrong")).await.0, 401);
    let (code, list) = get(&standin, Some(standin.token())).await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "NamespaceList");
}

#[tokio::test]
async fn version_and_discovery_answer_like_k3s() {
    let (_standin, client) = standin().await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
    let groups = client.list_api_groups().await.unwrap();
    assert!(groups.groups.iter().any(|g| g.name == "apps"));
    let core = client.list_core_api_resources("v1").await.unwrap();
    assert!(core.resources.iter().any(|r| r.name == "pods/eviction"));
}
