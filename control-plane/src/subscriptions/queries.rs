//! SQL of subscriptions and their events.

use std::collections::BTreeMap;

use minispod_proto::v1 as pb;
use sqlx::{FromRow, QueryBuilder};

use crate::{
    error::{AppError, AppResult},
    store::{Db, Page, Tx, contains_pattern, now_ms, unique_violation},
    with_conn,
};

/// A subscription as stored.
#[derive(Debug, Clone, Default, FromRow)]
pub struct SubscriptionRow {
    /// UUID.
    pub id: String,
    /// DNS label, unique.
    pub name: String,
    /// Owner.
    pub user_id: String,
    /// Owner's address when created.
    pub user_email: String,
    /// Catalog entry.
    pub service_id: String,
    /// Its slug.
    pub service_slug: String,
    /// Its display name.
    pub service_name: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// prost-encoded ServiceTemplate.
    pub template: Vec<u8>,
    /// JSON object.
    pub variables: String,
    /// JSON object.
    pub generated: String,
    /// Price when created.
    pub monthly_price_cents: i64,
    /// RUNNING, SUSPENDED or DELETED.
    pub desired: String,
    /// ADMIN, OWNER or ''.
    pub suspended_by: String,
    /// Status name without prefix.
    pub status: String,
    /// Why.
    pub status_reason: String,
    /// Unix ms.
    pub status_changed_at: i64,
    /// Has been RUNNING.
    pub ever_ran: bool,
    /// What is deployed changes with it.
    pub generation: i64,
    /// Last generation applied to the cluster.
    pub applied_generation: i64,
    /// Unix ms of the last restart.
    pub restarted_at: i64,
    /// ",id,id,".
    pub workers: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// The owner's gate token, sealed (`Subscriptions::seal_gate`); empty
    /// when the subscription is open to everyone.
    pub gate: String,
    /// The catalog entry's version it runs ('' when unknown).
    pub version: String,
    /// While upgrading: the version it came from; '' otherwise.
    pub previous_version: String,
    /// While upgrading: the template it came from.
    pub previous_template: Option<Vec<u8>>,
    /// While upgrading: the variables it came from (sealed as `variables`).
    pub previous_variables: String,
    /// While upgrading: the status it came from.
    pub previous_status: String,
    /// While upgrading: Unix ms by which the new version must be ready.
    pub upgrade_deadline_at: i64,
    /// Why the last upgrade was rolled back; '' when it was not.
    pub upgrade_failure: String,
}

const COLUMNS: &str = "id, name, user_id, user_email, service_id, service_slug, service_name, \
    namespace, template, variables, generated, monthly_price_cents, desired, suspended_by, \
    status, status_reason, status_changed_at, ever_ran, generation, applied_generation, \
    restarted_at, workers, created_at, updated_at, gate, version, previous_version, \
    previous_template, previous_variables, previous_status, upgrade_deadline_at, upgrade_failure";

/// A map as stored.
pub fn encode_map(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).unwrap_or_else(|_| "{}".into())
}

/// Message of a taken name.
const NAME_TAKEN: &str = "a subscription of that name exists; names are unique because they are \
    part of the address";

/// Stores a new subscription (PENDING) with its first event.
pub async fn insert(tx: &mut Tx, r: &SubscriptionRow) -> AppResult<()> {
    with_conn!(&mut *tx, |c| sqlx::query(
        "INSERT INTO subscriptions (id, name, user_id, user_email, service_id, service_slug,
            service_name, namespace, template, variables, generated, monthly_price_cents,
            desired, suspended_by, status, status_reason, status_changed_at, ever_ran,
            generation, applied_generation, restarted_at, workers, created_at, updated_at, gate,
            version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
            $18, $19, $20, $21, $22, $23, $24, $25, $26)"
    )
    .bind(&r.id)
    .bind(&r.name)
    .bind(&r.user_id)
    .bind(&r.user_email)
    .bind(&r.service_id)
    .bind(&r.service_slug)
    .bind(&r.service_name)
    .bind(&r.namespace)
    .bind(&r.template)
    .bind(&r.variables)
    .bind(&r.generated)
    .bind(r.monthly_price_cents)
    .bind(&r.desired)
    .bind(&r.suspended_by)
    .bind(&r.status)
    .bind(&r.status_reason)
    .bind(r.status_changed_at)
    .bind(r.ever_ran)
    .bind(r.generation)
    .bind(r.applied_generation)
    .bind(r.restarted_at)
    .bind(&r.workers)
    .bind(r.created_at)
    .bind(r.updated_at)
    .bind(&r.gate)
    .bind(&r.version)
    .execute(c)
    .await
    .map(|_| ()))
    .map_err(unique_violation(NAME_TAKEN))?;
    add_event(tx, &r.id, &r.status, &r.status_reason, r.created_at).await
}

