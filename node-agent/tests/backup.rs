//! The backup mover (issue #26) against real restic (Debian's package) and a
//! real S3-compatible server (moto's), with real files on disk.
//!
//! restic comes from `MINISPOD_RESTIC`, else `restic` on `PATH` (the test
//! command installs it); without it these tests fail, they do not skip.

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use minispod_agent::backup::restic::{Progress, Repository, Restic, ResticError};
use minispod_agent::secret::Secret;
use minispod_testkit::{TempDir, s3};
use rand::RngCore;

fn restic(tmp: &Path) -> Restic {
    let bin = std::env::var_os("MINISPOD_RESTIC")
        .map(PathBuf::from)
        .unwrap_or_else(|| "restic".into());
    Restic::new(bin, tmp.join("restic-cache"))
}

fn repo(server: &s3::S3Server, bucket: &str, prefix: &str, password: &str) -> Repository {
    Repository {
        location: format!("s3:{}/{bucket}/{prefix}", server.endpoint()),
        password: Secret::new(password),
        credentials: vec![
            ("AWS_ACCESS_KEY_ID".into(), Secret::new(s3::ACCESS_KEY)),
            ("AWS_SECRET_ACCESS_KEY".into(), Secret::new(s3::SECRET_KEY)),
            ("AWS_DEFAULT_REGION".into(), Secret::new(s3::REGION)),
        ],
        limit_upload_kib: None,
        limit_download_kib: None,
        tls: None,
    }
}

/// A bucket on a fresh S3 server, restic, and an opened repository in it.
struct Fixture {
    tmp: TempDir,
    server: s3::S3Server,
    restic: Restic,
    repo: Repository,
}

async fn fixture(prefix: &str, password: &str) -> Fixture {
    let tmp = TempDir::new();
    let server = s3::S3Server::start();
    server.create_bucket("backups");
    let restic = restic(&tmp.0);
    let repo = repo(&server, "backups", prefix, password);
    restic.ensure_repository(&repo).await.unwrap();
    Fixture {
        tmp,
        server,
        restic,
        repo,
    }
}

fn random_file(path: &Path, len: usize) {
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Every regular file under `dir`: relative path → (contents, mode).
fn tree(dir: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                let mode = e.metadata().unwrap().permissions().mode() & 0o7777;
                out.insert(rel, (std::fs::read(&p).unwrap(), mode));
            }
        }
    }
    out
}

