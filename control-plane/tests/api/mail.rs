//! Mail against a real SMTP server (aiosmtpd, STARTTLS and AUTH required):
//! password reset, address verification, email changes, and the outbox
//! holding mail while the server is down.

use std::time::Duration;

use minispod_control_plane::config::ServeArgs;
use minispod_proto::v1 as pb;
use tonic::Code;

use crate::{
    helpers::{TempDir, TestApp, authed, expect_code, spawn_app, spawn_app_with, violated_fields},
    smtp::SmtpSink,
};

/// Where the test apps say the console is.
pub const PUBLIC_URL: &str = "https://console.example.org";

/// Mail settings for `sink`, with quick retries.
pub fn with_mail(args: &mut ServeArgs, sink: &SmtpSink) {
    args.mail.smtp_url = Some(sink.url().into());
    args.mail.smtp_ca_file = Some(sink.ca_file.clone());
    args.mail.mail_from = "MiniSpod <noreply@minispod.test>".into();
    args.mail.public_url = Some(PUBLIC_URL.into());
    args.mail.outbox_retry_initial = Duration::from_millis(200);
    args.mail.outbox_retry_max = Duration::from_millis(500);
}

const WAIT: Duration = Duration::from_secs(20);

fn token_of(link: &str) -> String {
    link.split_once("#token=")
        .map(|(_, t)| t.to_owned())
        .unwrap_or_else(|| panic!("no token in {link}"))
}

async fn request_reset(app: &TestApp, email: &str) -> Result<(), tonic::Status> {
    app.auth()
        .request_password_reset(pb::RequestPasswordResetRequest {
            email: email.into(),
        })
        .await
        .map(|_| ())
}

async fn reset(app: &TestApp, token: &str, password: &str) -> Result<(), tonic::Status> {
    app.auth()
        .reset_password(pb::ResetPasswordRequest {
            token: token.into(),
            new_password: password.into(),
        })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_reset_mail_arrives_over_tls_and_its_link_works_once_and_ends_every_session() {
    let dir = TempDir::new();
    let sink = SmtpSink::start(&dir.0);
    let app = spawn_app_with(|a| with_mail(a, &sink)).await;
    app.register("forgetful@example.org", "old-password-1")
        .await;
    let (_, old_refresh) = app
        .login("forgetful@example.org", "old-password-1")
        .await
        .unwrap();

    request_reset(&app, "Forgetful@Example.org").await.unwrap();
    let mails = sink.wait_for("forgetful@example.org", 2, WAIT).await;
    let mail = mails
        .iter()
        .find(|m| m.subject == "Reset your MiniSpod password")
        .expect("a reset mail");
    assert!(mail.tls && mail.auth, "STARTTLS and AUTH: {mail:?}");
    assert_eq!(mail.from, "noreply@minispod.test");
    assert!(mail.html.contains("Choose a new password"), "{}", mail.html);
    let link = mail
        .link(&format!("{PUBLIC_URL}/reset-password#token="))
        .expect("a link into the console");
    let token = token_of(&link);

    expect_code(reset(&app, &token, "short").await, Code::InvalidArgument);
    reset(&app, &token, "new-password-1").await.unwrap();
    // Once only.
    let again = expect_code(
        reset(&app, &token, "other-password-1").await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&again), ["token"]);
    // Every session ended; the new password works, the old one not.
    let refreshed = app
        .auth()
        .refresh(pb::RefreshRequest {
            refresh_token: old_refresh,
        })
        .await;
    expect_code(refreshed, Code::Unauthenticated);
    expect_code(
        app.login("forgetful@example.org", "old-password-1").await,
        Code::Unauthenticated,
    );
    app.login("forgetful@example.org", "new-password-1")
        .await
        .unwrap();
    // And the owner is told.
    let mails = sink.wait_for("forgetful@example.org", 3, WAIT).await;
    assert!(
        mails
            .iter()
            .any(|m| m.subject == "Your MiniSpod password was changed"),
        "{mails:#?}"
    );
}

