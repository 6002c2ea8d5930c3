//! The stand-in's controllers: what kube-controller-manager, kube-scheduler
//! and the kubelets together do to workloads, as seen through the API.
//!
//! One task owns their state. It wakes when the store changes (and at the
//! next timer: a readiness delay, a toleration running out), takes the API
//! lock, and runs one pass of every controller in the order below, each
//! writing through the API as a client would (so watches see every step
//! with its resourceVersion). A pass that changes nothing writes nothing,
//! so the task goes back to sleep after the changes its own writes cause.
//!
//! Order of a pass, and why: garbage collection first (dependents of gone
//! owners must not be counted or scheduled); Deployments before
//! ReplicaSets before pods (a Deployment's change reaches its pods in one
//! pass); the taint manager before the scheduler (evicted pods' room is
//! free); the kubelet after the scheduler (a pod bound now starts now);
//! workload status last (it counts what the kubelet made ready).

mod deployments;
mod kubelet;
mod lifecycle;
mod scheduler;
mod statefulsets;
mod storage;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast::error::RecvError, watch};
use tokio::time::Instant;

use crate::api::Api;
use crate::http::Shared;
use crate::kinds::{self, Kind};
use crate::store::name_of;

/// The field manager of the controller-manager's writes.
pub const CONTROLLER_MANAGER: &str = "kube-controller-manager";
/// The field manager of the scheduler's bindings and conditions.
pub const SCHEDULER: &str = "kube-scheduler";
/// The field manager of the kubelets' pod status writes.
pub const KUBELET: &str = "kubelet";

/// How the stand-in's simulated nodes behave; tests change it while the
/// stand-in runs (fixtures `set_image_unpullable`, `set_image_crashing`,
/// `set_image_readiness_failing`, `set_pod_ready_delay`).
#[derive(Debug)]
pub struct Behaviour {
    state: Mutex<BehaviourState>,
    changed: Notify,
}

#[derive(Debug, Clone)]
struct BehaviourState {
    unpullable: BTreeSet<String>,
    crashing: BTreeSet<String>,
    /// Images whose containers run but fail their readiness probe.
    readiness_failing: BTreeSet<String>,
    ready_delay: Duration,
}

impl Behaviour {
    /// Nothing unpullable, pods ready `ready_delay` after their binding.
    pub fn new(ready_delay: Duration) -> Behaviour {
        Behaviour {
            state: Mutex::new(BehaviourState {
                unpullable: BTreeSet::new(),
                crashing: BTreeSet::new(),
                readiness_failing: BTreeSet::new(),
                ready_delay,
            }),
            changed: Notify::new(),
        }
    }

    fn snapshot(&self) -> BehaviourState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// From now on pulls of `image` (as a pod spec names it) fail as for
    /// an image the registry does not have (at most 1000 images).
    pub fn set_image_unpullable(&self, image: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.unpullable.len() < 1000 {
            state.unpullable.insert(image.to_string());
        }
        drop(state);
        self.changed.notify_one();
    }

    /// From now on containers of `image` (as a pod spec names it) exit as
    /// soon as they start: CrashLoopBackOff, their restartCount climbing
    /// (at most 1000 images).
    pub fn set_image_crashing(&self, image: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.crashing.len() < 1000 {
            state.crashing.insert(image.to_string());
        }
        drop(state);
        self.changed.notify_one();
    }

    /// From now on containers of `image` (as a pod spec names it) that have
    /// a readiness probe fail it: they run and are never Ready, as a
    /// kubelet reports a probe that keeps failing (at most 1000 images).
    pub fn set_image_readiness_failing(&self, image: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.readiness_failing.len() < 1000 {
            state.readiness_failing.insert(image.to_string());
        }
        drop(state);
        self.changed.notify_one();
    }

    /// Containers of pods bound from now on become ready this long after
    /// the binding.
    pub fn set_pod_ready_delay(&self, delay: Duration) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ready_delay = delay;
        self.changed.notify_one();
    }
}

/// How often a pass runs even when nothing changed (timers of whole
/// seconds: progress deadlines).
const RESYNC: Duration = Duration::from_millis(500);

