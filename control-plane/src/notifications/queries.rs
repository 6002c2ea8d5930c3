//! SQL of notifications: preferences, who receives an event, and the
//! worker incident rows.

use minispod_proto::v1 as pb;
use sqlx::FromRow;

use super::{event_name, incidents::Incident};
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

/// Every event one can opt in to.
pub fn all_events() -> impl Iterator<Item = pb::NotificationEvent> {
    (1..)
        .map_while(|n| pb::NotificationEvent::try_from(n).ok())
        .filter(|e| *e != pb::NotificationEvent::Unspecified)
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

/// The preferences of `user_id` (all off when never set).
pub async fn preferences<'c>(
    exec: impl Into<Conn<'c>>,
    user_id: &str,
) -> AppResult<PreferencesRow> {
    let row: Option<PreferencesRow> = with_conn!(exec, |c| sqlx::query_as(
        "SELECT user_id, mail, webhook_url, webhook_secret, events
         FROM notification_preferences WHERE user_id = $1"
    )
    .bind(user_id)
    .fetch_optional(c)
    .await)?;
    Ok(row.unwrap_or_else(|| PreferencesRow {
        user_id: user_id.to_owned(),
        events: ",".into(),
        ..PreferencesRow::default()
    }))
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

/// The recipient of a test notice: `user_id` as they set things up.
pub async fn recipient<'c>(
    exec: impl Into<Conn<'c>>,
    user_id: &str,
) -> AppResult<Option<Recipient>> {
    Ok(with_conn!(exec, |c| sqlx::query_as(
        "SELECT u.id AS user_id, u.email, u.name, p.mail, p.webhook_url
         FROM notification_preferences p JOIN users u ON u.id = p.user_id
         WHERE u.id = $1"
    )
    .bind(user_id)
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
