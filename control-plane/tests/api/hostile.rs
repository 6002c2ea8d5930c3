//! Clients that hold resources without doing anything useful: many streams
//! on one connection, unfinished messages, oversized messages and headers,
//! too many connections or stalled TLS handshakes from one address. Each
//! test shows the bound holds and that a well-behaved client still gets in.

use std::{net::IpAddr, time::Duration};

use bytes::Bytes;
use minispod_proto::v1 as pb;
use tokio::{
    io::AsyncReadExt,
    net::{TcpSocket, TcpStream},
};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    helpers::*,
    raw_grpc::{message_header, raw_call},
};

/// A TLS channel to `app` whose connection comes from `local` (any
/// 127.0.0.0/8 address works on Linux loopback).
async fn channel_from(app: &TestApp, local: &str) -> Result<Channel, tonic::transport::Error> {
    let ca = std::fs::read_to_string(app.data_dir.0.join("pki/ca.crt")).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    Channel::from_shared(format!("https://127.0.0.1:{}", app.addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .local_address(Some(local.parse::<IpAddr>().unwrap()))
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
}

/// A raw TCP connection to `app` from `local`.
async fn tcp_from(app: &TestApp, local: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(app.addr).await.unwrap()
}

/// Whether the server closes `tcp` within `within` (EOF or reset).
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // A TLS alert or the like: keep reading until the close.
            Ok(Ok(_)) => {}
        }
    }
}

async fn healthy(channel: &Channel) -> bool {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .is_ok()
}