/// Run the controllers until the stand-in stops.
pub async fn run(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let mut changes = shared
        .api
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .store
        .subscribe();
    let mut controllers = Controllers::default();
    loop {
        let next = {
            let behaviour = shared.behaviour.snapshot();
            let mut api = shared.api.lock().unwrap_or_else(|e| e.into_inner());
            let next = controllers.pass(&mut api, &shared, &behaviour, Instant::now());
            // Under the lock the channel holds only changes the pass has
            // seen (its own writes and what came before): skip them.
            while changes.try_recv().is_ok() {}
            next
        };
        let wake = next.map_or(Instant::now() + RESYNC, |n| n.min(Instant::now() + RESYNC));
        tokio::select! {
            _ = stopped.changed() => return,
            received = changes.recv() => match received {
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    // Let a burst of writes land before looking.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(RecvError::Closed) => return,
            },
            _ = shared.behaviour.changed.notified() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// The controllers' own memory, which a real cluster keeps in its
/// components (not in objects).
#[derive(Debug, Default)]
struct Controllers {
    /// Pods the stand-in's scheduler bound, which its kubelet runs (pods
    /// created already bound belong to whoever writes their status).
    scheduled: HashSet<String>,
    /// When the kubelet first saw each of its pods.
    started: HashMap<String, Instant>,
    /// When the taint manager deletes pods whose tolerations run out.
    evict_at: HashMap<String, Instant>,
    /// When the kubelet began stopping each of its Terminating pods.
    stopping: HashMap<String, Instant>,
    /// When the serviceaccount controller first saw each namespace (uid)
    /// without its `default` ServiceAccount.
    namespaces_seen: HashMap<String, Instant>,
}

impl Controllers {
    /// One pass of every controller; returns the next timer, if any.
    fn pass(
        &mut self,
        api: &mut Api,
        shared: &Shared,
        behaviour: &BehaviourState,
        now: Instant,
    ) -> Option<Instant> {
        let mut timers = Timers::default();
        lifecycle::finish_terminating_namespaces(api);
        lifecycle::ensure_default_service_accounts(
            api,
            &mut self.namespaces_seen,
            now,
            &mut timers,
        );
        lifecycle::taint_nodes_by_condition(api);
        collect_garbage(api);
        deployments::reconcile_deployments(api);
        deployments::reconcile_replica_sets(api);
        statefulsets::reconcile(api);
        kubelet::evict_for_taints(api, &mut self.evict_at, now, &mut timers);
        scheduler::schedule(api, &mut self.scheduled);
        kubelet::run_pods(
            api,
            &self.scheduled,
            &mut self.started,
            behaviour,
            &shared.logs,
            now,
            &mut timers,
        );
        kubelet::finalize_terminating(api, &self.scheduled, &mut self.stopping, now, &mut timers);
        kubelet::mark_pods_on_unready_nodes(api);
        deployments::replica_set_status(api);
        deployments::deployment_status(api);
        statefulsets::status(api);
        storage::bind_claims(api, shared.settings.storage_root.as_deref());
        storage::release_protected_claims(api);
        storage::reclaim_volumes(api, shared.settings.storage_root.as_deref());
        storage::quota_status(api);
        // Forget pods that are gone.
        let live: HashSet<String> = api
            .store
            .list(kinds::pods(), None)
            .into_iter()
            .map(|p| uid_of(p).to_string())
            .collect();
        self.scheduled.retain(|uid| live.contains(uid));
        self.started.retain(|uid, _| live.contains(uid));
        self.evict_at.retain(|uid, _| live.contains(uid));
        self.stopping.retain(|uid, _| live.contains(uid));
        shared.logs.retain_pods(&live);
        timers.next
    }
}

/// The earliest timer the controllers asked for.
#[derive(Debug, Default)]
struct Timers {
    next: Option<Instant>,
}

impl Timers {
    fn at(&mut self, when: Instant) {
        self.next = Some(self.next.map_or(when, |n| n.min(when)));
    }
}

/// A kind of the table, by group and plural.
fn kind(group: &str, plural: &str) -> &'static Kind {
    let version = "v1";
    kinds::lookup(group, version, plural).expect("the controllers' kinds are in the table")
}

fn deployments_kind() -> &'static Kind {
    kind("apps", "deployments")
}

fn replica_sets_kind() -> &'static Kind {
    kind("apps", "replicasets")
}

