//! Command line and environment configuration of the control plane.
//!
//! Every flag has an environment fallback; the defaults run out of the box.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `minispod-control-plane`: the MiniSpod API server.
#[derive(Debug, Parser)]
#[command(name = "minispod-control-plane", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC, grpc-web, health and reflection on one port.
    Serve(Box<ServeArgs>),
    /// Print the CA pin (`sha256:<hex>` of the CA certificate's DER) that
    /// agents pass as `--ca-hash`. Creates the CA if the data dir has none.
    CaHash {
        /// Data directory holding `pki/ca.crt`.
        #[arg(long, env = "MINISPOD_DATA_DIR", default_value = "minispod-data")]
        data_dir: PathBuf,
    },
    /// Store a new enrollment token directly in the database (the server
    /// may be running or not) and print it: for install scripts, which
    /// hand each machine a single-use token. Listed and revoked like the
    /// ones CreateEnrollmentToken makes.
    CreateEnrollmentToken(CreateTokenArgs),
}

/// Settings of `create-enrollment-token`.
#[derive(Debug, Clone, Args)]
pub struct CreateTokenArgs {
    /// Data directory of the control plane (holds the SQLite database).
    #[arg(long, env = "MINISPOD_DATA_DIR", default_value = "minispod-data")]
    pub data_dir: PathBuf,
    /// Database URL, as for `serve` (default: SQLite in the data dir).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Lifetime of the token, e.g. `1h`.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Enrollments the token admits; 0 for unlimited.
    #[arg(long, default_value_t = 1)]
    pub max_uses: u32,
    /// Bind the token to this machine id: it then (re-)enrolls exactly that
    /// machine, readmitting it if it was removed.
    #[arg(long)]
    pub machine_id: Option<String>,
    /// What the token is for.
    #[arg(long, default_value = "created by create-enrollment-token")]
    pub description: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Settings of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML file of settings, keyed by flag name (`listen = "0.0.0.0:7443"`,
    /// `cors-origin = ["https://ui.example.org"]`); flags and environment
    /// variables override it.
    #[arg(long, env = "MINISPOD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on for gRPC and grpc-web.
    #[arg(long, env = "MINISPOD_LISTEN", default_value = "0.0.0.0:7443")]
    pub listen: SocketAddr,

    /// The URL agents use to reach this control plane's TLS port, written
    /// into the console's join commands. Default: `https://localhost:<port>`
    /// when `--listen` is a loopback address, else `https://<first
    /// --tls-san, or the host name>:<port>`.
    #[arg(long, env = "MINISPOD_AGENT_URL")]
    pub agent_url: Option<String>,

    /// Also serve the API and the web console without TLS on this loopback
    /// address (e.g. `127.0.0.1:7080`), so a browser on this machine opens
    /// the console with no certificate to trust. Loopback only; agents
    /// cannot connect there (they need mTLS). Default: not served.
    #[arg(long, env = "MINISPOD_CONSOLE_LISTEN")]
    pub console_listen: Option<SocketAddr>,

    /// Data directory: the SQLite database, `pki/` (CA and server
    /// certificate) and the JWT signing key.
    #[arg(long, env = "MINISPOD_DATA_DIR", default_value = "minispod-data")]
    pub data_dir: PathBuf,

    /// Database URL: `sqlite:PATH` or `postgres://user:pass@host/db`.
    /// Default: SQLite at `<data-dir>/minispod.db`. On PostgreSQL several
    /// replicas may share one database (and one CA and JWT key: give each
    /// replica the same `pki/` and `jwt.key`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Most database connections this process opens (SQLite: readers).
    #[arg(long, env = "MINISPOD_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// How long a query waits for a free database connection.
    #[arg(long, env = "MINISPOD_DATABASE_ACQUIRE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub database_acquire_timeout: Duration,

    /// How long start-up keeps retrying a PostgreSQL server that is not up yet.
    #[arg(long, env = "MINISPOD_DATABASE_CONNECT_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub database_connect_timeout: Duration,

    /// PostgreSQL only: the lease under which a replica holds its agents'
    /// streams, renewed every third of it. When a replica dies, its workers
    /// go INACTIVE once its lease lapses.
    #[arg(long, env = "MINISPOD_REPLICA_LEASE", default_value = "10s", value_parser = parse_duration)]
    pub replica_lease: Duration,

    /// Email of the bootstrap administrator, created on first start if absent.
    /// Without it, `admin@minispod.local` is created with a generated
    /// password printed once.
    #[arg(long, env = "MINISPOD_ADMIN_EMAIL")]
    pub admin_email: Option<String>,

    /// Password of the bootstrap administrator (used only when it is created).
    #[arg(long, env = "MINISPOD_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<minispod_support::secret::Secret>,

    /// Serve without TLS, for use behind a TLS-terminating proxy. Agents
    /// cannot connect then (they need mTLS end to end).
    #[arg(long, env = "MINISPOD_PLAINTEXT")]
    pub plaintext: bool,

    /// Extra DNS names or IP addresses for the server certificate (repeat or
    /// comma-separate). localhost, 127.0.0.1, ::1 and the host name are
    /// always included.
    #[arg(long = "tls-san", env = "MINISPOD_TLS_SANS", value_delimiter = ',')]
    pub tls_sans: Vec<String>,

    /// Origins allowed to call the API from a browser over grpc-web (repeat
    /// or comma-separate; `*` allows any). Default: none.
    #[arg(
        long = "cors-origin",
        env = "MINISPOD_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// Refuse Register (PERMISSION_DENIED): accounts are then made by
    /// administrators only. Default: anyone may sign up.
    #[arg(long, env = "MINISPOD_CLOSE_REGISTRATION")]
    pub close_registration: bool,

    /// Connection, stream, buffer and proxy limits.
    #[command(flatten)]
    pub transport: crate::transport::TransportLimits,

    /// Log format.
    #[arg(long, env = "MINISPOD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Lifetime of access tokens, e.g. `15m`, `900s`.
    #[arg(long, env = "MINISPOD_ACCESS_TOKEN_TTL", default_value = "15m", value_parser = parse_duration)]
    pub access_token_ttl: Duration,

    /// Lifetime of refresh tokens, e.g. `30d`.
    #[arg(long, env = "MINISPOD_REFRESH_TOKEN_TTL", default_value = "30d", value_parser = parse_duration)]
    pub refresh_token_ttl: Duration,

    /// Absolute lifetime of a session: however often it is refreshed, it
    /// ends this long after its sign-in, e.g. `90d`.
    #[arg(long, env = "MINISPOD_SESSION_MAX_AGE", default_value = "90d", value_parser = parse_duration)]
    pub session_max_age: Duration,

    /// Login and Register attempts one client address may burst.
    #[arg(long, env = "MINISPOD_LOGIN_IP_BURST", default_value_t = 20)]
    pub login_ip_burst: u32,

    /// Sustained Login and Register attempts per minute from one client address.
    #[arg(long, env = "MINISPOD_LOGIN_IP_PER_MINUTE", default_value_t = 10)]
    pub login_ip_per_minute: u32,

    /// Failed logins one account may take from one client address before it
    /// is slowed down.
    #[arg(long, env = "MINISPOD_LOGIN_ACCOUNT_BURST", default_value_t = 5)]
    pub login_account_burst: u32,

    /// Failed logins per hour an account recovers, per client address; the
    /// account-wide limit is ten times this.
    #[arg(long, env = "MINISPOD_LOGIN_ACCOUNT_PER_HOUR", default_value_t = 12)]
    pub login_account_per_hour: u32,

    /// Password hashes computed at once (argon2id, 19 MiB each). Default: the
    /// number of CPUs.
    #[arg(long, env = "MINISPOD_MAX_CONCURRENT_HASHES")]
    pub max_concurrent_hashes: Option<usize>,

    /// Address for Prometheus metrics (`GET /metrics`), e.g. 127.0.0.1:9464.
    /// Default: not served.
    #[arg(long, env = "MINISPOD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// How often agents send heartbeats.
    #[arg(long, env = "MINISPOD_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// A stream silent for this many heartbeat intervals is closed and its
    /// worker marked INACTIVE.
    #[arg(long, env = "MINISPOD_MISSED_HEARTBEATS", default_value_t = 3)]
    pub missed_heartbeats: u32,

    /// HTTP/2 keepalive ping interval on every connection; with
    /// `--keepalive-timeout` it bounds how long a silent partition goes
    /// unnoticed.
    #[arg(long, env = "MINISPOD_KEEPALIVE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub keepalive_interval: Duration,

    /// How long a keepalive ping may go unanswered before the connection
    /// (and every stream on it) is closed.
    #[arg(long, env = "MINISPOD_KEEPALIVE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,

    /// How often heartbeat metrics are written to the store, in one
    /// transaction for the whole fleet.
    #[arg(long, env = "MINISPOD_METRICS_FLUSH_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub metrics_flush_interval: Duration,

    /// Lifetime of worker client certificates; agents renew at two thirds.
    #[arg(long, env = "MINISPOD_WORKER_CERT_TTL", default_value = "7d", value_parser = parse_duration)]
    pub worker_cert_ttl: Duration,

    /// File holding a static enrollment token (opt-in, for unattended
    /// installs). Imported into the token table on the first start that
    /// sees it, with `--enrollment-token-ttl` and
    /// `--enrollment-token-max-uses`; then listed, used up, expired and
    /// revoked like tokens made with CreateEnrollmentToken.
    #[arg(long, env = "MINISPOD_ENROLLMENT_TOKEN_FILE")]
    pub enrollment_token_file: Option<PathBuf>,

    /// Lifetime of the static token, from its first import.
    #[arg(long, env = "MINISPOD_ENROLLMENT_TOKEN_TTL", default_value = "24h", value_parser = parse_duration)]
    pub enrollment_token_ttl: Duration,

    /// Enrollments the static token admits; 0 for unlimited.
    #[arg(long, env = "MINISPOD_ENROLLMENT_TOKEN_MAX_USES", default_value_t = 1)]
    pub enrollment_token_max_uses: u32,

    /// Connect calls one worker may burst (each marks it online: a write).
    #[arg(long, env = "MINISPOD_WORKER_CONNECT_BURST", default_value_t = 10)]
    pub worker_connect_burst: u32,

    /// Sustained spacing of one worker's Connect calls after the burst.
    #[arg(long, env = "MINISPOD_WORKER_CONNECT_EVERY", default_value = "10s", value_parser = parse_duration)]
    pub worker_connect_every: Duration,

    /// RenewCertificate calls one worker may burst.
    #[arg(long, env = "MINISPOD_WORKER_RENEW_BURST", default_value_t = 5)]
    pub worker_renew_burst: u32,

    /// Sustained spacing of one worker's RenewCertificate calls.
    #[arg(long, env = "MINISPOD_WORKER_RENEW_EVERY", default_value = "10m", value_parser = parse_duration)]
    pub worker_renew_every: Duration,

    /// Readiness changes of one worker written at once; more wait for a
    /// later heartbeat.
    #[arg(long, env = "MINISPOD_WORKER_READY_CHANGE_BURST", default_value_t = 10)]
    pub worker_ready_change_burst: u32,

    /// Sustained spacing of one worker's readiness writes.
    #[arg(long, env = "MINISPOD_WORKER_READY_CHANGE_EVERY", default_value = "10s", value_parser = parse_duration)]
    pub worker_ready_change_every: Duration,

    /// K3s server URL handed to enrolled agents for their join hook.
    #[arg(long, env = "MINISPOD_K3S_SERVER_URL", default_value = "")]
    pub k3s_server_url: String,

    /// File holding the K3s join token handed to enrolled agents. With a
    /// linked cluster each enrollment gets a bootstrap token of its own
    /// instead, and this one is the fallback when the cluster cannot make one.
    #[arg(long, env = "MINISPOD_K3S_TOKEN_FILE")]
    pub k3s_token_file: Option<PathBuf>,

    /// How long the per-enrollment K3s bootstrap tokens of a linked cluster
    /// stay valid (the agent joins K3s right after enrolling).
    #[arg(long, env = "MINISPOD_K3S_TOKEN_TTL", default_value = "1h", value_parser = parse_duration)]
    pub k3s_token_ttl: Duration,

    /// Kubeconfig of the K3s (or any Kubernetes) cluster the workers join,
    /// e.g. /etc/rancher/k3s/k3s.yaml on the K3s server. With it the control
    /// plane watches Nodes and Pods (the worker records show their
    /// conditions, capacity and allocated resources) and applies cordons,
    /// labels, taints, drains and its offline taint to the nodes. Without
    /// it (and without --kube-in-cluster) no cluster is linked.
    #[arg(long, env = "MINISPOD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Link to the cluster the control plane runs in, with its pod's
    /// service account (deploy/kubernetes/control-plane-rbac.yaml).
    #[arg(long, env = "MINISPOD_KUBE_IN_CLUSTER", conflicts_with = "kubeconfig")]
    pub kube_in_cluster: bool,

    /// The user the cluster authenticates the control plane as (what
    /// `kubectl auth whoami` says with its kubeconfig). The control plane
    /// binds the ClusterRole minispod-tenant to this user in each customer
    /// namespace it makes; the default is the ServiceAccount of
    /// deploy/kubernetes/control-plane-rbac.yaml. A
    /// `system:serviceaccount:<namespace>:<name>` name is bound as that
    /// ServiceAccount.
    #[arg(
        long,
        env = "MINISPOD_KUBE_USER",
        default_value = "system:serviceaccount:minispod-system:minispod-control-plane"
    )]
    pub kube_user: String,

    /// How long a worker's stream may be gone before its node is tainted
    /// minispod.dev/offline:NoExecute, so that Kubernetes moves its pods
    /// (Kubernetes alone waits about 40 s to call a node NotReady and 300 s
    /// more to evict). Short blips stay below it and move nothing.
    #[arg(long, env = "MINISPOD_OFFLINE_TAINT_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub offline_taint_grace: Duration,

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

    /// The cluster's pod network (CIDRs, comma-separated): customer pods
    /// may not connect into it, except to their own namespace's pods and
    /// the cluster DNS. K3s' default --cluster-cidr.
    #[arg(
        long,
        env = "MINISPOD_CLUSTER_POD_CIDRS",
        value_delimiter = ',',
        default_value = "10.42.0.0/16",
        value_parser = parse_cidr
    )]
    pub cluster_pod_cidrs: Vec<String>,

    /// The cluster's service network (CIDRs, comma-separated), refused to
    /// customer pods as the pod network. K3s' default --service-cidr.
    #[arg(
        long,
        env = "MINISPOD_CLUSTER_SERVICE_CIDRS",
        value_delimiter = ',',
        default_value = "10.43.0.0/16",
        value_parser = parse_cidr
    )]
    pub cluster_service_cidrs: Vec<String>,

    /// Where the nodes (API server, kubelets, the control plane) and
    /// other internal hosts live (CIDRs, comma-separated), refused to
    /// customer pods. The default is every private range (RFC 1918, the
    /// shared 100.64.0.0/10 of CGNAT and Tailscale, and IPv6 unique-local
    /// fc00::/7, where AWS's fd00:ec2::254 metadata lives) because nodes'
    /// addresses differ per installation and a private range is rarely
    /// something a customer's app needs; add public node addresses when
    /// nodes have them. 169.254.0.0/16 and fe80::/10 are always refused.
    #[arg(
        long,
        env = "MINISPOD_CLUSTER_NODE_CIDRS",
        value_delimiter = ',',
        default_value = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7",
        value_parser = parse_cidr
    )]
    pub cluster_node_cidrs: Vec<String>,

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

    /// Width of the history's fine points (charts of up to a day): one
    /// row per worker per step, written in batches.
    #[arg(long, env = "MINISPOD_HISTORY_FINE_STEP", default_value = "1m", value_parser = parse_duration)]
    pub history_fine_step: Duration,

    /// How long fine history points are kept.
    #[arg(long, env = "MINISPOD_HISTORY_FINE_RETENTION", default_value = "25h", value_parser = parse_duration)]
    pub history_fine_retention: Duration,

    /// Width of the history's coarse points (charts of up to a month); a
    /// multiple of --history-fine-step.
    #[arg(long, env = "MINISPOD_HISTORY_COARSE_STEP", default_value = "1h", value_parser = parse_duration)]
    pub history_coarse_step: Duration,

    /// How long coarse history points and subscriptions' status and
    /// restart history are kept; the longest range a chart may ask for.
    #[arg(long, env = "MINISPOD_HISTORY_COARSE_RETENTION", default_value = "31d", value_parser = parse_duration)]
    pub history_coarse_retention: Duration,

    /// What one customer's subscriptions may take unless an administrator
    /// set their own limits (UserService.SetUserLimits).
    #[command(flatten)]
    pub tenant: crate::subscriptions::limits::TenantDefaults,

    /// How often every subscription is checked against the cluster even
    /// without a change.
    #[arg(long, env = "MINISPOD_SUBSCRIPTION_RESYNC", default_value = "10s", value_parser = parse_duration)]
    pub subscription_resync: Duration,

    /// The first retry of a control loop's failed pass (a subscription's
    /// objects, a worker's node) comes after this long; each further
    /// failure doubles the ceiling up to --kube-retry-max, each retry
    /// drawn at random between this and the ceiling; a success resets it.
    #[arg(long, env = "MINISPOD_KUBE_RETRY_BASE", default_value = "1s", value_parser = parse_duration)]
    pub kube_retry_base: Duration,

    /// The longest wait between retries of a failed pass (see
    /// --kube-retry-base): against an API server that refuses everything,
    /// each subscription costs about one request per half of this.
    #[arg(long, env = "MINISPOD_KUBE_RETRY_MAX", default_value = "2m", value_parser = parse_duration)]
    pub kube_retry_max: Duration,

    /// How long the cluster may refuse a subscription's objects (forbidden,
    /// unauthorized, invalid) before a subscription that is not running
    /// turns FAILED; it keeps being retried and resumes by itself.
    #[arg(long, env = "MINISPOD_SUBSCRIPTION_REFUSAL_GRACE", default_value = "3m", value_parser = parse_duration)]
    pub subscription_refusal_grace: Duration,

    /// No offline taint this soon after the control plane starts (or
    /// restarts): its agents need a moment to reconnect, and a restart must
    /// not move every pod in the cluster.
    #[arg(long, env = "MINISPOD_OFFLINE_TAINT_AFTER_START", default_value = "30s", value_parser = parse_duration)]
    pub offline_taint_after_start: Duration,

    /// SMTP server for mail: `smtp://[user:password@]host[:port]` (STARTTLS
    /// required, port 587), `smtps://...` (TLS, port 465), or
    /// `smtp://host?tls=none` for a relay on this machine. Without it, no
    /// mail is sent and the features that need mail say so.
    #[arg(long, env = "MINISPOD_SMTP_URL")]
    pub smtp_url: Option<minispod_support::secret::Secret>,

    /// CA certificate (PEM) trusted for the SMTP server besides the
    /// system's roots.
    #[arg(long, env = "MINISPOD_SMTP_CA_FILE")]
    pub smtp_ca_file: Option<PathBuf>,

    /// Sender of mail, e.g. `MiniSpod <minispod@example.org>`.
    #[arg(long, env = "MINISPOD_MAIL_FROM", default_value = "")]
    pub mail_from: String,

    /// Where users open the console, for links in mail (e.g.
    /// `https://minispod.example.org`); default: this server's address.
    #[arg(long, env = "MINISPOD_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Refuse sign-in until the account's email address is verified
    /// (needs --smtp-url). Accounts from before mail count as verified.
    #[arg(long, env = "MINISPOD_REQUIRE_EMAIL_VERIFICATION")]
    pub require_email_verification: bool,

    /// Lifetime of a password-reset link.
    #[arg(long, env = "MINISPOD_PASSWORD_RESET_TTL", default_value = "30m", value_parser = parse_duration)]
    pub password_reset_ttl: Duration,

    /// Lifetime of an email-verification link.
    #[arg(long, env = "MINISPOD_EMAIL_VERIFICATION_TTL", default_value = "24h", value_parser = parse_duration)]
    pub email_verification_ttl: Duration,

    /// CA certificate (PEM) trusted for webhook receivers besides the
    /// system's roots.
    #[arg(long, env = "MINISPOD_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,

    /// Delay before a failed mail or webhook is tried again; doubled after
    /// each failure up to --outbox-retry-max.
    #[arg(long, env = "MINISPOD_OUTBOX_RETRY_INITIAL", default_value = "5s", value_parser = parse_duration)]
    pub outbox_retry_initial: Duration,

    /// Longest delay between two tries of a message.
    #[arg(long, env = "MINISPOD_OUTBOX_RETRY_MAX", default_value = "30m", value_parser = parse_duration)]
    pub outbox_retry_max: Duration,

    /// Tries before a message is given up (FAILED, listed for
    /// administrators, who can retry it).
    #[arg(long, env = "MINISPOD_OUTBOX_MAX_ATTEMPTS", default_value_t = 12, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub outbox_max_attempts: i32,

    /// How long a worker's stream must stay down before administrators are
    /// told it is offline: shorter outages send nothing.
    #[arg(long, env = "MINISPOD_NOTIFY_OFFLINE_GRACE", default_value = "60s", value_parser = parse_duration)]
    pub notify_offline_grace: Duration,

    /// How long a worker must stay NOT_READY before administrators are told.
    #[arg(long, env = "MINISPOD_NOTIFY_NOT_READY_GRACE", default_value = "5m", value_parser = parse_duration)]
    pub notify_not_ready_grace: Duration,

    /// A worker that went offline again within this window of its last
    /// notice is reported in one summary at the window's end ("went offline
    /// 7 times in 10 minutes"), not once per outage.
    #[arg(long, env = "MINISPOD_NOTIFY_FLAP_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub notify_flap_window: Duration,

    /// When a customer cannot subscribe because no cluster is linked or the
    /// workers have no room, administrators are told (SUBSCRIBE_BLOCKED) at
    /// most once per cause in this window, per replica.
    #[arg(long, env = "MINISPOD_NOTIFY_BLOCKED_EVERY", default_value = "15m", value_parser = parse_duration)]
    pub notify_blocked_every: Duration,

    /// Enroll calls one client address may burst.
    #[arg(long, env = "MINISPOD_ENROLL_BURST", default_value_t = 100)]
    pub enroll_burst: u32,

    /// Sustained Enroll calls per second from one client address.
    #[arg(long, env = "MINISPOD_ENROLL_PER_SECOND", default_value_t = 50)]
    pub enroll_per_second: u32,

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

    /// How often an open watch or log stream checks that its caller may
    /// still read: it ends after Logout, a password change or deactivation.
    #[arg(long, env = "MINISPOD_STREAM_CALLER_RECHECK", default_value = "30s", value_parser = parse_duration)]
    pub stream_caller_recheck: Duration,

    /// Address ranges webhooks may reach although they are internal
    /// (loopback, private, link-local...), plain http:// included; e.g.
    /// `127.0.0.0/8` for a receiver on this machine. Repeat or separate by
    /// commas. None by default: webhooks go to the public internet over
    /// https:// only.
    #[arg(
        long = "webhook-allow-range",
        env = "MINISPOD_WEBHOOK_ALLOW_RANGES",
        value_delimiter = ','
    )]
    pub webhook_allow_ranges: Vec<crate::rate_limit::Cidr>,

    /// Address ranges webhooks never reach besides the built-in internal
    /// ones and the cluster's ranges (`--cluster-pod-cidrs`,
    /// `--cluster-service-cidrs`, `--cluster-node-cidrs`, always refused).
    /// None by default.
    #[arg(
        long = "webhook-deny-range",
        env = "MINISPOD_WEBHOOK_DENY_RANGES",
        value_delimiter = ','
    )]
    pub webhook_deny_ranges: Vec<crate::rate_limit::Cidr>,

    /// Password checks allowed to wait for a hashing slot before new ones are
    /// refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "MINISPOD_MAX_QUEUED_HASHES", default_value_t = 64)]
    pub max_queued_hashes: usize,
}