/// Appends a status change to the subscription's history.
pub async fn add_event(
    tx: &mut Tx,
    id: &str,
    status: &str,
    reason: &str,
    at: i64,
) -> AppResult<()> {
    with_conn!(&mut *tx, |c| {
        sqlx::query(
        "INSERT INTO subscription_events (subscription_id, status, reason, at) VALUES ($1, $2, $3, $4)"
    )
    .bind(id)
    .bind(status)
    .bind(reason)
    .bind(at)
    .execute(c)
    .await
    .map(|_| ())
    })?;
    // Keep the newest 200.
    with_conn!(tx, |c| sqlx::query(
        "DELETE FROM subscription_events WHERE subscription_id = $1 AND id <=
           (SELECT id FROM subscription_events WHERE subscription_id = $1
            ORDER BY id DESC LIMIT 1 OFFSET 200)"
    )
    .bind(id)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// The subscription `id`.
pub async fn get(db: &Db, id: &str) -> AppResult<Option<SubscriptionRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM subscriptions WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(c)
    .await)?)
}

/// The subscription `id`, read inside `tx` (for a change based on it).
pub async fn get_in(tx: &mut Tx, id: &str) -> AppResult<Option<SubscriptionRow>> {
    Ok(with_conn!(tx, |c| sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM subscriptions WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(c)
    .await)?)
}

/// (status, reason, at) of the newest `limit` events, newest first.
pub async fn events(db: &Db, id: &str, limit: i64) -> AppResult<Vec<(String, String, i64)>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT status, reason, at FROM subscription_events WHERE subscription_id = $1
         ORDER BY id DESC LIMIT $2"
    )
    .bind(id)
    .bind(limit)
    .fetch_all(c)
    .await)?)
}

/// What a listing keeps.
#[derive(Debug, Default)]
pub struct Filter {
    /// Owner; empty keeps all.
    pub user_id: String,
    /// Catalog entry; empty keeps all.
    pub service_id: String,
    /// Status name; empty keeps all.
    pub status: String,
    /// A worker its pods run on; empty keeps all.
    pub worker_id: String,
    /// Substring of the name or owner's address.
    pub search: String,
}

fn push_filter<'a, DB: sqlx::Database>(
    q: &mut QueryBuilder<'a, DB>,
    f: &'a Filter,
    pattern: &'a str,
    worker: &'a str,
) where
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    q.push(" WHERE desired <> 'DELETED'");
    if !f.user_id.is_empty() {
        q.push(" AND user_id = ").push_bind(f.user_id.as_str());
    }
    if !f.service_id.is_empty() {
        q.push(" AND service_id = ")
            .push_bind(f.service_id.as_str());
    }
    if !f.status.is_empty() {
        q.push(" AND status = ").push_bind(f.status.as_str());
    }
    if !worker.is_empty() {
        q.push(" AND workers LIKE ").push_bind(worker);
    }
    if !pattern.is_empty() {
        q.push(" AND (name LIKE ").push_bind(pattern);
        q.push(" ESCAPE '\\' OR lower(user_email) LIKE ")
            .push_bind(pattern);
        q.push(" ESCAPE '\\')");
    }
}

