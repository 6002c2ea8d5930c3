//! The MiniSpod node agent as a library: the `minispod-agent` binary and the
//! tests (and later the swarm benchmark) share every piece.
//!
//! - `config`: the command line.
//! - `state`: key, certificate, CA, worker id, spent tokens and the K3s
//!   hook's result on disk (mode 0600, replaced atomically).
//! - `secret`: a string that `Debug` hides (tokens, keys), from minispod-support.
//! - `token`: where the enrollment token comes from; spent at most once.
//! - `refusal`: the control plane's refusals and what the operator must do.
//! - `facts`: what the machine is (sysinfo, /etc/machine-id) and how busy.
//! - `tls`: CA pinning and the mTLS connector.
//! - `enroll`: the Enroll call and certificate renewal (CA checked
//!   against the pin).
//! - `k3s`: the join hook, retried until it succeeds.
//! - `stream`: the Connect stream with heartbeats and reconnects, and
//!   getting back in after a refusal or an expired certificate.
//! - `backoff`: exponential backoff with full jitter.
//! - `backup`: the mover of volume backups (restic), issue #26.
//! - `swarm`: many simulated agents in one process, for benchmarks.

pub mod backoff;
pub mod backup;
pub mod config;
pub mod enroll;
pub mod facts;
pub mod k3s;
pub mod metrics;
pub mod refusal;
pub use minispod_support::secret;
pub mod state;
pub mod stream;
pub mod swarm;
pub mod tls;
pub mod token;
pub mod transfers;

/// The agent's version, reported to the control plane.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
