//! The domain loop: each customer's domains made true in their namespace,
//! checked while pending, and their certificates read once verified.
//!
//! Key: the owner's user id (the responder is one per namespace, so a
//! pass looks at all of the owner's domains at once). Queued by
//! Add/RemoveSubscriptionDomain (at once), by the next due check of a
//! pending domain, and by a resync of every owner with domain rows each
//! `--subscription-resync`, which also notices deleted subscriptions.
//! Writes are forced server-side applies and deletes, idempotent, so two
//! replicas may both act; a check's result is recorded only over the state
//! it started from.

use std::{
    collections::{BTreeSet, HashMap, hash_map::DefaultHasher},
    hash::{Hash, Hasher},
    time::{Duration, Instant},
};

use kube::{
    Api,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use minispod_proto::v1 as pb;
use prost::Message;
use serde_json::Value;

use super::{
    Subscriptions, check, objects,
    queries::{self, DomainRow, Outcome},
};
use crate::{
    cluster::FIELD_MANAGER,
    store::now_ms,
    subscriptions::{
        limits, queries as subscription_queries,
        reconcile::{dynamic, kind_of},
        render,
    },
    workqueue::{Action, Reconcile},
};

/// The applied objects are applied again after this long even when
/// nothing changed, so a hand edit or a deleted object is put back.
const REAPPLY: Duration = Duration::from_secs(60);
/// An issued certificate is read again after this long.
const CERTIFICATE_RECHECK_MS: i64 = 5 * 60 * 1000;

/// Starts the domain loop; none without a linked cluster.
pub fn spawn(subs: &Subscriptions) -> Option<tokio::task::JoinHandle<()>> {
    let client = subs.link().kube_client()?;
    Some(tokio::spawn(
        DomainLoop {
            subs: subs.clone(),
            client,
            applied: HashMap::new(),
        }
        .run(),
    ))
}

/// The loop's state: what it last applied per owner, and when.
struct DomainLoop {
    subs: Subscriptions,
    client: kube::Client,
    /// User id → (hash of the desired objects, when applied).
    applied: HashMap<String, (u64, Instant)>,
}

/// What the owner's namespace should hold: objects to apply, and Ingresses
/// and Secrets to delete (by name; a 404 is fine).
#[derive(Debug, Default, Hash)]
struct Desired {
    apply: Vec<String>,
    delete_ingresses: Vec<String>,
    delete_secrets: Vec<String>,
    delete_responder: bool,
}

impl Reconcile for DomainLoop {
    type Key = String;
    type Error = anyhow::Error;

    async fn reconcile(&mut self, user: &String) -> anyhow::Result<Action> {
        let out = self.pass(user).await;
        if out.is_err() {
            self.applied.remove(user);
        }
        out
    }

    fn error_policy(&mut self, user: &String, e: &anyhow::Error, backoff: Duration) -> Action {
        tracing::warn!(user = %user, error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64,
            "domain pass failed; retrying");
        Action::RequeueAfter(backoff)
    }
}

impl DomainLoop {
    async fn run(mut self) {
        let subs = self.subs.clone();
        let mut next_resync = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_resync {
                next_resync = now + subs.settings().resync;
                match queries::users(subs.db()).await {
                    Ok(users) => subs.domain_queue().resync(users),
                    Err(e) => tracing::warn!(error = %e, "domains: listing failed"),
                }
            }
            let user = tokio::select! {
                user = subs.domain_queue().next() => user,
                () = tokio::time::sleep_until(next_resync.into()) => continue,
            };
            let _ = subs.domain_queue().process(&mut self, user).await;
        }
    }

    /// One pass over `user`'s domains.
    async fn pass(&mut self, user: &str) -> anyhow::Result<Action> {
        let subs = self.subs.clone();
        let settings = &subs.settings().domains;
        let render_settings = &subs.settings().render;
        let ns = render::namespace_of(user);
        let rows = queries::of_user(subs.db(), user).await?;

        // Each row's subscription, if it is still wanted.
        let mut owners: HashMap<String, Option<subscription_queries::SubscriptionRow>> =
            HashMap::new();
        for r in &rows {
            if !owners.contains_key(&r.subscription_id) {
                let s = subscription_queries::get(subs.db(), &r.subscription_id)
                    .await?
                    .filter(|s| s.desired != "DELETED");
                owners.insert(r.subscription_id.clone(), s);
            }
        }
        let attached = |r: &DomainRow| r.removed_at == 0 && owners[&r.subscription_id].is_some();

        let mut desired = Desired::default();
        let mut objects: Vec<Value> = Vec::new();
        let pending: Vec<&DomainRow> = rows
            .iter()
            .filter(|r| attached(r) && r.state == "PENDING")
            .collect();
        if rows.iter().any(&attached) {
            // The namespace's quota first: it makes room for the
            // responder's pod while one is pending, and none after.
            let quota = {
                let mut tx = subs.db().begin().await?;
                limits::quota(&mut tx, &subs.settings().tenant, user).await?
            };
            objects.extend(render::namespace_objects(user, &quota, render_settings));
        }
        if pending.is_empty() {
            desired.delete_responder = true;
        } else {
            let tokens: BTreeSet<String> = pending.iter().map(|r| r.token.clone()).collect();
            objects.extend(objects::responder(
                &ns,
                user,
                &tokens,
                &render_settings.gate_image,
            ));
        }
        for r in &rows {
            let ingress = objects::ingress_name(&r.id);
            if !attached(r) {
                desired.delete_ingresses.push(ingress);
                desired.delete_secrets.push(objects::tls_secret(&r.id));
                continue;
            }
            match r.state.as_str() {
                "PENDING" => objects.push(objects::challenge_ingress(&ns, r, render_settings)),
                "FAILED" => desired.delete_ingresses.push(ingress),
                _ => {
                    let sub = owners[&r.subscription_id]
                        .as_ref()
                        .expect("attached rows have their subscription");
                    match exposed(sub) {
                        Some((service, port)) => objects.push(objects::serving_ingress(
                            &ns,
                            r,
                            render_settings,
                            &service,
                            &port,
                            &settings.issuer,
                        )),
                        None => desired.delete_ingresses.push(ingress),
                    }
                }
            }
        }
        desired.apply = objects.iter().map(Value::to_string).collect();
        let hash = {
            let mut h = DefaultHasher::new();
            desired.hash(&mut h);
            h.finish()
        };
        let fresh = self
            .applied
            .get(user)
            .is_some_and(|(h, at)| *h == hash && at.elapsed() < REAPPLY);
        if !fresh {
            self.converge(&ns, &objects, &desired).await?;
            self.applied.insert(user.to_owned(), (hash, Instant::now()));
        }
        // The rows whose objects are gone.
        for r in rows.iter().filter(|r| !attached(r)) {
            queries::delete(subs.db(), &r.id).await?;
            tracing::info!(domain = %r.id, host = %r.host, "domain's objects deleted");
        }
        if rows.iter().all(|r| !attached(r)) {
            self.applied.remove(user);
        }

        // Checks that are due, at once.
        let now = now_ms();
        let due: Vec<&DomainRow> = pending
            .iter()
            .copied()
            .filter(|r| r.next_check_at <= now)
            .collect();
        let results = futures::future::join_all(
            due.iter()
                .map(|r| check::check(&r.host, &r.token, &settings.resolve)),
        )
        .await;
        let mut changed = false;
        for (r, result) in due.iter().zip(results) {
            let now = now_ms();
            let checks = r.checks + 1;
            let outcome = match result {
                Ok(()) => Outcome {
                    state: "VERIFIED".into(),
                    reason: awaiting_certificate(&settings.issuer),
                    checks,
                    checked_at: now,
                    next_check_at: 0,
                    verified_at: now,
                },
                Err(why) if now - r.created_at >= settings.give_up.as_millis() as i64 => Outcome {
                    state: "FAILED".into(),
                    reason: format!("not verified within {}: {why}", humantime(settings.give_up)),
                    checks,
                    checked_at: now,
                    next_check_at: 0,
                    verified_at: 0,
                },
                Err(why) => Outcome {
                    state: "PENDING".into(),
                    reason: why,
                    checks,
                    checked_at: now,
                    next_check_at: now + settings.retry_after(checks).as_millis() as i64,
                    verified_at: 0,
                },
            };
            if outcome.state != "PENDING" {
                changed = true;
                tracing::info!(domain = %r.id, host = %r.host, state = %outcome.state, reason = %outcome.reason, "domain checked");
            }
            if outcome.state == "FAILED" {
                // The owner is told once, in the transaction that fails it.
                let name = owners
                    .get(&r.subscription_id)
                    .and_then(|s| s.as_ref())
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                let mut tx = subs.db().begin().await?;
                let mut told = 0;
                if queries::record_in(&mut tx, &r.id, "PENDING", &outcome).await? {
                    let notice = crate::notifications::owner_notices::domain_failed(
                        &crate::notifications::owner_notices::SubscriptionRef {
                            id: r.subscription_id.clone(),
                            name,
                        },
                        &r.host,
                        &crate::subscriptions::words::for_customer(&outcome.reason),
                        now,
                    );
                    told = subs
                        .notifier()
                        .tell_owner(&mut tx, &r.user_id, &notice)
                        .await?;
                }
                tx.commit().await?;
                if told > 0 {
                    subs.notifier().wake();
                }
                continue;
            }
            queries::record(subs.db(), &r.id, "PENDING", &outcome).await?;
        }

        // Certificates of verified ones.
        for r in rows
            .iter()
            .filter(|r| attached(r) && !matches!(r.state.as_str(), "PENDING" | "FAILED"))
        {
            if r.state == "CERTIFICATE_ISSUED" && now - r.checked_at < CERTIFICATE_RECHECK_MS {
                continue;
            }
            let (state, reason) = self.certificate(&ns, r).await;
            if state != r.state || reason != r.reason || r.state == "CERTIFICATE_ISSUED" {
                let o = Outcome {
                    state,
                    reason,
                    checks: r.checks,
                    checked_at: now_ms(),
                    next_check_at: 0,
                    verified_at: r.verified_at,
                };
                queries::record(subs.db(), &r.id, &r.state, &o).await?;
            }
        }

        if changed {
            // Pending became verified or failed: its objects change now.
            return Ok(Action::RequeueAfter(Duration::ZERO));
        }
        let next = rows
            .iter()
            .filter(|r| attached(r) && r.state == "PENDING")
            .map(|r| {
                if due.iter().any(|d| d.id == r.id) {
                    now + settings.retry_after(r.checks + 1).as_millis() as i64
                } else {
                    r.next_check_at
                }
            })
            .min();
        Ok(match next {
            Some(at) => Action::RequeueAfter(Duration::from_millis((at - now_ms()).max(0) as u64)),
            None => Action::Done,
        })
    }

    /// Applies `objects` and deletes what `desired` says goes.
    async fn converge(&self, ns: &str, objects: &[Value], desired: &Desired) -> anyhow::Result<()> {
        for o in objects {
            let (api, name) = dynamic(&self.client, o);
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(o),
            )
            .await
            .map_err(|e| anyhow::Error::new(e).context(format!("apply {} {name}", kind_of(o))))?;
        }
        let ingresses = api_of(&self.client, ns, "networking.k8s.io", "Ingress");
        for name in &desired.delete_ingresses {
            delete(&ingresses, "Ingress", name).await?;
        }
        let secrets = api_of(&self.client, ns, "", "Secret");
        for name in &desired.delete_secrets {
            delete(&secrets, "Secret", name).await?;
        }
        if desired.delete_responder {
            for kind in ["Service", "Deployment", "ConfigMap"] {
                let group = if kind == "Deployment" { "apps" } else { "" };
                let api = api_of(&self.client, ns, group, kind);
                delete(&api, kind, objects::RESPONDER).await?;
            }
        }
        Ok(())
    }

    /// The state of verified domain `r` from its cert-manager Certificate.
    async fn certificate(&self, ns: &str, r: &DomainRow) -> (String, String) {
        let issuer = &self.subs.settings().domains.issuer;
        if issuer.is_empty() {
            return ("VERIFIED".into(), awaiting_certificate(issuer));
        }
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
            "certificates",
        );
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
        let name = objects::tls_secret(&r.id);
        match api.get_opt(&name).await {
            Ok(Some(cert)) => certificate_state(&cert.data),
            Ok(None) => ("VERIFIED".into(), awaiting_certificate(issuer)),
            Err(e) => (
                "VERIFIED".into(),
                format!("cannot read the certificate: {e}"),
            ),
        }
    }
}

