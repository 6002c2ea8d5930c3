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
//! - [`restore_in_place`] and [`recover_interrupted`]: a volume replaced by
//!   a snapshot through a sibling directory and two renames, so it is never
//!   left half-restored.

pub mod restic;

use std::path::{Path, PathBuf};

use restic::{Progress, Repository, Restic};

/// The snapshot a volume with no files is backed up as: restic stores no
/// empty snapshot, so none is made, and restoring it empties the volume.
pub const EMPTY_SNAPSHOT: &str = "empty";

/// Whether `dir` holds nothing.
pub fn is_empty_dir(dir: &Path) -> std::io::Result<bool> {
    Ok(std::fs::read_dir(dir)?.next().is_none())
}

/// The sibling a restore is written into before it replaces the volume.
fn restoring_dir(volume: &Path) -> PathBuf {
    sibling(volume, ".minispod-restoring")
}

/// The sibling the replaced volume is moved to until the swap is done.
fn replaced_dir(volume: &Path) -> PathBuf {
    sibling(volume, ".minispod-replaced")
}

fn sibling(volume: &Path, suffix: &str) -> PathBuf {
    let mut name = volume.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    volume.with_file_name(name)
}

/// Puts a volume back in order after a restore that was interrupted (the
/// agent killed, the machine down): a half-written restore is discarded,
/// never taken for the volume, and a volume moved aside for a swap that did
/// not finish is moved back. Returns true when something was repaired.
pub fn recover_interrupted(volume: &Path) -> std::io::Result<bool> {
    let mut repaired = false;
    let replaced = replaced_dir(volume);
    if replaced.exists() {
        if volume.exists() {
            // The swap finished; only the old copy's removal did not.
            std::fs::remove_dir_all(&replaced)?;
        } else {
            std::fs::rename(&replaced, volume)?;
        }
        repaired = true;
    }
    let restoring = restoring_dir(volume);
    if restoring.exists() {
        std::fs::remove_dir_all(&restoring)?;
        repaired = true;
    }
    Ok(repaired)
}

/// Replaces the volume at `volume` by snapshot `id`: restores into a
/// sibling directory (same filesystem), gives it the volume directory's
/// owner and mode (what the pods' fsGroup set), then swaps the two by
/// renames, so that at every moment the volume is either wholly the old
/// data or wholly the snapshot; [`recover_interrupted`] repairs the one
/// moment between the renames. The volume's pods must be stopped first.
pub async fn restore_in_place(
    restic: &Restic,
    repo: &Repository,
    id: &str,
    volume: &Path,
    progress: impl FnMut(&Progress),
) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    recover_interrupted(volume)?;
    let meta = std::fs::metadata(volume)?;
    let restoring = restoring_dir(volume);
    if id == EMPTY_SNAPSHOT {
        std::fs::create_dir(&restoring)?;
    } else {
        restic.restore(repo, id, &restoring, progress).await?;
    }
    std::os::unix::fs::chown(&restoring, Some(meta.uid()), Some(meta.gid()))?;
    std::fs::set_permissions(&restoring, meta.permissions())?;
    let replaced = replaced_dir(volume);
    std::fs::rename(volume, &replaced)?;
    std::fs::rename(&restoring, volume)?;
    std::fs::remove_dir_all(&replaced)?;
    Ok(())
}
