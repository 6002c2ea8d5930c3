//! The domains' settings, each made from its group of `serve` flags
//! ([`crate::config`]): a domain's constructor takes its settings, never the
//! flags themselves.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;

use crate::{
    api::subscriptions::CallerLimits,
    cluster::LinkSettings,
    config::{
        ClusterArgs, DomainArgs, FleetArgs, HistoryArgs, LoginArgs, MailArgs, NotifyArgs,
        StoreArgs, SubscriptionArgs,
    },
    history::HistorySettings,
    mail::{MailSettings, RetryPolicy, smtp::SmtpUrl},
    notifications::incidents::Timing,
    rate_limit::{LoginLimits, RateLimiter},
    store::{Db, StoreOptions},
    subscriptions::{
        SubscriptionSettings, domains::DomainSettings, logs::LogSlots, render::RenderSettings,
    },
    workers::{
        enrollment::{EnrollmentConfig, Secret, StaticToken},
        hub::FleetConfig,
        limits::{Rate, WorkerLimits},
    },
    workqueue::Backoff,
};

/// How the store is opened.
pub(super) fn store_options(args: &StoreArgs) -> StoreOptions {
    StoreOptions {
        max_connections: args.database_max_connections,
        acquire_timeout: args.database_acquire_timeout,
        connect_timeout: args.database_connect_timeout,
    }
}

/// The limits of Login and Register.
pub(super) fn login_limits(args: &LoginArgs) -> LoginLimits {
    LoginLimits {
        ip_burst: args.login_ip_burst,
        ip_per_minute: args.login_ip_per_minute,
        account_burst: args.login_account_burst,
        account_per_hour: args.login_account_per_hour,
    }
}

/// How history is kept; `metrics_flush_interval` is the fleet's
/// (`--metrics-flush-interval`).
pub(super) fn history_settings(
    args: &HistoryArgs,
    metrics_flush_interval: Duration,
) -> anyhow::Result<HistorySettings> {
    let s = HistorySettings {
        fine_step: args.history_fine_step,
        fine_retention: args.history_fine_retention,
        coarse_step: args.history_coarse_step,
        coarse_retention: args.history_coarse_retention,
        // A step's last heartbeats reach the recorder with the next flush.
        grace: metrics_flush_interval + Duration::from_secs(1),
    };
    anyhow::ensure!(
        s.fine_step >= Duration::from_millis(100),
        "--history-fine-step must be at least 100ms"
    );
    anyhow::ensure!(
        s.coarse_step >= s.fine_step
            && s.coarse_step
                .as_millis()
                .is_multiple_of(s.fine_step.as_millis()),
        "--history-coarse-step must be a multiple of --history-fine-step"
    );
    anyhow::ensure!(
        s.fine_retention >= s.fine_step && s.coarse_retention >= s.fine_retention,
        "--history-fine-retention must be at least one fine step, and --history-coarse-retention at least as long"
    );
    Ok(s)
}

/// Per-user limits of the SubscriptionService.
pub(super) fn subscription_limits(args: &SubscriptionArgs, db: &Db) -> CallerLimits {
    let per_minute = |n: u32| Duration::from_secs(60) / n.max(1);
    CallerLimits {
        changes: Arc::new(RateLimiter::for_store(
            db,
            "subscription_change",
            args.subscription_change_burst,
            per_minute(args.subscription_changes_per_minute),
        )),
        log_opens: Arc::new(RateLimiter::for_store(
            db,
            "subscription_logs",
            args.log_stream_burst,
            per_minute(args.log_streams_per_minute),
        )),
        log_slots: LogSlots::new(args.log_streams_per_user as usize),
        log_limit_bytes: args.log_stream_limit_bytes,
        caller_recheck: args.stream_caller_recheck.max(Duration::from_millis(10)),
    }
}

/// The cluster's own ranges (pods, services, nodes), refused to customer
/// pods and to webhooks.
fn cluster_cidrs(cluster: &ClusterArgs) -> impl Iterator<Item = &String> {
    [
        &cluster.cluster_pod_cidrs,
        &cluster.cluster_service_cidrs,
        &cluster.cluster_node_cidrs,
    ]
    .into_iter()
    .flatten()
}

