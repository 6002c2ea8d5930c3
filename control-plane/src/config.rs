//! Command line and environment configuration of the control plane.
//!
//! Every flag has an environment fallback; the defaults run out of the box.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

mod backups;
mod cluster;
mod domains;
mod fleet;
mod history;
mod login;
mod mail;
mod notify;
mod store;
mod subscriptions;

pub use self::{
    backups::BackupArgs,
    cluster::ClusterArgs,
    domains::{DomainArgs, ResolveRule},
    fleet::FleetArgs,
    history::HistoryArgs,
    login::LoginArgs,
    mail::MailArgs,
    notify::NotifyArgs,
    store::StoreArgs,
    subscriptions::{SubscriptionArgs, TenantDefaults},
};

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

    /// Log format.
    #[arg(long, env = "MINISPOD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Address for Prometheus metrics (`GET /metrics`), e.g. 127.0.0.1:9464.
    /// Default: not served.
    #[arg(long, env = "MINISPOD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// HTTP/2 keepalive ping interval on every connection; with
    /// `--keepalive-timeout` it bounds how long a silent partition goes
    /// unnoticed.
    #[arg(long, env = "MINISPOD_KEEPALIVE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub keepalive_interval: Duration,

    /// How long a keepalive ping may go unanswered before the connection
    /// (and every stream on it) is closed.
    #[arg(long, env = "MINISPOD_KEEPALIVE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,

    // The groups come last: each one's heading holds for the flags after it.
    /// Connection, stream, buffer and proxy limits.
    #[command(flatten, next_help_heading = "Connections")]
    pub transport: crate::transport::TransportLimits,

    /// The database.
    #[command(flatten, next_help_heading = "Database")]
    pub store: StoreArgs,

    /// Accounts, sign-in and the bootstrap administrator.
    #[command(flatten, next_help_heading = "Accounts and sign-in")]
    pub login: LoginArgs,

    /// Workers: heartbeats, enrollment, per-worker limits.
    #[command(flatten, next_help_heading = "Workers and enrollment")]
    pub fleet: FleetArgs,

    /// The linked cluster.
    #[command(flatten, next_help_heading = "Cluster")]
    pub cluster: ClusterArgs,

    /// Subscriptions and their per-user limits.
    #[command(flatten, next_help_heading = "Subscriptions")]
    pub subscriptions: SubscriptionArgs,

    /// History retention.
    #[command(flatten, next_help_heading = "History")]
    pub history: HistoryArgs,

    /// Mail and webhooks.
    #[command(flatten, next_help_heading = "Mail and webhooks")]
    pub mail: MailArgs,

    /// Notifications to administrators.
    #[command(flatten, next_help_heading = "Notifications")]
    pub notify: NotifyArgs,

    /// Customers' own domains.
    #[command(flatten, next_help_heading = "Custom domains")]
    pub domains: DomainArgs,

    /// Backups of subscriptions' volumes.
    #[command(flatten, next_help_heading = "Backups")]
    pub backups: BackupArgs,
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
pub(crate) fn parse_cidr(s: &str) -> Result<String, String> {
    minispod_support::cidr::parse_cidr(s).map(|(ip, len)| format!("{ip}/{len}"))
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

    /// The flags moved into per-domain groups keep their names, environment
    /// variables and defaults (scripts, systemd units and the README use
    /// them), and `--help` shows each under its group's heading.
    #[test]
    fn grouped_flags_keep_their_names_env_vars_and_defaults() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        cli.build();
        let serve = cli.find_subcommand("serve").expect("serve");
        let check = |long: &str, env: &str, default: &[&str], heading: Option<&str>| {
            let arg = serve
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .unwrap_or_else(|| panic!("--{long} is gone"));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(env),
                "--{long}"
            );
            let defaults: Vec<_> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_str().unwrap_or_default())
                .collect();
            assert_eq!(defaults, default, "--{long}");
            assert_eq!(arg.get_help_heading(), heading, "--{long}");
        };
        check("listen", "MINISPOD_LISTEN", &["0.0.0.0:7443"], None);
        check("cors-origin", "MINISPOD_CORS_ORIGINS", &[], None);
        check(
            "max-connections",
            "MINISPOD_MAX_CONNECTIONS",
            &["20000"],
            Some("Connections"),
        );
        check("database-url", "DATABASE_URL", &[], Some("Database"));
        check(
            "login-ip-burst",
            "MINISPOD_LOGIN_IP_BURST",
            &["20"],
            Some("Accounts and sign-in"),
        );
        check(
            "heartbeat-interval",
            "MINISPOD_HEARTBEAT_INTERVAL",
            &["5s"],
            Some("Workers and enrollment"),
        );
        check(
            "cluster-pod-cidrs",
            "MINISPOD_CLUSTER_POD_CIDRS",
            &["10.42.0.0/16"],
            Some("Cluster"),
        );
        check(
            "tenant-max-subscriptions",
            "MINISPOD_TENANT_MAX_SUBSCRIPTIONS",
            &["5"],
            Some("Subscriptions"),
        );
        check(
            "history-fine-step",
            "MINISPOD_HISTORY_FINE_STEP",
            &["1m"],
            Some("History"),
        );
        check(
            "webhook-allow-range",
            "MINISPOD_WEBHOOK_ALLOW_RANGES",
            &[],
            Some("Mail and webhooks"),
        );
        check(
            "backup-stop-timeout",
            "MINISPOD_BACKUP_STOP_TIMEOUT",
            &["5m"],
            Some("Backups"),
        );
        check(
            "notify-offline-grace",
            "MINISPOD_NOTIFY_OFFLINE_GRACE",
            &["60s"],
            Some("Notifications"),
        );
        // 105 flags and --help, as before the groups, #25's thirteen:
        // --upgrade-deadline; --custom-domain-issuer,
        // --domains-per-subscription, --domain-check-{every,max,give-up,
        // resolve}; --notify-subscription-grace, --notify-crash-{restarts,
        // window}; --auto-update-every, --versions-behind-digest,
        // --versions-behind-digest-every; #26's five:
        // --backup-limit-{upload,download}, --backup-{stop,silence}-timeout,
        // --backup-restic.
        assert_eq!(serve.get_arguments().count(), 124);
        // An argument id used across groups still resolves.
        assert!(
            Cli::try_parse_from([
                "minispod-control-plane",
                "serve",
                "--kubeconfig",
                "/k",
                "--kube-in-cluster"
            ])
            .is_err(),
            "--kube-in-cluster conflicts with --kubeconfig"
        );
    }

    #[test]
    fn defaults_run_out_of_the_box() {
        let args = ServeArgs::with_data_dir("/tmp/x");
        assert_eq!(args.listen.port(), 7443);
        assert!(!args.plaintext);
        assert_eq!(args.login.access_token_ttl, Duration::from_secs(900));
    }
}