/// Why a verified domain has no certificate (yet): no issuer, or
/// cert-manager has not made its Certificate.
fn awaiting_certificate(issuer: &str) -> String {
    if issuer.is_empty() {
        "no certificate issuer configured (--custom-domain-issuer): HTTPS is served with the \
         ingress controller's default certificate"
            .into()
    } else {
        format!(
            "waiting for cert-manager to make the certificate (issuer {issuer}; is cert-manager \
             installed?)"
        )
    }
}

/// VERIFIED, CERTIFICATE_ISSUED or CERTIFICATE_FAILING from a cert-manager
/// Certificate's conditions (Ready, and Issuing while it is being issued).
fn certificate_state(data: &Value) -> (String, String) {
    let conditions = data["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let find = |t: &str| conditions.iter().find(|c| c["type"] == t).cloned();
    let message = |c: &Value| c["message"].as_str().unwrap_or_default().to_owned();
    match (find("Ready"), find("Issuing")) {
        (Some(ready), _) if ready["status"] == "True" => {
            ("CERTIFICATE_ISSUED".into(), message(&ready))
        }
        (_, Some(issuing)) if issuing["status"] == "True" => (
            "VERIFIED".into(),
            format!(
                "cert-manager is issuing the certificate: {}",
                message(&issuing)
            ),
        ),
        (Some(ready), _) => ("CERTIFICATE_FAILING".into(), message(&ready)),
        (None, _) => (
            "VERIFIED".into(),
            "waiting for cert-manager to issue the certificate".into(),
        ),
    }
}

/// The exposed component's Service and port name of `sub` (what its own
/// Ingress routes to), from its stored template.
pub(super) fn exposed(sub: &subscription_queries::SubscriptionRow) -> Option<(String, String)> {
    let template = pb::ServiceTemplate::decode(sub.template.as_slice()).ok()?;
    template
        .components
        .iter()
        .find(|c| !c.expose_port.is_empty())
        .map(|c| {
            (
                render::component_object(&sub.name, &c.name),
                c.expose_port.clone(),
            )
        })
}

/// "24h", "90s": a duration as the flags take it.
fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn api_of(client: &kube::Client, ns: &str, group: &str, kind: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, "v1", kind));
    Api::namespaced_with(client.clone(), ns, &ar)
}