/// The mail settings; links point at `--public-url`, or at this server
/// (`bound`, served with TLS unless `plaintext`) by the name its
/// certificate covers.
pub(super) fn mail_settings(
    args: &MailArgs,
    cluster: &ClusterArgs,
    plaintext: bool,
    bound: SocketAddr,
) -> anyhow::Result<MailSettings> {
    let smtp_url = args
        .smtp_url
        .as_ref()
        .filter(|u| !u.is_empty())
        .map(|u| SmtpUrl::parse(u.expose()))
        .transpose()?;
    let public_url = match &args.public_url {
        Some(u) if !u.is_empty() => {
            anyhow::ensure!(
                u.starts_with("https://") || u.starts_with("http://"),
                "--public-url must start with https:// (or http://)"
            );
            u.clone()
        }
        _ => {
            let scheme = if plaintext { "http" } else { "https" };
            format!("{scheme}://localhost:{}", bound.port())
        }
    };
    Ok(MailSettings {
        smtp_url,
        smtp_ca_file: args.smtp_ca_file.clone(),
        from: args.mail_from.clone(),
        public_url,
        webhook_ca_file: args.webhook_ca_file.clone(),
        webhook_policy: crate::mail::webhook::WebhookPolicy {
            allow: args.webhook_allow_ranges.clone(),
            // The cluster's own ranges, as customer pods are refused them
            // (checked at start by their flags' parser), and the operator's.
            deny: args
                .webhook_deny_ranges
                .iter()
                .cloned()
                .chain(cluster_cidrs(cluster).filter_map(|c| c.parse().ok()))
                .collect(),
        },
        require_verification: args.require_email_verification,
        reset_ttl: args.password_reset_ttl,
        verify_ttl: args.email_verification_ttl,
        retry: RetryPolicy {
            initial: args.outbox_retry_initial,
            max: args.outbox_retry_max,
            max_attempts: args.outbox_max_attempts,
        },
    })
}

/// How the control loops retry a failed pass.
fn backoff(cluster: &ClusterArgs) -> Backoff {
    Backoff {
        base: cluster.kube_retry_base,
        max: cluster.kube_retry_max,
    }
}

/// How the cluster link taints offline nodes and retries.
pub(super) fn link_settings(cluster: &ClusterArgs) -> LinkSettings {
    LinkSettings {
        offline_taint_grace: cluster.offline_taint_grace,
        offline_taint_after_start: cluster.offline_taint_after_start,
        backoff: backoff(cluster),
    }
}

/// How subscriptions become cluster objects.
pub(super) fn subscription_settings(
    args: &SubscriptionArgs,
    cluster: &ClusterArgs,
    domains: &DomainArgs,
    blocked_notice_every: Duration,
) -> SubscriptionSettings {
    SubscriptionSettings {
        render: RenderSettings {
            apps_domain: args.apps_domain.clone(),
            ingress_class: args.ingress_class.clone(),
            cert_issuer: args.cert_issuer.clone(),
            ingress_namespace: args.ingress_namespace.clone(),
            cluster_cidrs: cluster_cidrs(cluster).cloned().collect(),
            control_plane_user: cluster.kube_user.clone(),
            gate_image: args.gate_image.clone(),
        },
        volume_retention: args.volume_retention,
        resync: args.subscription_resync,
        tenant: args.tenant,
        backoff: backoff(cluster),
        refusal_grace: args.subscription_refusal_grace,
        upgrade_deadline: args.upgrade_deadline,
        auto_update_every: args.auto_update_every,
        blocked_notice_every,
        domains: DomainSettings {
            issuer: if domains.custom_domain_issuer.is_empty() {
                args.cert_issuer.clone()
            } else {
                domains.custom_domain_issuer.clone()
            },
            check_every: domains.domain_check_every,
            check_max: domains.domain_check_max.max(domains.domain_check_every),
            give_up: domains.domain_check_give_up,
            resolve: domains.domain_check_resolve.clone(),
            per_subscription: domains.domains_per_subscription,
        },
    }
}