/// A volume like a WordPress one: a few large files, many small ones, an
/// empty file, a private file, nested directories.
fn fill_volume(vol: &Path) {
    random_file(&vol.join("db/ibdata1"), 3 << 20);
    random_file(&vol.join("wp-content/uploads/2026/12/photo.jpg"), 1 << 20);
    for i in 0..50 {
        random_file(
            &vol.join(format!("wp-content/plugins/p{i}/index.php")),
            100 + i * 37,
        );
    }
    std::fs::write(vol.join("empty"), b"").unwrap();
    std::fs::write(
        vol.join("wp-config.php"),
        b"<?php define('DB_PASSWORD', 'x');",
    )
    .unwrap();
    std::fs::set_permissions(
        vol.join("wp-config.php"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

#[tokio::test]
async fn a_volume_backed_up_and_wiped_is_restored_byte_for_byte() {
    let Fixture {
        tmp,
        server: _server,
        restic,
        repo,
    } = fixture("tenant-1", "correct horse battery staple").await;
    // Opening it again neither fails nor makes a second repository.
    restic.ensure_repository(&repo).await.unwrap();

    let vol = tmp.0.join("pvc-1");
    fill_volume(&vol);
    let before = tree(&vol);
    let mut seen: Vec<Progress> = Vec::new();
    let tags = vec!["subscription=s1".to_owned(), "volume=data".to_owned()];
    let summary = restic
        .backup(&repo, &vol, &tags, |p| seen.push(p.clone()))
        .await
        .unwrap();
    let volume_bytes: u64 = before.values().map(|(d, _)| d.len() as u64).sum();
    assert_eq!(summary.bytes_processed, volume_bytes);
    assert_eq!(summary.files_new, before.len() as u64);
    assert!(summary.data_added > 0);
    assert!(!seen.is_empty(), "no progress reported");
    assert!(
        seen.iter()
            .all(|p| p.bytes_done <= p.total_bytes || p.total_bytes == 0)
    );

    let listed = restic.snapshots(&repo, &tags).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, summary.snapshot_id);
    assert!(listed[0].tags.contains(&"subscription=s1".to_owned()));

    // The volume's data is lost; the restore brings back every file, with
    // its bytes and its mode.
    std::fs::remove_dir_all(&vol).unwrap();
    let mut restore_progress = Vec::new();
    restic
        .restore(&repo, &summary.snapshot_id, &vol, |p| {
            restore_progress.push(p.clone())
        })
        .await
        .unwrap();
    assert_eq!(tree(&vol), before);
    let last = restore_progress.last().expect("restore progress");
    assert_eq!(
        (last.bytes_done, last.total_bytes),
        (volume_bytes, volume_bytes)
    );

    restic.check(&repo, "100%").await.unwrap();
}

#[tokio::test]
async fn a_second_backup_of_an_unchanged_volume_uploads_under_one_percent_of_it() {
    let Fixture {
        tmp,
        server,
        restic,
        repo,
    } = fixture("tenant-2", "pw-2").await;
    let vol = tmp.0.join("pvc-2");
    for i in 0..4 {
        random_file(&vol.join(format!("data/{i}.bin")), 8 << 20);
    }
    let volume_bytes = 32u64 << 20;
    let tags = vec!["subscription=s2".to_owned()];

    let (_, stored_before) = server.usage("backups", "tenant-2/");
    restic.backup(&repo, &vol, &tags, |_| {}).await.unwrap();
    let (_, stored_first) = server.usage("backups", "tenant-2/");
    assert!(
        stored_first - stored_before >= volume_bytes,
        "the first backup stored {} bytes of a {volume_bytes}-byte volume",
        stored_first - stored_before
    );

    let second = restic.backup(&repo, &vol, &tags, |_| {}).await.unwrap();
    let (_, stored_second) = server.usage("backups", "tenant-2/");
    let uploaded = stored_second - stored_first;
    // Measured on the bucket, not taken from restic's word.
    assert!(
        uploaded * 100 < volume_bytes,
        "the second backup of an unchanged {volume_bytes}-byte volume uploaded {uploaded} bytes"
    );
    assert_eq!(second.files_unmodified, 4);
    assert_eq!(restic.snapshots(&repo, &tags).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_backup_killed_mid_way_is_never_listed_and_the_next_one_completes() {
    let Fixture {
        tmp,
        server,
        restic,
        mut repo,
    } = fixture("tenant-3", "pw-3").await;
    let vol = tmp.0.join("pvc-3");
    for i in 0..6 {
        random_file(&vol.join(format!("{i}.bin")), 4 << 20);
    }
    let tags = vec!["subscription=s3".to_owned()];

    // Slow enough (1 MiB/s for 24 MiB) to be killed once it has uploaded
    // something (a whole pack in the bucket: restic's progress counts
    // what it has read, which runs ahead of its uploads): dropping the
    // future SIGKILLs restic.
    repo.limit_upload_kib = Some(1024);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let backup = restic.backup(&repo, &vol, &tags, move |p| {
        let _ = tx.send(p.bytes_done);
    });
    let killed = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::pin!(backup);
        loop {
            tokio::select! {
                r = &mut backup => panic!("the backup ended before it was killed: {r:?}"),
                Some(done) = rx.recv() => {
                    if done >= 8 << 20 && server.usage("backups", "tenant-3/data/").0 > 0 {
                        break;
                    }
                }
            }
        }
    })
    .await;
    killed.expect("no pack uploaded within 60 s");
    // Some of the volume reached the bucket, and no snapshot names it.
    let (objects, _) = server.usage("backups", "tenant-3/data/");
    assert!(objects > 0, "nothing uploaded before the kill");
    assert!(restic.snapshots(&repo, &tags).await.unwrap().is_empty());

    repo.limit_upload_kib = None;
    restic.unlock(&repo).await.unwrap();
    let summary = restic.backup(&repo, &vol, &tags, |_| {}).await.unwrap();
    let listed = restic.snapshots(&repo, &tags).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, summary.snapshot_id);
    restic.check(&repo, "100%").await.unwrap();
    let out = tmp.0.join("out");
    restic
        .restore(&repo, &summary.snapshot_id, &out, |_| {})
        .await
        .unwrap();
    assert_eq!(tree(&out), tree(&vol));
}

#[tokio::test]
async fn a_wrong_password_cannot_open_or_restore_a_repository() {
    let Fixture {
        tmp,
        server,
        restic,
        repo: good,
    } = fixture("tenant-4", "the right one").await;
    let vol = tmp.0.join("pvc-4");
    fill_volume(&vol);
    let tags = vec!["subscription=s4".to_owned()];
    let snap = restic.backup(&good, &vol, &tags, |_| {}).await.unwrap();

    let bad = repo(&server, "backups", "tenant-4", "a guess");
    // ensure_repository must not create a second repository over it.
    let err = restic.ensure_repository(&bad).await.unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<ResticError>(),
            Some(ResticError::WrongPassword)
        ),
        "{err:#}"
    );
    let out = tmp.0.join("out");
    let err = restic
        .restore(&bad, &snap.snapshot_id, &out, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<ResticError>(),
            Some(ResticError::WrongPassword)
        ),
        "{err:#}"
    );
    assert!(!out.join("wp-config.php").exists());
    // The right password still restores it.
    restic
        .restore(&good, &snap.snapshot_id, &out, |_| {})
        .await
        .unwrap();
    assert_eq!(tree(&out), tree(&vol));
}

