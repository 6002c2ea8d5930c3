//! An in-process stand-in for kube-apiserver, and `TestCluster`, which cluster
//! tests use to run against it or against a real cluster unchanged.
//!
//! The stand-in aims to answer every request the control plane makes as
//! kube-apiserver would, so that a request failing here fails on a cluster
//! and the other way round. Faithful: URL layout, bearer-token auth (401),
//! `Status` errors with kube-apiserver's reasons, codes and messages, one
//! global resourceVersion, uid/creationTimestamp/generation/generateName,
//! label and field selectors, watches (replay from a bounded history, 410
//! Expired beyond it, selector transitions as ADDED/DELETED, bookmarks,
//! `sendInitialEvents`, `timeoutSeconds`), optimistic concurrency (409),
//! merge patch, server-side apply with per-manager field ownership,
//! conflicts and `force`, managedFields, `/status` subresources, the
//! eviction subresource with PodDisruptionBudgets whose status the stand-in
//! keeps as the disruption controller would.
//!
//! Deliberate differences:
//! - No kubelet: DELETE removes at once (no graceful termination); objects
//!   with finalizers get a deletionTimestamp and go when the last finalizer
//!   is removed. Deleting a namespace removes its objects at once.
//! - No controllers but the disruption budget's status: no garbage
//!   collection of dependents, no Deployment → ReplicaSet → Pod, no node
//!   lifecycle (fake nodes never go NotReady on their own).
//! - Server-side apply treats every list as atomic (kube merges
//!   list-type=map lists such as containers, env or ports by key).
//! - No OpenAPI validation: unknown or mistyped fields are stored as sent.
//!   Dumps (`MINISPOD_KUBE_REQUEST_DIR`) with `kubernetes-validate` cover
//!   that.
//! - LIST ignores `limit` and returns everything without a continue token
//!   (allowed by the API conventions); `resourceVersion` on GET/LIST is
//!   ignored (the latest state is served).
//! - Strategic merge patch, JSON patch, dryRun, deletecollection, YAML
//!   and protobuf bodies are refused (415/400/405).
//! - A PDB's expected pod count is the number of matching pods (the
//!   disruption controller uses the scale of the pods' controllers for
//!   percentages and maxUnavailable).

pub mod api;
pub mod cluster;
pub mod controllers;
pub mod dump;
pub mod error;
pub mod eviction;
pub mod fields;
pub mod fixtures;
pub mod http;
pub mod kinds;
pub mod logs;
pub mod merge_patch;
pub mod meta;
pub mod ownership;
pub mod proxy;
pub mod quantity;
pub mod record;
pub mod selectors;
pub mod standin;
pub mod store;
pub mod watch;

pub use cluster::{TestCluster, require_kubernetes_if_asked};
pub use http::Settings;
pub use proxy::CutProxy;
pub use record::{Recorded, Verb};
pub use standin::StandIn;
