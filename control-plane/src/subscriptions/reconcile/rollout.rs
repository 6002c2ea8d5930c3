//! The reconciler's side of an upgrade (issue #25): while a subscription
//! is UPGRADING, each pass checks every component's workload the way
//! `kubectl rollout status` does (the new spec observed, every replica
//! updated and available, no old one left) and that a pod of it is ready.
//! All done: the upgrade succeeded (`upgraded`). A new pod crash-loops,
//! or cannot pull its image past a short grace (`definite_failures`), or
//! the deadline passed first: the previous version's template and values
//! are put back and applied by the next pass, at once (`rolled_back`, the
//! one place where "it rolled back" happens). Meanwhile the status says how far it got, and
//! the pass comes back every second until the deadline.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::{Api, api::DeleteParams};
use minispod_proto::v1 as pb;
use prost::Message;
use serde_json::Value;

use super::{IMAGE_ERRORS, Reconciler, dynamic, kind_of, refusal};
use crate::{
    notifications::notices,
    store::{now_ms, timestamp},
    subscriptions::{
        Change, PodInfo, queries, queries::SubscriptionRow, render, status_from_db,
        upgrade::display,
    },
    with_conn,
};

/// How often an upgrading subscription is looked at while it waits (pod
/// changes queue it sooner; its workloads' status changes do not).
const UPGRADE_POLL: Duration = Duration::from_secs(1);
/// How long a new pod may fail to pull its image (ErrImagePull, then
/// ImagePullBackOff) before the upgrade is rolled back without waiting
/// for the deadline: about one retry of the kubelet's pull back-off (10 s
/// first), so a registry's blip is not a rollback.
const PULL_GRACE: Duration = Duration::from_secs(10);
/// Restarts of a new pod in CrashLoopBackOff after which the new version
/// is rolled back at once: it started and exited twice.
const CRASH_RESTARTS: i32 = 2;

/// What definitely fails among the new version's pods (those created in
/// the second the upgrade started or later, so an old pod that crashes is
/// not counted), at most one per component, in words that hold no cluster
/// message; each with whether it waits out [`PULL_GRACE`] first. A crash
/// loop (CrashLoopBackOff, [`CRASH_RESTARTS`] restarts or more) and an
/// image name the kubelet refuses (InvalidImageName, ErrImageNeverPull)
/// do not; a pull that fails (ErrImagePull, ImagePullBackOff) does.
fn definite_failures(
    template: &pb::ServiceTemplate,
    pods: &[PodInfo],
    started_ms: i64,
) -> Vec<(String, bool)> {
    let since = started_ms - started_ms.rem_euclid(1000);
    let mut out = Vec::new();
    for c in &template.components {
        let new = pods
            .iter()
            .filter(|p| p.component == c.name && !p.terminating && p.created_ms >= since);
        for p in new {
            if p.waiting == "CrashLoopBackOff" && p.restarts >= CRASH_RESTARTS {
                out.push((
                    format!("component {}: crash loop ({} restarts)", c.name, p.restarts),
                    false,
                ));
                break;
            }
            if IMAGE_ERRORS.contains(&p.waiting.as_str()) {
                let at_once =
                    matches!(p.waiting.as_str(), "InvalidImageName" | "ErrImageNeverPull");
                out.push((
                    format!("component {}: its image cannot be pulled", c.name),
                    !at_once,
                ));
                break;
            }
        }
    }
    out
}

