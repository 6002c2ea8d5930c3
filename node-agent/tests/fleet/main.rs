//! The worker fleet end to end: a real control plane (in this process, on a
//! random port, fresh data dir, real TLS) and real `minispod-agent`
//! processes enrolling and holding their streams.
//!
//! By topic: `streams`, `enrollment`, `certificates`, `administration`,
//! `resilience`, `failover`, `identity`, `kubernetes`, `notifications`,
//! `subscriptions`, `backups`; the harness in `harness` and `minispod-testkit`.

mod administration;
mod backups;
mod certificates;
mod enrollment;
mod failover;
mod harness;
mod identity;
mod kubernetes;
mod notifications;
mod resilience;
mod streams;
mod subscriptions;

use harness::*;
// Named by the topic files as `super::…`.
use minispod_proto::v1::{WorkerStatus, worker_service_client::WorkerServiceClient};
use minispod_testkit::smtp;
