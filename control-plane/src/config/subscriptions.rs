//! Subscriptions: the `serve` flags of [`SubscriptionArgs`].

use std::time::Duration;

use clap::Args;
use minispod_support::parse_duration;

/// How subscriptions become cluster objects, the tenants' defaults and the per-user limits of SubscriptionService.
#[derive(Debug, Clone, Args)]
pub struct SubscriptionArgs {
    /// Subscriptions are served at <subscription>.<apps-domain>: point a
    /// wildcard DNS record for it at the cluster's ingress (Traefik on K3s).
    #[arg(long, env = "MINISPOD_APPS_DOMAIN", default_value = "apps.localhost")]
    pub apps_domain: String,

    /// ingressClassName of subscriptions' Ingresses; empty uses the
    /// cluster's default class.
    #[arg(long, env = "MINISPOD_INGRESS_CLASS", default_value = "")]
    pub ingress_class: String,

    /// Namespace the ingress controller runs in: the only other namespace
    /// whose pods may reach a customer's pods.
    #[arg(
        long,
        env = "MINISPOD_INGRESS_NAMESPACE",
        default_value = "kube-system"
    )]
    pub ingress_namespace: String,

    /// The image of the owner's gate: until its owner opens a new
    /// subscription to everyone, an unprivileged nginx from this image in
    /// the pod of its exposed component lets only the owner's browser
    /// through (README, "The owner gets the instance"). Mirror it and set
    /// this where the cluster cannot pull from Docker Hub.
    #[arg(
        long,
        env = "MINISPOD_GATE_IMAGE",
        default_value = "docker.io/nginxinc/nginx-unprivileged:1.28-alpine"
    )]
    pub gate_image: String,

    /// A cert-manager ClusterIssuer that issues the subscriptions' TLS
    /// certificates; empty for none (TLS then ends elsewhere).
    #[arg(long, env = "MINISPOD_CERT_ISSUER", default_value = "")]
    pub cert_issuer: String,

    /// How long a deleted subscription's volumes are kept before they are
    /// deleted from the cluster.
    #[arg(long, env = "MINISPOD_VOLUME_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub volume_retention: Duration,

    /// What one customer's subscriptions may take unless an administrator
    /// set their own limits (UserService.SetUserLimits).
    #[command(flatten)]
    pub tenant: TenantDefaults,

    /// How often every subscription is checked against the cluster even
    /// without a change.
    #[arg(long, env = "MINISPOD_SUBSCRIPTION_RESYNC", default_value = "10s", value_parser = parse_duration)]
    pub subscription_resync: Duration,

    /// How long the cluster may refuse a subscription's objects (forbidden,
    /// unauthorized, invalid) before a subscription that is not running
    /// turns FAILED; it keeps being retried and resumes by itself.
    #[arg(long, env = "MINISPOD_SUBSCRIPTION_REFUSAL_GRACE", default_value = "3m", value_parser = parse_duration)]
    pub subscription_refusal_grace: Duration,

    /// How long an upgraded subscription's new version has to become ready
    /// (every component rolled out and ready) before the reconciler
    /// applies the previous version's objects again by itself (a rollback,
    /// with the reason in the subscription's upgrade_failure). A new pod
    /// that crash-loops or cannot pull its image for 10 s rolls back at
    /// once.
    #[arg(long, env = "MINISPOD_UPGRADE_DEADLINE", default_value = "5m", value_parser = parse_duration)]
    pub upgrade_deadline: Duration,

    /// How often the control plane looks for subscriptions whose
    /// auto-update policy is enabled, whose maintenance window is open and
    /// for which a newer patch version exists, and starts their upgrades
    /// (SetSubscriptionAutoUpdate). A window shorter than this may be
    /// missed.
    #[arg(long, env = "MINISPOD_AUTO_UPDATE_EVERY", default_value = "1m", value_parser = parse_duration)]
    pub auto_update_every: Duration,

    /// CreateSubscription and UpdateSubscription calls one user may burst.
    #[arg(long, env = "MINISPOD_SUBSCRIPTION_CHANGE_BURST", default_value_t = 10)]
    pub subscription_change_burst: u32,

    /// Sustained CreateSubscription and UpdateSubscription calls per minute
    /// per user.
    #[arg(
        long,
        env = "MINISPOD_SUBSCRIPTION_CHANGES_PER_MINUTE",
        default_value_t = 10
    )]
    pub subscription_changes_per_minute: u32,

    /// StreamSubscriptionLogs calls one user may burst.
    #[arg(long, env = "MINISPOD_LOG_STREAM_BURST", default_value_t = 10)]
    pub log_stream_burst: u32,

    /// Sustained StreamSubscriptionLogs calls per minute per user.
    #[arg(long, env = "MINISPOD_LOG_STREAMS_PER_MINUTE", default_value_t = 30)]
    pub log_streams_per_minute: u32,

    /// Log streams one user may hold open at once (per replica); more are
    /// refused with RESOURCE_EXHAUSTED until one ends.
    #[arg(long, env = "MINISPOD_LOG_STREAMS_PER_USER", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub log_streams_per_user: u32,

    /// The most bytes one log stream reads from the cluster (sent to it as
    /// `limitBytes`); the stream then ends with RESOURCE_EXHAUSTED. Default
    /// 32 MiB.
    #[arg(long, env = "MINISPOD_LOG_STREAM_LIMIT_BYTES", default_value_t = 32 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub log_stream_limit_bytes: u64,

    /// How often an open watch or log stream (the fleet's, the
    /// subscriptions', a log) checks that its caller may still read: it ends
    /// after Logout, a password change, demotion or deactivation. Each
    /// check is one store read per open stream.
    #[arg(long, env = "MINISPOD_STREAM_CALLER_RECHECK", default_value = "5s", value_parser = parse_duration)]
    pub stream_caller_recheck: Duration,
}

/// The defaults every customer gets unless an administrator set their own.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct TenantDefaults {
    /// How many subscriptions (not deleted; suspended ones count) one
    /// customer may have.
    #[arg(
        long = "tenant-max-subscriptions",
        env = "MINISPOD_TENANT_MAX_SUBSCRIPTIONS",
        default_value_t = 5
    )]
    pub subscriptions: i32,

    /// CPU (millicores) the components of one customer's subscriptions may
    /// request in all.
    #[arg(
        long = "tenant-max-cpu-millicores",
        env = "MINISPOD_TENANT_MAX_CPU_MILLICORES",
        default_value_t = 4000
    )]
    pub cpu_millicores: i64,

    /// Memory (MiB) the components of one customer's subscriptions may use
    /// in all (their limits).
    #[arg(
        long = "tenant-max-memory-mib",
        env = "MINISPOD_TENANT_MAX_MEMORY_MIB",
        default_value_t = 8192
    )]
    pub memory_mb: i64,

    /// Storage (GiB) one customer's volumes may take, retained volumes of
    /// deleted subscriptions included.
    #[arg(
        long = "tenant-max-storage-gib",
        env = "MINISPOD_TENANT_MAX_STORAGE_GIB",
        default_value_t = 100
    )]
    pub storage_gb: i64,
}