#[tokio::test]
async fn a_connection_may_hold_only_so_many_streams() {
    let app = spawn_app_with(|a| a.transport.max_concurrent_streams = 4).await;
    let channel = channel_from(&app, "127.0.0.1").await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    let mut watches = Vec::new();
    for _ in 0..4 {
        let mut w = health
            .watch(HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner();
        w.message().await.unwrap().unwrap();
        watches.push(w);
    }
    // A fifth call on the same connection waits for a free stream.
    let mut waiting = HealthClient::new(channel.clone());
    let fifth = tokio::spawn(async move { waiting.check(HealthCheckRequest::default()).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!fifth.is_finished(), "a fifth stream was accepted");
    watches.pop();
    tokio::time::timeout(Duration::from_secs(5), fifth)
        .await
        .expect("answered once a stream ended")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn each_service_accepts_only_messages_its_requests_need() {
    let app = spawn_app().await;
    // AuthService: 16 KiB, far more than an email and a password.
    let big = app
        .auth()
        .login(pb::LoginRequest {
            email: "a@example.org".into(),
            password: "x".repeat(20 * 1024),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(big.code(), Code::OutOfRange, "{big:?}");
    assert!(big.message().contains("too large"), "{}", big.message());
    // The catalog takes an entry far larger than a login.
    let token = app.admin_token().await;
    let mut catalog = app.catalog();
    let entry = catalog
        .create_service(authed(
            pb::CreateServiceRequest {
                slug: "big-one".into(),
                name: "Big one".into(),
                description: "d".repeat(4000),
                category: "Tools".into(),
                version: "1.27".into(),
                image: "docker.io/library/nginx:1.27".into(),
                port: 80,
                resources: Some(pb::ResourceRequests {
                    cpu_millicores: 100,
                    memory_mb: 64,
                    storage_gb: 1,
                }),
                env_template: (0..40)
                    .map(|i| (format!("VAR_{i}"), "v".repeat(1000)))
                    .collect(),
                active: true,
                ..Default::default()
            },
            &token,
        ))
        .await;
    assert!(entry.is_ok(), "{entry:?}");
}

#[tokio::test]
async fn an_unfinished_request_ends_at_the_request_timeout() {
    let app = spawn_app_with(|a| a.transport.request_timeout = Duration::from_secs(1)).await;
    let (tx, done) = raw_call(&app.channel, "/minispod.v1.CatalogService/ListServices");
    tx.send(message_header(1000)).await.unwrap();
    tx.send(Bytes::from(vec![0u8; 100])).await.unwrap();
    let code = tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("the server ended the call")
        .unwrap()
        .unwrap();
    assert_eq!(code, Code::Cancelled);
    // The connection is still good for real calls.
    assert!(healthy(&app.channel).await);
    drop(tx);
}

#[tokio::test]
async fn unfinished_messages_cannot_hold_more_than_the_request_buffer() {
    let app = spawn_app_with(|a| a.transport.max_request_buffer = 64 * 1024).await;
    let path = "/minispod.v1.CatalogService/ListServices";
    let mut held = Vec::new();
    for _ in 0..2 {
        let (tx, done) = raw_call(&app.channel, path);
        tx.send(message_header(400 * 1024)).await.unwrap();
        tx.send(Bytes::from(vec![0u8; 30 * 1024])).await.unwrap();
        held.push((tx, done));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(held.iter().all(|(_, d)| !d.is_finished()));
    // A third unfinished message would pass 64 KiB.
    let (tx, done) = raw_call(&app.channel, path);
    tx.send(message_header(400 * 1024)).await.unwrap();
    tx.send(Bytes::from(vec![0u8; 30 * 1024])).await.unwrap();
    let code = tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("refused at once")
        .unwrap()
        .unwrap();
    assert_eq!(code, Code::ResourceExhausted);
    // Complete messages pass meanwhile: they are not held.
    let listed = app
        .catalog()
        .list_services(pb::ListServicesRequest::default())
        .await;
    assert!(listed.is_ok(), "{listed:?}");
    // Dropping the stalled calls gives their share back.
    held.clear();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (tx, done) = raw_call(&app.channel, path);
    tx.send(message_header(400 * 1024)).await.unwrap();
    tx.send(Bytes::from(vec![0u8; 60 * 1024])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!done.is_finished(), "the buffer was not given back");
    drop(tx);
}

#[tokio::test]
async fn connections_beyond_the_per_address_cap_are_closed() {
    // The app's own client channel already holds one from 127.0.0.1.
    let app = spawn_app_with(|a| a.transport.max_connections_per_address = 2).await;
    let second = channel_from(&app, "127.0.0.1").await.unwrap();
    assert!(healthy(&second).await);
    let third = channel_from(&app, "127.0.0.1").await;
    assert!(
        third.is_err(),
        "a third connection from one address was served"
    );
    let other = channel_from(&app, "127.0.0.2").await.unwrap();
    assert!(healthy(&other).await, "another address is refused");
    // A closed connection frees its place.
    drop(second);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = channel_from(&app, "127.0.0.1").await.unwrap();
    assert!(healthy(&again).await);
}

#[tokio::test]
async fn stalled_handshakes_do_not_keep_others_out() {
    let app = spawn_app_with(|a| {
        a.transport.max_handshakes_per_address = 2;
        a.transport.handshake_timeout = Duration::from_secs(1);
    })
    .await;
    // Two connections that never say hello hold this address's handshakes.
    let mut stalled = vec![
        tcp_from(&app, "127.0.0.3").await,
        tcp_from(&app, "127.0.0.3").await,
    ];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = tcp_from(&app, "127.0.0.3").await;
    assert!(
        closed_within(&mut third, Duration::from_secs(2)).await,
        "a third pending handshake from one address was kept"
    );
    // A real client elsewhere completes its handshake meanwhile.
    let real = channel_from(&app, "127.0.0.4").await.unwrap();
    assert!(healthy(&real).await);
    // The stalled ones are cut at the handshake timeout.
    for s in &mut stalled {
        assert!(closed_within(s, Duration::from_secs(3)).await);
    }
}

#[tokio::test]
async fn connections_beyond_the_total_are_closed() {
    let app = spawn_app_with(|a| a.transport.max_connections = 3).await;
    // The app's channel is one; two more fill the server.
    let _a = channel_from(&app, "127.0.0.5").await.unwrap();
    let _b = channel_from(&app, "127.0.0.6").await.unwrap();
    let mut extra = tcp_from(&app, "127.0.0.7").await;
    assert!(closed_within(&mut extra, Duration::from_secs(2)).await);
    assert!(healthy(&app.channel).await);
}

#[tokio::test]
async fn an_oversized_header_block_is_refused() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel.clone());
    let mut r = tonic::Request::new(HealthCheckRequest::default());
    r.metadata_mut()
        .insert("x-padding", "p".repeat(20 * 1024).parse().unwrap());
    assert!(health.check(r).await.is_err());
    let mut r = tonic::Request::new(HealthCheckRequest::default());
    r.metadata_mut()
        .insert("x-padding", "p".repeat(1024).parse().unwrap());
    assert!(health.check(r).await.is_ok());
}
