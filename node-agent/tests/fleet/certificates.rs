//! Streams need a current client certificate from this control plane's CA.

use std::time::Duration;

use minispod_proto::v1::{self as pb, agent_service_client::AgentServiceClient};
use tonic::Code;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_need_a_current_certificate_from_this_ca() {
    let cp = ControlPlane::start().await;
    let (key, csr) = minispod_agent::enroll::key_and_csr("raw").unwrap();
    let token = cp.token(0).await;
    let enrolled = AgentServiceClient::new(cp.channel.clone())
        .enroll(pb::EnrollRequest {
            token: token.clone(),
            csr_pem: csr,
            facts: Some(pb::MachineFacts {
                hostname: "h".into(),
                machine_id: "raw-1".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();

    // No certificate.
    let e = open_stream(cp.channel.clone(), "raw-1").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = AgentServiceClient::new(cp.channel.clone())
        .renew_certificate(pb::RenewCertificateRequest {
            csr_pem: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // The right certificate, but the hello claims another machine.
    let ch = mtls_channel(&cp, &enrolled.certificate_pem, &key)
        .await
        .unwrap();
    let e = open_stream(ch.clone(), "someone-else").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // The right certificate works; a second stream replaces the first.
    let mut first = open_stream(ch.clone(), "raw-1")
        .await
        .expect("stream with a valid certificate");
    let _second = open_stream(ch.clone(), "raw-1")
        .await
        .expect("second stream");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = first.message().await {}
    })
    .await;
    assert!(ended.is_ok(), "the replaced stream was closed");

    // A certificate from another control plane's CA fails the handshake.
    let other = ControlPlane::start().await;
    let (okey, ocsr) = minispod_agent::enroll::key_and_csr("other").unwrap();
    let ocert = AgentServiceClient::new(other.channel.clone())
        .enroll(pb::EnrollRequest {
            token: other.token(0).await,
            csr_pem: ocsr,
            facts: Some(pb::MachineFacts {
                hostname: "o".into(),
                machine_id: "raw-1".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .certificate_pem;
    let refused = match mtls_channel(&cp, &ocert, &okey).await {
        Err(_) => true,
        Ok(ch) => open_stream(ch, "raw-1").await.is_err(),
    };
    assert!(refused, "a certificate from another CA was accepted");

    // Renewal over mTLS replaces the certificate; the old one is void.
    let (nkey, ncsr) = minispod_agent::enroll::key_and_csr("raw").unwrap();
    let renewed = AgentServiceClient::new(ch.clone())
        .renew_certificate(pb::RenewCertificateRequest { csr_pem: ncsr })
        .await
        .unwrap()
        .into_inner();
    let old = mtls_channel(&cp, &enrolled.certificate_pem, &key)
        .await
        .unwrap();
    assert_eq!(
        open_stream(old, "raw-1").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let new = mtls_channel(&cp, &renewed.certificate_pem, &nkey)
        .await
        .unwrap();
    open_stream(new.clone(), "raw-1")
        .await
        .expect("renewed certificate works");

    // A deleted worker's certificate is refused.
    cp.workers()
        .delete_worker(cp.authed(pb::DeleteWorkerRequest {
            id: enrolled.worker_id.clone(),
        }))
        .await
        .unwrap();
    assert_eq!(
        open_stream(new, "raw-1").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert!(cp.list().await.is_empty());
}
