//! The API's semantics over the store: get, list, create, update, merge
//! patch, server-side apply, delete, as kube-apiserver's generic registry
//! and the kinds' strategies do them.

use serde_json::{Value, json};

use crate::admission;
use crate::error::ApiError;
use crate::fields::Scope;
use crate::kinds::{self, Kind};
use crate::merge_patch;
use crate::meta;
use crate::ownership;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{Store, name_of};

mod controller_writes;

/// The state behind the stand-in's API: the store and nothing else, so that
/// one lock covers a whole request.
#[derive(Debug)]
pub struct Api {
    /// All objects and their history.
    pub store: Store,
}

/// Where a write goes: the main resource or `/status`.
pub fn scope_of(kind: &Kind, status: bool) -> Scope {
    if status {
        Scope::Status
    } else {
        Scope::Main {
            status_separate: kind.status_subresource,
        }
    }
}

/// Who owns what a write changes.
enum Ownership<'a> {
    /// A non-apply write by this manager (recorded as operation Update).
    Update(&'a str),
    /// Server-side apply already computed managedFields.
    Applied,
    /// A controller's write, recorded as an Update by this manager in
    /// the status scope.
    Controller(&'a str),
    /// The binding subresource's write of `spec.nodeName` and the
    /// PodScheduled condition, recorded as an Update by this manager.
    Binding(&'a str),
}

fn text<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

fn strip_for_generation(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
        map.remove("apiVersion");
        map.remove("kind");
    }
    copy
}

/// A pod's spec with the fields an update may change (images,
/// activeDeadlineSeconds, tolerations) blanked, to compare the rest.
fn pod_spec_immutables(spec: Option<&Value>) -> Value {
    let mut spec = spec.cloned().unwrap_or(Value::Null);
    if let Some(map) = spec.as_object_mut() {
        map.remove("activeDeadlineSeconds");
        map.remove("tolerations");
        map.remove("terminationGracePeriodSeconds");
        for list in ["containers", "initContainers"] {
            for container in map
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(c) = container.as_object_mut() {
                    c.remove("image");
                }
            }
        }
    }
    spec
}

fn check_body_identity(kind: &Kind, body: &Value, namespace: &str) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let expected = kind.api_version();
    if let Some(version) = text(body, "/apiVersion")
        && version != expected
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({version}) does not match the expected API version ({expected})"
        )));
    }
    if let Some(k) = text(body, "/kind")
        && k != kind.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            kind.kind
        )));
    }
    if let Some(ns) = text(body, "/metadata/namespace")
        && !ns.is_empty()
        && kind.namespaced
        && ns != namespace
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

fn check_name_matches(body: &Value, name: &str) -> Result<(), ApiError> {
    match text(body, "/metadata/name") {
        Some(body_name) if body_name != name => Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        ))),
        _ => Ok(()),
    }
}

/// 409 when the body's uid or resourceVersion (preconditions) disagree with
/// the live object.
fn check_preconditions(kind: &Kind, body: &Value, live: &Value) -> Result<(), ApiError> {
    let name = text(live, "/metadata/name").unwrap_or_default();
    if let Some(uid) = text(body, "/metadata/uid")
        && !uid.is_empty()
        && Some(uid) != text(live, "/metadata/uid")
    {
        return Err(ApiError::conflict(
            kind,
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                text(live, "/metadata/uid").unwrap_or_default()
            ),
        ));
    }
    if let Some(rv) = text(body, "/metadata/resourceVersion")
        && !rv.is_empty()
        && Some(rv) != text(live, "/metadata/resourceVersion")
    {
        return Err(ApiError::stale(kind, name));
    }
    Ok(())
}

