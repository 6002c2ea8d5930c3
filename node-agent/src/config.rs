//! Command line of `minispod-agent`; every flag has an environment fallback.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{secret::Secret, token::TokenSource};

/// `minispod-agent`: joins this machine to a MiniSpod fleet.
#[derive(Debug, Parser)]
#[command(name = "minispod-agent", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enroll if needed (or again, after a refusal or an expired
    /// certificate, with an unspent token), run the K3s join hook (retried
    /// until it succeeds; none with --kubernetes-node), then hold the
    /// stream to the control plane until SIGTERM, reconnecting after any
    /// failure.
    Run(AgentArgs),
    /// Enroll unless enrolled with a current certificate, run the K3s join
    /// hook unless it has succeeded (none with --kubernetes-node), print
    /// the worker id, then exit.
    Join(AgentArgs),
}

/// A Kubernetes Node name (a DNS subdomain), checked when parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeName(String);

impl NodeName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for NodeName {
    type Err = String;

    fn from_str(s: &str) -> Result<NodeName, String> {
        if minispod_support::kubernetes::is_node_name(s) {
            Ok(NodeName(s.to_owned()))
        } else {
            Err(format!(
                "`{s}` is not a Kubernetes node name (lower-case letters, digits, `-` and `.`, at most 253)"
            ))
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Settings of the agent.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// TOML file of settings, keyed by flag name (`server = ["https://..."]`,
    /// `state-dir = "/var/lib/minispod-agent"`); flags and environment
    /// variables override it.
    #[arg(long, env = "MINISPOD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Control plane URL, e.g. https://cp.example.org:7443. Repeat (or
    /// comma-separate) to fail over among several.
    #[arg(
        long = "server",
        env = "MINISPOD_SERVER",
        value_delimiter = ',',
        required = true
    )]
    pub servers: Vec<String>,

    /// Directory for the key, certificate, CA, worker id, hashes of spent
    /// tokens and the K3s join hook's last result (created 0700, files 0600).
    #[arg(
        long,
        env = "MINISPOD_STATE_DIR",
        default_value = "/var/lib/minispod-agent"
    )]
    pub state_dir: PathBuf,

    /// Enrollment token; needed only to enroll (again). Spent once: after
    /// enrolling with it the agent records its SHA-256 in the state
    /// directory and never sends it again. Prefer --token-file.
    #[arg(long, env = "MINISPOD_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,

    /// File holding the enrollment token, read whenever the agent needs to
    /// enroll (so a new token can be dropped in without a restart) and
    /// deleted once the token is spent (left in place on a read-only file
    /// system, such as a Kubernetes Secret volume). Tried before --token.
    #[arg(long, env = "MINISPOD_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Pin of the control plane's CA, `sha256:<hex>` (from
    /// `minispod-control-plane ca-hash`); needed only until enrolled. The
    /// CA that Enroll returns must match it, or the answer is refused.
    #[arg(long, env = "MINISPOD_CA_HASH")]
    pub ca_hash: Option<String>,

    /// The control plane's CA certificate, instead of --ca-hash.
    #[arg(long, env = "MINISPOD_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Machine id to report, overriding /etc/machine-id (one worker record
    /// per machine id; useful for several agents on one host).
    #[arg(long, env = "MINISPOD_MACHINE_ID")]
    pub machine_id: Option<String>,

    /// The worker's name to report instead of the host name. Names are
    /// unique among workers: a machine whose name another machine's worker
    /// has is refused until an administrator approves its takeover, so
    /// several agents on one host need a name each.
    #[arg(long, env = "MINISPOD_WORKER_NAME")]
    pub name: Option<String>,

    /// The Kubernetes node this agent runs on, when it runs inside the
    /// cluster already (the DaemonSet passes `spec.nodeName`). The agent
    /// then names this node in its hello, reports it as its host name (the
    /// worker's name; a pod's own host name changes with every pod) and
    /// runs no K3s join hook: no configuration is written, no
    /// --k3s-join-command runs, and readiness does not wait for a hook.
    #[arg(long, env = "MINISPOD_KUBERNETES_NODE")]
    pub kubernetes_node: Option<NodeName>,

    /// Where the K3s join hook writes the K3s agent configuration
    /// (`server`, `token` and the node label
    /// `minispod.dev/worker-id=<worker id>`).
    #[arg(
        long,
        env = "MINISPOD_K3S_CONFIG",
        default_value = "/etc/rancher/k3s/config.yaml"
    )]
    pub k3s_config: PathBuf,

    /// Command the join hook runs after writing the K3s configuration (via
    /// `sh -c`, with K3S_URL and K3S_TOKEN set), e.g.
    /// `systemctl enable --now k3s-agent`. Empty: none.
    #[arg(long, env = "MINISPOD_K3S_JOIN_COMMAND", default_value = "")]
    pub k3s_join_command: String,

    /// Longest wait between reconnection attempts, K3s join hook retries
    /// and, after a refusal (removed worker, expired certificate, bad
    /// token), between attempts to get back in.
    #[arg(long, env = "MINISPOD_MAX_BACKOFF", default_value = "30s", value_parser = parse_duration)]
    pub max_backoff: Duration,

    /// Address for the agent's Prometheus metrics (`GET /metrics`).
    /// Default: not served.
    #[arg(long, env = "MINISPOD_AGENT_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// Log format.
    #[arg(long, env = "MINISPOD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// The directory under which the node's volumes are (K3s's local-path
    /// storage). Backups read and restores replace only directories inside
    /// it; an order naming any other path is refused.
    #[arg(
        long,
        env = "MINISPOD_VOLUMES_DIR",
        default_value = "/var/lib/rancher/k3s/storage"
    )]
    pub volumes_dir: PathBuf,

    /// The restic program backups and restores run (Debian's `restic`
    /// package).
    #[arg(long, env = "MINISPOD_RESTIC", default_value = "restic")]
    pub restic: PathBuf,
}

