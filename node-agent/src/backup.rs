//! Backups of a worker's volumes (issue #26): the mover that runs on the
//! node, next to the volumes' files.
//!
//! The data never goes through the control plane's memory: the agent reads
//! a volume's directory on the node (K3s's local-path provisioner keeps each
//! claim in a directory under `/var/lib/rancher/k3s/storage`) and hands it to
//! [restic](https://restic.net) (Debian's `restic` package), which splits
//! files into content-defined chunks, deduplicates them against what the
//! repository already holds, encrypts and authenticates every chunk with the
//! repository's key, and uploads to an S3-compatible bucket (or another
//! restic backend). Why restic rather than a Rust crate: it is packaged by
//! Debian, its repository format is documented and stable, a snapshot is
//! written only after every chunk it names is stored (a killed backup is
//! never listed as complete), `check --read-data` verifies archives, and
//! `--limit-upload` bounds the bandwidth. A Rust crate with all of these
//! (rustic) would add a large dependency tree to every agent build.
//!
//! - `restic`: the driver: one restic process per operation, secrets in its
//!   environment only, its JSON progress parsed with bounded lines.

pub mod restic;