/// When administrators are told about workers (before the process's start
/// is known: see [`Timing::started_at`]).
pub(super) fn notice_timing(args: &NotifyArgs) -> Timing {
    Timing::new(
        args.notify_offline_grace,
        args.notify_not_ready_grace,
        args.notify_flap_window,
    )
}

/// When owners are told about their subscriptions.
pub(super) fn outage_timing(args: &NotifyArgs) -> crate::notifications::outages::OutageTiming {
    crate::notifications::customers::timing(
        args.notify_subscription_grace,
        args.notify_flap_window,
        args.notify_crash_restarts,
        args.notify_crash_window,
    )
}

/// The fleet's heartbeat clock.
pub(super) fn fleet_config(args: &FleetArgs) -> anyhow::Result<FleetConfig> {
    anyhow::ensure!(
        args.heartbeat_interval >= Duration::from_secs(1),
        "--heartbeat-interval must be at least 1s: agents are told it in whole seconds"
    );
    Ok(FleetConfig {
        heartbeat_interval: args.heartbeat_interval.max(Duration::from_millis(100)),
        missed_heartbeats: args.missed_heartbeats.max(1),
        metrics_flush_interval: args.metrics_flush_interval.max(Duration::from_millis(10)),
    })
}

/// Enrollment settings, reading the secret files.
pub(super) fn enrollment_config(args: &FleetArgs) -> anyhow::Result<EnrollmentConfig> {
    let read = |path: &std::path::Path| -> anyhow::Result<String> {
        let s =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let s = s.trim().to_owned();
        anyhow::ensure!(!s.is_empty(), "{} is empty", path.display());
        Ok(s)
    };
    let static_token = match &args.enrollment_token_file {
        Some(p) => {
            let token = read(p)?;
            anyhow::ensure!(
                token.len() >= 16,
                "the enrollment token in {} is shorter than 16 characters",
                p.display()
            );
            Some(StaticToken {
                token: Secret::new(token),
                source: p.display().to_string(),
                ttl: args.enrollment_token_ttl,
                max_uses: args.enrollment_token_max_uses,
            })
        }
        None => None,
    };
    let k3s_token = match &args.k3s_token_file {
        Some(p) => Secret::new(read(p)?),
        None => Secret::default(),
    };
    Ok(EnrollmentConfig {
        cert_ttl: args.worker_cert_ttl.max(Duration::from_secs(60)),
        static_token,
        k3s_server_url: args.k3s_server_url.clone(),
        k3s_token,
        k3s_token_ttl: args.k3s_token_ttl,
        rate_burst: args.enroll_burst,
        rate_per_second: args.enroll_per_second,
    })
}

/// The per-worker limits of AgentService.
pub(super) fn worker_limits(args: &FleetArgs) -> WorkerLimits {
    WorkerLimits::new(
        Rate {
            burst: args.worker_connect_burst,
            every: args.worker_connect_every,
        },
        Rate {
            burst: args.worker_renew_burst,
            every: args.worker_renew_every,
        },
        Rate {
            burst: args.worker_ready_change_burst,
            every: args.worker_ready_change_every,
        },
    )
}

/// Where agents reach this control plane: `--agent-url`, or a URL on the
/// TLS port (`local`) whose host the server certificate (`tls_sans`) covers.
pub(super) fn agent_url(agent_url: Option<&str>, tls_sans: &[String], local: SocketAddr) -> String {
    if let Some(url) = agent_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = if local.ip().is_loopback() {
        "localhost".to_owned()
    } else {
        tls_sans
            .first()
            .cloned()
            .or_else(crate::pki::hostname)
            .unwrap_or_else(|| "localhost".to_owned())
    };
    format!("https://{host}:{}", local.port())
}

/// How backups run, from the `--backup-*` flags.
pub(super) fn backup_settings(args: &crate::config::BackupArgs) -> crate::backups::BackupSettings {
    crate::backups::BackupSettings {
        limit_upload_kib: args.backup_limit_upload,
        limit_download_kib: args.backup_limit_download,
        stop_timeout: args.backup_stop_timeout,
        silence_timeout: args.backup_silence_timeout,
        restic: args.backup_restic.clone(),
    }
}