/// One page, newest first, and the number matching.
pub async fn list(db: &Db, f: &Filter, page: Page) -> AppResult<(Vec<SubscriptionRow>, i64)> {
    let pattern = if f.search.is_empty() {
        String::new()
    } else {
        contains_pattern(&f.search)
    };
    let worker = if f.worker_id.is_empty() {
        String::new()
    } else {
        contains_pattern(&format!(",{},", f.worker_id))
    };
    Ok(with_conn!(db.read(), |c| {
        let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM subscriptions"));
        push_filter(&mut q, f, &pattern, &worker);
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(page.limit)
            .push(" OFFSET ")
            .push_bind(page.offset);
        let rows = q.build_query_as().fetch_all(&mut *c).await?;
        let mut count = QueryBuilder::new("SELECT COUNT(*) FROM subscriptions");
        push_filter(&mut count, f, &pattern, &worker);
        let total: i64 = count.build_query_scalar().fetch_one(&mut *c).await?;
        (rows, total)
    }))
}

/// Every subscription the reconciler looks after (DELETED ones too, until
/// their objects are gone).
pub async fn all_ids(db: &Db) -> AppResult<Vec<String>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_scalar(
        "SELECT id FROM subscriptions ORDER BY id"
    )
    .fetch_all(c)
    .await)?)
}

/// Ids of one customer's subscriptions.
pub async fn ids_of_user(db: &Db, user_id: &str) -> AppResult<Vec<String>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_scalar(
        "SELECT id FROM subscriptions WHERE user_id = $1 ORDER BY id"
    )
    .bind(user_id)
    .fetch_all(c)
    .await)?)
}

/// Changes what is deployed: new variables and/or desired state and/or a
/// restart, bumping the generation. Returns false when `id` is gone.
pub async fn change(
    tx: &mut Tx,
    id: &str,
    variables: Option<&str>,
    desired: Option<(&str, &str)>,
    restarted_at: Option<i64>,
) -> AppResult<bool> {
    let now = now_ms();
    let done = with_conn!(tx, |c| {
        let mut q = QueryBuilder::new(
            "UPDATE subscriptions SET generation = generation + 1, updated_at = ",
        );
        q.push_bind(now);
        if let Some(v) = variables {
            q.push(", variables = ").push_bind(v);
        }
        if let Some((d, by)) = desired {
            q.push(", desired = ").push_bind(d);
            q.push(", suspended_by = ").push_bind(by);
        }
        if let Some(r) = restarted_at {
            q.push(", restarted_at = ").push_bind(r);
        }
        q.push(" WHERE id = ").push_bind(id);
        q.build().execute(c).await?.rows_affected()
    });
    Ok(done == 1)
}

/// Opens the subscription to everyone (`gate` empty) or closes it to all
/// but its owner (`gate` a sealed token), bumping the generation. Returns
/// false when `id` is gone.
pub async fn set_gate(tx: &mut Tx, id: &str, gate: &str) -> AppResult<bool> {
    let done = with_conn!(tx, |c| sqlx::query(
        "UPDATE subscriptions SET gate = $1, generation = generation + 1, updated_at = $2
         WHERE id = $3"
    )
    .bind(gate)
    .bind(now_ms())
    .bind(id)
    .execute(c)
    .await?
    .rows_affected());
    Ok(done == 1)
}

/// What [`record_status`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recorded {
    /// Anything changed.
    pub changed: bool,
    /// The status turned FAILED just now (it was something else).
    pub turned_failed: bool,
}

