//! Fleet notifications end to end (issue #15): real agents' streams over
//! mTLS, the real SMTP sink, and an HTTPS webhook receiver here that checks
//! every signature with the secret UpdateNotificationPreferences answered.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, Ordering},
    },
    time::{Duration, Instant},
};

use hmac::{Hmac, Mac};
use minispod_control_plane::{config::ServeArgs, pki::Pki};
use minispod_proto::v1::{self as pb, notification_service_client::NotificationServiceClient};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, transport::Channel};

use crate::{
    helpers::{
        ADMIN_EMAIL, TempDir, TestApp, authed, expect_code, spawn_app_with, start, violated_fields,
    },
    mail::{PUBLIC_URL, with_mail},
    smtp::SmtpSink,
    workers::{Admin, Agent, Stream, connect, enroll, mtls},
};

/// Longest wait for anything in these tests.
const WAIT: Duration = Duration::from_secs(30);

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Hook {
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: String,
    /// The status it was answered with.
    pub(crate) answered: u16,
}

impl Hook {
    /// The JSON event.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    pub(crate) fn event(&self) -> String {
        self.json()["event"].as_str().unwrap_or_default().to_owned()
    }

    pub(crate) fn worker_id(&self) -> String {
        self.json()["worker"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Checks `x-minispod-signature` against `secret`: `t=<unix>,v1=<hex
    /// HMAC-SHA256 of "<t>.<body>">`, made within the last minute.
    #[track_caller]
    pub(crate) fn assert_signed_with(&self, secret: &str) {
        let header = self
            .headers
            .get("x-minispod-signature")
            .unwrap_or_else(|| panic!("unsigned: {self:?}"));
        let (t, v1) = header
            .split_once(',')
            .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
            .unwrap_or_else(|| panic!("bad signature header {header}"));
        let t: i64 = t.parse().unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!((now - t).abs() < 60, "signed at {t}, now {now}");
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(self.body.as_bytes());
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(v1, want, "signature of {}", self.body);
    }
}

/// An HTTPS server on localhost that records every request and answers
/// with the status currently set (204 at first).
pub(crate) struct WebhookSink {
    pub(crate) url: String,
    pub(crate) ca_file: PathBuf,
    answer: Arc<AtomicU16>,
    hooks: Arc<Mutex<Vec<Hook>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WebhookSink {
    /// Starts it with a certificate from a CA of its own under `dir`.
    pub(crate) async fn start(dir: &std::path::Path) -> WebhookSink {
        WebhookSink::start_with(dir, true).await
    }

    /// Starts it without TLS, at an http:// URL on 127.0.0.1 (allowed for
    /// loopback), for apps whose settings cannot name its CA.
    pub(crate) async fn start_plain(dir: &std::path::Path) -> WebhookSink {
        WebhookSink::start_with(dir, false).await
    }

    async fn start_with(dir: &std::path::Path, tls: bool) -> WebhookSink {
        let pki_dir = dir.join("webhook-receiver");
        let pki = Pki::load_or_create(&pki_dir, &[]).unwrap();
        let ca_file = pki_dir.join("receiver-ca.crt");
        std::fs::write(&ca_file, pki.ca_cert_pem()).unwrap();
        let chain = rustls_pemfile::certs(&mut pki.server_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut pki.server_key_pem.as_bytes())
            .unwrap()
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = Arc::new(AtomicU16::new(204));
        let hooks = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (answer, hooks) = (answer.clone(), hooks.clone());
            async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    let (acceptor, answer, hooks) =
                        (acceptor.clone(), answer.clone(), hooks.clone());
                    tokio::spawn(async move {
                        if !tls {
                            serve_one(tcp, &answer, &hooks).await;
                        } else if let Ok(stream) = acceptor.accept(tcp).await {
                            serve_one(stream, &answer, &hooks).await;
                        }
                    });
                }
            }
        });
        let url = if tls {
            format!("https://localhost:{port}/hooks/minispod")
        } else {
            format!("http://127.0.0.1:{port}/hooks/minispod")
        };
        WebhookSink {
            url,
            ca_file,
            answer,
            hooks,
            task,
        }
    }

    /// From now on, answer with `status`.
    pub(crate) fn answer_with(&self, status: u16) {
        self.answer.store(status, Ordering::SeqCst);
    }

    /// Every request so far.
    pub(crate) fn received(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap().clone()
    }

    /// Waits until `n` received requests satisfy `keep`; panics after `WAIT`.
    pub(crate) async fn wait_for(&self, n: usize, keep: impl Fn(&Hook) -> bool) -> Vec<Hook> {
        let deadline = Instant::now() + WAIT;
        loop {
            let got: Vec<Hook> = self.received().into_iter().filter(&keep).collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} matching webhooks in {WAIT:?}, expected {n}; all: {:#?}",
                got.len(),
                self.received()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Reads one HTTP/1.1 request (headers, then Content-Length bytes),
/// records it and answers.
async fn serve_one<S>(mut io: S, answer: &AtomicU16, hooks: &Mutex<Vec<Hook>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let status = answer.load(Ordering::SeqCst);
    hooks.lock().unwrap().push(Hook {
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        answered: status,
    });
    let said = if status < 300 { "" } else { "no thanks" };
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{said}",
        said.len()
    );
    let _ = io.write_all(response.as_bytes()).await;
    let _ = io.shutdown().await;
}

/// Lets webhooks reach a receiver on this machine (`--webhook-allow-range
/// 127.0.0.0/8,::1`): without it they are refused, as for any internal
/// address.
pub(crate) fn allow_local_webhooks(args: &mut ServeArgs) {
    args.mail.webhook_allow_ranges = vec!["127.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
}

/// Quick notices: 1 s of grace, `flap_window` of flap window; the local
/// receiver allowed.
fn quick(args: &mut ServeArgs, hooks: &WebhookSink, flap_window: Duration) {
    allow_local_webhooks(args);
    args.mail.webhook_ca_file = Some(hooks.ca_file.clone());
    args.notify.notify_offline_grace = Duration::from_secs(1);
    args.notify.notify_not_ready_grace = Duration::from_secs(1);
    args.notify.notify_flap_window = flap_window;
}

fn notifications(app: &TestApp) -> NotificationServiceClient<Channel> {
    NotificationServiceClient::new(app.channel.clone())
}

/// Every event, mail on, the webhook at `url`; returns the new secret.
pub(crate) async fn opt_in(app: &TestApp, token: &str, url: &str, mail: bool) -> String {
    let r = notifications(app)
        .update_notification_preferences(authed(
            pb::UpdateNotificationPreferencesRequest {
                mail: Some(mail),
                webhook_url: Some(url.into()),
                events: (1..=5).collect(),
                update_events: true,
                rotate_webhook_secret: false,
            },
            token,
        ))
        .await
        .expect("preferences saved")
        .into_inner();
    assert_eq!(r.webhook_secret.len(), 64, "32 bytes in hex: {r:?}");
    r.webhook_secret
}

/// An enrolled worker with an open stream: its id, the stream, its mTLS
/// channel and its key and certificate.
pub(crate) async fn online_worker(
    app: &TestApp,
    admin: &mut Admin,
    machine_id: &str,
) -> (String, Stream, Channel, Agent) {
    let token = admin.token(1, "").await.token;
    let agent = enroll(app, &token, machine_id).await.expect("enrolled");
    let channel = mtls(app, &agent).await;
    let mut stream = connect(channel.clone(), machine_id)
        .await
        .expect("connected");
    stream.beat(true).await;
    (agent.enrolled.worker_id.clone(), stream, channel, agent)
}

/// Waits until the worker's `online` is `online`.
pub(crate) async fn until_online(admin: &mut Admin, id: &str, online: bool) {
    let deadline = Instant::now() + WAIT;
    while admin.worker(id).await.online != online {
        assert!(Instant::now() < deadline, "worker {id} online != {online}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn of_worker<'a>(event: &'a str, id: &'a str) -> impl Fn(&Hook) -> bool + 'a {
    move |h: &Hook| h.event() == event && h.worker_id() == id
}

#[tokio::test]
async fn notice_preferences_are_each_user_s_own_and_urls_and_events_are_checked() {
    let dir = TempDir::new();
    let hooks = WebhookSink::start(&dir.0).await;
    let app = spawn_app_with(|a| quick(a, &hooks, Duration::from_secs(60))).await;
    let admin = app.admin_token().await;
    let (_, user) = app.register("plain@example.org", "plain-password-1").await;
    let mut client = notifications(&app);

    // A customer has preferences of their own, among the subscription
    // events only (customer_notices.rs); the outbox is the operator's.
    let theirs = client
        .get_notification_preferences(authed(pb::GetNotificationPreferencesRequest {}, &user))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !theirs
            .available_events
            .contains(&(pb::NotificationEvent::WorkerOffline as i32))
    );
    expect_code(
        client
            .list_outbox_messages(authed(pb::ListOutboxMessagesRequest::default(), &user))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        client
            .get_notification_preferences(pb::GetNotificationPreferencesRequest {})
            .await,
        Code::Unauthenticated,
    );

    let fresh = client
        .get_notification_preferences(authed(pb::GetNotificationPreferencesRequest {}, &admin))
        .await
        .unwrap()
        .into_inner();
    assert!(!fresh.mail_configured, "no --smtp-url here");
    assert_eq!(
        fresh.preferences.unwrap(),
        pb::NotificationPreferences::default()
    );
    // Nothing to send to yet.
    expect_code(
        client
            .send_test_notification(authed(pb::SendTestNotificationRequest {}, &admin))
            .await,
        Code::FailedPrecondition,
    );

    let bad = expect_code(
        client
            .update_notification_preferences(authed(
                pb::UpdateNotificationPreferencesRequest {
                    webhook_url: Some("http://hooks.example.org/x".into()),
                    events: vec![1, 42],
                    update_events: true,
                    ..Default::default()
                },
                &admin,
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&bad), ["webhook_url", "events"]);
    let bad = expect_code(
        client
            .update_notification_preferences(authed(
                pb::UpdateNotificationPreferencesRequest {
                    rotate_webhook_secret: true,
                    ..Default::default()
                },
                &admin,
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&bad), ["rotate_webhook_secret"]);

    // A first URL makes a secret, shown once; other changes keep it.
    let first = opt_in(&app, &admin, &hooks.url, false).await;
    let again = client
        .update_notification_preferences(authed(
            pb::UpdateNotificationPreferencesRequest {
                events: vec![pb::NotificationEvent::WorkerOffline as i32],
                update_events: true,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.webhook_secret, "", "not shown again");
    let prefs = again.preferences.unwrap();
    assert!(prefs.webhook_secret_set);
    assert_eq!(prefs.webhook_url, hooks.url);
    assert_eq!(prefs.events, [pb::NotificationEvent::WorkerOffline as i32]);
    let rotated = client
        .update_notification_preferences(authed(
            pb::UpdateNotificationPreferencesRequest {
                rotate_webhook_secret: true,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .webhook_secret;
    assert_eq!(rotated.len(), 64);
    assert_ne!(rotated, first);

    // The test notice is signed with the rotated secret.
    let queued = client
        .send_test_notification(authed(pb::SendTestNotificationRequest {}, &admin))
        .await
        .unwrap()
        .into_inner()
        .queued;
    assert_eq!(queued.len(), 1, "a webhook only: mail is off {queued:?}");
    assert_eq!(queued[0].kind, pb::OutboxKind::Webhook as i32);
    let got = hooks.wait_for(1, |h| h.event() == "test").await;
    got[0].assert_signed_with(&rotated);
    assert_eq!(got[0].headers["x-minispod-delivery"], queued[0].id);
}

#[tokio::test]
async fn a_worker_offline_past_the_grace_sends_one_mail_and_one_signed_webhook_and_its_return_too()
{
    let dir = TempDir::new();
    let sink = SmtpSink::start(&dir.0);
    let hooks = WebhookSink::start(&dir.0).await;
    // A grace long enough that `brief` is surely back within it on a
    // loaded machine.
    let grace = Duration::from_secs(3);
    let app = spawn_app_with(|a| {
        with_mail(a, &sink);
        quick(a, &hooks, Duration::from_secs(60));
        a.notify.notify_offline_grace = grace;
    })
    .await;
    let token = app.admin_token().await;
    let secret = opt_in(&app, &token, &hooks.url, true).await;
    let mut admin = Admin::of(&app).await;

    // Two new machines: each enrollment is told.
    let (brief, brief_stream, brief_channel, _) = online_worker(&app, &mut admin, "brief").await;
    let (long, long_stream, long_channel, _) = online_worker(&app, &mut admin, "long").await;
    let enrolled = hooks.wait_for(2, |h| h.event() == "worker_enrolled").await;
    for h in &enrolled {
        h.assert_signed_with(&secret);
    }
    sink.wait_for(ADMIN_EMAIL, 2, WAIT).await;

    // `brief` is back well within the grace.
    drop(brief_stream);
    let brief_dropped = Instant::now();
    until_online(&mut admin, &brief, false).await;
    let mut brief_stream = connect(brief_channel, "brief").await.unwrap();
    brief_stream.beat(true).await;
    assert!(
        brief_dropped.elapsed() < grace,
        "the short outage was not short"
    );

    // `long` stays down.
    drop(long_stream);
    let dropped = Instant::now();
    until_online(&mut admin, &long, false).await;
    let offline = hooks.wait_for(1, of_worker("worker_offline", &long)).await;
    let latency = dropped.elapsed();
    eprintln!("offline notice {latency:?} after the stream dropped (grace {grace:?})");
    assert!(latency >= grace, "not before the grace");
    offline[0].assert_signed_with(&secret);
    let event = offline[0].json();
    assert_eq!(event["worker"]["name"], "host-long");
    assert_eq!(event["summary"], "Worker host-long is offline");
    assert_eq!(event["link"], format!("{PUBLIC_URL}/workers/{long}"));
    assert!(event["at"].as_str().unwrap().ends_with('Z'), "{event}");
    let mails = sink.wait_for(ADMIN_EMAIL, 3, WAIT).await;
    let mail = mails
        .iter()
        .find(|m| m.subject == "Worker host-long is offline")
        .expect("the offline mail");
    assert!(
        mail.link(&format!("{PUBLIC_URL}/workers/{long}")).is_some(),
        "{}",
        mail.text
    );

    // Back online: told once, and that is the barrier — `brief`'s deadline
    // passed long before, and nothing was ever sent about its outage.
    let mut long_stream = connect(long_channel, "long").await.unwrap();
    long_stream.beat(true).await;
    let online = hooks.wait_for(1, of_worker("worker_online", &long)).await;
    online[0].assert_signed_with(&secret);
    let mails = sink.wait_for(ADMIN_EMAIL, 4, WAIT).await;
    assert!(
        mails
            .iter()
            .any(|m| m.subject == "Worker host-long is back online")
    );
    let all = hooks.received();
    assert_eq!(
        all.iter().filter(|h| h.worker_id() == brief).count(),
        1,
        "only `brief`'s enrollment: {all:#?}"
    );
    assert_eq!(
        all.iter().filter(|h| h.event() == "worker_offline").count(),
        1
    );
    assert_eq!(
        mails.len(),
        4,
        "2 enrolled, 1 offline, 1 online: {mails:#?}"
    );
    let outbox = notifications(&app)
        .list_outbox_messages(authed(pb::ListOutboxMessagesRequest::default(), &token))
        .await
        .unwrap()
        .into_inner();
    let offline_rows: Vec<_> = outbox
        .messages
        .iter()
        .filter(|m| m.purpose == "worker_offline")
        .collect();
    assert_eq!(
        offline_rows.len(),
        2,
        "one mail and one webhook: {outbox:#?}"
    );
    assert!(offline_rows.iter().all(|m| m.subject.contains("host-long")));
}

#[tokio::test]
async fn a_flapping_worker_is_summarised_in_one_notice_at_the_end_of_the_window() {
    let dir = TempDir::new();
    let hooks = WebhookSink::start(&dir.0).await;
    let window = Duration::from_secs(10);
    let app = spawn_app_with(|a| quick(a, &hooks, window)).await;
    let token = app.admin_token().await;
    let secret = opt_in(&app, &token, &hooks.url, false).await;
    let mut admin = Admin::of(&app).await;
    let (id, stream, channel, _) = online_worker(&app, &mut admin, "flappy").await;

    drop(stream);
    hooks.wait_for(1, of_worker("worker_offline", &id)).await;
    let window_opened = Instant::now();
    let mut stream = connect(channel.clone(), "flappy").await.unwrap();
    stream.beat(true).await;
    hooks.wait_for(1, of_worker("worker_online", &id)).await;

    // Three outages in the window, each longer than the grace: alone, each
    // would be told, with its return.
    for _ in 0..3 {
        drop(stream);
        until_online(&mut admin, &id, false).await;
        tokio::time::sleep(Duration::from_millis(1300)).await;
        stream = connect(channel.clone(), "flappy").await.unwrap();
        stream.beat(true).await;
    }
    assert!(
        window_opened.elapsed() < window,
        "the outages took longer than the window; the test proves nothing"
    );
    let offline = hooks.wait_for(2, of_worker("worker_offline", &id)).await;
    let summary = offline[1].json();
    eprintln!(
        "flap summary {:?} after the window opened",
        window_opened.elapsed()
    );
    offline[1].assert_signed_with(&secret);
    assert_eq!(summary["flapping"], true, "{summary}");
    assert_eq!(summary["outages"], 3);
    assert_eq!(summary["online"], true);
    assert_eq!(
        summary["summary"],
        "Worker host-flappy went offline 3 times in 10 seconds"
    );
    // The summary came at the window's end: every single notice would have
    // been due before it, and none came.
    let all: Vec<Hook> = hooks
        .received()
        .into_iter()
        .filter(|h| h.worker_id() == id)
        .collect();
    let events: Vec<String> = all.iter().map(Hook::event).collect();
    assert_eq!(
        events,
        [
            "worker_enrolled",
            "worker_offline",
            "worker_online",
            "worker_offline"
        ]
    );
}

#[tokio::test]
async fn a_worker_not_ready_past_its_grace_is_told_once() {
    let dir = TempDir::new();
    let hooks = WebhookSink::start(&dir.0).await;
    let app = spawn_app_with(|a| quick(a, &hooks, Duration::from_secs(60))).await;
    let token = app.admin_token().await;
    let secret = opt_in(&app, &token, &hooks.url, false).await;
    let mut admin = Admin::of(&app).await;
    let (id, mut stream, _, _) = online_worker(&app, &mut admin, "tired").await;
    stream.beat(false).await;
    let told = hooks.wait_for(1, of_worker("worker_not_ready", &id)).await;
    told[0].assert_signed_with(&secret);
    assert_eq!(told[0].json()["summary"], "Worker host-tired is not ready");
    // Still not ready a while later (a heartbeat is acked after any write):
    // a test notice queued now is the barrier, nothing more about `tired`.
    stream.beat(false).await;
    notifications(&app)
        .send_test_notification(authed(pb::SendTestNotificationRequest {}, &token))
        .await
        .unwrap();
    hooks.wait_for(1, |h| h.event() == "test").await;
    assert_eq!(
        hooks
            .received()
            .iter()
            .filter(|h| h.event() == "worker_not_ready")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_refused_webhook_is_listed_as_failed_and_a_retry_delivers_it() {
    let dir = TempDir::new();
    let hooks = WebhookSink::start(&dir.0).await;
    let app = spawn_app_with(|a| quick(a, &hooks, Duration::from_secs(60))).await;
    let token = app.admin_token().await;
    let secret = opt_in(&app, &token, &hooks.url, false).await;
    let mut client = notifications(&app);

    hooks.answer_with(400);
    let queued = client
        .send_test_notification(authed(pb::SendTestNotificationRequest {}, &token))
        .await
        .unwrap()
        .into_inner()
        .queued;
    let id = queued[0].id.clone();
    hooks.wait_for(1, |h| h.answered == 400).await;
    let failed_filter = pb::ListOutboxMessagesRequest {
        status: pb::OutboxStatus::Failed as i32,
        ..Default::default()
    };
    let deadline = Instant::now() + WAIT;
    let failed = loop {
        let page = client
            .list_outbox_messages(authed(failed_filter.clone(), &token))
            .await
            .unwrap()
            .into_inner();
        if !page.messages.is_empty() {
            break page;
        }
        assert!(Instant::now() < deadline, "never FAILED");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(failed.failed, 1);
    assert_eq!(failed.messages.len(), 1);
    let m = &failed.messages[0];
    assert_eq!((m.id.as_str(), m.attempts), (id.as_str(), 1));
    assert!(m.last_error.contains("400"), "{m:?}");
    // The status line only: what the receiver said stays out of the outbox.
    assert!(!m.last_error.contains("no thanks"), "{m:?}");
    assert_eq!(m.recipient, hooks.url);

    // A message that did not fail cannot be retried; nor an unknown one.
    client
        .send_test_notification(authed(pb::SendTestNotificationRequest {}, &token))
        .await
        .unwrap();
    hooks.wait_for(2, |h| h.answered == 400).await;
    expect_code(
        client
            .retry_outbox_message(authed(
                pb::RetryOutboxMessageRequest { id: "nope".into() },
                &token,
            ))
            .await,
        Code::NotFound,
    );
    let bad = expect_code(
        client
            .retry_outbox_message(authed(
                pb::RetryOutboxMessageRequest { id: "".into() },
                &token,
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&bad), ["id"]);

    // Pages of one, newest first, with a token to the next.
    let first = client
        .list_outbox_messages(authed(
            pb::ListOutboxMessagesRequest {
                page_size: 1,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.messages.len(), 1);
    assert_ne!(first.messages[0].id, id, "newest first");
    assert!(!first.next_page_token.is_empty());
    let second = client
        .list_outbox_messages(authed(
            pb::ListOutboxMessagesRequest {
                page_size: 1,
                page_token: first.next_page_token.clone(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.messages[0].id, id);
    assert_eq!(second.next_page_token, "", "two messages in all");
    let bad = expect_code(
        client
            .list_outbox_messages(authed(
                pb::ListOutboxMessagesRequest {
                    page_token: "garbage".into(),
                    ..Default::default()
                },
                &token,
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&bad), ["page_token"]);

    // The receiver is fixed; the retry goes out at once, signed.
    hooks.answer_with(204);
    let retried = client
        .retry_outbox_message(authed(
            pb::RetryOutboxMessageRequest { id: id.clone() },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .message
        .unwrap();
    assert_eq!(retried.status, pb::OutboxStatus::Pending as i32);
    let delivered = hooks.wait_for(1, |h| h.answered == 204).await;
    assert_eq!(delivered[0].headers["x-minispod-delivery"], id);
    delivered[0].assert_signed_with(&secret);
    let deadline = Instant::now() + WAIT;
    loop {
        let m = client
            .list_outbox_messages(authed(pb::ListOutboxMessagesRequest::default(), &token))
            .await
            .unwrap()
            .into_inner();
        let row = m.messages.iter().find(|r| r.id == id).unwrap();
        if row.status == pb::OutboxStatus::Sent as i32 {
            assert_eq!(row.attempts, 2);
            assert_eq!(m.failed, 1, "the other test message is still FAILED");
            break;
        }
        assert!(Instant::now() < deadline, "never SENT: {row:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    expect_code(
        client
            .retry_outbox_message(authed(pb::RetryOutboxMessageRequest { id }, &token))
            .await,
        Code::FailedPrecondition,
    );
}

#[tokio::test]
async fn a_restart_keeps_what_was_told_and_reports_no_outage_of_its_own() {
    let dir = TempDir::new();
    let hooks = WebhookSink::start(&dir.0).await;
    let grace = Duration::from_secs(2);
    let configure = |a: &mut ServeArgs| {
        quick(a, &hooks, Duration::from_secs(60));
        a.notify.notify_offline_grace = grace;
    };
    let app = spawn_app_with(configure).await;
    let token = app.admin_token().await;
    opt_in(&app, &token, &hooks.url, false).await;
    let mut admin = Admin::of(&app).await;
    let (down, down_stream, _, down_agent) = online_worker(&app, &mut admin, "down").await;
    let (up, _up_stream, _, up_agent) = online_worker(&app, &mut admin, "up").await;
    drop(down_stream);
    hooks.wait_for(1, of_worker("worker_offline", &down)).await;

    // The control plane stops (`up`'s stream ends with it) and stays away
    // longer than the grace; `up` comes back a moment after it (its agent
    // retrying), once the new process has looked at every worker.
    let data = app.stop().await;
    tokio::time::sleep(grace + Duration::from_millis(500)).await;
    let app = start(data, configure).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut up_stream = connect(mtls(&app, &up_agent).await, "up").await.unwrap();
    up_stream.beat(true).await;
    let mut down_stream = connect(mtls(&app, &down_agent).await, "down")
        .await
        .unwrap();
    down_stream.beat(true).await;

    // The new process knows `down`'s outage was told: its return is told.
    hooks.wait_for(1, of_worker("worker_online", &down)).await;
    let token = app.admin_token().await;
    let outbox = notifications(&app)
        .list_outbox_messages(authed(pb::ListOutboxMessagesRequest::default(), &token))
        .await
        .unwrap()
        .into_inner();
    let purposes: Vec<(&str, &str)> = outbox
        .messages
        .iter()
        .map(|m| (m.purpose.as_str(), m.subject.as_str()))
        .collect();
    assert!(
        !purposes
            .iter()
            .any(|(p, s)| *p != "worker_enrolled" && s.contains("host-up ")),
        "`up` was away only while the control plane was: {purposes:?}"
    );
    assert_eq!(
        hooks
            .received()
            .iter()
            .filter(|h| h.worker_id() == up)
            .map(Hook::event)
            .collect::<Vec<_>>(),
        ["worker_enrolled"]
    );
}

/// The outbox messages listed in `status`.
async fn listed(app: &TestApp, token: &str, status: pb::OutboxStatus) -> Vec<pb::OutboxMessage> {
    notifications(app)
        .list_outbox_messages(authed(
            pb::ListOutboxMessagesRequest {
                status: status as i32,
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .messages
}

/// Waits until a message is listed in `status`; returns them all.
async fn until_listed(
    app: &TestApp,
    token: &str,
    status: pb::OutboxStatus,
) -> Vec<pb::OutboxMessage> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = listed(app, token, status).await;
        if !got.is_empty() {
            return got;
        }
        assert!(Instant::now() < deadline, "nothing {status:?} in {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn webhooks_to_internal_addresses_are_refused_unless_an_operator_allows_the_range() {
    let dir = TempDir::new();
    let hooks = WebhookSink::start(&dir.0).await;
    let plain = WebhookSink::start_plain(&dir.0).await;
    // Saved while the operator allowed this machine's range...
    let app = spawn_app_with(|a| quick(a, &hooks, Duration::from_secs(60))).await;
    let token = app.admin_token().await;
    opt_in(&app, &token, &hooks.url, false).await;
    let data = app.stop().await;
    // ...then started without --webhook-allow-range.
    let app = start(data, |a| {
        a.mail.webhook_ca_file = Some(hooks.ca_file.clone())
    })
    .await;
    let token = app.admin_token().await;
    let mut client = notifications(&app);
    for url in [
        plain.url.as_str(),
        hooks.url.as_str(),
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.8/hook",
        "https://100.64.1.1/hook",
        "https://[fd00::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://kubernetes.default.svc/api",
        "http://hooks.example.org/x",
    ] {
        let bad = expect_code(
            client
                .update_notification_preferences(authed(
                    pb::UpdateNotificationPreferencesRequest {
                        webhook_url: Some(url.into()),
                        ..Default::default()
                    },
                    &token,
                ))
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&bad), ["webhook_url"], "{url}");
    }
    // The URL saved before names `localhost`: resolved at delivery to a
    // loopback address, refused, and nothing is sent.
    client
        .send_test_notification(authed(pb::SendTestNotificationRequest {}, &token))
        .await
        .unwrap();
    let failed = until_listed(&app, &token, pb::OutboxStatus::Failed).await;
    assert!(
        failed[0].last_error.contains("loopback"),
        "{:?}",
        failed[0].last_error
    );
    assert!(hooks.received().is_empty(), "{:?}", hooks.received());
    assert!(plain.received().is_empty());
}

#[tokio::test]
async fn failed_outbox_messages_lose_their_bodies_then_their_rows_as_sent_ones_do() {
    use minispod_control_plane::{
        mail::outbox::{self, Pruned},
        store::{Db, now_ms},
    };
    const DAY: i64 = 86_400_000;
    let dir = TempDir::new();
    let hooks = WebhookSink::start(&dir.0).await;
    let app = spawn_app_with(|a| quick(a, &hooks, Duration::from_secs(60))).await;
    let token = app.admin_token().await;
    opt_in(&app, &token, &hooks.url, false).await;
    let mut client = notifications(&app);
    hooks.answer_with(400);
    client
        .send_test_notification(authed(pb::SendTestNotificationRequest {}, &token))
        .await
        .unwrap();
    let failed = until_listed(&app, &token, pb::OutboxStatus::Failed).await[0].clone();
    hooks.answer_with(204);
    client
        .send_test_notification(authed(pb::SendTestNotificationRequest {}, &token))
        .await
        .unwrap();
    until_listed(&app, &token, pb::OutboxStatus::Sent).await;

    let db = Db::connect(
        app.data_dir.1.as_deref(),
        &app.data_dir.0,
        &Default::default(),
    )
    .await
    .unwrap();
    let body = |id: String| {
        let db = db.clone();
        async move {
            let read = async {
                Ok::<String, sqlx::Error>(minispod_control_plane::with_conn!(db.read(), |c| {
                    sqlx::query_scalar("SELECT body_text FROM outbox WHERE id = $1")
                        .bind(&id)
                        .fetch_one(c)
                        .await
                })?)
            };
            read.await.unwrap()
        }
    };
    let now = now_ms();
    assert_eq!(
        outbox::prune(&db, now + 2 * DAY).await.unwrap(),
        Pruned::default()
    );
    assert!(!body(failed.id.clone()).await.is_empty());
    // Past three days the body (links are secrets) goes; the row stays
    // listed, and can no longer be sent again.
    let pruned = outbox::prune(&db, now + 4 * DAY).await.unwrap();
    assert_eq!(pruned.failed_bodies, 1, "{pruned:?}");
    assert_eq!(body(failed.id.clone()).await, "");
    assert_eq!(
        listed(&app, &token, pb::OutboxStatus::Failed).await.len(),
        1
    );
    let refused = expect_code(
        client
            .retry_outbox_message(authed(
                pb::RetryOutboxMessageRequest {
                    id: failed.id.clone(),
                },
                &token,
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert!(refused.message().contains("pruned"), "{refused:?}");
    // Past thirty days both rows go, failed and sent alike.
    let pruned = outbox::prune(&db, now + 31 * DAY).await.unwrap();
    assert_eq!((pruned.sent, pruned.failed), (1, 1), "{pruned:?}");
    assert!(
        listed(&app, &token, pb::OutboxStatus::Unspecified)
            .await
            .is_empty()
    );
}