/// Whether the workload `name` of a component has rolled out its current
/// spec: `kubectl rollout status`'s rules for a Deployment (observed,
/// updated, no old replicas, available) or a StatefulSet (observed, ready,
/// current revision the update revision). Needs `get` on deployments and
/// statefulsets in the tenant's role.
async fn rolled_out(
    client: &kube::Client,
    ns: &str,
    name: &str,
    kind: pb::WorkloadKind,
) -> anyhow::Result<bool> {
    if kind == pb::WorkloadKind::StatefulSet {
        let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
        let Some(s) = api
            .get_opt(name)
            .await
            .map_err(|e| refusal(e, "read", "StatefulSet", name))?
        else {
            return Ok(false);
        };
        let want = s.spec.as_ref().and_then(|x| x.replicas).unwrap_or(1);
        let st = s.status.unwrap_or_default();
        return Ok(
            st.observed_generation.unwrap_or(0) >= s.metadata.generation.unwrap_or(1)
                && st.ready_replicas.unwrap_or(0) >= want
                && st.update_revision.is_some()
                && st.update_revision == st.current_revision,
        );
    }
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let Some(d) = api
        .get_opt(name)
        .await
        .map_err(|e| refusal(e, "read", "Deployment", name))?
    else {
        return Ok(false);
    };
    let want = d.spec.as_ref().and_then(|x| x.replicas).unwrap_or(1);
    let st = d.status.unwrap_or_default();
    let updated = st.updated_replicas.unwrap_or(0);
    Ok(
        st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(1)
            && updated >= want
            && st.replicas.unwrap_or(0) <= updated
            && st.available_replicas.unwrap_or(0) >= updated,
    )
}

/// Why a component's new pods are not ready, in words that hold no
/// cluster message (they reach the customer as `upgrade_failure`).
fn not_ready(live: &[&PodInfo]) -> String {
    let Some(p) = live.iter().find(|p| !p.ready) else {
        return if live.is_empty() {
            "waiting for its pod".into()
        } else {
            "rolling out".into()
        };
    };
    if IMAGE_ERRORS.contains(&p.waiting.as_str()) {
        "its image cannot be pulled".into()
    } else if p.waiting == "CrashLoopBackOff" {
        format!("crash loop ({} restarts)", p.restarts)
    } else if p.waiting == "Unschedulable" {
        "no room in the cluster".into()
    } else if p.phase == "Running" {
        "running but not ready (its readiness probe fails)".into()
    } else if !p.waiting.is_empty() {
        p.waiting.clone()
    } else {
        format!("its pod is {}", p.phase)
    }
}