impl AgentArgs {
    /// Where the enrollment token comes from.
    pub fn token_source(&self) -> TokenSource {
        TokenSource {
            file: self.token_file.clone(),
            inline: self.token.clone(),
        }
    }
}

impl Cli {
    /// Parses the process's arguments, folding in `--config`.
    pub fn from_env() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        for sub in ["run", "join"] {
            args = minispod_support::apply_config_file(&Cli::command(), sub, args).unwrap_or_else(
                |e| clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{e}\n")).exit(),
            );
        }
        let matches = Cli::command().get_matches_from(args);
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

pub use minispod_support::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let cli = Cli::try_parse_from([
            "minispod-agent",
            "run",
            "--server",
            "https://cp:7443",
            "--token",
            "abc.sekrit",
            "--token-file",
            "/run/token",
        ])
        .unwrap();
        let Command::Run(args) = &cli.command else {
            panic!("run")
        };
        assert_eq!(args.token_source().inline.unwrap().expose(), "abc.sekrit");
        let out = format!("{cli:?}");
        assert!(!out.contains("sekrit"), "{out}");
        assert!(out.contains("/run/token"), "{out}");
    }

    #[test]
    fn the_kubernetes_node_is_a_node_name() {
        let parse = |extra: &[&str]| {
            Cli::try_parse_from(
                ["minispod-agent", "join", "--server", "https://cp:7443"]
                    .iter()
                    .chain(extra),
            )
            .map(|cli| match cli.command {
                Command::Join(a) | Command::Run(a) => a.kubernetes_node,
            })
        };
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(
            parse(&["--kubernetes-node", "k3s-worker-1.example.org"])
                .unwrap()
                .unwrap()
                .as_str(),
            "k3s-worker-1.example.org"
        );
        for bad in ["Node_A", "", "a b"] {
            let err = parse(&["--kubernetes-node", bad]).unwrap_err().to_string();
            assert!(err.contains("not a Kubernetes node name"), "{bad:?}: {err}");
        }
    }
}