#[tokio::test]
async fn the_upload_is_bounded_by_the_limit() {
    let Fixture {
        tmp,
        server: _server,
        restic,
        mut repo,
    } = fixture("tenant-5", "pw-5").await;
    let vol = tmp.0.join("pvc-5");
    random_file(&vol.join("blob"), 6 << 20);
    repo.limit_upload_kib = Some(2048);
    let started = Instant::now();
    restic
        .backup(&repo, &vol, &["subscription=s5".to_owned()], |_| {})
        .await
        .unwrap();
    // 6 MiB at 2 MiB/s cannot take less than about 3 s (a lower bound: a
    // slow machine only makes it longer).
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "6 MiB uploaded in {took:?} at 2 MiB/s"
    );
}

#[tokio::test]
async fn a_restore_in_place_replaces_the_volume_wholly_and_keeps_its_mode() {
    use minispod_agent::backup::{recover_interrupted, restore_in_place};
    let Fixture {
        tmp,
        server: _server,
        restic,
        repo,
    } = fixture("tenant-6", "pw-6").await;
    let vol = tmp.0.join("pvc-6");
    fill_volume(&vol);
    std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o2770)).unwrap();
    let before = tree(&vol);
    let snap = restic
        .backup(&repo, &vol, &["subscription=s6".to_owned()], |_| {})
        .await
        .unwrap();

    // After the backup the app changed a file, added one and removed one.
    std::fs::write(vol.join("wp-config.php"), b"changed").unwrap();
    std::fs::write(vol.join("new-after-backup"), b"x").unwrap();
    std::fs::remove_file(vol.join("empty")).unwrap();
    restore_in_place(&restic, &repo, &snap.snapshot_id, &vol, |_| {})
        .await
        .unwrap();
    assert_eq!(tree(&vol), before);
    let mode = std::fs::metadata(&vol).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o2770);
    // Nothing left beside it.
    let siblings: Vec<_> = std::fs::read_dir(&tmp.0)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pvc-6"))
        .collect();
    assert_eq!(siblings, vec!["pvc-6".to_owned()]);

    // A restore killed between its two renames: the volume is moved aside
    // and a half-written restore lies next to it. Recovery brings the old
    // volume back and discards the half-written one.
    let aside = tmp.0.join("pvc-6.minispod-replaced");
    std::fs::rename(&vol, &aside).unwrap();
    random_file(&tmp.0.join("pvc-6.minispod-restoring/partial"), 1000);
    assert!(recover_interrupted(&vol).unwrap());
    assert_eq!(tree(&vol), before);
    assert!(!aside.exists());
    assert!(!tmp.0.join("pvc-6.minispod-restoring").exists());
    assert!(!recover_interrupted(&vol).unwrap());

    // A volume backed up with no files (restic stores no empty snapshot)
    // is restored empty, its mode kept, without asking restic.
    use minispod_agent::backup::{EMPTY_SNAPSHOT, is_empty_dir};
    assert!(!is_empty_dir(&vol).unwrap());
    restore_in_place(&restic, &repo, EMPTY_SNAPSHOT, &vol, |_| {})
        .await
        .unwrap();
    assert!(is_empty_dir(&vol).unwrap());
    let mode = std::fs::metadata(&vol).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o2770);
}