/// The objects of `objects` whose kind, namespace and name `keep` does not
/// have (a component one version has and the other not).
fn leftovers<'a>(objects: &'a [Value], keep: &[Value]) -> Vec<&'a Value> {
    let key = |o: &Value| {
        (
            kind_of(o).to_owned(),
            o["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    let kept: std::collections::HashSet<_> = keep.iter().map(key).collect();
    objects.iter().filter(|o| !kept.contains(&key(o))).collect()
}

impl Reconciler {
    /// One pass over an upgrading subscription whose new version's
    /// `objects` were applied: success, rollback, or progress (and when to
    /// look again).
    pub(super) async fn follow_upgrade(
        &mut self,
        client: &kube::Client,
        row: &SubscriptionRow,
        template: &pb::ServiceTemplate,
        objects: &[Value],
    ) -> anyhow::Result<Option<Duration>> {
        let pods = self.subs.pods_of(&row.id);
        let mut ready = 0;
        let mut waiting = Vec::new();
        for c in &template.components {
            let name = render::component_object(&row.name, &c.name);
            // A workload the cluster will not show (its role lacks `get`,
            // the API is down) is not rolled out: the deadline still ends
            // the upgrade.
            let rolled = match rolled_out(client, &row.namespace, &name, c.workload()).await {
                Ok(rolled) => Some(rolled),
                Err(e) => {
                    tracing::warn!(subscription = %row.id, component = %c.name,
                        error = %format!("{e:#}"), "cannot read a component's rollout");
                    None
                }
            };
            let live: Vec<&PodInfo> = pods
                .iter()
                .filter(|p| p.component == c.name && !p.terminating)
                .collect();
            match rolled {
                Some(true) if live.iter().any(|p| p.ready) => ready += 1,
                None => waiting.push(format!(
                    "component {}: its rollout cannot be read from the cluster",
                    c.name
                )),
                _ => waiting.push(format!("component {}: {}", c.name, not_ready(&live))),
            }
        }
        let total = template.components.len();
        if ready == total {
            self.pull_failing.remove(&row.id);
            self.upgraded(client, row, objects).await?;
            return Ok(None);
        }
        // A definite failure of the new version rolls back at once, not at
        // the deadline: a crash loop, or an image that still cannot be
        // pulled after PULL_GRACE.
        let deadline = self.subs.settings().upgrade_deadline.as_millis() as i64;
        let failures = definite_failures(template, &pods, row.upgrade_deadline_at - deadline);
        let first_pull = if failures.iter().any(|(_, grace)| *grace) {
            Some(
                *self
                    .pull_failing
                    .entry(row.id.clone())
                    .or_insert_with(std::time::Instant::now),
            )
        } else {
            self.pull_failing.remove(&row.id);
            None
        };
        let due: Vec<&str> = failures
            .iter()
            .filter(|(_, grace)| !grace || first_pull.is_some_and(|t| t.elapsed() >= PULL_GRACE))
            .map(|(why, _)| why.as_str())
            .collect();
        if !due.is_empty() {
            self.pull_failing.remove(&row.id);
            let why = format!("version {} cannot run: {}", row.version, due.join("; "));
            self.rolled_back(client, row, objects, &why).await?;
            return Ok(None);
        }
        let now = now_ms();
        if now >= row.upgrade_deadline_at {
            self.pull_failing.remove(&row.id);
            let why = format!(
                "version {} did not become ready in {}: {}",
                row.version,
                notices::span(self.subs.settings().upgrade_deadline.as_millis() as i64),
                waiting.join("; ")
            );
            self.rolled_back(client, row, objects, &why).await?;
            return Ok(None);
        }
        let reason = format!(
            "upgrading from {} to {}: {ready} of {total} components ready; {}",
            display(&row.previous_version),
            row.version,
            waiting.join("; ")
        );
        self.record(row, "UPGRADING", &reason, row.ever_ran, &row.workers)
            .await?;
        let left = Duration::from_millis((row.upgrade_deadline_at - now).max(0) as u64);
        Ok(Some(left.min(UPGRADE_POLL)))
    }

    /// The objects of `row`'s previous version (for what it had that the
    /// new one does not).
    fn previous_objects(&self, row: &SubscriptionRow) -> anyhow::Result<Vec<Value>> {
        let Some(bytes) = row.previous_template.as_deref() else {
            return Ok(Vec::new());
        };
        let template = pb::ServiceTemplate::decode(bytes)?;
        let variables = self.subs.open_map(&row.id, &row.previous_variables)?;
        let generated = self.subs.open_map(&row.id, &row.generated)?;
        let gate = self.subs.open_gate(&row.id, &row.gate)?;
        let inst = render::Instance {
            id: &row.id,
            name: &row.name,
            user_id: &row.user_id,
            slug: &row.service_slug,
            template: &template,
            variables: &variables,
            generated: &generated,
            suspended: false,
            live: &[],
            restarted_at: row.restarted_at,
            gate: gate.as_deref(),
        };
        render::subscription_objects(&inst, &self.subs.settings().render)
            .map_err(|e| anyhow::anyhow!("render the previous version: {e}"))
    }

    /// Deletes `doomed` (a component one version had and the other has
    /// not); claims are kept as retained volumes, as a deleted
    /// subscription's are.
    async fn remove_leftovers(
        &self,
        client: &kube::Client,
        row: &SubscriptionRow,
        doomed: Vec<&Value>,
    ) -> anyhow::Result<()> {
        let mut volumes = Vec::new();
        for o in doomed {
            let (api, name) = dynamic(client, o);
            if kind_of(o) == "PersistentVolumeClaim" {
                volumes.push((name, super::claim_gib(o)));
                continue;
            }
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(refusal(e, "delete", kind_of(o), &name)),
            }
        }
        if !volumes.is_empty() {
            let mut tx = self.subs.db().begin().await?;
            let keep_until = now_ms() + self.subs.settings().volume_retention.as_millis() as i64;
            queries::retain_volumes(&mut tx, &row.namespace, &volumes, keep_until).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// The new version is ready: the row forgets the previous one and is
    /// RUNNING, with an event saying so; what only the previous version
    /// had is removed from the cluster.
    async fn upgraded(
        &mut self,
        client: &kube::Client,
        row: &SubscriptionRow,
        objects: &[Value],
    ) -> anyhow::Result<()> {
        let previous = self.previous_objects(row).unwrap_or_else(|e| {
            tracing::warn!(subscription = %row.id, error = %format!("{e:#}"), "previous version not rendered");
            Vec::new()
        });
        let reason = format!(
            "upgraded from {} to {}",
            display(&row.previous_version),
            row.version
        );
        let now = now_ms();
        let mut tx = self.subs.db().begin().await?;
        let done = with_conn!(&mut tx, |c| sqlx::query(
            "UPDATE subscriptions SET previous_version = '', previous_template = NULL,
                previous_variables = '', previous_status = '', upgrade_deadline_at = 0,
                upgrade_failure = '', status = 'RUNNING', status_reason = '', ever_ran = TRUE,
                status_changed_at = $2, updated_at = $2
             WHERE id = $1 AND previous_version = $3 AND version = $4"
        )
        .bind(&row.id)
        .bind(now)
        .bind(&row.previous_version)
        .bind(&row.version)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        if done != 1 {
            // Another replica finished it.
            return Ok(());
        }
        queries::add_event(&mut tx, &row.id, "RUNNING", &reason, now).await?;
        tx.commit().await?;
        tracing::info!(subscription = %row.id, name = %row.name, %reason, "subscription upgraded");
        self.subs.publish(Change::Upserted(
            row.id.clone(),
            Some(pb::SubscriptionEvent {
                status: pb::SubscriptionStatus::Running as i32,
                reason,
                at: Some(timestamp(now)),
            }),
        ));
        self.remove_leftovers(client, row, leftovers(&previous, objects))
            .await
    }

    /// The moment an upgrade is given up, and the one place it happens: in
    /// one transaction the row gets its previous version, template,
    /// variables and status back (a new generation, so the next pass,
    /// queued at once, applies the previous objects), `upgrade_failure`
    /// and the event say `why`. What only the new version had is removed
    /// from the cluster after the commit.
    ///
    /// The notices are queued in that transaction, so that they are told
    /// once whichever replica rolls back: the owner's "upgrade rolled back"
    /// and the administrators' who want SUBSCRIPTION_ROLLED_BACK.
    pub(super) async fn rolled_back(
        &mut self,
        client: &kube::Client,
        row: &SubscriptionRow,
        new_objects: &[Value],
        why: &str,
    ) -> anyhow::Result<()> {
        let status = match row.previous_status.as_str() {
            "" | "UPGRADING" | "PENDING" => "PROVISIONING",
            s => s,
        };
        let reason = format!(
            "upgrade to {} rolled back to {}: {why}",
            row.version,
            display(&row.previous_version)
        );
        let previous = self.previous_objects(row)?;
        let now = now_ms();
        let mut tx = self.subs.db().begin().await?;
        let done = with_conn!(&mut tx, |c| sqlx::query(
            "UPDATE subscriptions SET version = previous_version, template = previous_template,
                variables = previous_variables, previous_version = '', previous_template = NULL,
                previous_variables = '', previous_status = '', upgrade_deadline_at = 0,
                upgrade_failure = $2, status = $3, status_reason = $4, status_changed_at = $5,
                updated_at = $5, generation = generation + 1
             WHERE id = $1 AND previous_version = $6 AND version = $7
                AND previous_template IS NOT NULL"
        )
        .bind(&row.id)
        .bind(why)
        .bind(status)
        .bind(&reason)
        .bind(now)
        .bind(&row.previous_version)
        .bind(&row.version)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        if done != 1 {
            // Another replica rolled it back (or it finished) meanwhile.
            return Ok(());
        }
        queries::add_event(&mut tx, &row.id, status, &reason, now).await?;
        // The owner's notice, and the administrators' who want
        // SUBSCRIPTION_ROLLED_BACK, in the transaction that rolls back.
        let why_for_customer = crate::subscriptions::words::for_customer(why);
        let told = crate::notifications::customers::subscription_rolled_back(
            self.subs.notifier(),
            &mut tx,
            &crate::notifications::customers::RolledBack {
                id: &row.id,
                user_id: &row.user_id,
                name: &row.name,
                from_version: display(&row.previous_version),
                to_version: &row.version,
                reason_for_customer: &why_for_customer,
            },
        )
        .await?;
        tx.commit().await?;
        if told > 0 {
            self.subs.notifier().wake();
        }
        tracing::warn!(subscription = %row.id, name = %row.name, %reason, "subscription upgrade rolled back");
        self.applied.remove(&row.id);
        self.subs.publish(Change::Upserted(
            row.id.clone(),
            Some(pb::SubscriptionEvent {
                status: status_from_db(status) as i32,
                reason,
                at: Some(timestamp(now)),
            }),
        ));
        self.subs.enqueue_now(row.id.clone());
        self.remove_leftovers(client, row, leftovers(new_objects, &previous))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(phase: &str, ready: bool, waiting: &str, restarts: i32) -> PodInfo {
        PodInfo {
            name: "p".into(),
            namespace: "ns".into(),
            component: "app".into(),
            phase: phase.into(),
            ready,
            reason: "CrashLoopBackOff: back-off 10s restarting failed container=app pod=p_ns(1)"
                .into(),
            waiting: waiting.into(),
            restarts,
            node: "n".into(),
            terminating: false,
            created_ms: 5_000,
        }
    }

    #[test]
    fn a_component_that_is_not_ready_is_told_without_the_clusters_words() {
        assert_eq!(not_ready(&[]), "waiting for its pod");
        let crash = pod("Running", false, "CrashLoopBackOff", 4);
        assert_eq!(not_ready(&[&crash]), "crash loop (4 restarts)");
        let probe = pod("Running", false, "", 0);
        assert_eq!(
            not_ready(&[&probe]),
            "running but not ready (its readiness probe fails)"
        );
        let pull = pod("Pending", false, "ImagePullBackOff", 0);
        assert_eq!(not_ready(&[&pull]), "its image cannot be pulled");
        let fine = pod("Running", true, "", 0);
        assert_eq!(not_ready(&[&fine]), "rolling out");
    }

    #[test]
    fn only_the_new_versions_pods_fail_definitely() {
        let template = pb::ServiceTemplate {
            components: vec![pb::TemplateComponent {
                name: "app".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let at = |mut p: PodInfo, created_ms: i64| {
            p.created_ms = created_ms;
            p
        };
        // Started at 5.3 s: a pod created in that second is new.
        let started = 5_300;
        let crash = at(pod("Running", false, "CrashLoopBackOff", 2), 5_000);
        assert_eq!(
            definite_failures(&template, &[crash], started),
            vec![("component app: crash loop (2 restarts)".to_owned(), false)]
        );
        let old_crash = at(pod("Running", false, "CrashLoopBackOff", 9), 4_000);
        assert!(definite_failures(&template, &[old_crash], started).is_empty());
        let once = at(pod("Running", false, "CrashLoopBackOff", 1), 6_000);
        assert!(definite_failures(&template, &[once], started).is_empty());
        let pull = at(pod("Pending", false, "ErrImagePull", 0), 6_000);
        assert_eq!(
            definite_failures(&template, &[pull], started),
            vec![("component app: its image cannot be pulled".to_owned(), true)]
        );
        let bad_name = at(pod("Pending", false, "InvalidImageName", 0), 6_000);
        assert!(!definite_failures(&template, &[bad_name], started)[0].1);
        let starting = at(pod("Pending", false, "ContainerCreating", 0), 6_000);
        assert!(definite_failures(&template, &[starting], started).is_empty());
    }

    #[test]
    fn leftovers_are_the_objects_the_other_version_does_not_have() {
        let o = |kind: &str, name: &str| json!({"kind": kind, "metadata": {"namespace": "ns", "name": name}});
        let old = vec![
            o("Deployment", "a"),
            o("Service", "a"),
            o("Deployment", "b"),
        ];
        let new = vec![o("Deployment", "a"), o("Service", "a")];
        let gone = leftovers(&old, &new);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0]["metadata"]["name"], "b");
        assert!(leftovers(&new, &old).is_empty());
    }
}
