//! Backup and restore throughput of the mover (issue #26): restic against
//! moto's S3-compatible server, both on this machine.
//!
//! ```sh
//! cargo run --release -p minispod-agent --example backup_bench -- --gib 1
//! ```
//!
//! Writes a volume of `--gib` GiB (random, so nothing compresses or
//! deduplicates: the worst case), backs it up, backs it up again unchanged,
//! restores it into a new directory, and prints the time and rate of each
//! step and the bytes the bucket gained.

use std::{
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

use minispod_agent::{
    backup::restic::{Repository, Restic},
    secret::Secret,
};
use minispod_testkit::{TempDir, s3};
use rand::RngCore;

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn write_volume(dir: &Path, bytes: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = rand::rng();
    let mut buf = vec![0u8; 8 << 20];
    let mut left = bytes;
    let mut n = 0;
    while left > 0 {
        // 64 MiB files, as a database's or an upload folder's large files.
        let mut f = std::fs::File::create(dir.join(format!("file-{n:03}.bin"))).unwrap();
        let mut in_file = (64u64 << 20).min(left);
        left -= in_file;
        while in_file > 0 {
            let k = (buf.len() as u64).min(in_file) as usize;
            rng.fill_bytes(&mut buf[..k]);
            f.write_all(&buf[..k]).unwrap();
            in_file -= k as u64;
        }
        n += 1;
    }
}

fn rate(bytes: u64, d: Duration) -> String {
    format!(
        "{:.1} s, {:.1} MiB/s",
        d.as_secs_f64(),
        bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
    )
}

#[tokio::main]
async fn main() {
    let gib = arg("--gib", 1.0);
    let bytes = (gib * (1u64 << 30) as f64) as u64;
    let tmp = TempDir::new();
    let server = s3::S3Server::start();
    server.create_bucket("bench");
    let restic = Restic::new("restic", tmp.0.join("cache"));
    let repo = Repository {
        location: format!("s3:{}/bench/r", server.endpoint()),
        password: Secret::new("bench"),
        credentials: vec![
            ("AWS_ACCESS_KEY_ID".into(), Secret::new(s3::ACCESS_KEY)),
            ("AWS_SECRET_ACCESS_KEY".into(), Secret::new(s3::SECRET_KEY)),
        ],
        limit_upload_kib: None,
        limit_download_kib: None,
        tls: None,
    };
    restic.ensure_repository(&repo).await.unwrap();
    let vol = tmp.0.join("volume");
    write_volume(&vol, bytes);
    println!("# mover throughput, {gib} GiB of random data, restic → moto on this machine");
    let tags = vec!["bench".to_owned()];

    let t = Instant::now();
    let first = restic.backup(&repo, &vol, &tags, |_| {}).await.unwrap();
    println!(
        "first backup:  {} (uploaded {} MiB)",
        rate(bytes, t.elapsed()),
        first.data_added >> 20
    );
    let (_, stored) = server.usage("bench", "r/");

    let t = Instant::now();
    restic.backup(&repo, &vol, &tags, |_| {}).await.unwrap();
    let (_, stored2) = server.usage("bench", "r/");
    println!(
        "second backup, unchanged: {:.1} s, uploaded {} bytes ({:.4} % of the volume)",
        t.elapsed().as_secs_f64(),
        stored2 - stored,
        (stored2 - stored) as f64 * 100.0 / bytes as f64
    );

    let out = tmp.0.join("restored");
    let t = Instant::now();
    restic
        .restore(&repo, &first.snapshot_id, &out, |_| {})
        .await
        .unwrap();
    println!("restore:       {}", rate(bytes, t.elapsed()));
}
