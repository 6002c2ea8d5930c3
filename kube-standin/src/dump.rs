//! Dumps of mutating request bodies for schema validation: with
//! `MINISPOD_KUBE_REQUEST_DIR` set, each successful POST, PUT and PATCH
//! body is written there as a complete object that
//! `kubernetes-validate --strict` can check.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::kinds::Kind;

/// The environment variable naming the dump directory.
pub const REQUEST_DIR_ENV: &str = "MINISPOD_KUBE_REQUEST_DIR";

/// Numbers dumps across every stand-in of the process.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// The dump directory, if dumps are wanted.
pub fn request_dir() -> Option<PathBuf> {
    std::env::var_os(REQUEST_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// The body made a complete object: apiVersion, kind and metadata
/// name/namespace filled in from the request where it (a patch, an
/// eviction) lacks them.
pub fn complete(
    body: &Value,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> Value {
    let mut object = body.clone();
    if !object.is_object() {
        return object;
    }
    if object.get("apiVersion").is_none() {
        object["apiVersion"] = json!(api_version);
    }
    if object.get("kind").is_none() {
        object["kind"] = json!(kind);
    }
    if object.pointer("/metadata/name").is_none() {
        object["metadata"]["name"] = json!(name);
    }
    if let Some(namespace) = namespace
        && object.pointer("/metadata/namespace").is_none()
    {
        object["metadata"]["namespace"] = json!(namespace);
    }
    object
}

/// Write one dump as `<pid>-<seq>-<verb>-<kind>-<name>.json`.
pub fn write(dir: &Path, verb: &str, kind: &Kind, name: &str, object: &Value) {
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let kind_name = if verb == "evict" {
        "eviction".to_string()
    } else {
        kind.kind.to_lowercase()
    };
    let file = dir.join(format!(
        "{}-{seq:05}-{verb}-{kind_name}-{name}.json",
        std::process::id()
    ));
    let text = serde_json::to_vec_pretty(object).expect("JSON values serialize");
    if let Err(error) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&file, text)) {
        tracing::warn!(%error, file = %file.display(), "could not write the request dump");
    }
}