fn stateful_sets_kind() -> &'static Kind {
    kind("apps", "statefulsets")
}

fn nodes_kind() -> &'static Kind {
    kind("", "nodes")
}

/// A string at a JSON pointer, "" when absent.
fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn uid_of(object: &Value) -> &str {
    text(object, "/metadata/uid")
}

/// The uid of the object's controller (the owner reference marked
/// `controller: true`), if any.
fn controller_uid(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
}

/// The owner reference a controller puts on what it creates.
fn owner_reference(owner: &Value, kind: &Kind) -> Value {
    json!({
        "apiVersion": kind.api_version(), "kind": kind.kind,
        "name": text(owner, "/metadata/name"), "uid": uid_of(owner),
        "controller": true, "blockOwnerDeletion": true,
    })
}

fn terminating(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some()
}

/// Whether a condition of this type has status True.
fn condition_is_true(object: &Value, kind: &str) -> bool {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

/// Copy the times of unchanged conditions from the old ones, so that a
/// status rewritten with the same facts is the same status: the
/// transition time stays while the status does, the update time while the
/// reason and message do too.
fn keep_condition_times(new: &mut [Value], old: Option<&Value>) {
    let old = old.and_then(Value::as_array);
    for condition in new.iter_mut() {
        let Some(previous) = old
            .into_iter()
            .flatten()
            .find(|c| c["type"] == condition["type"])
        else {
            continue;
        };
        if previous["status"] == condition["status"] {
            if let Some(t) = previous.get("lastTransitionTime") {
                condition["lastTransitionTime"] = t.clone();
            }
            if previous["reason"] == condition["reason"]
                && previous["message"] == condition["message"]
                && let Some(t) = previous.get("lastUpdateTime")
            {
                condition["lastUpdateTime"] = t.clone();
            }
        }
    }
}

/// Write `status` as `manager` unless it is what the object has.
fn write_status(api: &mut Api, kind: &'static Kind, object: &Value, status: Value, manager: &str) {
    if object.get("status") != Some(&status) {
        api.write_status_as_controller(kind, object, status, manager);
    }
}

/// Delete an object as a controller; a failure is logged (the next pass
/// tries again).
fn delete(api: &mut Api, kind: &'static Kind, object: &Value) {
    let (namespace, name) = name_of(object);
    let (namespace, name) = (namespace.to_string(), name.to_string());
    if let Err(error) = api.delete(kind, &namespace, &name, None) {
        tracing::debug!(?error, name, "controller delete failed");
    }
}

/// The garbage collector (pkg/controller/garbagecollector): delete pods
/// and ReplicaSets all of whose owner references name owners that no
/// longer exist (matched by uid), of any kind the stand-in serves (an
/// owner of a kind it cannot resolve keeps its dependents, as the real
/// collector cannot look it up either). Dependents go as a client's
/// DELETE would: pods gracefully.
fn collect_garbage(api: &mut Api) {
    let mut doomed = Vec::new();
    for dependent_kind in [kinds::pods(), replica_sets_kind()] {
        for object in api.store.list(dependent_kind, None) {
            let references: Vec<&Value> = object
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .map(|r| r.iter().collect())
                .unwrap_or_default();
            if references.is_empty() || terminating(object) {
                continue;
            }
            let namespace = name_of(object).0;
            let all_gone = references.iter().all(|reference| {
                let (group, _) = text(reference, "/apiVersion")
                    .rsplit_once('/')
                    .unwrap_or(("", ""));
                let Some(owner_kind) = kinds::by_kind(group, text(reference, "/kind")) else {
                    return false;
                };
                let owner_namespace = if owner_kind.namespaced { namespace } else { "" };
                api.store
                    .get(owner_kind, owner_namespace, text(reference, "/name"))
                    .is_none_or(|owner| uid_of(owner) != text(reference, "/uid"))
            });
            if all_gone {
                doomed.push((dependent_kind, object.clone()));
            }
        }
    }
    for (kind, object) in doomed {
        delete(api, kind, &object);
    }
}

/// FNV-1a, 32 bits, as the workload controllers hash pod templates.
fn fnv32a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// JSON with object keys sorted, so equal templates hash alike whatever
/// order a client sent the keys in.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", json!(k), canonical(&map[k])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", inner.join(","))
        }
        other => other.to_string(),
    }
}