/// Records what the reconciler saw; adds an event when status or reason
/// changed. With `only_at`, only while the row is still at that
/// generation: a status derived from a row read before a change (an
/// upgrade started, a hold) is dropped rather than written over the
/// change's own status, and the next pass derives it again.
#[allow(clippy::too_many_arguments)]
pub async fn record_status(
    tx: &mut Tx,
    id: &str,
    status: &str,
    reason: &str,
    ever_ran: bool,
    workers: &str,
    applied_generation: i64,
    only_at: Option<i64>,
) -> AppResult<Recorded> {
    let now = now_ms();
    let changed: Option<(String, String)> = with_conn!(&mut *tx, |c| sqlx::query_as(
        "SELECT status, status_reason FROM subscriptions WHERE id = $1"
    )
    .bind(id)
    .fetch_optional(c)
    .await)?;
    let Some((old_status, old_reason)) = changed else {
        return Ok(Recorded::default());
    };
    let moved = old_status != status || old_reason != reason;
    let done = with_conn!(&mut *tx, |c| {
        sqlx::query(
        "UPDATE subscriptions SET status = $2, status_reason = $3, ever_ran = $4, workers = $5,
            applied_generation = $6,
            status_changed_at = CASE WHEN status <> $2 THEN $7 ELSE status_changed_at END,
            updated_at = CASE WHEN status <> $2 OR status_reason <> $3 OR workers <> $5 THEN $7 ELSE updated_at END
         WHERE id = $1 AND (status <> $2 OR status_reason <> $3 OR ever_ran <> $4 OR workers <> $5
            OR applied_generation <> $6) AND ($8 < 0 OR generation = $8)"
    )
    .bind(id)
    .bind(status)
    .bind(reason)
    .bind(ever_ran)
    .bind(workers)
    .bind(applied_generation)
    .bind(now)
    .bind(only_at.unwrap_or(-1))
    .execute(c)
    .await
    .map(|r| r.rows_affected())
    })?;
    if moved && done == 1 {
        add_event(tx, id, status, reason, now).await?;
    }
    Ok(Recorded {
        changed: done == 1,
        turned_failed: status == "FAILED" && old_status != "FAILED",
    })
}