impl Cli {
    /// Parses the process's arguments, folding in `--config`.
    pub fn from_env() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let args = std::env::args_os().collect();
        let args = minispod_support::apply_config_file(&Cli::command(), "serve", args)
            .unwrap_or_else(|e| {
                clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{e}\n")).exit()
            });
        let matches = Cli::command().get_matches_from(args);
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

impl ServeArgs {
    /// Settings for a server in `data_dir` with every other value at its
    /// default, as `serve --data-dir <data_dir>` would have.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let dir = data_dir.into();
        let cli = Cli::parse_from([
            "minispod-control-plane",
            "serve",
            "--data-dir",
            dir.to_str().unwrap_or("minispod-data"),
        ]);
        match cli.command {
            Command::Serve(args) => *args,
            Command::CaHash { .. } | Command::CreateEnrollmentToken(_) => {
                unreachable!("parsed serve")
            }
        }
    }
}

pub use minispod_support::parse_duration;

/// A network range as NetworkPolicy takes it (`10.42.0.0/16`, `fd00::/8`).
fn parse_cidr(s: &str) -> Result<String, String> {
    crate::subscriptions::render::parse_cidr(s).map(|(ip, len)| format!("{ip}/{len}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(2_592_000)
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let cli = Cli::parse_from([
            "minispod-control-plane",
            "serve",
            "--admin-password",
            "hunter2-but-longer",
            "--smtp-url",
            "smtp://mailer:smtp-hunter3@mail.example.org",
        ]);
        let Command::Serve(args) = cli.command else {
            panic!("parsed serve")
        };
        let shown = format!("{args:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("smtp-hunter3"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }

    #[test]
    fn defaults_run_out_of_the_box() {
        let args = ServeArgs::with_data_dir("/tmp/x");
        assert_eq!(args.listen.port(), 7443);
        assert!(!args.plaintext);
        assert_eq!(args.access_token_ttl, Duration::from_secs(900));
    }
}