/// `controller.ComputeHash`: the template's hash (and the collision
/// count), printed in decimal and mapped onto apimachinery's safe
/// alphabet, as in `pod-template-hash` and `controller-revision-hash`.
fn template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut text = canonical(template);
    // A count of zero is written into status at once; it must not change
    // the hash the first pods were made with.
    if let Some(count) = collision_count.filter(|c| *c > 0) {
        text.push_str(&count.to_string());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    fnv32a(text.as_bytes())
        .to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// Whether a pod is Running with Ready=True and not being deleted.
fn running_and_ready(pod: &Value) -> bool {
    !terminating(pod) && text(pod, "/status/phase") == "Running" && condition_is_true(pod, "Ready")
}

/// Pods in a namespace controlled by the object with this uid, not being
/// deleted.
fn pods_of<'a>(api: &'a Api, namespace: &str, owner_uid: &str) -> Vec<&'a Value> {
    api.store
        .list(kinds::pods(), Some(namespace))
        .into_iter()
        .filter(|p| controller_uid(p) == Some(owner_uid) && !terminating(p))
        .collect()
}

/// A pod made from a workload's template: its labels, annotations and
/// spec, owned by the workload.
fn pod_from_template(template: &Value, owner: Value) -> Value {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}});
    for field in ["labels", "annotations"] {
        if let Some(value) = template.pointer(&format!("/metadata/{field}")) {
            pod["metadata"][field] = value.clone();
        }
    }
    pod["metadata"]["ownerReferences"] = json!([owner]);
    pod["spec"] = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    pod
}

/// The replica count a workload asks for (default 1; an int32 in the API).
fn desired_replicas(workload: &Value) -> i64 {
    workload
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .clamp(0, i64::from(i32::MAX))
}

/// Set integer status fields that Go omits when zero.
fn set_counts(status: &mut Value, counts: &[(&str, i64)]) {
    for (field, count) in counts {
        if *count != 0 {
            status[*field] = json!(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_hashes_ignore_key_order_and_look_like_kubernetes_ones() {
        let a = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": 1}});
        let b = json!({"spec": {"x": 1}, "metadata": {"labels": {"b": "2", "a": "1"}}});
        assert_eq!(template_hash(&a, None), template_hash(&b, None));
        assert_ne!(template_hash(&a, None), template_hash(&a, Some(1)));
        assert_eq!(template_hash(&a, None), template_hash(&a, Some(0)));
        let hash = template_hash(&a, None);
        assert!(!hash.is_empty() && hash.len() <= 10, "{hash}");
        assert!(
            hash.bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
        );
    }

    #[test]
    fn unchanged_conditions_keep_their_times() {
        let old = json!([{"type": "Ready", "status": "True", "reason": "A", "lastTransitionTime": "t0", "lastUpdateTime": "u0"}]);
        let mut new = vec![
            json!({"type": "Ready", "status": "True", "reason": "B", "lastTransitionTime": "t1", "lastUpdateTime": "u1"}),
        ];
        keep_condition_times(&mut new, Some(&old));
        assert_eq!(new[0]["lastTransitionTime"], "t0");
        assert_eq!(new[0]["lastUpdateTime"], "u1", "a new reason is an update");
        let mut flipped =
            vec![json!({"type": "Ready", "status": "False", "lastTransitionTime": "t1"})];
        keep_condition_times(&mut flipped, Some(&old));
        assert_eq!(flipped[0]["lastTransitionTime"], "t1");
    }
}