/// Removes a subscription whose objects are gone.
pub async fn delete(tx: &mut Tx, id: &str) -> AppResult<bool> {
    let done = with_conn!(tx, |c| sqlx::query(
        "DELETE FROM subscriptions WHERE id = $1"
    )
    .bind(id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Takes or renews the reconciler's lease on `id` for `ttl_ms`; false when
/// another live replica holds it. A replica that left (clean shutdown) or
/// whose replica lease ran out holds nothing, so a restarted control plane
/// picks its subscriptions up at once.
pub async fn lease(db: &Db, id: &str, owner: &str, ttl_ms: i64) -> AppResult<bool> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    let done = with_conn!(&mut tx, |c| sqlx::query(
        "UPDATE subscriptions SET lease_owner = $2, lease_until = $3
         WHERE id = $1 AND (lease_owner = $2 OR lease_owner = '' OR lease_until < $4
            OR lease_owner NOT IN (SELECT id FROM replicas WHERE lease_expires_at >= $4))"
    )
    .bind(id)
    .bind(owner)
    .bind(now + ttl_ms)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    tx.commit_no_listing_change().await?;
    Ok(done == 1)
}

/// Suspends the running subscriptions of `user_id` because of its owner
/// (deactivated or deleted), status and event included. Announce what it
/// returns after the commit ([`super::Subscriptions::owner_changed`]) so
/// the reconciler scales them to zero at once.
pub async fn suspend_for_owner(tx: &mut Tx, user_id: &str, why: &str) -> AppResult<OwnerChange> {
    let now = now_ms();
    let ids: Vec<String> = with_conn!(&mut *tx, |c| sqlx::query_scalar(
        "UPDATE subscriptions SET desired = 'SUSPENDED', suspended_by = 'OWNER',
            generation = generation + 1, status = 'SUSPENDED', status_reason = $2,
            status_changed_at = $3, updated_at = $3
         WHERE user_id = $1 AND desired = 'RUNNING' RETURNING id"
    )
    .bind(user_id)
    .bind(why)
    .bind(now)
    .fetch_all(c)
    .await)?;
    for id in &ids {
        add_event(tx, id, "SUSPENDED", why, now).await?;
    }
    Ok(OwnerChange {
        ids,
        status: pb::SubscriptionStatus::Suspended,
        reason: why.to_owned(),
        at: now,
    })
}

/// Resumes what [`suspend_for_owner`] suspended (the owner is active again).
pub async fn resume_for_owner(tx: &mut Tx, user_id: &str) -> AppResult<OwnerChange> {
    let now = now_ms();
    let why = "its owner's account was activated again";
    let ids: Vec<String> = with_conn!(&mut *tx, |c| sqlx::query_scalar(
        "UPDATE subscriptions SET desired = 'RUNNING', suspended_by = '',
            generation = generation + 1, status = 'PROVISIONING', status_reason = $2,
            status_changed_at = $3, updated_at = $3
         WHERE user_id = $1 AND desired = 'SUSPENDED' AND suspended_by = 'OWNER' RETURNING id"
    )
    .bind(user_id)
    .bind(why)
    .bind(now)
    .fetch_all(c)
    .await)?;
    for id in &ids {
        add_event(tx, id, "PROVISIONING", why, now).await?;
    }
    Ok(OwnerChange {
        ids,
        status: pb::SubscriptionStatus::Provisioning,
        reason: why.to_owned(),
        at: now,
    })
}

/// Subscriptions an account change suspended or resumed in its
/// transaction, with the status and event it gave them.
#[derive(Debug)]
#[must_use = "announce it after the commit, or the reconciler waits for its resync"]
pub struct OwnerChange {
    /// The subscriptions.
    pub ids: Vec<String>,
    /// Their new status.
    pub status: pb::SubscriptionStatus,
    /// Its reason.
    pub reason: String,
    /// When (Unix ms).
    pub at: i64,
}

/// How many subscriptions run `service_id` (a catalog entry with any
/// cannot be deleted).
pub async fn count_for_service(tx: &mut Tx, service_id: &str) -> AppResult<i64> {
    Ok(with_conn!(tx, |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM subscriptions WHERE service_id = $1"
    )
    .bind(service_id)
    .fetch_one(c)
    .await)?)
}

/// Counts by status, and by service (count, revenue of those neither
/// suspended nor deleted).
pub async fn stats(db: &Db) -> AppResult<(Vec<(String, i64)>, Vec<(String, String, i64, i64)>)> {
    Ok(with_conn!(db.read(), |c| {
        let by_status = sqlx::query_as(
            "SELECT status, COUNT(*) FROM subscriptions WHERE desired <> 'DELETED' GROUP BY status",
        )
        .fetch_all(&mut *c)
        .await?;
        let by_service = sqlx::query_as(
            "SELECT service_id, MAX(service_name), COUNT(*),
                CAST(COALESCE(SUM(CASE WHEN desired = 'RUNNING' THEN monthly_price_cents ELSE 0 END), 0) AS BIGINT)
             FROM subscriptions WHERE desired <> 'DELETED'
             GROUP BY service_id ORDER BY COUNT(*) DESC, MAX(service_name)",
        )
        .fetch_all(&mut *c)
        .await?;
        (by_status, by_service)
    }))
}

/// Volumes of deleted subscriptions, kept until `delete_after`.
pub async fn retain_volumes(
    tx: &mut Tx,
    namespace: &str,
    claims: &[(String, i64)],
    delete_after: i64,
) -> AppResult<()> {
    for (n, size_gb) in claims {
        with_conn!(&mut *tx, |c| sqlx::query(
            "INSERT INTO retained_volumes (namespace, name, delete_after, size_gb)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (namespace, name) DO UPDATE SET
                 delete_after = excluded.delete_after, size_gb = excluded.size_gb"
        )
        .bind(namespace)
        .bind(n)
        .bind(delete_after)
        .bind(size_gb)
        .execute(c)
        .await
        .map(|_| ()))?;
    }
    Ok(())
}

/// Retained volumes whose time has come: (namespace, name).
pub async fn expired_volumes(db: &Db) -> AppResult<Vec<(String, String)>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT namespace, name FROM retained_volumes WHERE delete_after <= $1 LIMIT 100"
    )
    .bind(now_ms())
    .fetch_all(c)
    .await)?)
}

/// Whether the claim `namespace/name` is still retained and past its time.
pub async fn volume_expired(db: &Db, namespace: &str, name: &str) -> AppResult<bool> {
    let found: Option<i32> = with_conn!(db.read(), |c| {
        sqlx::query_scalar(
        "SELECT 1 FROM retained_volumes WHERE namespace = $1 AND name = $2 AND delete_after <= $3"
    )
    .bind(namespace)
    .bind(name)
    .bind(now_ms())
    .fetch_optional(c)
    .await
    })?;
    Ok(found.is_some())
}

