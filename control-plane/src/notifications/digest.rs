//! The administrators' digest of subscriptions more than N versions behind
//! (issue #25, `--versions-behind-digest N`, VERSIONS_BEHIND).
//!
//! How far behind a subscription is: how many versions of its catalog
//! entry that are not withdrawn are newer than the one it runs ([`behind`],
//! a pure function). Every `--versions-behind-digest-every` (looked at up
//! to once a minute) each replica lists the subscriptions (not deleted)
//! more than N behind; when there are any, one write transaction claims
//! the digest (`notice_digests`: its last-sent time, moved only when the
//! period has passed since, so one replica sends it, and a restart does
//! not send it again) and queues one notice for the administrators who
//! want VERSIONS_BEHIND, through [`Notifier::queue`] (mail, webhook, their
//! preferences). Nothing is sent, and nothing stored, when nobody is that
//! far behind.

use std::{collections::HashMap, time::Duration};

use minispod_proto::v1 as pb;
use serde_json::{Map, json};

use super::{Notifier, notices::Notice};
use crate::{
    catalog::versions::{self, Version, VersionSummary},
    error::AppResult,
    store::{Db, Tx, now_ms},
    with_conn,
};

/// The digest's name in `notice_digests`.
const NAME: &str = "versions_behind";
/// The most subscriptions one digest lists (the rest are counted).
const LISTED: usize = 100;
/// The most subscriptions one pass reads.
const READ_LIMIT: i64 = 100_000;
/// How often, at most, the subscriptions are looked at.
const LOOK_EVERY: Duration = Duration::from_secs(60);

/// `--versions-behind-digest` and `--versions-behind-digest-every`.
#[derive(Debug, Clone, Copy)]
pub struct DigestSettings {
    /// More than this many versions behind is listed; 0: no digest.
    pub behind: u32,
    /// At most one digest in this period.
    pub every: Duration,
}

/// A subscription as the digest reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubscriptionLine {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its owner's address.
    pub owner: String,
    /// Its catalog entry.
    pub service_id: String,
    /// The entry's name.
    pub service_name: String,
    /// The version it runs.
    pub version: String,
}

/// One subscription listed in the digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behind {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its owner's address.
    pub owner: String,
    /// The entry's name.
    pub service: String,
    /// The version it runs ('' when unknown).
    pub version: String,
    /// The entry's newest version that is not withdrawn.
    pub newest: String,
    /// How many versions that are not withdrawn are newer than its own.
    pub behind: usize,
}