async fn delete(api: &Api<DynamicObject>, kind: &str, name: &str) -> anyhow::Result<()> {
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("delete {kind} {name}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_certificate_state_follows_ready_and_issuing() {
        let cert = |conditions: Value| json!({ "status": { "conditions": conditions } });
        let (s, _) = certificate_state(&cert(json!([
            { "type": "Ready", "status": "True", "message": "Certificate is up to date" },
        ])));
        assert_eq!(s, "CERTIFICATE_ISSUED");
        let (s, why) = certificate_state(&cert(json!([
            { "type": "Ready", "status": "False", "message": "Issuing certificate as Secret does not exist" },
            { "type": "Issuing", "status": "True", "message": "Issuing certificate as Secret does not exist" },
        ])));
        assert_eq!(s, "VERIFIED");
        assert!(why.starts_with("cert-manager is issuing"), "{why}");
        let (s, why) = certificate_state(&cert(json!([
            { "type": "Ready", "status": "False", "message": "The certificate request has failed to complete" },
        ])));
        assert_eq!(
            (s.as_str(), why.as_str()),
            (
                "CERTIFICATE_FAILING",
                "The certificate request has failed to complete"
            )
        );
        assert_eq!(certificate_state(&json!({})).0, "VERIFIED");
    }

    #[test]
    fn durations_read_as_the_flags_take_them() {
        assert_eq!(humantime(Duration::from_secs(86400)), "24h");
        assert_eq!(humantime(Duration::from_secs(120)), "2m");
        assert_eq!(humantime(Duration::from_secs(3)), "3s");
    }
}