/// Forgets a retained volume (deleted, or claimed again by a new
/// subscription of the same name).
pub async fn forget_volume(db: &Db, namespace: &str, name: &str) -> AppResult<()> {
    let mut tx = db.begin().await?;
    with_conn!(&mut tx, |c| sqlx::query(
        "DELETE FROM retained_volumes WHERE namespace = $1 AND name = $2"
    )
    .bind(namespace)
    .bind(name)
    .execute(c)
    .await
    .map(|_| ()))?;
    tx.commit().await?;
    Ok(())
}

/// Whether `user_id` is active; None when the account is gone.
pub async fn owner_active(db: &Db, user_id: &str) -> AppResult<Option<bool>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_scalar(
        "SELECT active FROM users WHERE id = $1"
    )
    .bind(user_id)
    .fetch_optional(c)
    .await)?)
}

/// Workers that take new subscriptions: ACTIVE and not cordoned.
pub async fn schedulable_workers(tx: &mut Tx) -> AppResult<Vec<String>> {
    Ok(with_conn!(tx, |c| sqlx::query_scalar(
        "SELECT id FROM workers WHERE status = 'ACTIVE' AND NOT cordoned"
    )
    .fetch_all(c)
    .await)?)
}

/// (id, template) of every subscription meant to run: what admission
/// counts as taken until its pods are scheduled.
pub async fn running_templates(tx: &mut Tx) -> AppResult<Vec<(String, Vec<u8>)>> {
    Ok(with_conn!(tx, |c| sqlx::query_as(
        "SELECT id, template FROM subscriptions WHERE desired = 'RUNNING'"
    )
    .fetch_all(c)
    .await)?)
}

/// A deployable service by id or slug: (id, slug, name, active, price, template).
pub async fn deployable(
    db: &Db,
    id_or_slug: &str,
) -> AppResult<Option<(String, String, String, bool, i64, Option<Vec<u8>>)>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT id, slug, name, active, monthly_price_cents, template FROM services
         WHERE id = $1 OR slug = $1"
    )
    .bind(id_or_slug)
    .fetch_optional(c)
    .await)?)
}

/// NOT_FOUND for a subscription the caller may not see.
pub fn not_found(id: &str) -> AppError {
    AppError::NotFound(format!("no subscription with id {id:?}"))
}

/// Why subscription `sub` is held stopped by a backup or a restore
/// (`crate::backups`), if it is, and the components the hold leaves
/// running (comma-separated).
pub async fn held(db: &Db, sub: &str) -> AppResult<Option<(String, String)>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT reason, live FROM subscription_holds WHERE subscription_id = $1"
    )
    .bind(sub)
    .fetch_optional(c)
    .await)?)
}

/// Whether a backup or a restore of subscription `sub` is under way
/// (`crate::backups`): nothing else may change its volumes or version
/// meanwhile.
pub async fn copying(tx: &mut Tx, sub: &str) -> AppResult<bool> {
    let n: i64 = with_conn!(tx, |c| sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM backups WHERE subscription_id = $1
                    AND status IN ('PENDING', 'RUNNING'))
              + (SELECT COUNT(*) FROM restores WHERE subscription_id = $1
                    AND status IN ('PENDING', 'RUNNING'))"
    )
    .bind(sub)
    .fetch_one(c)
    .await)?;
    Ok(n > 0)
}

/// The newest complete backup of subscription `sub` taken at `version`
/// and finished after `since` (Unix ms), if any: what lets an upgrade past
/// a one-way version go ahead.
pub async fn recent_backup(
    db: &Db,
    sub: &str,
    version: &str,
    since: i64,
) -> AppResult<Option<String>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_scalar(
        "SELECT id FROM backups WHERE subscription_id = $1 AND service_version = $2
            AND status = 'COMPLETE' AND finished_at > $3
         ORDER BY finished_at DESC LIMIT 1"
    )
    .bind(sub)
    .bind(version)
    .bind(since)
    .fetch_optional(c)
    .await)?)
}
