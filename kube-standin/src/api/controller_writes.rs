//! Writes made by the stand-in's controllers rather than by a client:
//! status, merge patches and pod bindings under a manager's name.

use serde_json::{Value, json};

use super::{Api, Ownership, Scope, scope_of, text};
use crate::error::ApiError;
use crate::kinds::{self, Kind};
use crate::meta;

impl Api {
    /// A controller's write of an object's status (the disruption
    /// controller's PDB status), recorded under its manager name.
    pub fn write_status_as_controller(
        &mut self,
        kind: &'static Kind,
        old: &Value,
        status: Value,
        manager: &str,
    ) {
        let mut candidate = old.clone();
        candidate["status"] = status;
        let result = self.commit(
            kind,
            Some(old),
            candidate,
            Scope::Status,
            Ownership::Controller(manager),
        );
        if let Err(error) = result {
            tracing::warn!(?error, "controller status write failed");
        }
    }

    /// A controller's write of a whole object (spec and metadata, the
    /// status left alone when the kind has a `/status` subresource),
    /// recorded under its manager name; as a merge patch would.
    pub fn write_as_controller(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        patch: &Value,
        manager: &str,
    ) -> Result<Value, ApiError> {
        self.merge_patch(kind, namespace, name, patch, manager, scope_of(kind, false))
    }

    /// What POST `pods/{name}/binding` does: set `spec.nodeName` and the
    /// PodScheduled=True condition in one write; 409 when already bound.
    pub fn bind(
        &mut self,
        namespace: &str,
        name: &str,
        node: &str,
        manager: &str,
    ) -> Result<Value, ApiError> {
        let kind = kinds::pods();
        let live = self.live(kind, namespace, name)?.clone();
        if text(&live, "/spec/nodeName").is_some_and(|n| !n.is_empty()) {
            return Err(ApiError::conflict(
                kind,
                name,
                &format!(
                    "pod {name} is already assigned to node {:?}",
                    text(&live, "/spec/nodeName").unwrap_or_default()
                ),
            ));
        }
        let mut bound = live.clone();
        bound["spec"]["nodeName"] = json!(node);
        let mut conditions: Vec<Value> = live
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        conditions.retain(|c| c["type"] != "PodScheduled");
        conditions.push(json!({"type": "PodScheduled", "status": "True",
            "lastProbeTime": null, "lastTransitionTime": meta::now()}));
        bound["status"]["conditions"] = json!(conditions);
        self.commit(
            kind,
            Some(&live),
            bound,
            Scope::Main {
                status_separate: false,
            },
            Ownership::Binding(manager),
        )
    }
}