/// The subscriptions of `subs` more than `n` versions behind, by the
/// versions of each entry in `versions` (newest first): most behind
/// first, then by entry and name.
pub fn behind(
    subs: &[SubscriptionLine],
    versions: &HashMap<String, Vec<VersionSummary>>,
    n: u32,
) -> Vec<Behind> {
    let mut out: Vec<Behind> = subs
        .iter()
        .filter_map(|s| {
            let list = versions.get(&s.service_id)?;
            let mine = Version::lenient(&s.version);
            let newer: Vec<&VersionSummary> = list
                .iter()
                .filter(|v| !v.withdrawn && v.version > mine)
                .collect();
            (newer.len() > n as usize).then(|| Behind {
                id: s.id.clone(),
                name: s.name.clone(),
                owner: s.owner.clone(),
                service: s.service_name.clone(),
                version: s.version.clone(),
                newest: newer[0].version.to_string(),
                behind: newer.len(),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.behind
            .cmp(&a.behind)
            .then_with(|| a.service.cmp(&b.service))
            .then_with(|| a.name.cmp(&b.name))
    });
    out
}

/// The digest's notice for `list` (more than `n` behind).
pub fn notice(list: &[Behind], n: u32, at: i64) -> Notice {
    let total = list.len();
    let plural = |k: usize, one: &str, many: &str| {
        if k == 1 {
            format!("{k} {one}")
        } else {
            format!("{k} {many}")
        }
    };
    let mut paragraphs = vec![format!(
        "{} more than {} behind the newest version of {}:",
        plural(
            total,
            "subscription runs a version",
            "subscriptions run versions"
        ),
        plural(n as usize, "version", "versions"),
        if total == 1 {
            "its entry"
        } else {
            "their entries"
        },
    )];
    for b in list.iter().take(LISTED) {
        paragraphs.push(format!(
            "{} ({}) of {}: version {}, newest {}, {} behind.",
            b.name,
            b.service,
            b.owner,
            super::super::subscriptions::upgrade::display(&b.version),
            b.newest,
            plural(b.behind, "version", "versions"),
        ));
    }
    if total > LISTED {
        paragraphs.push(format!("… and {} more.", total - LISTED));
    }
    paragraphs.push(
        "Owners see \"update available\" on each; you can upgrade all of an entry's \
         subscriptions from its versions card."
            .into(),
    );
    let mut fields = Map::new();
    fields.insert("total".into(), total.into());
    fields.insert(
        "subscriptions".into(),
        list.iter()
            .take(LISTED)
            .map(|b| {
                json!({
                    "id": b.id, "name": b.name, "owner": b.owner, "service": b.service,
                    "version": b.version, "newest": b.newest, "behind": b.behind,
                })
            })
            .collect(),
    );
    Notice {
        event: pb::NotificationEvent::VersionsBehind,
        purpose: "versions_behind",
        summary: format!(
            "{} more than {} behind",
            plural(total, "subscription", "subscriptions"),
            plural(n as usize, "version", "versions")
        ),
        paragraphs,
        action: ("Open the subscriptions", "/subscriptions".into()),
        at,
        fields,
    }
}

/// Claims the digest at `now` in `tx`: true (and its last-sent time is
/// `now`) when none was sent within `every` before.
pub async fn claim(tx: &mut Tx, now: i64, every: Duration) -> AppResult<bool> {
    with_conn!(&mut *tx, |c| sqlx::query(
        "INSERT INTO notice_digests (name, sent_at) VALUES ($1, 0)
         ON CONFLICT (name) DO NOTHING"
    )
    .bind(NAME)
    .execute(c)
    .await
    .map(|_| ()))?;
    let n = with_conn!(&mut *tx, |c| sqlx::query(
        "UPDATE notice_digests SET sent_at = $2 WHERE name = $1 AND sent_at <= $3"
    )
    .bind(NAME)
    .bind(now)
    .bind(now - every.as_millis() as i64)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// When the digest was last sent (Unix ms; 0 never).
async fn last_sent(db: &Db) -> AppResult<i64> {
    let at: Option<i64> = with_conn!(db.read(), |c| sqlx::query_scalar(
        "SELECT sent_at FROM notice_digests WHERE name = $1"
    )
    .bind(NAME)
    .fetch_optional(c)
    .await)?;
    Ok(at.unwrap_or(0))
}

/// One look at `now`: how many messages were queued (0 when it was not
/// due, nobody is behind, or another replica sent it).
pub async fn pass(
    db: &Db,
    notifier: &Notifier,
    settings: DigestSettings,
    now: i64,
) -> AppResult<usize> {
    if settings.behind == 0 || now - last_sent(db).await? < settings.every.as_millis() as i64 {
        return Ok(0);
    }
    let subs: Vec<SubscriptionLine> = with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT s.id, s.name, COALESCE(u.email, s.user_email) AS owner, s.service_id,
            s.service_name, s.version
         FROM subscriptions s LEFT JOIN users u ON u.id = s.user_id
         WHERE s.desired <> 'DELETED' ORDER BY s.id LIMIT $1"
    )
    .bind(READ_LIMIT)
    .fetch_all(c)
    .await)?;
    let mut services: Vec<String> = subs.iter().map(|s| s.service_id.clone()).collect();
    services.sort();
    services.dedup();
    let versions = versions::summaries(db, &services).await?;
    let list = behind(&subs, &versions, settings.behind);
    if list.is_empty() {
        return Ok(0);
    }
    let mut tx = db.begin().await?;
    if !claim(&mut tx, now, settings.every).await? {
        return Ok(0);
    }
    let queued = notifier
        .queue(&mut tx, &notice(&list, settings.behind, now))
        .await?;
    tx.commit().await?;
    tracing::info!(
        subscriptions = list.len(),
        queued,
        "versions-behind digest sent"
    );
    if queued > 0 {
        notifier.wake();
    }
    Ok(queued)
}

/// Starts the digest loop; None when the digest is off.
pub fn spawn(
    db: Db,
    notifier: Notifier,
    settings: DigestSettings,
) -> Option<tokio::task::JoinHandle<()>> {
    if settings.behind == 0 {
        return None;
    }
    Some(tokio::spawn(async move {
        let every = settings
            .every
            .min(LOOK_EVERY)
            .max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = pass(&db, &notifier, settings, now_ms()).await {
                tracing::warn!(error = %e, "versions-behind digest failed; next time");
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, service: &str, version: &str) -> SubscriptionLine {
        SubscriptionLine {
            id: format!("id-{name}"),
            name: name.into(),
            owner: format!("{name}@example.com"),
            service_id: service.into(),
            service_name: service.to_uppercase(),
            version: version.into(),
        }
    }

    fn summary(v: &str, withdrawn: bool) -> VersionSummary {
        VersionSummary {
            version: Version::lenient(v),
            notes: String::new(),
            withdrawn,
        }
    }

    #[test]
    fn behind_counts_the_newer_versions_that_are_not_withdrawn() {
        let versions = HashMap::from([(
            "n8n".to_owned(),
            vec![
                summary("1.80.0", false),
                summary("1.75.0", true),
                summary("1.70.3", false),
                summary("1.64.1", false),
                summary("1.64.0", false),
            ],
        )]);
        let subs = vec![
            line("a", "n8n", "1.64.0"),
            line("b", "n8n", "1.64.1"),
            line("c", "n8n", "1.80.0"),
            line("d", "n8n", ""),
            line("e", "ghost", "5.0"),
        ];
        let got = behind(&subs, &versions, 1);
        let seen: Vec<(&str, usize, &str)> = got
            .iter()
            .map(|b| (b.name.as_str(), b.behind, b.newest.as_str()))
            .collect();
        // d (unversioned) is behind all four; a three; b two.
        assert_eq!(
            seen,
            vec![("d", 4, "1.80.0"), ("a", 3, "1.80.0"), ("b", 2, "1.80.0")]
        );
        assert_eq!(behind(&subs, &versions, 3).len(), 1);
        assert!(behind(&subs, &versions, 4).is_empty());
    }

    #[test]
    fn the_notice_lists_each_with_its_owner_version_newest_and_distance() {
        let list = vec![Behind {
            id: "x".into(),
            name: "flows".into(),
            owner: "ann@example.com".into(),
            service: "n8n".into(),
            version: "1.64.0".into(),
            newest: "1.70.3".into(),
            behind: 2,
        }];
        let n = notice(&list, 1, 0);
        assert_eq!(n.summary, "1 subscription more than 1 version behind");
        assert_eq!(
            n.paragraphs[1],
            "flows (n8n) of ann@example.com: version 1.64.0, newest 1.70.3, 2 versions behind."
        );
        assert_eq!(n.fields["subscriptions"][0]["behind"], 2);
        assert_eq!(n.event, pb::NotificationEvent::VersionsBehind);
    }

    #[tokio::test]
    async fn a_digest_is_claimed_once_per_period_across_a_restart() {
        let dir = std::env::temp_dir().join(format!("minispod-digest-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let hour = Duration::from_secs(3600);
        let t0 = 1_000_000_000_000;
        let db = Db::connect(None, &dir, &Default::default()).await.unwrap();
        let mut tx = db.begin().await.unwrap();
        assert!(claim(&mut tx, t0, hour).await.unwrap(), "never sent");
        tx.commit().await.unwrap();
        let mut tx = db.begin().await.unwrap();
        assert!(!claim(&mut tx, t0 + 60_000, hour).await.unwrap());
        drop(tx);
        db.close().await;
        // A restart reads the time it was sent.
        let db = Db::connect(None, &dir, &Default::default()).await.unwrap();
        assert_eq!(last_sent(&db).await.unwrap(), t0);
        let mut tx = db.begin().await.unwrap();
        assert!(!claim(&mut tx, t0 + 3_599_000, hour).await.unwrap());
        drop(tx);
        let mut tx = db.begin().await.unwrap();
        assert!(claim(&mut tx, t0 + 3_600_000, hour).await.unwrap());
        tx.commit().await.unwrap();
        assert_eq!(last_sent(&db).await.unwrap(), t0 + 3_600_000);
        db.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