#[tokio::test]
async fn smtps_speaks_tls_from_the_first_byte_and_a_server_not_trusted_gets_nothing() {
    let dir = TempDir::new();
    let sink = SmtpSink::start_implicit_tls(&dir.0);
    let app = spawn_app_with(|a| with_mail(a, &sink)).await;
    request_reset(&app, crate::helpers::ADMIN_EMAIL)
        .await
        .unwrap();
    let mail = sink
        .wait_for(crate::helpers::ADMIN_EMAIL, 1, WAIT)
        .await
        .remove(0);
    assert!(mail.tls && mail.auth, "{mail:?}");

    // Without --smtp-ca-file the sink's certificate is not trusted: the
    // mail stays queued (and the password never goes out in the clear).
    let other = TempDir::new();
    let untrusted = SmtpSink::start(&other.0);
    let app = spawn_app_with(|a| {
        with_mail(a, &untrusted);
        a.mail.smtp_ca_file = None;
        a.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    request_reset(&app, crate::helpers::ADMIN_EMAIL)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while app.metric("minispod_outbox_attempt_failures_total").await < 2.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no failed attempt counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(untrusted.received().is_empty());
    assert_eq!(
        app.metric("minispod_outbox_messages{status=\"pending\"}")
            .await,
        1.0,
        "the mail waits in the outbox"
    );
}

#[tokio::test]
async fn an_unknown_address_gets_the_same_answer_and_no_mail() {
    let dir = TempDir::new();
    let sink = SmtpSink::start(&dir.0);
    let app = spawn_app_with(|a| with_mail(a, &sink)).await;
    app.register("known@example.org", "known-password-1").await;
    request_reset(&app, "nobody@example.org").await.unwrap();
    // A known address's mail, asked for after, is the barrier: once it is
    // in, the unknown one would have been too.
    request_reset(&app, "known@example.org").await.unwrap();
    sink.wait_for("known@example.org", 2, WAIT).await;
    assert!(sink.received_by("nobody@example.org").is_empty());
    // Malformed is a field error, not a hint.
    let bad = expect_code(
        request_reset(&app, "not an address").await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&bad), ["email"]);
}

#[tokio::test]
async fn without_smtp_the_features_that_need_mail_say_so_and_the_rest_works() {
    let app = spawn_app().await;
    let status = expect_code(
        request_reset(&app, "someone@example.org").await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("--smtp-url"), "{status:?}");
    // Registration and email changes work as before, at once.
    let (_, access) = app.register("plain@example.org", "plain-password-1").await;
    let user = app
        .auth()
        .update_profile(authed(
            pb::UpdateProfileRequest {
                email: Some("plain2@example.org".into()),
                current_password: "plain-password-1".into(),
                ..Default::default()
            },
            &access,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user.email, "plain2@example.org");
    assert!(!user.email_verified);
}

#[tokio::test]
async fn with_verification_required_sign_in_waits_for_the_link() {
    let dir = TempDir::new();
    let sink = SmtpSink::start(&dir.0);
    let app = spawn_app_with(|a| {
        with_mail(a, &sink);
        a.mail.require_email_verification = true;
    })
    .await;
    let registered = app
        .auth()
        .register(pb::RegisterRequest {
            email: "new@example.org".into(),
            password: "new-password-1".into(),
            name: "New".into(),
            session_cookie: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(registered.verification_required);
    assert!(registered.access_token.is_empty() && registered.refresh_token.is_empty());
    let refused = expect_code(
        app.login("new@example.org", "new-password-1").await,
        Code::FailedPrecondition,
    );
    assert!(
        refused.message().contains("confirm your email"),
        "{refused:?}"
    );
    // A wrong password still says only that.
    expect_code(
        app.login("new@example.org", "wrong-password-1").await,
        Code::Unauthenticated,
    );
    let mail = sink.wait_for("new@example.org", 1, WAIT).await.remove(0);
    assert_eq!(mail.subject, "Confirm your email address for MiniSpod");
    let token = token_of(
        &mail
            .link(&format!("{PUBLIC_URL}/verify-email#token="))
            .unwrap(),
    );
    // Asking again supersedes the first link.
    app.auth()
        .resend_verification(pb::ResendVerificationRequest {
            email: "new@example.org".into(),
        })
        .await
        .unwrap();
    let second = sink.wait_for("new@example.org", 2, WAIT).await.remove(1);
    let second_token = token_of(
        &second
            .link(&format!("{PUBLIC_URL}/verify-email#token="))
            .unwrap(),
    );
    let verify = |t: String| {
        let mut auth = app.auth();
        async move { auth.verify_email(pb::VerifyEmailRequest { token: t }).await }
    };
    expect_code(verify(token).await, Code::InvalidArgument);
    let user = verify(second_token.clone())
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(user.email_verified);
    app.login("new@example.org", "new-password-1")
        .await
        .expect("signs in once verified");
    expect_code(verify(second_token).await, Code::InvalidArgument);
    // Accounts an administrator makes are verified.
    let admin = app.admin_token().await;
    app.users()
        .create_user(authed(
            pb::CreateUserRequest {
                email: "made@example.org".into(),
                password: "made-password-1".into(),
                name: "Made".into(),
                role: pb::Role::User as i32,
            },
            &admin,
        ))
        .await
        .unwrap();
    app.login("made@example.org", "made-password-1")
        .await
        .unwrap();
}

#[tokio::test]
async fn an_email_change_waits_for_the_new_address_and_tells_the_old_one() {
    let dir = TempDir::new();
    let sink = SmtpSink::start(&dir.0);
    let app = spawn_app_with(|a| with_mail(a, &sink)).await;
    let (_, access) = app.register("old@example.org", "change-password-1").await;
    let user = app
        .auth()
        .update_profile(authed(
            pb::UpdateProfileRequest {
                email: Some("New@Example.org".into()),
                current_password: "change-password-1".into(),
                ..Default::default()
            },
            &access,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(
        (user.email.as_str(), user.pending_email.as_str()),
        ("old@example.org", "new@example.org")
    );
    let confirm = sink.wait_for("new@example.org", 1, WAIT).await.remove(0);
    assert_eq!(
        confirm.subject,
        "Confirm your new email address for MiniSpod"
    );
    let notices = sink.wait_for("old@example.org", 2, WAIT).await;
    assert!(
        notices.iter().any(
            |m| m.subject == "Your MiniSpod email address is being changed"
                && m.text.contains("new@example.org")
        ),
        "{notices:#?}"
    );
    // Until the link is used, the old address signs in.
    app.login("old@example.org", "change-password-1")
        .await
        .unwrap();
    let token = token_of(
        &confirm
            .link(&format!("{PUBLIC_URL}/verify-email#token="))
            .unwrap(),
    );
    let user = app
        .auth()
        .verify_email(pb::VerifyEmailRequest { token })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user.email, "new@example.org");
    assert!(user.email_verified && user.pending_email.is_empty());
    app.login("new@example.org", "change-password-1")
        .await
        .unwrap();
    expect_code(
        app.login("old@example.org", "change-password-1").await,
        Code::Unauthenticated,
    );
}

/// UpdateProfile with a new email (and the right password).
async fn change_email(
    app: &TestApp,
    access: &str,
    email: &str,
    password: &str,
) -> Result<pb::User, tonic::Status> {
    app.auth()
        .update_profile(authed(
            pb::UpdateProfileRequest {
                email: Some(email.into()),
                current_password: password.into(),
                ..Default::default()
            },
            access,
        ))
        .await
        .map(|r| r.into_inner().user.unwrap())
}

#[tokio::test]
async fn an_email_change_to_a_taken_address_answers_as_any_other_and_tells_only_the_holder() {
    let dir = TempDir::new();
    let sink = SmtpSink::start(&dir.0);
    let app = spawn_app_with(|a| with_mail(a, &sink)).await;
    app.register("holder@example.org", "holder-password-1")
        .await;
    let (_, access) = app.register("mover@example.org", "mover-password-1").await;
    let taken = change_email(&app, &access, "holder@example.org", "mover-password-1")
        .await
        .unwrap();
    let free = change_email(&app, &access, "free@example.org", "mover-password-1")
        .await
        .unwrap();
    // The same answer: the address is pending in both.
    assert_eq!(
        (taken.email.as_str(), taken.pending_email.as_str()),
        ("mover@example.org", "holder@example.org")
    );
    assert_eq!(
        (free.email.as_str(), free.pending_email.as_str()),
        ("mover@example.org", "free@example.org")
    );
    // The mover's own mailbox hears of both changes alike.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let changes = sink
            .received_by("mover@example.org")
            .into_iter()
            .filter(|m| m.subject == "Your MiniSpod email address is being changed")
            .count();
        if changes == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{changes} change notices"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The holder gets a notice and no link; the free address its link.
    // (Its first mail is its own registration's link.)
    let mails = sink.wait_for("holder@example.org", 2, WAIT).await;
    let told: Vec<_> = mails
        .iter()
        .filter(|m| m.subject == "Somebody tried to move a MiniSpod account to your address")
        .collect();
    assert_eq!(told.len(), 1, "{mails:#?}");
    assert!(
        told[0]
            .link(&format!("{PUBLIC_URL}/verify-email#token="))
            .is_none()
    );
    assert!(
        !told[0].text.contains("mover@example.org"),
        "{}",
        told[0].text
    );
    assert!(
        !mails
            .iter()
            .any(|m| m.subject == "Confirm your new email address for MiniSpod"),
        "{mails:#?}"
    );
    let confirm = sink.wait_for("free@example.org", 1, WAIT).await;
    assert!(
        confirm[0]
            .link(&format!("{PUBLIC_URL}/verify-email#token="))
            .is_some()
    );
    app.login("holder@example.org", "holder-password-1")
        .await
        .expect("the holder keeps the address");
}

#[tokio::test]
async fn email_changes_are_rate_limited_per_account_and_per_address() {
    let dir = TempDir::new();
    let sink = SmtpSink::start(&dir.0);
    let app = spawn_app_with(|a| with_mail(a, &sink)).await;
    let (_, access) = app
        .register("restless@example.org", "restless-password-1")
        .await;
    for n in 1..=3 {
        change_email(
            &app,
            &access,
            &format!("new{n}@example.org"),
            "restless-password-1",
        )
        .await
        .unwrap();
    }
    let limited = expect_code(
        change_email(&app, &access, "new4@example.org", "restless-password-1").await,
        Code::ResourceExhausted,
    );
    assert!(limited.message().contains("email changes"), "{limited:?}");
    // An address shares its bucket with password resets: two resets and
    // one change use it up, whoever asks.
    let (_, other) = app.register("other@example.org", "other-password-1").await;
    request_reset(&app, "target@example.org").await.unwrap();
    request_reset(&app, "target@example.org").await.unwrap();
    change_email(&app, &other, "target@example.org", "other-password-1")
        .await
        .unwrap();
    let (_, third) = app.register("third@example.org", "third-password-1").await;
    let limited = expect_code(
        change_email(&app, &third, "target@example.org", "third-password-1").await,
        Code::ResourceExhausted,
    );
    assert!(limited.message().contains("this address"), "{limited:?}");
    // The refused change did not spend the account's token.
    change_email(&app, &third, "elsewhere@example.org", "third-password-1")
        .await
        .unwrap();
    assert!(sink.received_by("new4@example.org").is_empty());
}

#[tokio::test]
async fn reset_requests_are_rate_limited_per_address() {
    let dir = TempDir::new();
    let sink = SmtpSink::start(&dir.0);
    let app = spawn_app_with(|a| with_mail(a, &sink)).await;
    for _ in 0..3 {
        request_reset(&app, "flood@example.org").await.unwrap();
    }
    let limited = expect_code(
        request_reset(&app, "flood@example.org").await,
        Code::ResourceExhausted,
    );
    assert!(limited.message().contains("too many"), "{limited:?}");
    // Another address is not affected.
    request_reset(&app, "other@example.org").await.unwrap();
}

#[tokio::test]
async fn mail_queued_while_the_smtp_server_is_down_arrives_once_it_is_up_and_only_once() {
    let dir = TempDir::new();
    let mut sink = SmtpSink::start(&dir.0);
    let app = spawn_app_with(|a| with_mail(a, &sink)).await;
    let admin = app.admin_token().await;
    app.users()
        .create_user(authed(
            pb::CreateUserRequest {
                email: "patient@example.org".into(),
                password: "patient-password-1".into(),
                name: "Patient".into(),
                role: pb::Role::User as i32,
            },
            &admin,
        ))
        .await
        .unwrap();
    sink.stop();
    request_reset(&app, "patient@example.org").await.unwrap();
    // Several retries fail while it is down.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sink.start_again();
    let mails = sink.wait_for("patient@example.org", 1, WAIT).await;
    assert_eq!(mails[0].subject, "Reset your MiniSpod password");
    // A later mail is the barrier for a duplicate of the first.
    request_reset(&app, "patient@example.org").await.unwrap();
    let mails = sink.wait_for("patient@example.org", 2, WAIT).await;
    assert_eq!(mails.len(), 2, "{mails:#?}");
    assert_ne!(mails[0].message_id, mails[1].message_id);
}

/// The control plane as its own process, killable with SIGKILL.
struct Process {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Process {
    async fn start(dir: &TempDir, data: &std::path::Path, port: u16, sink: &SmtpSink) -> Process {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_minispod-control-plane"));
        cmd.arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data)
            .args(["--admin-email", crate::helpers::ADMIN_EMAIL])
            .args(["--admin-password", crate::helpers::ADMIN_PASSWORD])
            .args(["--smtp-url", &sink.url()])
            .arg("--smtp-ca-file")
            .arg(&sink.ca_file)
            .args(["--mail-from", "noreply@minispod.test"])
            .args(["--public-url", PUBLIC_URL])
            .args([
                "--outbox-retry-initial",
                "200ms",
                "--outbox-retry-max",
                "500ms",
            ])
            .args(["--replica-lease", "2s"])
            .env_remove("DATABASE_URL")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(url) = &dir.1 {
            cmd.args(["--database-url", url]);
        }
        let child = cmd.spawn().expect("start the control plane");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the control plane did not listen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Process { child, addr }
    }

    async fn auth(
        &self,
        data: &std::path::Path,
    ) -> pb::auth_service_client::AuthServiceClient<tonic::transport::Channel> {
        let ca = std::fs::read_to_string(data.join("pki/ca.crt")).unwrap();
        pb::auth_service_client::AuthServiceClient::new(
            crate::helpers::tls_channel(self.addr, &ca).await,
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_queued_when_the_control_plane_is_killed_goes_out_after_its_restart_once() {
    let dir = TempDir::for_server().await;
    let mut sink = SmtpSink::start(&dir.0);
    let data = dir.0.join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The SMTP port answers TCP and then nothing: the first control plane
    // is stuck in the middle of delivering, holding the message's lease.
    sink.stop();
    let hole = std::net::TcpListener::bind(("127.0.0.1", sink.port)).unwrap();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let holder = {
        let hole = hole.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            if let Ok((conn, _)) = hole.accept() {
                held.push(conn);
                let _ = held_tx.send(());
            }
            held
        })
    };
    let mut first = Process::start(&dir, &data, port, &sink).await;
    first
        .auth(&data)
        .await
        .request_password_reset(pb::RequestPasswordResetRequest {
            email: crate::helpers::ADMIN_EMAIL.into(),
        })
        .await
        .unwrap();
    held_rx
        .recv_timeout(WAIT)
        .expect("the control plane connects to deliver");
    // kill -9 mid-delivery: no shutdown, the lease left behind.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    drop(first);
    drop(holder.join().unwrap());
    drop(hole);
    sink.start_again();
    let second = Process::start(&dir, &data, port, &sink).await;
    let mails = sink.wait_for(crate::helpers::ADMIN_EMAIL, 1, WAIT).await;
    assert_eq!(mails[0].subject, "Reset your MiniSpod password");
    // A second request is the barrier for a duplicate of the first.
    second
        .auth(&data)
        .await
        .request_password_reset(pb::RequestPasswordResetRequest {
            email: crate::helpers::ADMIN_EMAIL.into(),
        })
        .await
        .unwrap();
    let mails = sink.wait_for(crate::helpers::ADMIN_EMAIL, 2, WAIT).await;
    assert_eq!(mails.len(), 2, "{mails:#?}");
}

/// The password-reset mail to `email` as the outbox lists it.
async fn outbox_row(app: &TestApp, admin: &str, email: &str) -> Option<pb::OutboxMessage> {
    pb::notification_service_client::NotificationServiceClient::new(app.channel.clone())
        .list_outbox_messages(authed(pb::ListOutboxMessagesRequest::default(), admin))
        .await
        .unwrap()
        .into_inner()
        .messages
        .into_iter()
        .find(|m| m.recipient == email)
}

fn unix_ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn a_failing_mail_is_tried_again_when_its_outbox_row_says_and_not_before() {
    let dir = TempDir::new();
    let mut sink = SmtpSink::start(&dir.0);
    let app = spawn_app_with(|a| {
        with_mail(a, &sink);
        a.mail.outbox_retry_initial = Duration::from_millis(400);
        a.mail.outbox_retry_max = Duration::from_millis(800);
    })
    .await;
    let admin = app.admin_token().await;
    sink.stop();
    let started = now_unix_ms();
    request_reset(&app, crate::helpers::ADMIN_EMAIL)
        .await
        .unwrap();
    // The delays double from 400 ms to the 800 ms cap (a fifth of jitter
    // on top): in 3 s, 4 or 5 attempts, not one a poll.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let row = outbox_row(&app, &admin, crate::helpers::ADMIN_EMAIL)
        .await
        .expect("the mail is in the outbox");
    assert_eq!(row.status, pb::OutboxStatus::Pending as i32, "{row:?}");
    assert!((3..=5).contains(&row.attempts), "{row:?}");
    assert!(!row.last_error.is_empty(), "{row:?}");
    let elapsed = now_unix_ms() - started;
    assert!(elapsed < 4000, "the test ran late ({elapsed} ms)");

    // The next try comes when the row says, not before.
    let row = loop {
        let row = outbox_row(&app, &admin, crate::helpers::ADMIN_EMAIL)
            .await
            .unwrap();
        let next = unix_ms(row.next_attempt_at.as_ref().unwrap());
        if next - now_unix_ms() > 400 {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let next = unix_ms(row.next_attempt_at.as_ref().unwrap());
    assert!(next - now_unix_ms() <= 960 + 200, "{row:?}: beyond the cap");
    tokio::time::sleep(Duration::from_millis(
        u64::try_from(next - now_unix_ms() - 150).unwrap_or(0),
    ))
    .await;
    let before = outbox_row(&app, &admin, crate::helpers::ADMIN_EMAIL)
        .await
        .unwrap();
    assert_eq!(before.attempts, row.attempts, "tried before its time");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = outbox_row(&app, &admin, crate::helpers::ADMIN_EMAIL)
            .await
            .unwrap();
        if now.attempts > row.attempts {
            assert_eq!(now.attempts, row.attempts + 1, "{now:?}");
            assert!(now_unix_ms() >= next, "tried before {next}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not tried again at {next}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Up again: it goes out.
    sink.start_again();
    let mails = sink.wait_for(crate::helpers::ADMIN_EMAIL, 1, WAIT).await;
    assert_eq!(mails.len(), 1);
}
