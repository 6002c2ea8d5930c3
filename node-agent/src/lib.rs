//! The MiniSpod node agent as a library: the `minispod-agent` binary and the
//! tests (and later the swarm benchmark) share every piece.
//!
//! - `config`: the command line.
//! - `state`: key, certificate, CA and worker id on disk (mode 0600).
//! - `facts`: what the machine is (sysinfo, /etc/machine-id) and how busy.
//! - `tls`: CA pinning and the mTLS connector.
//! - `enroll`: the one-time Enroll call and certificate renewal.
//! - `k3s`: the join hook.
//! - `stream`: the Connect stream with heartbeats and reconnects.
//! - `backoff`: exponential backoff with full jitter.
//! - `swarm`: many simulated agents in one process, for benchmarks.

pub mod backoff;
pub mod config;
pub mod enroll;
pub mod facts;
pub mod k3s;
pub mod metrics;
pub mod state;
pub mod stream;
pub mod swarm;
pub mod tls;

/// The agent's version, reported to the control plane.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
