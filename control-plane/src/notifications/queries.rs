//! SQL of notifications: preferences, who receives an event, the worker
//! and subscription incident rows.

use minispod_proto::v1 as pb;
use sqlx::FromRow;

use super::{
    CUSTOMER_EVENTS, event_name,
    incidents::Incident,
    outages::Outage,
    thresholds::{Metric, Rule, Rules, Threshold},
};
use crate::{
    error::AppResult,
    store::{Conn, Tx, now_ms},
    with_conn,
    workers::status,
};

/// An administrator's preferences as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, FromRow)]
pub struct PreferencesRow {
    /// The administrator.
    pub user_id: String,
    /// Mail notices on.
    pub mail: bool,
    /// Webhook URL, or empty.
    pub webhook_url: String,
    /// HMAC key of webhook signatures, or empty.
    pub webhook_secret: String,
    /// `,WORKER_OFFLINE,WORKER_ONLINE,` (see [`event_name`]).
    pub events: String,
}

impl PreferencesRow {
    /// The wanted events, in enum order.
    pub fn events(&self) -> Vec<pb::NotificationEvent> {
        all_events()
            .filter(|e| self.events.contains(&format!(",{},", event_name(*e))))
            .collect()
    }

    /// As the API shows them (never the secret).
    pub fn to_pb(&self) -> pb::NotificationPreferences {
        pb::NotificationPreferences {
            mail: self.mail,
            webhook_url: self.webhook_url.clone(),
            webhook_secret_set: !self.webhook_secret.is_empty(),
            events: self.events().into_iter().map(|e| e as i32).collect(),
        }
    }
}

/// Above the largest NotificationEvent number (a unit test checks it).
const MAX_EVENT: i32 = 64;

/// Every event one can opt in to.
pub fn all_events() -> impl Iterator<Item = pb::NotificationEvent> {
    // Every number an event may have, not up to the first gap: a value
    // retired from the enum leaves one.
    (1..=MAX_EVENT).filter_map(|n| pb::NotificationEvent::try_from(n).ok())
}

/// `events` as stored: `,A,B,`, or `,` for none.
pub fn events_column(events: &[pb::NotificationEvent]) -> String {
    let mut s = String::from(",");
    for e in all_events().filter(|e| events.contains(e)) {
        s.push_str(event_name(e));
        s.push(',');
    }
    s
}

/// What a user who never set preferences gets: nothing for an
/// administrator; mail for every subscription event for a customer.
pub fn default_preferences(user_id: &str, admin: bool) -> PreferencesRow {
    if admin {
        PreferencesRow {
            user_id: user_id.to_owned(),
            events: ",".into(),
            ..PreferencesRow::default()
        }
    } else {
        PreferencesRow {
            user_id: user_id.to_owned(),
            mail: true,
            events: events_column(&CUSTOMER_EVENTS),
            ..PreferencesRow::default()
        }
    }
}

/// The preferences of `user_id` (see [`default_preferences`] when never
/// set; `admin`: the user is an administrator).
pub async fn preferences<'c>(
    exec: impl Into<Conn<'c>>,
    user_id: &str,
    admin: bool,
) -> AppResult<PreferencesRow> {
    let row: Option<PreferencesRow> = with_conn!(exec, |c| sqlx::query_as(
        "SELECT user_id, mail, webhook_url, webhook_secret, events
         FROM notification_preferences WHERE user_id = $1"
    )
    .bind(user_id)
    .fetch_optional(c)
    .await)?;
    Ok(row.unwrap_or_else(|| default_preferences(user_id, admin)))
}

