//! What MiniSpod's tests and benchmarks share (a dev-dependency only):
//!
//! - [`TempDir`]: a directory removed when dropped, with a fresh database
//!   for a server in it (or on `MINISPOD_TEST_POSTGRES`).
//! - [`app`]: `spawn_app`, the real control plane in this process on a
//!   random port, reached over TLS, with typed clients and request helpers.
//! - [`process`]: the workspace's binaries as child processes.
//! - [`smtp`]: a real SMTP server (aiosmtpd, `smtp_sink.py`) that keeps
//!   what it accepts.
//! - [`raw_grpc`]: gRPC calls written by hand, for clients that misbehave
//!   on purpose.
//! - [`s3`]: a real S3-compatible server (moto's) for backups.

pub mod app;
pub mod process;
pub mod raw_grpc;
pub mod s3;
pub mod smtp;
mod tempdir;

pub use tempdir::TempDir;
