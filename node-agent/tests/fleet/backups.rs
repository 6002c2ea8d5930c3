//! Backups and restores (#26) end to end: a real `minispod-agent` on a
//! stand-in node whose volumes are real directories, real restic, a real
//! S3-compatible server (moto), the control plane ordering the copies over
//! the agent's mTLS connection.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use minispod_kube_standin::TestCluster;
use minispod_proto::v1::{
    self as pb, SubscriptionStatus, auth_service_client::AuthServiceClient,
    backup_service_client::BackupServiceClient,
    subscription_service_client::SubscriptionServiceClient,
};
use minispod_proto::v1::{
    catalog_service_client::CatalogServiceClient,
    notification_service_client::NotificationServiceClient, user_service_client::UserServiceClient,
};
use minispod_testkit::{raw_grpc, s3, smtp::SmtpSink};
use tonic::{Code, transport::Channel};

use super::{
    ControlPlane, TempDir, authed, free_port,
    subscriptions::{agent_on_node, next_upsert},
};

const BUCKET: &str = "minispod-backups";

async fn register(cp: &ControlPlane, email: &str) -> String {
    register_id(cp, email).await.0
}

/// A new customer's access token and id.
async fn register_id(cp: &ControlPlane, email: &str) -> (String, String) {
    let r = AuthServiceClient::new(cp.channel.clone())
        .register(pb::RegisterRequest {
            email: email.into(),
            password: "correct horse battery".into(),
            name: email.into(),
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner();
    (r.access_token, r.user.unwrap().id)
}

/// The one directory under `root` whose name ends with `_<claim>` (the
/// stand-in's local-path volume of that claim).
fn volume_dir(root: &Path, claim: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(root)
        .expect("the node's volume root")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .ends_with(&format!("_{claim}"))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one volume of {claim} in {}",
        root.display()
    );
    found.into_iter().next().unwrap()
}

/// Every file under `dir`, relative path → bytes.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Pseudo-random bytes (xorshift), so the data does not compress away.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Polls `get` every 200 ms until `ended` says so, for at most `secs`.
async fn until_ended<T: std::fmt::Debug, F, Fut>(
    what: &str,
    secs: u64,
    mut get: F,
    ended: impl Fn(&T) -> bool,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut last = None;
    for _ in 0..secs * 5 {
        let v = get().await;
        if ended(&v) {
            return v;
        }
        last = Some(v);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what} did not end within {secs} s: {last:?}");
}

async fn backup_until(
    backups: &mut BackupServiceClient<Channel>,
    token: &str,
    id: &str,
    secs: u64,
) -> pb::Backup {
    let ended = |b: &pb::Backup| {
        b.status == pb::BackupStatus::Complete as i32 || b.status == pb::BackupStatus::Failed as i32
    };
    until_ended(
        &format!("backup {id}"),
        secs,
        || {
            let mut c = backups.clone();
            async move {
                c.get_backup(authed(pb::GetBackupRequest { id: id.into() }, token))
                    .await
                    .expect("GetBackup")
                    .into_inner()
                    .backup
                    .unwrap()
            }
        },
        ended,
    )
    .await
}

async fn restore_until(
    backups: &mut BackupServiceClient<Channel>,
    token: &str,
    id: &str,
    secs: u64,
) -> pb::Restore {
    let ended = |r: &pb::Restore| {
        r.status == pb::RestoreStatus::Complete as i32
            || r.status == pb::RestoreStatus::Failed as i32
    };
    until_ended(
        &format!("restore {id}"),
        secs,
        || {
            let mut c = backups.clone();
            async move {
                c.get_restore(authed(pb::GetRestoreRequest { id: id.into() }, token))
                    .await
                    .expect("GetRestore")
                    .into_inner()
                    .restore
                    .unwrap()
            }
        },
        ended,
    )
    .await
}

/// The administrator's watch of every subscription, past its snapshot.
async fn watch_all(
    subs: &mut SubscriptionServiceClient<Channel>,
    admin: &str,
) -> tonic::Streaming<pb::WatchSubscriptionsResponse> {
    let mut watch = subs
        .watch_subscriptions(authed(
            pb::WatchSubscriptionsRequest {
                all: true,
                ..Default::default()
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner();
    loop {
        let e = watch.message().await.unwrap().unwrap();
        if e.r#type == pb::SubscriptionEventType::SnapshotEnd as i32 {
            return watch;
        }
    }
}

/// `owner`'s new n8n subscription `name`, once RUNNING.
async fn subscribe_running(
    subs: &mut SubscriptionServiceClient<Channel>,
    watch: &mut tonic::Streaming<pb::WatchSubscriptionsResponse>,
    owner: &str,
    name: &str,
) -> pb::Subscription {
    let sub = subs
        .create_subscription(authed(
            pb::CreateSubscriptionRequest {
                service_id: "n8n".into(),
                name: name.into(),
                ..Default::default()
            },
            owner,
        ))
        .await
        .expect("subscribed")
        .into_inner()
        .subscription
        .unwrap();
    next_upsert(watch, 30, "RUNNING", |s| {
        s.id == sub.id && s.status == SubscriptionStatus::Running as i32
    })
    .await;
    sub
}

/// The files of a tar archive, unpacked by `tar`.
fn untar(tar: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let unpacked = TempDir::new();
    let archive = unpacked.0.join("volume.tar");
    std::fs::write(&archive, tar).unwrap();
    let out_dir = unpacked.0.join("files");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&out_dir)
        .output()
        .expect("run tar");
    assert!(out.status.success(), "{out:?}");
    contents(&out_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_backed_up_to_s3_is_restored_byte_for_byte_and_only_by_its_owner() {
    let cluster = TestCluster::start().await.unwrap();
    let Some(_) = cluster.standin() else {
        eprintln!(
            "skipped: needs the stand-in's node disks (a real cluster's volumes are on its nodes)"
        );
        return;
    };
    let s3 = s3::S3Server::start();
    s3.create_bucket(BUCKET);
    let mail_dir = TempDir::new();
    let sink = SmtpSink::start(&mail_dir.0);
    let kubeconfig = cluster.kubeconfig_path().to_owned();
    let cp = ControlPlane::start_in(Arc::new(TempDir::for_server().await), free_port(), |a| {
        a.cluster.kubeconfig = Some(kubeconfig);
        a.mail.smtp_url = Some(sink.url().into());
        a.mail.smtp_ca_file = Some(sink.ca_file.clone());
        a.mail.mail_from = "noreply@minispod.test".into();
        a.mail.outbox_retry_initial = Duration::from_millis(200);
        a.subscriptions.apps_domain = "apps.example.test".into();
        // Slow enough for a kill -9 mid-copy below.
        a.backups.backup_limit_upload = 2048;
    })
    .await;
    let mut workers = cp.watch().await;
    let token = cp.token(0).await;
    let node = cluster.name("bk-a");
    let root = cluster.volume_root(&node).unwrap();
    std::fs::create_dir_all(&root).unwrap();
    let root_arg = root.to_string_lossy().into_owned();
    let mut a = agent_on_node(
        &cp,
        &cluster,
        &mut workers,
        &token,
        "bk-a",
        &["--volumes-dir", &root_arg],
    )
    .await;

    NotificationServiceClient::new(cp.channel.clone())
        .update_notification_preferences(cp.authed(pb::UpdateNotificationPreferencesRequest {
            mail: Some(true),
            events: vec![pb::NotificationEvent::BackupFailed as i32],
            update_events: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    let mut backups = BackupServiceClient::new(cp.channel.clone());
    let owner = register(&cp, "keeper@example.org").await;
    let other = register(&cp, "other@example.org").await;
    let mut subs = SubscriptionServiceClient::<Channel>::new(cp.channel.clone());

    // No destination yet: a backup is refused with what to do.
    // The destination: only administrators add one; its secret is never
    // answered.
    let refused = backups
        .create_backup_destination(authed(
            pb::CreateBackupDestinationRequest {
                name: "moto".into(),
                endpoint: s3.endpoint(),
                bucket: BUCKET.into(),
                access_key_id: s3::ACCESS_KEY.into(),
                secret_access_key: s3::SECRET_KEY.into(),
                ..Default::default()
            },
            &owner,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let dest = backups
        .create_backup_destination(authed(
            pb::CreateBackupDestinationRequest {
                name: "moto".into(),
                endpoint: s3.endpoint(),
                region: s3::REGION.into(),
                bucket: BUCKET.into(),
                prefix: "customers".into(),
                access_key_id: s3::ACCESS_KEY.into(),
                secret_access_key: s3::SECRET_KEY.into(),
                make_default: false,
                directory: String::new(),
            },
            &cp.admin,
        ))
        .await
        .expect("destination")
        .into_inner()
        .destination
        .unwrap();
    assert!(dest.is_default, "the first destination is the default");
    assert!(!format!("{dest:?}").contains(s3::SECRET_KEY));

    let mut watch = watch_all(&mut subs, &cp.admin).await;
    let sub = subscribe_running(&mut subs, &mut watch, &owner, "kept").await;

    // Known files in its volume: one large, several small, a nested one.
    let volume = volume_dir(&root, "kept-n8n-data");
    let size = 8 << 20;
    std::fs::write(volume.join("database.sqlite"), noise(size, 7)).unwrap();
    std::fs::create_dir_all(volume.join("nodes/custom")).unwrap();
    for i in 0..20 {
        std::fs::write(
            volume.join(format!("nodes/custom/{i}.json")),
            format!("{{\"n\": {i}}}"),
        )
        .unwrap();
    }
    let before = contents(&volume);

    let started = backups
        .create_backup(authed(
            pb::CreateBackupRequest {
                subscription_id: sub.id.clone(),
                ..Default::default()
            },
            &owner,
        ))
        .await
        .expect("backup started")
        .into_inner()
        .backup
        .unwrap();
    assert_eq!(started.status, pb::BackupStatus::Pending as i32);
    // The pods stop for a consistent copy, and start again after.
    next_upsert(&mut watch, 30, "stopped for the backup", |s| {
        s.id == sub.id
            && s.status == SubscriptionStatus::Suspended as i32
            && s.status_reason.contains("backup")
    })
    .await;
    let done = backup_until(&mut backups, &owner, &started.id, 60).await;
    assert_eq!(done.status, pb::BackupStatus::Complete as i32, "{done:?}");
    assert_eq!(done.volumes.len(), 1);
    assert_eq!(done.volumes[0].worker_id, a.worker_id);
    assert!(!done.volumes[0].snapshot_id.is_empty());
    assert!(done.bytes_total >= size as i64, "{done:?}");
    assert!(done.bytes_added > 0);
    next_upsert(&mut watch, 30, "RUNNING again after the backup", |s| {
        s.id == sub.id && s.status == SubscriptionStatus::Running as i32
    })
    .await;
    let (objects, stored) = s3.usage(BUCKET, "customers/");
    assert!(objects > 0 && stored > 0, "the copy is in the bucket");

    // The owner downloads the volume: a one-time link whose GET streams a
    // tar of exactly the files backed up; another customer gets no link.
    let claim = done.volumes[0].claim.clone();
    let ask = |token: &str, claim: &str| {
        authed(
            pb::CreateBackupDownloadRequest {
                backup_id: done.id.clone(),
                claim: claim.into(),
            },
            token,
        )
    };
    let e = backups
        .create_backup_download(ask(&other, &claim))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = backups
        .create_backup_download(ask(&owner, "no-such-claim"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let link = backups
        .create_backup_download(ask(&owner, &claim))
        .await
        .expect("a download link")
        .into_inner();
    assert!(link.url.starts_with("/downloads/"), "{}", link.url);
    assert!(link.file_name.starts_with("kept-") && link.file_name.ends_with(".tar"));
    let (status, headers, tar) = raw_grpc::plain_get(&cp.channel, &link.url)
        .await
        .expect("the download streams to its end");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&tar));
    assert_eq!(headers["content-type"], "application/x-tar");
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains(&link.file_name)
    );
    assert!(
        untar(&tar) == before,
        "the download holds the volume's files byte for byte"
    );
    let (status, _, _) = raw_grpc::plain_get(&cp.channel, &link.url).await.unwrap();
    assert_eq!(status, 404, "a link works once");
    let (status, _, _) =
        raw_grpc::plain_get(&cp.channel, &format!("/downloads/{}", "0".repeat(64)))
            .await
            .unwrap();
    assert_eq!(status, 404, "a made-up link");

    // The backup's record is stored in the customer's repository, which
    // opens with the recovery password derived from the operator's
    // secrets.key: what a fresh control plane imports (ImportBackups).
    let key = std::fs::read(cp.dir.0.join("secrets.key")).unwrap();
    let recovery = minispod_control_plane::sealed::Sealer::from_key(&key[..32])
        .unwrap()
        .recovery_password(&done.user_id);
    let records = || {
        let out = std::process::Command::new("restic")
            .args([
                "snapshots",
                "--json",
                "--no-cache",
                "--tag",
                "minispod-record",
            ])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env(
                "RESTIC_REPOSITORY",
                format!("s3:{}/{BUCKET}/customers/{}", s3.endpoint(), done.user_id),
            )
            .env("RESTIC_PASSWORD", &recovery)
            .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY)
            .env("AWS_DEFAULT_REGION", s3::REGION)
            .output()
            .expect("run restic");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    until_ended(
        "the backup's record in the bucket",
        60,
        || async { records() },
        |listed| listed.contains(&format!("backup-{}", done.id)),
    )
    .await;

    // Another customer sees nothing of it and cannot restore it.
    let theirs = backups
        .list_backups(authed(pb::ListBackupsRequest::default(), &other))
        .await
        .unwrap()
        .into_inner()
        .backups;
    assert!(theirs.is_empty());
    let e = backups
        .get_backup(authed(
            pb::GetBackupRequest {
                id: done.id.clone(),
            },
            &other,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = backups
        .restore_backup(authed(
            pb::RestoreBackupRequest {
                backup_id: done.id.clone(),
                ..Default::default()
            },
            &other,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = backups
        .create_backup(authed(
            pb::CreateBackupRequest {
                subscription_id: sub.id.clone(),
                ..Default::default()
            },
            &other,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let mine = backups
        .list_backups(authed(pb::ListBackupsRequest::default(), &owner))
        .await
        .unwrap()
        .into_inner()
        .backups;
    assert_eq!(
        mine.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
        [done.id.as_str()]
    );

    // The second backup of the unchanged volume uploads almost nothing.
    let again = backups
        .create_backup(authed(
            pb::CreateBackupRequest {
                subscription_id: sub.id.clone(),
                ..Default::default()
            },
            &owner,
        ))
        .await
        .expect("second backup")
        .into_inner()
        .backup
        .unwrap();
    let again = backup_until(&mut backups, &owner, &again.id, 60).await;
    assert_eq!(again.status, pb::BackupStatus::Complete as i32, "{again:?}");
    assert!(
        (again.bytes_added as f64) < size as f64 * 0.01,
        "an unchanged volume's second backup uploaded {} bytes of {size}",
        again.bytes_added
    );
    next_upsert(&mut watch, 30, "RUNNING again", |s| {
        s.id == sub.id && s.status == SubscriptionStatus::Running as i32
    })
    .await;

    // The data is lost...
    std::fs::remove_dir_all(volume.join("nodes")).unwrap();
    std::fs::write(volume.join("database.sqlite"), b"corrupt").unwrap();
    std::fs::write(volume.join("stray"), b"written after the backup").unwrap();
    assert_ne!(contents(&volume), before);
    // ... and the owner restores the first backup.
    let restore = backups
        .restore_backup(authed(
            pb::RestoreBackupRequest {
                backup_id: done.id.clone(),
                ..Default::default()
            },
            &owner,
        ))
        .await
        .expect("restore started")
        .into_inner()
        .restore
        .unwrap();
    let restored = restore_until(&mut backups, &owner, &restore.id, 60).await;
    assert_eq!(
        restored.status,
        pb::RestoreStatus::Complete as i32,
        "{restored:?}"
    );
    assert_eq!(restored.bytes_total, done.bytes_total);
    let after = contents(&volume);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    assert!(after == before, "every file byte for byte as backed up");
    next_upsert(&mut watch, 30, "RUNNING after the restore", |s| {
        s.id == sub.id && s.status == SubscriptionStatus::Running as i32
    })
    .await;

    // kill -9 of the mover mid-copy: the backup is never listed COMPLETE
    // while its copy is cut short; the agent back, it is taken again and
    // completes.
    std::fs::write(volume.join("new.bin"), noise(size, 11)).unwrap();
    let cut = backups
        .create_backup(authed(
            pb::CreateBackupRequest {
                subscription_id: sub.id.clone(),
                ..Default::default()
            },
            &owner,
        ))
        .await
        .expect("third backup")
        .into_inner()
        .backup
        .unwrap();
    let mut copying = None;
    for _ in 0..300 {
        let b = backups
            .get_backup(authed(pb::GetBackupRequest { id: cut.id.clone() }, &owner))
            .await
            .unwrap()
            .into_inner()
            .backup
            .unwrap();
        assert_ne!(
            b.status,
            pb::BackupStatus::Complete as i32,
            "ended before the kill: {b:?}"
        );
        if b.status == pb::BackupStatus::Running as i32 && b.bytes_done > 0 {
            copying = Some(b);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let copying = copying.expect("the backup copies");
    assert!(copying.bytes_per_second > 0 || copying.bytes_done > 0);
    let pid = a.agent.child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    let _ = a.agent.child.wait().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let meanwhile = backups
        .get_backup(authed(pb::GetBackupRequest { id: cut.id.clone() }, &owner))
        .await
        .unwrap()
        .into_inner()
        .backup
        .unwrap();
    assert_eq!(
        meanwhile.status,
        pb::BackupStatus::Running as i32,
        "{meanwhile:?}"
    );
    // The agent comes back (same state, same node) and takes it again.
    a.agent = super::spawn_agent(
        &cp,
        &a.state.0,
        &token,
        &[
            "--machine-id",
            "bk-a",
            "--kubernetes-node",
            &a.node,
            "--volumes-dir",
            &root_arg,
        ],
    );
    let resumed = backup_until(&mut backups, &owner, &cut.id, 90).await;
    assert_eq!(
        resumed.status,
        pb::BackupStatus::Complete as i32,
        "{resumed:?}"
    );
    assert!(resumed.bytes_total >= 2 * size as i64, "{resumed:?}");
    next_upsert(
        &mut watch,
        30,
        "RUNNING after the interrupted backup",
        |s| s.id == sub.id && s.status == SubscriptionStatus::Running as i32,
    )
    .await;

    // The daily schedule, run now twice, keeping one day: the second
    // scheduled backup makes the first one go, from the list and from
    // the bucket; the backups taken on demand stay.
    let mut scheduled_ids: Vec<String> = Vec::new();
    for round in 0..2 {
        let set = backups
            .set_backup_schedule(authed(
                pb::SetBackupScheduleRequest {
                    schedule: Some(pb::BackupSchedule {
                        subscription_id: sub.id.clone(),
                        enabled: true,
                        hour: 3,
                        minute: 30,
                        keep_daily: 1,
                        keep_weekly: 0,
                        ..Default::default()
                    }),
                    run_now: true,
                },
                &owner,
            ))
            .await
            .expect("schedule set")
            .into_inner()
            .schedule
            .unwrap();
        assert!(set.enabled);
        let mut found = None;
        for _ in 0..100 {
            let list = backups
                .list_backups(authed(
                    pb::ListBackupsRequest {
                        subscription_id: sub.id.clone(),
                    },
                    &owner,
                ))
                .await
                .unwrap()
                .into_inner()
                .backups;
            if let Some(b) = list.iter().find(|b| {
                b.trigger == pb::BackupTrigger::Schedule as i32 && !scheduled_ids.contains(&b.id)
            }) {
                found = Some(b.id.clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let id = found.unwrap_or_else(|| panic!("scheduled backup {round} started"));
        let b = backup_until(&mut backups, &owner, &id, 90).await;
        assert_eq!(b.status, pb::BackupStatus::Complete as i32, "{b:?}");
        scheduled_ids.push(id);
        next_upsert(&mut watch, 30, "RUNNING after the scheduled backup", |s| {
            s.id == sub.id && s.status == SubscriptionStatus::Running as i32
        })
        .await;
    }
    let next = backups
        .get_backup_schedule(authed(
            pb::GetBackupScheduleRequest {
                subscription_id: sub.id.clone(),
            },
            &owner,
        ))
        .await
        .unwrap()
        .into_inner()
        .schedule
        .unwrap();
    assert!(
        next.next_at.unwrap().seconds > super::now_ms() / 1000,
        "the next run is the next 03:30 UTC"
    );
    let mut gone = false;
    for _ in 0..300 {
        let e = backups
            .get_backup(authed(
                pb::GetBackupRequest {
                    id: scheduled_ids[0].clone(),
                },
                &owner,
            ))
            .await;
        if matches!(&e, Err(s) if s.code() == Code::NotFound) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gone,
        "the first scheduled backup is past its retention and removed"
    );
    let left: Vec<String> = backups
        .list_backups(authed(
            pb::ListBackupsRequest {
                subscription_id: sub.id.clone(),
            },
            &owner,
        ))
        .await
        .unwrap()
        .into_inner()
        .backups
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert!(
        left.contains(&scheduled_ids[1]) && left.contains(&done.id) && left.contains(&cut.id),
        "{left:?}"
    );

    // Administrators' overview: sizes and the last success.
    let e = backups
        .list_backup_overview(authed(pb::ListBackupOverviewRequest {}, &owner))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let overview = backups
        .list_backup_overview(authed(pb::ListBackupOverviewRequest {}, &cp.admin))
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    let mine = overview
        .iter()
        .find(|o| o.subscription_id == sub.id)
        .expect("in the overview");
    assert_eq!(mine.complete, left.len() as i32);
    assert!(mine.bytes_stored >= 2 * size as i64, "{mine:?}");
    assert!(mine.scheduled && mine.last_success_at.is_some());

    // The first backup restored as a new subscription: same files, same
    // version, running; the original is untouched.
    let original_now = contents(&volume);
    let copy = backups
        .restore_backup(authed(
            pb::RestoreBackupRequest {
                backup_id: done.id.clone(),
                new_subscription_name: "kept-copy".into(),
            },
            &owner,
        ))
        .await
        .expect("restore into a new subscription")
        .into_inner()
        .restore
        .unwrap();
    assert_ne!(copy.subscription_id, sub.id);
    let copied = restore_until(&mut backups, &owner, &copy.id, 120).await;
    assert_eq!(
        copied.status,
        pb::RestoreStatus::Complete as i32,
        "{copied:?}"
    );
    let copy_volume = volume_dir(&root, "kept-copy-n8n-data");
    assert!(
        contents(&copy_volume) == before,
        "the new subscription holds the backup's files"
    );
    assert!(
        contents(&volume) == original_now,
        "the original is untouched"
    );
    let new_sub = next_upsert(&mut watch, 30, "the copy RUNNING", |s| {
        s.id == copy.subscription_id && s.status == SubscriptionStatus::Running as i32
    })
    .await;
    assert_eq!(new_sub.version, done.service_version);
    assert_eq!(new_sub.user_id, sub.user_id);

    // A restore drill of the first backup: a scratch copy restored, the
    // archive checked, the app ready, then the copy deleted.
    let drill = backups
        .start_restore_drill(authed(
            pb::StartRestoreDrillRequest {
                backup_id: done.id.clone(),
            },
            &owner,
        ))
        .await
        .expect("drill started")
        .into_inner()
        .restore
        .unwrap();
    assert!(drill.drill);
    let drilled = restore_until(&mut backups, &owner, &drill.id, 120).await;
    assert_eq!(
        drilled.status,
        pb::RestoreStatus::Complete as i32,
        "{drilled:?}"
    );
    assert!(
        drilled.reason.starts_with("drill passed"),
        "{}",
        drilled.reason
    );
    next_upsert(&mut watch, 30, "the drill's scratch copy deleted", |s| {
        s.id == drill.subscription_id && s.status == SubscriptionStatus::Deleting as i32
    })
    .await;
    assert!(
        contents(&volume) == original_now,
        "the original is untouched by the drill"
    );

    // An upgrade past a one-way version: the copy has no backup of its
    // version, so the upgrade takes one first (BEFORE_UPGRADE) and starts
    // once it completes.
    let mut catalog = CatalogServiceClient::new(cp.channel.clone());
    let n8n = catalog
        .list_service_versions(authed(
            pb::ListServiceVersionsRequest {
                service_id: "n8n".into(),
            },
            &cp.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .versions
        .remove(0);
    let mut template = n8n.template.unwrap();
    template.components[0].image = "docker.io/n8nio/n8n:1.80.0".into();
    catalog
        .publish_service_version(authed(
            pb::PublishServiceVersionRequest {
                service_id: "n8n".into(),
                version: "1.80.0".into(),
                template: Some(template),
                notes: "Moves the database to a new schema.".into(),
                one_way: true,
            },
            &cp.admin,
        ))
        .await
        .expect("one-way version published");
    let upgrade = |id: String, dry_run: bool| pb::UpgradeSubscriptionRequest {
        id,
        version: "1.80.0".into(),
        dry_run,
        ..Default::default()
    };
    let copied_version = subs
        .get_subscription(authed(
            pb::GetSubscriptionRequest {
                id: copy.subscription_id.clone(),
            },
            &owner,
        ))
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap()
        .version;
    let plan = subs
        .upgrade_subscription(authed(upgrade(copy.subscription_id.clone(), true), &owner))
        .await
        .expect("a dry run")
        .into_inner()
        .plan
        .unwrap();
    assert_eq!(plan.one_way_version, "1.80.0");
    assert!(plan.backup_first, "{plan:?}");
    let answer = subs
        .upgrade_subscription(authed(upgrade(copy.subscription_id.clone(), false), &owner))
        .await
        .expect("the upgrade waits for a backup")
        .into_inner();
    assert!(!answer.backup_id.is_empty());
    assert_eq!(
        answer.subscription.unwrap().version,
        copied_version,
        "not upgraded before the backup"
    );
    let e = subs
        .upgrade_subscription(authed(upgrade(copy.subscription_id.clone(), false), &owner))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("under way"), "{}", e.message());
    let guard = backup_until(&mut backups, &owner, &answer.backup_id, 90).await;
    assert_eq!(guard.status, pb::BackupStatus::Complete as i32, "{guard:?}");
    assert_eq!(guard.trigger, pb::BackupTrigger::BeforeUpgrade as i32);
    assert_eq!(guard.upgrade_to, "1.80.0");
    assert_eq!(guard.service_version, copied_version);
    next_upsert(&mut watch, 60, "upgraded to 1.80.0 after its backup", |s| {
        s.id == copy.subscription_id
            && s.version == "1.80.0"
            && s.status == SubscriptionStatus::Running as i32
    })
    .await;

    // Deleting with a backup first: the copy stays until its backup
    // completes, then goes; the backup outlives it.
    let deleting = subs
        .delete_subscription(authed(
            pb::DeleteSubscriptionRequest {
                id: copy.subscription_id.clone(),
                backup_first: true,
            },
            &owner,
        ))
        .await
        .expect("deletion after a backup")
        .into_inner();
    assert!(!deleting.backup_id.is_empty());
    assert_ne!(
        deleting.subscription.unwrap().status,
        SubscriptionStatus::Deleting as i32,
        "kept while its backup runs"
    );
    let last = backup_until(&mut backups, &owner, &deleting.backup_id, 90).await;
    assert_eq!(last.status, pb::BackupStatus::Complete as i32, "{last:?}");
    assert_eq!(last.trigger, pb::BackupTrigger::BeforeDelete as i32);
    next_upsert(&mut watch, 30, "the copy deleted after its backup", |s| {
        s.id == copy.subscription_id && s.status == SubscriptionStatus::Deleting as i32
    })
    .await;
    let kept = backups
        .get_backup(authed(
            pb::GetBackupRequest {
                id: deleting.backup_id.clone(),
            },
            &owner,
        ))
        .await
        .expect("the backup outlives its subscription")
        .into_inner()
        .backup
        .unwrap();
    assert_eq!(kept.status, pb::BackupStatus::Complete as i32);

    // A template says per component how its copy is made consistent: a
    // component copied live keeps its pod through the backup; the one that
    // says STOP is stopped and started again.
    let mut t = catalog
        .list_service_versions(authed(
            pb::ListServiceVersionsRequest {
                service_id: "n8n".into(),
            },
            &cp.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .versions
        .remove(0)
        .template
        .unwrap();
    let mut spool = t.components[0].clone();
    spool.name = "spool".into();
    spool.expose_port = String::new();
    spool.volumes.truncate(1);
    spool.volumes[0].name = "spool".into();
    spool.backup = pb::BackupMode::Stop as i32;
    t.components[0].backup = pb::BackupMode::Live as i32;
    t.components.push(spool);
    catalog
        .create_service(authed(
            pb::CreateServiceRequest {
                slug: "n8n-live".into(),
                name: "n8n, copied live".into(),
                description: "n8n whose data is copied while it runs".into(),
                category: "Automation".into(),
                version: "1.0.0".into(),
                active: true,
                template: Some(t),
                ..Default::default()
            },
            &cp.admin,
        ))
        .await
        .expect("a service with a live component");
    let live = subs
        .create_subscription(authed(
            pb::CreateSubscriptionRequest {
                service_id: "n8n-live".into(),
                name: "live".into(),
                ..Default::default()
            },
            &other,
        ))
        .await
        .expect("subscribed")
        .into_inner()
        .subscription
        .unwrap();
    next_upsert(&mut watch, 30, "the live one RUNNING", |s| {
        s.id == live.id && s.status == SubscriptionStatus::Running as i32
    })
    .await;
    std::fs::write(
        volume_dir(&root, "live-n8n-data").join("media.bin"),
        noise(1 << 20, 11),
    )
    .unwrap();
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::all(cluster.client().await);
    let pod_of = |component: &'static str| {
        let pods = pods.clone();
        let live_id = live.id.clone();
        async move {
            pods.list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                // A pod still terminating (a real cluster's grace period)
                // is not the component's pod any more.
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| {
                    let l = p.metadata.labels.clone().unwrap_or_default();
                    l.values().any(|v| v == &live_id)
                        && l.get("app.kubernetes.io/component").map(String::as_str)
                            == Some(component)
                })
                .filter_map(|p| p.metadata.uid)
                .collect::<Vec<_>>()
        }
    };
    let (n8n_before, spool_before) = (pod_of("n8n").await, pod_of("spool").await);
    assert_eq!((n8n_before.len(), spool_before.len()), (1, 1));
    let started = backups
        .create_backup(authed(
            pb::CreateBackupRequest {
                subscription_id: live.id.clone(),
                ..Default::default()
            },
            &other,
        ))
        .await
        .expect("backed up")
        .into_inner()
        .backup
        .unwrap();
    next_upsert(&mut watch, 30, "only the spool stopped", |s| {
        s.id == live.id
            && s.status == SubscriptionStatus::Suspended as i32
            && s.status_reason.starts_with("spool stopped for a backup")
    })
    .await;
    let done_live = backup_until(&mut backups, &other, &started.id, 60).await;
    assert_eq!(
        done_live.status,
        pb::BackupStatus::Complete as i32,
        "{done_live:?}"
    );
    assert_eq!(done_live.volumes.len(), 2, "both volumes copied");
    let spool_copy = done_live
        .volumes
        .iter()
        .find(|v| v.claim == "live-spool-spool")
        .unwrap();
    assert_eq!(
        spool_copy.snapshot_id, "empty",
        "a volume with no files is backed up as such (restic stores no empty snapshot)"
    );
    next_upsert(&mut watch, 30, "the live one RUNNING again", |s| {
        s.id == live.id && s.status == SubscriptionStatus::Running as i32
    })
    .await;
    assert_eq!(
        pod_of("n8n").await,
        n8n_before,
        "the live component kept its pod"
    );
    let spool_after = pod_of("spool").await;
    assert!(
        spool_after.len() == 1 && spool_after != spool_before,
        "the stopped component was started again: {spool_before:?} -> {spool_after:?}"
    );

    // Backups count against the storage limit: two 5 GiB volumes and the
    // backups' GiB are past a 10 GiB limit, so a backup is refused; the
    // schedule's two failures in a row are told to the administrators.
    UserServiceClient::new(cp.channel.clone())
        .set_user_limits(authed(
            pb::SetUserLimitsRequest {
                id: sub.user_id.clone(),
                limits: Some(pb::TenantLimitOverrides {
                    storage_gb: Some(10),
                    ..Default::default()
                }),
            },
            &cp.admin,
        ))
        .await
        .expect("limits set");
    let e = backups
        .create_backup(authed(
            pb::CreateBackupRequest {
                subscription_id: sub.id.clone(),
                ..Default::default()
            },
            &owner,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("storage limit"), "{}", e.message());
    for round in 1..=2 {
        backups
            .set_backup_schedule(authed(
                pb::SetBackupScheduleRequest {
                    schedule: Some(pb::BackupSchedule {
                        subscription_id: sub.id.clone(),
                        enabled: true,
                        hour: 3,
                        minute: 30,
                        keep_daily: 1,
                        ..Default::default()
                    }),
                    run_now: true,
                },
                &owner,
            ))
            .await
            .expect("schedule set");
        let mut failures = 0;
        for _ in 0..100 {
            failures = backups
                .get_backup_schedule(authed(
                    pb::GetBackupScheduleRequest {
                        subscription_id: sub.id.clone(),
                    },
                    &owner,
                ))
                .await
                .unwrap()
                .into_inner()
                .schedule
                .unwrap()
                .failures_in_a_row;
            if failures == round {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(failures, round, "scheduled failure {round} counted");
    }
    let told = sink
        .wait_for(super::ADMIN_EMAIL, 1, Duration::from_secs(30))
        .await;
    assert_eq!(told.len(), 1, "one notice, at the second failure");
    assert!(
        told[0].subject.contains("kept") && told[0].text.contains("storage limit"),
        "{} / {}",
        told[0].subject,
        told[0].text
    );
    drop(a);
}

/// Runs the real restic against a repository the control plane serves
/// (`rest:`), trusting `ca` and presenting `client` (a PEM of certificate
/// and key) when given; its exit and standard error.
fn restic_at(url: &str, ca: &Path, client: Option<&Path>, cache: &Path) -> (bool, String) {
    let mut cmd = std::process::Command::new("restic");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RESTIC_PASSWORD", "not the customer's")
        .args(["snapshots", "--no-lock", "--cache-dir"])
        .arg(cache)
        .arg("-r")
        .arg(url)
        .arg("--cacert")
        .arg(ca);
    if let Some(c) = client {
        cmd.arg("--tls-client-cert").arg(c);
    }
    let out = cmd.output().expect("run restic");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_on_the_control_planes_host_keeps_backups_the_agent_reaches_only_while_it_copies()
 {
    let cluster = TestCluster::start().await.unwrap();
    let Some(_) = cluster.standin() else {
        eprintln!(
            "skipped: needs the stand-in's node disks (a real cluster's volumes are on its nodes)"
        );
        return;
    };
    let kubeconfig = cluster.kubeconfig_path().to_owned();
    let cp = ControlPlane::start_in(Arc::new(TempDir::for_server().await), free_port(), |a| {
        a.cluster.kubeconfig = Some(kubeconfig);
        a.subscriptions.apps_domain = "apps.example.test".into();
        // Under a bandwidth bound the control plane's port serves the
        // packs at the agent's pace.
        a.backups.backup_limit_upload = 8192;
    })
    .await;
    let mut workers = cp.watch().await;
    let token = cp.token(0).await;
    let node = cluster.name("bk-dir");
    let root = cluster.volume_root(&node).unwrap();
    std::fs::create_dir_all(&root).unwrap();
    let root_arg = root.to_string_lossy().into_owned();
    let a = agent_on_node(
        &cp,
        &cluster,
        &mut workers,
        &token,
        "bk-dir",
        &["--volumes-dir", &root_arg],
    )
    .await;
    let mut backups = BackupServiceClient::new(cp.channel.clone());
    let owner = register(&cp, "dir-keeper@example.org").await;
    let mut subs = SubscriptionServiceClient::<Channel>::new(cp.channel.clone());

    // The destination: an absolute directory, created when missing; a
    // relative one, or one mixed with a bucket's fields, is refused.
    let kept = TempDir::new();
    let directory = kept.0.join("minispod-backups");
    let dir_request = |directory: &str| pb::CreateBackupDestinationRequest {
        name: "local".into(),
        directory: directory.into(),
        ..Default::default()
    };
    for (bad, field) in [
        (dir_request("minispod-backups"), "directory"),
        (dir_request("/srv/../etc"), "directory"),
        (
            pb::CreateBackupDestinationRequest {
                bucket: "b".into(),
                ..dir_request(directory.to_str().unwrap())
            },
            "bucket",
        ),
    ] {
        let e = backups
            .create_backup_destination(authed(bad, &cp.admin))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with(field), "{}", e.message());
    }
    let dest = backups
        .create_backup_destination(authed(dir_request(directory.to_str().unwrap()), &cp.admin))
        .await
        .expect("a directory destination")
        .into_inner()
        .destination
        .unwrap();
    assert_eq!(dest.directory, directory.to_str().unwrap());
    assert!(dest.bucket.is_empty() && dest.endpoint.is_empty());
    assert!(dest.is_default);
    assert!(directory.is_dir(), "created when missing");

    let mut watch = watch_all(&mut subs, &cp.admin).await;
    let sub = subscribe_running(&mut subs, &mut watch, &owner, "local").await;
    let volume = volume_dir(&root, "local-n8n-data");
    let size = 24 << 20;
    std::fs::write(volume.join("database.sqlite"), noise(size, 3)).unwrap();
    std::fs::create_dir_all(volume.join("nodes")).unwrap();
    for i in 0..10 {
        std::fs::write(volume.join(format!("nodes/{i}.json")), format!("[{i}]")).unwrap();
    }
    let before = contents(&volume);

    let backup = |mut c: BackupServiceClient<Channel>| {
        let (sub, owner) = (sub.id.clone(), owner.clone());
        async move {
            c.create_backup(authed(
                pb::CreateBackupRequest {
                    subscription_id: sub,
                    ..Default::default()
                },
                &owner,
            ))
            .await
            .expect("backup started")
            .into_inner()
            .backup
            .unwrap()
        }
    };
    let first = backup(backups.clone()).await;
    let first = backup_until(&mut backups, &owner, &first.id, 90).await;
    assert_eq!(first.status, pb::BackupStatus::Complete as i32, "{first:?}");
    assert!(first.bytes_added > 0);
    // The repository is in the directory, in restic's own layout, under
    // the customer's id; nothing of it was written anywhere else.
    let repo = directory.join(&first.user_id);
    assert!(repo.join("config").is_file(), "{repo:?}");
    let packs: u64 = std::fs::read_dir(repo.join("data"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        packs >= size as u64 / 2,
        "the packs are here: {packs} bytes"
    );
    let leftovers: Vec<_> = walk(&repo)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary file left: {leftovers:?}"
    );
    // The agent's restic presented the worker's certificate, kept 0600.
    let client_pem = a.state.0.join("restic-tls/client.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&client_pem).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Unchanged, the next backup adds almost nothing.
    next_upsert(&mut watch, 30, "RUNNING after the backup", |s| {
        s.id == sub.id && s.status == SubscriptionStatus::Running as i32
    })
    .await;
    let second = backup(backups.clone()).await;
    let second = backup_until(&mut backups, &owner, &second.id, 90).await;
    assert_eq!(
        second.status,
        pb::BackupStatus::Complete as i32,
        "{second:?}"
    );
    assert!(
        (second.bytes_added as f64) < size as f64 * 0.01,
        "an unchanged volume uploads under 1 %: {} bytes",
        second.bytes_added
    );

    // Outside a transfer the repository is closed, even to the worker that
    // wrote it, and to anyone without a worker's certificate.
    let url = format!("rest:{}/restic/{}/{}/", cp.url(), dest.id, first.user_id);
    let ca = kept.0.join("ca.pem");
    std::fs::write(&ca, &cp.ca_pem).unwrap();
    let cache = kept.0.join("restic-cache");
    let (ok, said) = restic_at(&url, &ca, None, &cache);
    assert!(!ok && said.contains("401"), "no certificate: {said}");
    // An admission is trusted for 5 s after the transfer ends.
    let mut said = String::new();
    for _ in 0..20 {
        let (ok, now) = restic_at(&url, &ca, Some(&client_pem), &cache);
        assert!(!ok, "restic opened the repository without the password");
        said = now;
        if said.contains("403") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(said.contains("403"), "no open transfer: {said}");

    // The data lost, the restore brings it back byte for byte, through the
    // same port.
    next_upsert(&mut watch, 30, "RUNNING after the second backup", |s| {
        s.id == sub.id && s.status == SubscriptionStatus::Running as i32
    })
    .await;
    std::fs::remove_file(volume.join("database.sqlite")).unwrap();
    std::fs::remove_dir_all(volume.join("nodes")).unwrap();
    let restore = backups
        .restore_backup(authed(
            pb::RestoreBackupRequest {
                backup_id: first.id.clone(),
                ..Default::default()
            },
            &owner,
        ))
        .await
        .expect("restore started")
        .into_inner()
        .restore
        .unwrap();
    let restored = restore_until(&mut backups, &owner, &restore.id, 90).await;
    assert_eq!(
        restored.status,
        pb::RestoreStatus::Complete as i32,
        "{restored:?}"
    );
    assert!(contents(&volume) == before, "every file byte for byte");

    // The download is read from the directory by the control plane's own
    // restic.
    let link = backups
        .create_backup_download(authed(
            pb::CreateBackupDownloadRequest {
                backup_id: first.id.clone(),
                claim: first.volumes[0].claim.clone(),
            },
            &owner,
        ))
        .await
        .expect("a download link")
        .into_inner();
    let (status, _, tar) = raw_grpc::plain_get(&cp.channel, &link.url)
        .await
        .expect("the download streams to its end");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&tar));
    assert!(untar(&tar) == before, "the download, byte for byte");

    // A used link no longer counts; at most 20 unused ones are open.
    let ask = || {
        authed(
            pb::CreateBackupDownloadRequest {
                backup_id: first.id.clone(),
                claim: first.volumes[0].claim.clone(),
            },
            &owner,
        )
    };
    for n in 0..20 {
        backups
            .create_backup_download(ask())
            .await
            .unwrap_or_else(|e| panic!("link {n}: {e:?}"));
    }
    let e = backups.create_backup_download(ask()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    drop(a);
}

/// The number of files in `dir` (0 when it is missing).
fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_control_plane_with_the_operators_key_imports_and_restores_a_lost_ones_backups() {
    let cluster = TestCluster::start().await.unwrap();
    let Some(_) = cluster.standin() else {
        eprintln!(
            "skipped: needs the stand-in's node disks (a real cluster's volumes are on its nodes)"
        );
        return;
    };
    let kubeconfig = cluster.kubeconfig_path().to_owned();
    let configure = |a: &mut minispod_control_plane::config::ServeArgs| {
        a.cluster.kubeconfig = Some(kubeconfig.clone());
        a.subscriptions.apps_domain = "apps.example.test".into();
    };
    let kept = TempDir::new();
    let directory = kept.0.join("minispod-backups");
    let add_destination = |cp: &ControlPlane| {
        let (channel, admin) = (cp.channel.clone(), cp.admin.clone());
        let directory = directory.to_str().unwrap().to_owned();
        async move {
            BackupServiceClient::new(channel)
                .create_backup_destination(authed(
                    pb::CreateBackupDestinationRequest {
                        name: "local".into(),
                        directory,
                        ..Default::default()
                    },
                    &admin,
                ))
                .await
                .expect("a directory destination")
                .into_inner()
                .destination
                .unwrap()
        }
    };

    // The control plane that is lost: a customer's backup, its record
    // stored in the repository with the recovery key.
    let lost = ControlPlane::start_in(
        Arc::new(TempDir::for_server().await),
        free_port(),
        configure,
    )
    .await;
    let mut workers = lost.watch().await;
    let token = lost.token(0).await;
    let root = cluster.volume_root(&cluster.name("dr-lost")).unwrap();
    std::fs::create_dir_all(&root).unwrap();
    let root_arg = root.to_string_lossy().into_owned();
    let a = agent_on_node(
        &lost,
        &cluster,
        &mut workers,
        &token,
        "dr-lost",
        &["--volumes-dir", &root_arg],
    )
    .await;
    add_destination(&lost).await;
    let owner = register(&lost, "survivor@example.org").await;
    let mut subs = SubscriptionServiceClient::<Channel>::new(lost.channel.clone());
    let mut watch = watch_all(&mut subs, &lost.admin).await;
    let sub = subscribe_running(&mut subs, &mut watch, &owner, "kept").await;
    let volume = volume_dir(&root, "kept-n8n-data");
    std::fs::write(volume.join("database.sqlite"), noise(3 << 20, 11)).unwrap();
    std::fs::create_dir_all(volume.join("nodes")).unwrap();
    for i in 0..5 {
        std::fs::write(volume.join(format!("nodes/{i}.json")), format!("[{i}]")).unwrap();
    }
    let before = contents(&volume);
    let mut backups = BackupServiceClient::new(lost.channel.clone());
    let taken = backups
        .create_backup(authed(
            pb::CreateBackupRequest {
                subscription_id: sub.id.clone(),
                ..Default::default()
            },
            &owner,
        ))
        .await
        .expect("backup started")
        .into_inner()
        .backup
        .unwrap();
    let taken = backup_until(&mut backups, &owner, &taken.id, 90).await;
    assert_eq!(taken.status, pb::BackupStatus::Complete as i32, "{taken:?}");
    // Its record is a snapshot of its own, next to the volume's; the
    // repository has a second key.
    let repo = directory.join(&taken.user_id);
    until_ended(
        "the backup's record stored",
        60,
        || async {
            (
                files_in(&repo.join("snapshots")),
                files_in(&repo.join("keys")),
            )
        },
        |&(snapshots, keys)| snapshots == 2 && keys == 2,
    )
    .await;
    drop(a);
    let (lost_dir, _) = lost.stop().await;

    // Records planted by someone with the repository's password but not
    // the operator's key (a worker's restic has it): one for a made-up
    // backup, one newer than the real record of the real backup, and a
    // snapshot tagged as a record that holds no record file. None is
    // trusted, and none stops the import.
    let key = std::fs::read(lost_dir.0.join("secrets.key")).unwrap();
    let recovery = minispod_control_plane::sealed::Sealer::from_key(&key[..32])
        .unwrap()
        .recovery_password(&taken.user_id);
    for (id, file) in [
        (
            "0193a1b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b",
            "minispod-backup.json",
        ),
        (taken.id.as_str(), "minispod-backup.json"),
        ("0193a1b2-7c4d-7e8f-9a0b-1c2d3e4f5a6c", "elsewhere.txt"),
    ] {
        let forged = serde_json::json!({
            "format": 1,
            "record": serde_json::json!({"format": 1, "backup_id": id}).to_string(),
            "tag": "AAAA",
        });
        let mut planted = std::process::Command::new("restic")
            .args(["backup", "--no-cache", "--quiet", "--stdin"])
            .args(["--stdin-filename", file, "--host", "minispod"])
            .args(["--tag", "minispod-record", "--tag", &format!("backup-{id}")])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("RESTIC_REPOSITORY", &repo)
            .env("RESTIC_PASSWORD", &recovery)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run restic");
        use std::io::Write;
        planted
            .stdin
            .take()
            .unwrap()
            .write_all(forged.to_string().as_bytes())
            .unwrap();
        assert!(planted.wait().unwrap().success());
    }

    // A control plane without the operator's key: the repository does not
    // open, nothing is imported.
    let stranger = ControlPlane::start_in(
        Arc::new(TempDir::for_server().await),
        free_port(),
        configure,
    )
    .await;
    let dest = add_destination(&stranger).await;
    let (_, someone_id) = register_id(&stranger, "someone@example.org").await;
    let e = BackupServiceClient::new(stranger.channel.clone())
        .import_backups(authed(
            pb::ImportBackupsRequest {
                destination_id: dest.id.clone(),
                repository: taken.user_id.clone(),
                owner_id: someone_id,
            },
            &stranger.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("secrets.key"), "{}", e.message());
    stranger.stop().await;

    // A fresh control plane with the lost one's secrets.key: a fresh
    // database, the destination added again, the customer registered
    // again (a new id).
    let fresh_dir = Arc::new(TempDir::for_server().await);
    std::fs::copy(
        lost_dir.0.join("secrets.key"),
        fresh_dir.0.join("secrets.key"),
    )
    .unwrap();
    let fresh = ControlPlane::start_in(fresh_dir, free_port(), configure).await;
    let mut workers = fresh.watch().await;
    let token = fresh.token(0).await;
    let root = cluster.volume_root(&cluster.name("dr-fresh")).unwrap();
    std::fs::create_dir_all(&root).unwrap();
    let root_arg = root.to_string_lossy().into_owned();
    let _b = agent_on_node(
        &fresh,
        &cluster,
        &mut workers,
        &token,
        "dr-fresh",
        &["--volumes-dir", &root_arg],
    )
    .await;
    let dest = add_destination(&fresh).await;
    let (returning, returning_id) = register_id(&fresh, "survivor@example.org").await;
    assert_ne!(returning_id, taken.user_id);
    let other = register(&fresh, "other@example.org").await;
    let mut backups = BackupServiceClient::new(fresh.channel.clone());
    let import = pb::ImportBackupsRequest {
        destination_id: dest.id.clone(),
        repository: taken.user_id.clone(),
        owner_id: returning_id.clone(),
    };
    // The operator's call only.
    let e = backups
        .import_backups(authed(import.clone(), &returning))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let bad = backups
        .import_backups(authed(
            pb::ImportBackupsRequest {
                repository: "../etc".into(),
                ..import.clone()
            },
            &fresh.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    // No owner named: the customer registered again under the address
    // the records name gets them.
    let imported = backups
        .import_backups(authed(
            pb::ImportBackupsRequest {
                owner_id: String::new(),
                ..import.clone()
            },
            &fresh.admin,
        ))
        .await
        .expect("imported")
        .into_inner();
    assert_eq!(imported.owner_id, returning_id);
    assert_eq!(imported.imported.len(), 1, "{imported:?}");
    assert_eq!(imported.rejected, 2, "the made-up backups: {imported:?}");
    assert_eq!(imported.remaining, 0);
    let got = &imported.imported[0];
    assert_eq!(got.id, taken.id, "the backup keeps its id");
    assert_eq!(got.user_id, returning_id);
    assert_eq!(got.status, pb::BackupStatus::Complete as i32);
    assert_eq!(got.subscription_name, "kept");
    assert_eq!(got.volumes.len(), 1);
    assert_eq!(got.volumes[0].claim, taken.volumes[0].claim);
    // Again: nothing new.
    let again = backups
        .import_backups(authed(import.clone(), &fresh.admin))
        .await
        .unwrap()
        .into_inner();
    assert!(
        again.imported.is_empty() && again.already_here == 1,
        "{again:?}"
    );
    // Its new owner's, and nobody else's.
    let e = backups
        .get_backup(authed(
            pb::GetBackupRequest {
                id: taken.id.clone(),
            },
            &other,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Restored into a new subscription on the fresh control plane's
    // worker, byte for byte.
    let restore = backups
        .restore_backup(authed(
            pb::RestoreBackupRequest {
                backup_id: taken.id.clone(),
                new_subscription_name: "back".into(),
            },
            &returning,
        ))
        .await
        .expect("restore started")
        .into_inner()
        .restore
        .unwrap();
    let restored = restore_until(&mut backups, &returning, &restore.id, 120).await;
    assert_eq!(
        restored.status,
        pb::RestoreStatus::Complete as i32,
        "{restored:?}"
    );
    assert!(
        contents(&volume_dir(&root, "back-n8n-data")) == before,
        "every file byte for byte"
    );
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            found.extend(walk(&p));
        } else {
            found.push(p);
        }
    }
    found
}