/// Stores `p`.
pub async fn save_preferences(tx: &mut Tx, p: &PreferencesRow) -> AppResult<()> {
    with_conn!(&mut *tx, |c| sqlx::query(
        "INSERT INTO notification_preferences
             (user_id, mail, webhook_url, webhook_secret, events, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (user_id) DO UPDATE SET mail = $2, webhook_url = $3,
             webhook_secret = $4, events = $5, updated_at = $6"
    )
    .bind(&p.user_id)
    .bind(p.mail)
    .bind(&p.webhook_url)
    .bind(&p.webhook_secret)
    .bind(&p.events)
    .bind(now_ms())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Who a notice goes to.
#[derive(Debug, Clone, FromRow)]
pub struct Recipient {
    /// The administrator (whose secret signs the webhook).
    pub user_id: String,
    /// Their address.
    pub email: String,
    /// Their name, for the greeting.
    pub name: String,
    /// Mail on.
    pub mail: bool,
    /// Webhook URL, or empty.
    pub webhook_url: String,
}

/// The active administrators who want `event` and have a way to get it.
pub async fn recipients<'c>(
    exec: impl Into<Conn<'c>>,
    event: pb::NotificationEvent,
) -> AppResult<Vec<Recipient>> {
    Ok(with_conn!(exec, |c| sqlx::query_as(
        "SELECT u.id AS user_id, u.email, u.name, p.mail, p.webhook_url
         FROM notification_preferences p JOIN users u ON u.id = p.user_id
         WHERE u.role = 'ADMINISTRATOR' AND u.active AND p.events LIKE $1
           AND (p.mail OR p.webhook_url <> '')
         ORDER BY u.id"
    )
    .bind(format!("%,{},%", event_name(event)))
    .fetch_all(c)
    .await)?)
}

/// A user as the owner of a subscription, with their preferences if they
/// set any.
#[derive(Debug, Clone, FromRow)]
struct OwnerRow {
    user_id: String,
    email: String,
    name: String,
    role: String,
    mail: Option<bool>,
    webhook_url: Option<String>,
    events: Option<String>,
}

/// The owner `user_id` as the recipient of `event` about their own
/// subscription: None when the account is inactive or gone, or they do not
/// want it (the defaults of [`default_preferences`] when never set).
pub async fn owner_recipient<'c>(
    exec: impl Into<Conn<'c>>,
    user_id: &str,
    event: pb::NotificationEvent,
) -> AppResult<Option<(Recipient, bool)>> {
    let row: Option<OwnerRow> = with_conn!(exec, |c| sqlx::query_as(
        "SELECT u.id AS user_id, u.email, u.name, u.role, p.mail, p.webhook_url, p.events
         FROM users u LEFT JOIN notification_preferences p ON p.user_id = u.id
         WHERE u.id = $1 AND u.active"
    )
    .bind(user_id)
    .fetch_optional(c)
    .await)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let admin = row.role == "ADMINISTRATOR";
    let prefs = match (row.mail, row.webhook_url, row.events) {
        (Some(mail), Some(webhook_url), Some(events)) => PreferencesRow {
            user_id: row.user_id.clone(),
            mail,
            webhook_url,
            webhook_secret: String::new(),
            events,
        },
        _ => default_preferences(&row.user_id, admin),
    };
    if !prefs.events.contains(&format!(",{},", event_name(event))) {
        return Ok(None);
    }
    Ok(Some((
        Recipient {
            user_id: row.user_id,
            email: row.email,
            name: row.name,
            mail: prefs.mail,
            webhook_url: prefs.webhook_url,
        },
        admin,
    )))
}

const OUTAGE_COLUMNS: &str = "subscription_id, user_id, name, status, reason, down_since, \
    down_notified, flap_window_start, flap_window_end, flap_outages, restarts, crash_marks, \
    crash_notified, due_at";

/// The incident row of a subscription.
pub async fn outage<'c>(exec: impl Into<Conn<'c>>, id: &str) -> AppResult<Option<Outage>> {
    let sql =
        format!("SELECT {OUTAGE_COLUMNS} FROM subscription_incidents WHERE subscription_id = $1");
    Ok(with_conn!(exec, |c| sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(c)
        .await)?)
}

