//! PodDisruptionBudgets and the eviction subresource: the budget's status
//! computed as the disruption controller does, and evictions refused with
//! 429 when no disruption is allowed.

use serde_json::{Value, json};

use crate::api::Api;
use crate::error::ApiError;
use crate::kinds;
use crate::selectors::LabelSelector;
use crate::store::name_of;

/// Whether a pod counts as healthy: Ready=True and not being deleted.
fn healthy(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// `intstr.GetScaledValueFromIntOrPercent(value, total, roundUp)`.
fn scaled(value: &Value, total: i64, round_up: bool) -> Result<i64, ApiError> {
    if let Some(n) = value.as_i64() {
        return Ok(n);
    }
    let text = value.as_str().unwrap_or_default();
    let percent: i64 = text
        .strip_suffix('%')
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| ApiError::bad_request(format!("invalid value for IntOrString: {text:?}")))?;
    let product = percent * total;
    Ok(if round_up {
        (product + 99) / 100
    } else {
        product / 100
    })
}

/// The status the disruption controller would write for a budget, given
/// the pods in its namespace.
fn budget_status(pdb: &Value, pods: &[&Value]) -> Result<Value, ApiError> {
    let selector = LabelSelector::from_object(pdb.pointer("/spec/selector"))?;
    let matching: Vec<&&Value> = pods.iter().filter(|p| selector.matches_object(p)).collect();
    // The controller counts expected pods from the pods' controllers'
    // scale; the stand-in counts the matching pods (see the crate docs).
    let expected = matching.len() as i64;
    let current_healthy = matching.iter().filter(|p| healthy(p)).count() as i64;
    let desired_healthy = if let Some(min) = pdb.pointer("/spec/minAvailable") {
        scaled(min, expected, true)?
    } else if let Some(max) = pdb.pointer("/spec/maxUnavailable") {
        (expected - scaled(max, expected, true)?).max(0)
    } else {
        0
    };
    let allowed = (current_healthy - desired_healthy).max(0);
    let (condition_status, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let previous_condition = pdb
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "DisruptionAllowed"));
    let transition = match previous_condition {
        Some(c) if c["status"] == condition_status => c["lastTransitionTime"].clone(),
        _ => json!(crate::meta::now()),
    };
    Ok(json!({
        "observedGeneration": pdb.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "disruptionsAllowed": allowed,
        "currentHealthy": current_healthy,
        "desiredHealthy": desired_healthy,
        "expectedPods": expected,
        "conditions": [{
            "type": "DisruptionAllowed",
            "status": condition_status,
            "reason": reason,
            "message": "",
            "observedGeneration": pdb.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
            "lastTransitionTime": transition,
        }],
    }))
}

/// Status fields the comparison ignores (a new time alone is no change).
fn comparable(status: Option<&Value>) -> Value {
    let mut status = status.cloned().unwrap_or(Value::Null);
    if let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        for c in conditions {
            c.as_object_mut().map(|m| m.remove("lastTransitionTime"));
        }
    }
    status
}

impl Api {
    /// Rewrite the status of every budget in a namespace that the pods'
    /// current state changes, as the disruption controller would.
    pub fn refresh_disruption_budgets(&mut self, namespace: &str) {
        let pdbs = self
            .store
            .list(kinds::pdbs(), Some(namespace))
            .into_iter()
            .cloned()
            .collect::<Vec<_>>();
        for pdb in pdbs {
            let pods = self.store.list(kinds::pods(), Some(namespace));
            let Ok(status) = budget_status(&pdb, &pods) else {
                continue;
            };
            if comparable(pdb.get("status")) != comparable(Some(&status)) {
                self.write_status_as_controller(
                    kinds::pdbs(),
                    &pdb,
                    status,
                    "kube-controller-manager",
                );
            }
        }
    }

    /// POST `pods/{name}/eviction`: delete the pod (gracefully, with the
    /// Eviction's `deleteOptions`: it stays Terminating until its kubelet
    /// is done) unless a budget forbids it; answers the Success status
    /// (201) or the refusal.
    pub fn evict(
        &mut self,
        namespace: &str,
        name: &str,
        options: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let pod = self.get(kinds::pods(), namespace, name)?;
        let phase = pod.pointer("/status/phase").and_then(Value::as_str);
        // The eviction REST handler deletes pods that cannot be disrupted
        // further without looking at budgets.
        let ignores_budgets = matches!(phase, Some("Succeeded" | "Failed" | "Pending"))
            || pod.pointer("/metadata/deletionTimestamp").is_some();
        if !ignores_budgets {
            let budgets = self
                .store
                .list(kinds::pdbs(), Some(namespace))
                .into_iter()
                .filter(|pdb| {
                    LabelSelector::from_object(pdb.pointer("/spec/selector"))
                        .is_ok_and(|s| s.matches_object(&pod))
                })
                .cloned()
                .collect::<Vec<_>>();
            if budgets.len() > 1 {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
            if let Some(pdb) = budgets.first() {
                let pods = self.store.list(kinds::pods(), Some(namespace));
                let status = budget_status(pdb, &pods)?;
                let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
                let current = status["currentHealthy"].as_i64().unwrap_or(0);
                let desired = status["desiredHealthy"].as_i64().unwrap_or(0);
                // An unhealthy pod may go while the budget is met
                // (unhealthyPodEvictionPolicy IfHealthyBudget, the default).
                let unhealthy_ok = !healthy(&pod) && current >= desired;
                if allowed == 0 && !unhealthy_ok {
                    let pdb_name = name_of(pdb).1;
                    return Err(ApiError::too_many_requests(
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        vec![json!({
                            "reason": "DisruptionBudget",
                            "message": format!(
                                "The disruption budget {pdb_name} needs {desired} healthy pods and has {current} currently"
                            ),
                        })],
                    ));
                }
            }
        }
        self.delete(kinds::pods(), namespace, name, options)?;
        Ok(crate::error::success_status(201))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up_as_the_disruption_controller_does() {
        assert_eq!(scaled(&json!("50%"), 3, true).unwrap(), 2);
        assert_eq!(scaled(&json!(2), 3, true).unwrap(), 2);
        assert!(scaled(&json!("x"), 3, true).is_err());
    }

    #[test]
    fn a_budget_counts_ready_matching_pods() {
        let pdb = json!({"metadata": {"name": "b", "generation": 1}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}});
        let ready = json!({"metadata": {"labels": {"app": "web"}}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let unready = json!({"metadata": {"labels": {"app": "web"}}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        let other = json!({"metadata": {"labels": {"app": "db"}}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let status = budget_status(&pdb, &[&ready, &unready, &other]).unwrap();
        assert_eq!(status["expectedPods"], 2);
        assert_eq!(status["currentHealthy"], 1);
        assert_eq!(status["desiredHealthy"], 1);
        assert_eq!(status["disruptionsAllowed"], 0);
    }
}