impl Api {
    /// A store with the namespaces every cluster starts with.
    pub fn new(history_limit: usize) -> Api {
        let mut api = Api {
            store: Store::new(history_limit),
        };
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let namespace =
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            api.create(kinds::namespaces(), "", namespace, "kube-apiserver")
                .expect("the initial namespaces are valid");
            // A running cluster's serviceaccount controller made these long ago.
            let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                                 "metadata": {"name": "default"}});
            api.create(
                kinds::service_accounts(),
                name,
                account,
                crate::controllers::CONTROLLER_MANAGER,
            )
            .expect("the initial service accounts are valid");
        }
        crate::rbac::bootstrap(&mut api);
        api
    }

    /// Admission of a new object (named already), in kube-apiserver's
    /// plugin order: NamespaceLifecycle (no new content in a terminating
    /// namespace), ServiceAccount (a pod's service account must exist),
    /// TaintNodesByCondition (a new Node gets the not-ready taint), Pod
    /// Security for pods (see `admission`), StorageObjectInUseProtection
    /// (claims and volumes get their protection finalizers).
    fn admit(
        &self,
        kind: &'static Kind,
        namespace: &str,
        object: &mut Value,
    ) -> Result<(), ApiError> {
        if kind.namespaced
            && let Some(ns) = self.store.get(kinds::namespaces(), "", namespace)
            && ns.pointer("/metadata/deletionTimestamp").is_some()
        {
            return Err(admission::namespace_terminating(kind, object, namespace));
        }
        if kind.group.is_empty() && kind.plural == "pods" {
            admission::admit_service_account(object, namespace, |account| {
                self.store
                    .get(kinds::service_accounts(), namespace, account)
                    .is_some()
            })?;
            admission::admit_pod(self.store.get(kinds::namespaces(), "", namespace), object)?;
        }
        if kind.group.is_empty() && kind.plural == "nodes" {
            admission::taint_new_node(object);
        }
        if kind.group.is_empty() {
            admission::protect_storage(kind.plural, object);
        }
        Ok(())
    }

    fn live(&self, kind: &'static Kind, namespace: &str, name: &str) -> Result<&Value, ApiError> {
        self.store
            .get(kind, namespace, name)
            .ok_or_else(|| ApiError::not_found(kind, name))
    }

    /// GET of one object.
    pub fn get(&self, kind: &'static Kind, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.live(kind, namespace, name).cloned()
    }

    /// LIST: every selected object (no paging: the stand-in ignores `limit`,
    /// which the API conventions allow).
    pub fn list(
        &self,
        kind: &'static Kind,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Value {
        let items = self
            .store
            .list(kind, namespace)
            .into_iter()
            .filter(|o| labels.matches_object(o) && fields.matches(o))
            .cloned()
            .collect::<Vec<_>>();
        json!({
            "kind": format!("{}List", kind.kind),
            "apiVersion": kind.api_version(),
            "metadata": {"resourceVersion": self.store.resource_version().to_string()},
            "items": items,
        })
    }

    /// POST: create an object (name from `generateName` if needed).
    pub fn create(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        mut body: Value,
        manager: &str,
    ) -> Result<Value, ApiError> {
        check_body_identity(kind, &body, namespace)?;
        let mut name = text(&body, "/metadata/name")
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            match text(&body, "/metadata/generateName") {
                Some(prefix) if !prefix.is_empty() => name = meta::generate_name(prefix),
                _ => {
                    return Err(ApiError::invalid(
                        kind,
                        "",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    ));
                }
            }
            body["metadata"]["name"] = json!(name);
        }
        if kind.namespaced && namespace.is_empty() {
            return Err(ApiError::bad_request(
                "the server could not find the requested resource: a namespaced resource needs a namespace",
            ));
        }
        let invalid_name = if kind.plural == "namespaces" || kind.plural == "services" {
            meta::invalid_label(&name)
        } else if kind.group == crate::rbac::RBAC_GROUP {
            meta::invalid_path_segment(&name)
        } else {
            meta::invalid_subdomain(&name)
        };
        if let Some(why) = invalid_name {
            return Err(ApiError::invalid(kind, &name, "metadata.name", &why));
        }
        if kind.namespaced && self.store.get(kinds::namespaces(), "", namespace).is_none() {
            return Err(ApiError::not_found(kinds::namespaces(), namespace));
        }
        self.admit(kind, namespace, &mut body)?;
        if self.store.get(kind, namespace, &name).is_some() {
            return Err(ApiError::already_exists(kind, &name));
        }
        if kind.namespaced {
            body["metadata"]["namespace"] = json!(namespace);
        }
        let scope = scope_of(kind, false);
        self.commit(kind, None, body, scope, Ownership::Update(manager))
    }

    /// PUT: replace an object (or its status), 409 on a stale resourceVersion.
    pub fn update(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        body: Value,
        manager: &str,
        scope: Scope,
    ) -> Result<Value, ApiError> {
        check_body_identity(kind, &body, namespace)?;
        check_name_matches(&body, name)?;
        let live = self.live(kind, namespace, name)?.clone();
        check_preconditions(kind, &body, &live)?;
        self.commit(kind, Some(&live), body, scope, Ownership::Update(manager))
    }

    /// PATCH with a JSON merge patch; a resourceVersion in the patch is a
    /// precondition.
    pub fn merge_patch(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        patch: &Value,
        manager: &str,
        scope: Scope,
    ) -> Result<Value, ApiError> {
        let live = self.live(kind, namespace, name)?.clone();
        if !patch.is_object() {
            return Err(ApiError::bad_request("a merge patch must be a JSON object"));
        }
        check_preconditions(kind, patch, &live)?;
        let mut patched = live.clone();
        merge_patch::merge(&mut patched, patch);
        check_body_identity(kind, &patched, namespace)?;
        check_name_matches(&patched, name)?;
        self.commit(
            kind,
            Some(&live),
            patched,
            scope,
            Ownership::Update(manager),
        )
    }

    /// PATCH with server-side apply; returns the object and whether the
    /// apply created it.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        body: &Value,
        manager: &str,
        force: bool,
        scope: Scope,
    ) -> Result<(Value, bool), ApiError> {
        check_body_identity(kind, body, namespace)?;
        if text(body, "/apiVersion").is_none() || text(body, "/kind").is_none() {
            return Err(ApiError::bad_request(
                "invalid object type: apiVersion and kind must be set in an apply configuration",
            ));
        }
        check_name_matches(body, name)?;
        if body
            .pointer("/metadata/managedFields")
            .is_some_and(|m| !m.is_null())
        {
            return Err(ApiError::bad_request("metadata.managedFields must be nil"));
        }
        let live = self.store.get(kind, namespace, name).cloned();
        if let Some(live) = &live {
            check_preconditions(kind, body, live)?;
        }
        let mut applied = body.clone();
        applied["metadata"]["name"] = json!(name);
        if kind.namespaced {
            applied["metadata"]["namespace"] = json!(namespace);
        }
        let now = meta::now();
        let merged = ownership::apply(
            kind,
            name,
            live.as_ref(),
            &applied,
            manager,
            force,
            scope,
            &now,
        )?;
        match live {
            Some(live) => {
                let object = self.commit(kind, Some(&live), merged, scope, Ownership::Applied)?;
                Ok((object, false))
            }
            None if scope == Scope::Status => Err(ApiError::not_found(kind, name)),
            None => {
                // Creation through apply runs create's checks.
                let mut merged = merged;
                if kind.namespaced {
                    merged["metadata"]["namespace"] = json!(namespace);
                    if self.store.get(kinds::namespaces(), "", namespace).is_none() {
                        return Err(ApiError::not_found(kinds::namespaces(), namespace));
                    }
                }
                let invalid = if kind.group == crate::rbac::RBAC_GROUP {
                    meta::invalid_path_segment(name)
                } else {
                    meta::invalid_subdomain(name)
                };
                if let Some(why) = invalid {
                    return Err(ApiError::invalid(kind, name, "metadata.name", &why));
                }
                self.admit(kind, namespace, &mut merged)?;
                let object = self.commit(kind, None, merged, scope, Ownership::Applied)?;
                Ok((object, true))
            }
        }
    }

    /// DELETE with DeleteOptions' preconditions and grace period, as the
    /// generic registry does (staging/src/k8s.io/apiserver/pkg/registry/
    /// rest/delete.go `BeforeDelete`, generic/registry/store.go `Delete`):
    /// - a pod bound to a node and not finished is deleted gracefully
    ///   (pkg/registry/core/pod/strategy.go `CheckGracefulDelete`): its
    ///   `deletionTimestamp` is set `gracePeriodSeconds` ahead (the
    ///   option, else `spec.terminationGracePeriodSeconds`, else 30) with
    ///   `deletionGracePeriodSeconds`, and it stays (Terminating, a
    ///   MODIFIED event) until its kubelet deletes it with
    ///   `gracePeriodSeconds=0`; a second DELETE may only shorten the
    ///   period;
    /// - objects with finalizers get a deletionTimestamp and go when the
    ///   last finalizer is removed;
    /// - a namespace turns Terminating; the namespace controller (see
    ///   `controllers`) deletes its content and then the namespace;
    /// - anything else goes at once.
    pub fn delete(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        options: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let live = self.live(kind, namespace, name)?.clone();
        if let Some(preconditions) = options.and_then(|o| o.get("preconditions")) {
            let wanted = json!({"metadata": {
                "uid": preconditions.get("uid").cloned().unwrap_or(Value::Null),
                "resourceVersion": preconditions.get("resourceVersion").cloned().unwrap_or(Value::Null),
            }});
            check_preconditions(kind, &wanted, &live)?;
        }
        let requested_grace = options
            .and_then(|o| o.get("gracePeriodSeconds"))
            .and_then(Value::as_i64)
            .map(|g| g.max(0));
        let has_finalizers = live
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if kind.plural == "namespaces" {
            if live.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(live);
            }
            // What kube-apiserver answers and stores: the namespace,
            // Terminating, with its `kubernetes` finalizer in spec.
            let mut marked = live;
            marked["metadata"]["deletionTimestamp"] = json!(meta::now());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            marked["status"]["phase"] = json!("Terminating");
            let stored = self.store.put(kind, marked);
            self.after_change(kind, namespace);
            return Ok(stored);
        }
        let graceful = kind == kinds::pods();
        if graceful && let Some(current) = live.pointer("/metadata/deletionGracePeriodSeconds") {
            // Already being deleted gracefully: only a shorter period
            // changes anything.
            let current = current.as_i64().unwrap_or(0);
            match requested_grace {
                _ if current == 0 => {}
                Some(period) if period < current => {
                    let mut marked = live;
                    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(period);
                    marked["metadata"]["deletionTimestamp"] = json!(meta::format(at));
                    marked["metadata"]["deletionGracePeriodSeconds"] = json!(period);
                    if period > 0 || has_finalizers {
                        let stored = self.store.put(kind, marked);
                        self.after_change(kind, namespace);
                        return Ok(stored);
                    }
                    self.store.put(kind, marked);
                    return self.remove_now(kind, namespace, name);
                }
                _ => return Ok(live),
            }
        } else if graceful {
            let bound = live
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            let finished = matches!(
                live.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            );
            let period = if !bound || finished {
                0
            } else {
                requested_grace.unwrap_or_else(|| {
                    live.pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .unwrap_or(DEFAULT_TERMINATION_GRACE_SECONDS)
                        .max(0)
                })
            };
            if period > 0 {
                let mut marked = live;
                let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(period);
                marked["metadata"]["deletionTimestamp"] = json!(meta::format(at));
                marked["metadata"]["deletionGracePeriodSeconds"] = json!(period);
                let stored = self.store.put(kind, marked);
                self.after_change(kind, namespace);
                return Ok(stored);
            }
        }
        if has_finalizers {
            if live.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(live);
            }
            let mut marked = live;
            marked["metadata"]["deletionTimestamp"] = json!(meta::now());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            let stored = self.store.put(kind, marked);
            self.after_change(kind, namespace);
            return Ok(stored);
        }
        self.remove_now(kind, namespace, name)
    }

    /// Remove an object from the store (the last step of a delete).
    fn remove_now(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let removed = self
            .store
            .remove(kind, namespace, name)
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        self.after_change(kind, namespace);
        Ok(removed)
    }

    /// The namespace controller's last step: a Terminating namespace with
    /// nothing left in it goes. Returns whether it went.
    pub fn finish_namespace(&mut self, name: &str) -> bool {
        let empty = kinds::KINDS
            .iter()
            .filter(|k| k.namespaced)
            .all(|k| self.store.list(k, Some(name)).is_empty());
        if empty {
            self.store.remove(kinds::namespaces(), "", name);
        }
        empty
    }

    /// Write a candidate object: server-set metadata, the status rules of
    /// the scope, generation, ownership, then the store.
    fn commit(
        &mut self,
        kind: &'static Kind,
        old: Option<&Value>,
        candidate: Value,
        scope: Scope,
        ownership: Ownership<'_>,
    ) -> Result<Value, ApiError> {
        let now = meta::now();
        let mut new = match (scope, old) {
            (Scope::Status, Some(old)) => {
                // Only status (and the ownership of it) changes.
                let mut new = old.clone();
                match candidate.get("status") {
                    Some(status) => new["status"] = status.clone(),
                    None => {
                        new.as_object_mut().map(|m| m.remove("status"));
                    }
                }
                if let Some(managed) = candidate.pointer("/metadata/managedFields") {
                    new["metadata"]["managedFields"] = managed.clone();
                }
                new
            }
            _ => candidate,
        };
        new["apiVersion"] = json!(kind.api_version());
        new["kind"] = json!(kind.kind);
        match old {
            Some(old) => {
                for field in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "generation",
                ] {
                    match old.pointer(&format!("/metadata/{field}")) {
                        Some(value) => new["metadata"][field] = value.clone(),
                        None => {
                            new["metadata"].as_object_mut().map(|m| m.remove(field));
                        }
                    }
                }
                if matches!(
                    scope,
                    Scope::Main {
                        status_separate: true
                    }
                ) {
                    match old.get("status") {
                        Some(status) => new["status"] = status.clone(),
                        None => {
                            new.as_object_mut().map(|m| m.remove("status"));
                        }
                    }
                }
                if !matches!(ownership, Ownership::Binding(_)) {
                    self.check_immutable(kind, old, &new)?;
                }
                if kind.generation && strip_for_generation(old) != strip_for_generation(&new) {
                    let generation = old
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    new["metadata"]["generation"] = json!(generation + 1);
                }
            }
            None => {
                new["metadata"]["uid"] = json!(meta::uid());
                new["metadata"]["creationTimestamp"] = json!(now);
                for field in [
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "resourceVersion",
                ] {
                    new["metadata"].as_object_mut().map(|m| m.remove(field));
                }
                if kind.generation {
                    new["metadata"]["generation"] = json!(1);
                }
                if kind.clear_status_on_create {
                    new.as_object_mut().map(|m| m.remove("status"));
                }
                match kind.plural {
                    "pods" => {
                        new["status"] = json!({"phase": "Pending", "qosClass": qos_class(&new)})
                    }
                    "namespaces" => {
                        new["spec"] = json!({"finalizers": ["kubernetes"]});
                        new["status"] = json!({"phase": "Active"});
                        new["metadata"]["labels"]["kubernetes.io/metadata.name"] =
                            new["metadata"]["name"].clone();
                    }
                    _ => {}
                }
            }
        }
        match ownership {
            Ownership::Update(manager) => {
                ownership::record_update(kind, old, &mut new, manager, scope, &now)
            }
            Ownership::Controller(manager) => {
                ownership::record_update(kind, old, &mut new, manager, Scope::Status, &now)
            }
            Ownership::Binding(manager) => ownership::record_update(
                kind,
                old,
                &mut new,
                manager,
                Scope::Main {
                    status_separate: false,
                },
                &now,
            ),
            Ownership::Applied => {}
        }
        let namespace = name_of(&new).0.to_string();
        let finalized = new.pointer("/metadata/deletionTimestamp").is_some()
            && new
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
        let stored = if finalized {
            let name = name_of(&new).1.to_string();
            self.store.put(kind, new);
            self.store
                .remove(kind, &namespace, &name)
                .expect("stored just above")
        } else {
            self.store.put(kind, new)
        };
        self.after_change(kind, &namespace);
        Ok(stored)
    }

    /// The checks of the kinds' update validation that the control plane
    /// could trip over: a pod's spec is immutable but for images and a few
    /// fields; workload selectors are immutable.
    fn check_immutable(
        &self,
        kind: &'static Kind,
        old: &Value,
        new: &Value,
    ) -> Result<(), ApiError> {
        let name = name_of(old).1;
        if kind.plural == "pods"
            && pod_spec_immutables(old.get("spec")) != pod_spec_immutables(new.get("spec"))
        {
            return Err(ApiError::invalid(
                kind,
                name,
                "spec",
                "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
        if kind.group == "apps" && old.pointer("/spec/selector") != new.pointer("/spec/selector") {
            return Err(ApiError::invalid(
                kind,
                name,
                "spec.selector",
                "Invalid value: field is immutable",
            ));
        }
        Ok(())
    }

    /// Keep derived state (disruption budgets) in step with a change.
    fn after_change(&mut self, kind: &'static Kind, namespace: &str) {
        if kind == kinds::pods() || kind == kinds::pdbs() {
            self.refresh_disruption_budgets(namespace);
        }
    }
}

/// `spec.terminationGracePeriodSeconds` when a pod does not say
/// (pkg/apis/core/v1/defaults.go: `DefaultTerminationGracePeriodSeconds`).
pub const DEFAULT_TERMINATION_GRACE_SECONDS: i64 = 30;

/// The QoS class kube-apiserver puts in a new pod's status.
fn qos_class(pod: &Value) -> &'static str {
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for container in &containers {
        let requests = container.pointer("/resources/requests");
        let limits = container.pointer("/resources/limits");
        if requests.is_some_and(|r| r.as_object().is_some_and(|m| !m.is_empty()))
            || limits.is_some_and(|l| l.as_object().is_some_and(|m| !m.is_empty()))
        {
            any = true;
        }
        for resource in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(resource));
            let request = requests.and_then(|r| r.get(resource)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    if guaranteed {
        "Guaranteed"
    } else if any {
        "Burstable"
    } else {
        "BestEffort"
    }
}
