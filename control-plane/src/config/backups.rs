//! Backups of subscriptions' volumes: the `serve` flags of [`BackupArgs`].

use std::time::Duration;

use clap::Args;
use minispod_support::parse_duration;

/// How backups and restores run (README, "Backups").
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The upload bound of each volume's backup, KiB/s, enforced by the
    /// node agent's restic (0: none).
    #[arg(long, env = "MINISPOD_BACKUP_LIMIT_UPLOAD", default_value_t = 0)]
    pub backup_limit_upload: u32,

    /// The download bound of each volume's restore, KiB/s (0: none).
    #[arg(long, env = "MINISPOD_BACKUP_LIMIT_DOWNLOAD", default_value_t = 0)]
    pub backup_limit_download: u32,

    /// How long a backup or a restore waits for the subscription's volumes
    /// to be bound (a new subscription's) and then as long again for its
    /// pods to stop, before it fails (and the pods start again).
    #[arg(long, env = "MINISPOD_BACKUP_STOP_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub backup_stop_timeout: Duration,

    /// How long a volume's copy may go without a report from its node's
    /// agent before the backup or restore fails.
    #[arg(long, env = "MINISPOD_BACKUP_SILENCE_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub backup_silence_timeout: Duration,

    /// The restic binary the control plane runs to create a customer's
    /// repository before its first backup to a destination, and to stream
    /// a backup's volume to a customer who downloads it
    /// (CreateBackupDownload); the node agents run their own
    /// (`minispod-agent --restic`).
    #[arg(long, env = "MINISPOD_BACKUP_RESTIC", default_value = "restic")]
    pub backup_restic: std::path::PathBuf,
}