/// Stores `o` (nothing when its subscription is gone).
pub async fn save_outage(tx: &mut Tx, o: &Outage) -> AppResult<()> {
    let sql = format!(
        "INSERT INTO subscription_incidents ({OUTAGE_COLUMNS})
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14
         WHERE EXISTS (SELECT 1 FROM subscriptions WHERE id = $1)
         ON CONFLICT (subscription_id) DO UPDATE SET user_id = $2, name = $3, status = $4,
             reason = $5, down_since = $6, down_notified = $7, flap_window_start = $8,
             flap_window_end = $9, flap_outages = $10, restarts = $11, crash_marks = $12,
             crash_notified = $13, due_at = $14"
    );
    with_conn!(&mut *tx, |c| sqlx::query(&sql)
        .bind(&o.subscription_id)
        .bind(&o.user_id)
        .bind(&o.name)
        .bind(&o.status)
        .bind(&o.reason)
        .bind(o.down_since)
        .bind(o.down_notified)
        .bind(o.flap_window_start)
        .bind(o.flap_window_end)
        .bind(o.flap_outages)
        .bind(o.restarts)
        .bind(&o.crash_marks)
        .bind(o.crash_notified)
        .bind(o.due_at)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Forgets the incident row of a subscription that is quiet again.
pub async fn delete_outage(tx: &mut Tx, id: &str) -> AppResult<()> {
    with_conn!(&mut *tx, |c| sqlx::query(
        "DELETE FROM subscription_incidents WHERE subscription_id = $1"
    )
    .bind(id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Subscriptions whose incident has a deadline at or before `now`.
pub async fn due_outages<'c>(exec: impl Into<Conn<'c>>, now: i64) -> AppResult<Vec<String>> {
    Ok(with_conn!(exec, |c| sqlx::query_scalar(
        "SELECT subscription_id FROM subscription_incidents WHERE due_at <= $1 ORDER BY due_at"
    )
    .bind(now)
    .fetch_all(c)
    .await)?)
}

/// The status a subscription's row holds now (in the caller's transaction:
/// the one the reconciler just wrote).
pub async fn subscription_status<'c>(
    exec: impl Into<Conn<'c>>,
    id: &str,
) -> AppResult<Option<String>> {
    Ok(with_conn!(exec, |c| sqlx::query_scalar(
        "SELECT status FROM subscriptions WHERE id = $1"
    )
    .bind(id)
    .fetch_optional(c)
    .await)?)
}

const INCIDENT_COLUMNS: &str = "worker_id, observed_at, offline_since, offline_notified, \
    not_ready_since, not_ready_notified, flap_window_start, flap_window_end, flap_outages, due_at";

/// The incident row of a worker.
pub async fn incident<'c>(
    exec: impl Into<Conn<'c>>,
    worker_id: &str,
) -> AppResult<Option<Incident>> {
    let sql = format!("SELECT {INCIDENT_COLUMNS} FROM worker_incidents WHERE worker_id = $1");
    Ok(with_conn!(exec, |c| sqlx::query_as(&sql)
        .bind(worker_id)
        .fetch_optional(c)
        .await)?)
}

/// Stores `i`.
pub async fn save_incident(tx: &mut Tx, i: &Incident) -> AppResult<()> {
    let sql = format!(
        "INSERT INTO worker_incidents ({INCIDENT_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (worker_id) DO UPDATE SET observed_at = $2, offline_since = $3,
             offline_notified = $4, not_ready_since = $5, not_ready_notified = $6,
             flap_window_start = $7, flap_window_end = $8, flap_outages = $9, due_at = $10"
    );
    with_conn!(&mut *tx, |c| sqlx::query(&sql)
        .bind(&i.worker_id)
        .bind(i.observed_at)
        .bind(i.offline_since)
        .bind(i.offline_notified)
        .bind(i.not_ready_since)
        .bind(i.not_ready_notified)
        .bind(i.flap_window_start)
        .bind(i.flap_window_end)
        .bind(i.flap_outages)
        .bind(i.due_at)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Forgets the incident row of a deleted worker.
pub async fn delete_incident(tx: &mut Tx, worker_id: &str) -> AppResult<()> {
    with_conn!(&mut *tx, |c| sqlx::query(
        "DELETE FROM worker_incidents WHERE worker_id = $1"
    )
    .bind(worker_id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Workers whose incident has a deadline at or before `now`.
pub async fn due_incidents<'c>(exec: impl Into<Conn<'c>>, now: i64) -> AppResult<Vec<String>> {
    Ok(with_conn!(exec, |c| sqlx::query_scalar(
        "SELECT worker_id FROM worker_incidents WHERE due_at <= $1 ORDER BY due_at"
    )
    .bind(now)
    .fetch_all(c)
    .await)?)
}

/// The earliest deadline of any incident.
pub async fn next_due<'c>(exec: impl Into<Conn<'c>>) -> AppResult<Option<i64>> {
    Ok(with_conn!(exec, |c| sqlx::query_scalar(
        "SELECT MIN(due_at) FROM worker_incidents"
    )
    .fetch_one(c)
    .await)?)
}

/// The workers a catch-up must look at: those with an incident row (their
/// worker may be gone), and those whose status can start one (offline, not
/// ready). A healthy worker without a row has nothing to tell.
pub async fn workers_to_look_at<'c>(exec: impl Into<Conn<'c>>) -> AppResult<Vec<String>> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT id FROM workers WHERE status IN ('{}', '{}')
             UNION SELECT worker_id FROM worker_incidents",
            status::to_db(pb::WorkerStatus::Inactive),
            status::to_db(pb::WorkerStatus::NotReady)
        )
    });
    Ok(with_conn!(exec, |c| sqlx::query_scalar(SQL.as_str())
        .fetch_all(c)
        .await)?)
}

/// A threshold as stored.
#[derive(Debug, Clone, FromRow)]
struct ThresholdRow {
    worker_id: String,
    metric: String,
    above_percent: f64,
    clear_below_percent: f64,
    for_ms: i64,
}

