//! Login and authenticated-call latency over real TLS against an in-process
//! control plane on a fresh data dir.
//!
//! `cargo run --release -p minispod-control-plane --example bench_login [N]`

use std::time::{Duration, Instant};

use minispod_control_plane::{Application, config::ServeArgs};
use minispod_proto::v1::{self as pb, auth_service_client::AuthServiceClient};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{what:<28} n={:<5} p50={:>8.2?} p99={:>8.2?} mean={:>8.2?}",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        mean
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let dir = std::env::temp_dir().join(format!("minispod-bench-{}", std::process::id()));
    let mut args = ServeArgs::with_data_dir(&dir);
    args.listen = "127.0.0.1:0".parse()?;
    args.login.admin_email = Some("bench@example.org".into());
    args.login.admin_password = Some("bench-password".into());
    args.login.login_ip_burst = u32::MAX / 2;
    args.login.login_ip_per_minute = u32::MAX / 2;
    let app = Application::build(args).await?;
    let (addr, ca) = (app.local_addr(), app.ca_cert_pem());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("https://localhost:{}", addr.port()))?
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name("localhost"),
        )?
        .connect()
        .await?;
    let mut auth = AuthServiceClient::new(channel);
    let login = || pb::LoginRequest {
        email: "bench@example.org".into(),
        password: "bench-password".into(),
        ..Default::default()
    };

    let mut logins = Vec::with_capacity(n);
    let mut token = String::new();
    for _ in 0..n {
        let t = Instant::now();
        token = auth.login(login()).await?.into_inner().access_token;
        logins.push(t.elapsed());
    }
    let mut profiles = Vec::with_capacity(n);
    for _ in 0..n {
        let mut r = tonic::Request::new(pb::GetProfileRequest {});
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let t = Instant::now();
        auth.get_profile(r).await?;
        profiles.push(t.elapsed());
    }
    println!("control plane on {addr}, TLS, SQLite, argon2id m=19MiB t=2 p=1");
    report("Login (sequential)", logins);
    report("GetProfile (JWT + store)", profiles);

    // Throughput with 8 clients at once: bounded by argon2 on the CPUs.
    let started = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let mut c = auth.clone();
            tokio::spawn(async move {
                for _ in 0..n / 8 {
                    let _ = c.login(login()).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let total = (n / 8) * 8;
    println!(
        "Login throughput, 8 clients: {:.1}/s",
        total as f64 / started.elapsed().as_secs_f64()
    );
    let _ = stop.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