/// Every threshold on the workers' figures, fleet-wide ones first.
pub async fn thresholds<'c>(exec: impl Into<Conn<'c>>) -> AppResult<Vec<Threshold>> {
    let rows: Vec<ThresholdRow> = with_conn!(exec, |c| sqlx::query_as(
        "SELECT worker_id, metric, above_percent, clear_below_percent, for_ms
         FROM worker_thresholds ORDER BY worker_id, metric"
    )
    .fetch_all(c)
    .await)?;
    let mut list: Vec<Threshold> = rows
        .into_iter()
        .filter_map(|r| {
            Some(Threshold {
                metric: Metric::from_db(&r.metric)?,
                worker_id: r.worker_id,
                rule: Rule {
                    above: r.above_percent,
                    clear_below: r.clear_below_percent,
                    for_ms: r.for_ms,
                },
            })
        })
        .collect();
    list.sort_by(|a, b| (&a.worker_id, a.metric).cmp(&(&b.worker_id, b.metric)));
    Ok(list)
}

/// Replaces every threshold with `list`, and forgets the crossings no
/// threshold covers any more (nothing clears them now).
pub async fn replace_thresholds(tx: &mut Tx, list: &[Threshold]) -> AppResult<()> {
    with_conn!(&mut *tx, |c| sqlx::query("DELETE FROM worker_thresholds")
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    for t in list {
        with_conn!(&mut *tx, |c| {
            sqlx::query(
            "INSERT INTO worker_thresholds (worker_id, metric, above_percent, clear_below_percent, for_ms)
             VALUES ($1, $2, $3, $4, $5)"
        )
        .bind(&t.worker_id)
        .bind(t.metric.to_db())
        .bind(t.rule.above)
        .bind(t.rule.clear_below)
        .bind(t.rule.for_ms)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
        })?;
    }
    let rules = Rules::new(list);
    for c in crossings(&mut *tx).await? {
        let covered =
            Metric::from_db(&c.metric).is_some_and(|m| rules.rule_for(&c.worker_id, m).is_some());
        if !covered {
            remove_crossing(tx, &c.worker_id, &c.metric).await?;
        }
    }
    Ok(())
}

/// A threshold crossed now.
#[derive(Debug, Clone, FromRow)]
pub struct CrossingRow {
    /// The worker.
    pub worker_id: String,
    /// Its name.
    pub worker_name: String,
    /// The metric as stored.
    pub metric: String,
    /// Past the level since then.
    pub since: i64,
    /// The figure when told.
    pub percent: f64,
}

/// The thresholds crossed now.
pub async fn crossings<'c>(exec: impl Into<Conn<'c>>) -> AppResult<Vec<CrossingRow>> {
    Ok(with_conn!(exec, |c| sqlx::query_as(
        "SELECT c.worker_id, w.name AS worker_name, c.metric, c.since, c.percent
         FROM worker_threshold_crossings c JOIN workers w ON w.id = c.worker_id
         ORDER BY w.name, c.metric"
    )
    .fetch_all(c)
    .await)?)
}

/// Records a crossing; false when it was recorded already (told then).
pub async fn add_crossing(
    tx: &mut Tx,
    worker_id: &str,
    metric: &str,
    since: i64,
    percent: f64,
) -> AppResult<bool> {
    let n = with_conn!(&mut *tx, |c| sqlx::query(
        "INSERT INTO worker_threshold_crossings (worker_id, metric, since, percent)
         VALUES ($1, $2, $3, $4) ON CONFLICT (worker_id, metric) DO NOTHING"
    )
    .bind(worker_id)
    .bind(metric)
    .bind(since)
    .bind(percent)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Forgets a crossing; its `since` when there was one (None: cleared
/// already, told then).
pub async fn remove_crossing(tx: &mut Tx, worker_id: &str, metric: &str) -> AppResult<Option<i64>> {
    Ok(with_conn!(&mut *tx, |c| sqlx::query_scalar(
        "DELETE FROM worker_threshold_crossings WHERE worker_id = $1 AND metric = $2
         RETURNING since"
    )
    .bind(worker_id)
    .bind(metric)
    .fetch_optional(c)
    .await)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_is_offered_and_the_bound_is_above_them_all() {
        let all: Vec<_> = all_events().collect();
        assert!(all.contains(&pb::NotificationEvent::BackupFailed));
        assert!(!all.contains(&pb::NotificationEvent::Unspecified));
        assert!(
            pb::NotificationEvent::try_from(MAX_EVENT + 1).is_err()
                && all.iter().all(|e| (*e as i32) < MAX_EVENT),
            "raise MAX_EVENT"
        );
    }
}
