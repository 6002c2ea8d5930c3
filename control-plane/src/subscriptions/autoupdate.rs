//! Auto-update of patch versions in a maintenance window (issue #25).
//!
//! A subscription's policy (`subscription_auto_updates`) names a weekly
//! window in UTC: the days it opens on, the minute of the day it opens at
//! and how long it stays open (it may run past midnight). Every
//! `--auto-update-every` each replica looks at the enabled policies whose
//! window is open ([`Window::contains`], a pure function of the time) and,
//! for a RUNNING subscription with a newer patch version ([`candidate`]),
//! starts the upgrade through UpgradeSubscription's own path
//! (`Subscriptions::upgrade_by` with `By::AutoUpdate`): the same checks,
//! rollout, rollback, notices and events.
//!
//! Each version tried is written (`subscription_auto_update_tries`) in the
//! transaction that starts the upgrade, so a version is tried at most once
//! whichever replica gets there first, and one that rolled back is not
//! tried again by itself. A version refused for what it is (the
//! customer's limits: OVER_LIMITS) is written as tried too, so it is not
//! refused again every pass; one refused because the subscription changed
//! meanwhile (no longer RUNNING, say) is looked at again next pass.

use std::{collections::HashMap, time::Duration};

use minispod_proto::v1 as pb;

use super::{Subscriptions, upgrade::By};
use crate::{
    catalog::versions::{self, Version, VersionRow},
    error::{AppError, AppResult, Violations},
    store::{Db, Tx, now_ms, timestamp},
    with_conn,
};

/// Minutes in a week: the longest window.
const WEEK_MINUTES: i64 = 7 * 24 * 60;
/// Minutes in a day.
const DAY_MINUTES: i64 = 24 * 60;
/// The most tried versions a subscription's message lists.
const TRIES_SHOWN: usize = 20;
/// The most policies one pass looks at.
const PASS_LIMIT: i64 = 10_000;

/// A weekly maintenance window in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Days it opens on: bit 0 Monday ... bit 6 Sunday.
    pub days: u8,
    /// Minute of the day it opens at, 0 to 1439.
    pub start_minute: u32,
    /// How long it stays open, 1 to 10080 minutes.
    pub length_minutes: u32,
}

/// Minutes since Monday 00:00 UTC of the week of `now_ms` (Unix ms).
fn minute_of_week(now_ms: i64) -> i64 {
    let minutes = now_ms.div_euclid(60_000);
    // 1970-01-01 was a Thursday (Monday + 3).
    let weekday = (minutes.div_euclid(DAY_MINUTES) + 3).rem_euclid(7);
    weekday * DAY_MINUTES + minutes.rem_euclid(DAY_MINUTES)
}

impl Window {
    /// The minutes of the week at which it opens.
    fn opens(&self) -> impl Iterator<Item = i64> + '_ {
        (0..7)
            .filter(|d| self.days & (1 << d) != 0)
            .map(|d| d * DAY_MINUTES + i64::from(self.start_minute))
    }

    /// How many whole minutes ago the window that is open at `now_ms`
    /// opened; None when it is closed.
    fn open_for(&self, now_ms: i64) -> Option<i64> {
        let m = minute_of_week(now_ms);
        self.opens()
            .map(|open| (m - open).rem_euclid(WEEK_MINUTES))
            .filter(|since| *since < i64::from(self.length_minutes))
            .min()
    }

    /// Whether `now_ms` (Unix ms) is inside the window.
    pub fn contains(&self, now_ms: i64) -> bool {
        self.open_for(now_ms).is_some()
    }

    /// When (Unix ms) the window opened, if it is open at `now_ms`, else
    /// when it next opens; None for a window with no day.
    pub fn next_open(&self, now_ms: i64) -> Option<i64> {
        let minute_start = now_ms - now_ms.rem_euclid(60_000);
        if let Some(since) = self.open_for(now_ms) {
            return Some(minute_start - since * 60_000);
        }
        let m = minute_of_week(now_ms);
        self.opens()
            .map(|open| (open - m).rem_euclid(WEEK_MINUTES))
            .min()
            .map(|ahead| minute_start + ahead * 60_000)
    }

    /// The days as the API's enum values, Monday first.
    fn weekdays(&self) -> Vec<i32> {
        (0..7)
            .filter(|d| self.days & (1 << d) != 0)
            .map(|d| d + 1)
            .collect()
    }
}

/// A subscription's auto-update policy as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Upgrades happen by themselves.
    pub enabled: bool,
    /// When.
    pub window: Window,
}

impl Policy {
    /// The API's message.
    pub fn to_pb(&self) -> pb::AutoUpdatePolicy {
        pb::AutoUpdatePolicy {
            enabled: self.enabled,
            days: self.window.weekdays(),
            start_hour: self.window.start_minute / 60,
            start_minute: self.window.start_minute % 60,
            length_minutes: self.window.length_minutes,
        }
    }

    /// `p` checked field by field: INVALID_ARGUMENT for days that are not
    /// 1 to 7 distinct weekdays, an hour past 23, a minute past 59, a
    /// length of 0 or more than 7 days. A disabled policy with no day
    /// (only "off") is taken as it is.
    pub fn from_pb(p: &pb::AutoUpdatePolicy) -> AppResult<Policy> {
        let mut v = Violations::new();
        if !p.enabled && p.days.is_empty() {
            return Ok(Policy {
                enabled: false,
                window: Window {
                    days: 0,
                    start_minute: 0,
                    length_minutes: 0,
                },
            });
        }
        let mut days = 0u8;
        if p.days.is_empty() {
            v.add("policy.days", "name at least one day of the week");
        }
        for d in &p.days {
            match pb::Weekday::try_from(*d) {
                Ok(w) if w != pb::Weekday::Unspecified => {
                    let bit = 1u8 << (*d - 1);
                    if days & bit != 0 {
                        v.add("policy.days", format!("{} is named twice", w.as_str_name()));
                    }
                    days |= bit;
                }
                _ => v.add(
                    "policy.days",
                    format!("{d} is not a day of the week (1 Monday to 7 Sunday)"),
                ),
            }
        }
        if p.start_hour > 23 {
            v.add("policy.start_hour", "must be 0 to 23 (UTC)");
        }
        if p.start_minute > 59 {
            v.add("policy.start_minute", "must be 0 to 59");
        }
        if p.length_minutes == 0 || i64::from(p.length_minutes) > WEEK_MINUTES {
            v.add(
                "policy.length_minutes",
                format!("must be 1 to {WEEK_MINUTES} minutes (7 days)"),
            );
        }
        v.finish()?;
        Ok(Policy {
            enabled: p.enabled,
            window: Window {
                days,
                start_minute: p.start_hour * 60 + p.start_minute,
                length_minutes: p.length_minutes,
            },
        })
    }
}

/// The version to upgrade `current` to automatically, of `versions`
/// (newest first): the newest patch version of it (newer, the same first
/// two numbers, neither with a pre-release: `Version::same_minor`) that is
/// not withdrawn and not in `tried`, with no one_way version between
/// `current` and it (none is passed automatically).
pub fn candidate<'a>(
    current: &str,
    versions: &'a [VersionRow],
    tried: &[String],
) -> Option<&'a VersionRow> {
    let current = Version::lenient(current);
    let mut best = None;
    for v in versions.iter().rev() {
        let parsed = v.parsed();
        if parsed <= current {
            continue;
        }
        if v.one_way {
            break;
        }
        if parsed.same_minor(&current)
            && v.withdrawn_at.is_none()
            && !tried.iter().any(|t| t == &v.version)
        {
            best = Some(v);
        }
    }
    best
}

/// Records that the auto-update tries `version` on `subscription_id`;
/// false when it was tried already (by this or another replica).
pub async fn record_try(
    tx: &mut Tx,
    subscription_id: &str,
    version: &str,
    now: i64,
) -> AppResult<bool> {
    let n = with_conn!(&mut *tx, |c| sqlx::query(
        "INSERT INTO subscription_auto_update_tries (subscription_id, version, tried_at)
         VALUES ($1, $2, $3) ON CONFLICT (subscription_id, version) DO NOTHING"
    )
    .bind(subscription_id)
    .bind(version)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Stores `policy` for `subscription_id`.
pub async fn set(db: &Db, subscription_id: &str, policy: &Policy) -> AppResult<()> {
    let mut tx = db.begin().await?;
    with_conn!(&mut tx, |c| sqlx::query(
        "INSERT INTO subscription_auto_updates
            (subscription_id, enabled, days, start_minute, length_minutes, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (subscription_id) DO UPDATE SET enabled = excluded.enabled,
            days = excluded.days, start_minute = excluded.start_minute,
            length_minutes = excluded.length_minutes, updated_at = excluded.updated_at"
    )
    .bind(subscription_id)
    .bind(policy.enabled)
    .bind(i32::from(policy.window.days))
    .bind(policy.window.start_minute as i32)
    .bind(policy.window.length_minutes as i32)
    .bind(now_ms())
    .execute(c)
    .await
    .map(|_| ()))?;
    tx.commit().await.map_err(AppError::from)
}

/// A policy row: subscription id, enabled, days, start minute, length.
type PolicyRow = (String, bool, i32, i32, i32);

fn policy_of(r: &PolicyRow) -> Policy {
    Policy {
        enabled: r.1,
        window: Window {
            days: (r.2 & 0x7f) as u8,
            start_minute: r.3.clamp(0, 1439) as u32,
            length_minutes: r.4.clamp(0, WEEK_MINUTES as i32) as u32,
        },
    }
}

/// The auto-update fields of the subscriptions `ids`' messages: policy,
/// tried versions, next window (the rest default).
pub async fn fields(db: &Db, ids: &[String]) -> AppResult<HashMap<String, pb::Subscription>> {
    let mut out: HashMap<String, pb::Subscription> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let mut policies: Vec<PolicyRow> = Vec::new();
    for chunk in ids.chunks(500) {
        let rows: Vec<PolicyRow> = with_conn!(db.read(), |c| {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT subscription_id, enabled, days, start_minute, length_minutes
                 FROM subscription_auto_updates WHERE subscription_id IN (",
            );
            let mut sep = q.separated(", ");
            for id in chunk {
                sep.push_bind(id.as_str());
            }
            q.push(")");
            q.build_query_as().fetch_all(c).await?
        });
        policies.extend(rows);
    }
    let now = now_ms();
    for r in &policies {
        let p = policy_of(r);
        let e = out.entry(r.0.clone()).or_default();
        e.auto_update = Some(p.to_pb());
        if p.enabled {
            e.auto_update_next_window = p.window.next_open(now).map(timestamp);
        }
    }
    for (id, tried) in tries(db, ids).await? {
        let e = out.entry(id).or_default();
        let skip = tried.len().saturating_sub(TRIES_SHOWN);
        e.auto_update_tried = tried.into_iter().skip(skip).collect();
    }
    Ok(out)
}

/// The versions tried automatically on each of `ids`, oldest first.
async fn tries(db: &Db, ids: &[String]) -> AppResult<HashMap<String, Vec<String>>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    for chunk in ids.chunks(500) {
        let rows: Vec<(String, String)> = with_conn!(db.read(), |c| {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT subscription_id, version FROM subscription_auto_update_tries
                 WHERE subscription_id IN (",
            );
            let mut sep = q.separated(", ");
            for id in chunk {
                sep.push_bind(id.as_str());
            }
            q.push(") ORDER BY tried_at, version");
            q.build_query_as().fetch_all(c).await?
        });
        for (id, version) in rows {
            out.entry(id).or_default().push(version);
        }
    }
    Ok(out)
}

/// Starts the auto-update loop, when a cluster is linked.
pub fn spawn(subs: &Subscriptions) -> Option<tokio::task::JoinHandle<()>> {
    subs.link().kube_client()?;
    let subs = subs.clone();
    Some(tokio::spawn(async move {
        let every = subs
            .settings()
            .auto_update_every
            .max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match subs.auto_update_pass(now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(started = n, "automatic upgrades started"),
                Err(e) => tracing::warn!(error = %e, "auto-update pass failed; next time"),
            }
        }
    }))
}

impl Subscriptions {
    /// One pass at `now` (Unix ms): starts the upgrades the enabled
    /// policies whose window is open call for; how many started.
    pub async fn auto_update_pass(&self, now: i64) -> AppResult<usize> {
        let rows: Vec<(String, String, String, bool, i32, i32, i32)> =
            with_conn!(self.db().read(), |c| sqlx::query_as(
                "SELECT s.id, s.version, s.service_id, a.enabled, a.days, a.start_minute,
                    a.length_minutes
                 FROM subscription_auto_updates a JOIN subscriptions s ON s.id = a.subscription_id
                 WHERE a.enabled AND s.desired = 'RUNNING' AND s.status = 'RUNNING'
                    AND s.previous_version = ''
                 ORDER BY s.id LIMIT $1"
            )
            .bind(PASS_LIMIT)
            .fetch_all(c)
            .await)?;
        let open: Vec<_> = rows
            .into_iter()
            .filter(|r| {
                policy_of(&(r.0.clone(), r.3, r.4, r.5, r.6))
                    .window
                    .contains(now)
            })
            .collect();
        if open.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = open.iter().map(|r| r.0.clone()).collect();
        let tried = tries(self.db(), &ids).await?;
        let mut entries: HashMap<String, Vec<VersionRow>> = HashMap::new();
        let mut started = 0;
        for (id, version, service_id, ..) in open {
            if !entries.contains_key(&service_id) {
                let list = versions::list_read(self.db(), &service_id).await?;
                entries.insert(service_id.clone(), list);
            }
            let none = Vec::new();
            let Some(to) = candidate(
                &version,
                &entries[&service_id],
                tried.get(&id).unwrap_or(&none),
            ) else {
                continue;
            };
            let r = pb::UpgradeSubscriptionRequest {
                id: id.clone(),
                version: to.version.clone(),
                force: false,
                dry_run: false,
            };
            match self.upgrade_by(By::AutoUpdate, &r).await {
                Ok(_) => started += 1,
                Err(AppError::Internal(e)) => {
                    tracing::warn!(subscription = %id, to = %to.version, error = %format!("{e:#}"),
                        "automatic upgrade failed; tried again next pass");
                }
                Err(e) if e.reason().is_some() => {
                    // Refused for what the version is (the owner's limits,
                    // a one-way version): recorded, so not refused again
                    // every pass.
                    tracing::info!(subscription = %id, to = %to.version, reason = %e,
                        "automatic upgrade refused");
                    let mut tx = self.db().begin().await?;
                    record_try(&mut tx, &id, &to.version, now_ms()).await?;
                    tx.commit().await.map_err(AppError::from)?;
                }
                Err(e) => {
                    // The subscription changed meanwhile (no longer
                    // running, changed by its owner, upgraded by another
                    // replica): looked at again next pass.
                    tracing::debug!(subscription = %id, to = %to.version, reason = %e,
                        "automatic upgrade not started");
                }
            }
        }
        Ok(started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a UTC date and time (days from civil, Howard Hinnant's).
    fn at(y: i64, mo: i64, d: i64, h: i64, mi: i64) -> i64 {
        let y = if mo <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (mo + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        ((days * 24 + h) * 60 + mi) * 60_000
    }

    fn window(days: &[i32], h: u32, m: u32, len: u32) -> Window {
        Policy::from_pb(&pb::AutoUpdatePolicy {
            enabled: true,
            days: days.to_vec(),
            start_hour: h,
            start_minute: m,
            length_minutes: len,
        })
        .unwrap()
        .window
    }

    #[test]
    fn weekdays_are_counted_from_monday_in_utc() {
        // 2026-12-07 is a Monday.
        assert_eq!(minute_of_week(at(2026, 12, 7, 0, 0)), 0);
        assert_eq!(minute_of_week(at(2026, 12, 13, 23, 59)), WEEK_MINUTES - 1);
        assert_eq!(minute_of_week(at(2026, 12, 14, 0, 0)), 0);
        assert_eq!(minute_of_week(at(1970, 1, 1, 0, 0)), 3 * DAY_MINUTES);
    }

    #[test]
    fn a_window_is_open_from_its_start_for_its_length_on_its_days() {
        // Tuesdays and Thursdays, 02:30 for 90 minutes.
        let w = window(&[2, 4], 2, 30, 90);
        assert!(!w.contains(at(2026, 12, 8, 2, 29)));
        assert!(w.contains(at(2026, 12, 8, 2, 30)));
        assert!(w.contains(at(2026, 12, 8, 3, 59)));
        assert!(!w.contains(at(2026, 12, 8, 4, 0)));
        assert!(w.contains(at(2026, 12, 10, 3, 0)), "Thursday");
        assert!(!w.contains(at(2026, 12, 9, 3, 0)), "not Wednesday");
        assert!(!w.contains(at(2026, 12, 7, 3, 0)), "not Monday");
    }

    #[test]
    fn a_window_runs_past_midnight_and_past_the_end_of_the_week() {
        // Sundays at 23:00 for three hours: open until Monday 02:00.
        let w = window(&[7], 23, 0, 180);
        assert!(w.contains(at(2026, 12, 13, 23, 30)));
        assert!(w.contains(at(2026, 12, 14, 1, 59)), "Monday morning");
        assert!(!w.contains(at(2026, 12, 14, 2, 0)));
        assert!(!w.contains(at(2026, 12, 13, 22, 59)));
        // A whole week is always open.
        let all = window(&[1], 0, 0, WEEK_MINUTES as u32);
        assert!(all.contains(at(2026, 12, 10, 12, 0)));
    }

    #[test]
    fn the_next_window_is_the_open_one_or_the_nearest_ahead() {
        let w = window(&[2, 4], 2, 30, 90);
        // Monday noon: Tuesday 02:30.
        assert_eq!(
            w.next_open(at(2026, 12, 7, 12, 0)),
            Some(at(2026, 12, 8, 2, 30))
        );
        // Inside Tuesday's: when it opened.
        assert_eq!(
            w.next_open(at(2026, 12, 8, 3, 0) + 17_000),
            Some(at(2026, 12, 8, 2, 30))
        );
        // Friday: next Tuesday.
        assert_eq!(
            w.next_open(at(2026, 12, 11, 0, 0)),
            Some(at(2026, 12, 15, 2, 30))
        );
    }

    #[test]
    fn bad_windows_are_refused_field_by_field() {
        let bad = |p: pb::AutoUpdatePolicy| match Policy::from_pb(&p) {
            Err(AppError::InvalidArgument { violations, .. }) => {
                violations.into_iter().map(|v| v.field).collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        };
        let ok = pb::AutoUpdatePolicy {
            enabled: true,
            days: vec![1],
            start_hour: 3,
            start_minute: 0,
            length_minutes: 60,
        };
        assert!(Policy::from_pb(&ok).is_ok());
        for (p, field) in [
            (
                pb::AutoUpdatePolicy {
                    days: vec![],
                    ..ok.clone()
                },
                "policy.days",
            ),
            (
                pb::AutoUpdatePolicy {
                    days: vec![0],
                    ..ok.clone()
                },
                "policy.days",
            ),
            (
                pb::AutoUpdatePolicy {
                    days: vec![8],
                    ..ok.clone()
                },
                "policy.days",
            ),
            (
                pb::AutoUpdatePolicy {
                    days: vec![2, 2],
                    ..ok.clone()
                },
                "policy.days",
            ),
            (
                pb::AutoUpdatePolicy {
                    start_hour: 24,
                    ..ok.clone()
                },
                "policy.start_hour",
            ),
            (
                pb::AutoUpdatePolicy {
                    start_minute: 60,
                    ..ok.clone()
                },
                "policy.start_minute",
            ),
            (
                pb::AutoUpdatePolicy {
                    length_minutes: 0,
                    ..ok.clone()
                },
                "policy.length_minutes",
            ),
            (
                pb::AutoUpdatePolicy {
                    length_minutes: 10_081,
                    ..ok.clone()
                },
                "policy.length_minutes",
            ),
        ] {
            assert_eq!(bad(p), vec![field.to_owned()]);
        }
        // Off, with no window.
        let off = Policy::from_pb(&pb::AutoUpdatePolicy::default()).unwrap();
        assert!(!off.enabled);
        let round = Policy::from_pb(&ok).unwrap().to_pb();
        assert_eq!(round, ok);
    }

    fn v(version: &str, one_way: bool, withdrawn: bool) -> VersionRow {
        VersionRow {
            service_id: "s".into(),
            version: version.into(),
            template: Vec::new(),
            notes: String::new(),
            one_way,
            withdrawn_at: withdrawn.then_some(1),
            published_at: 0,
        }
    }

    fn newest_first(mut l: Vec<VersionRow>) -> Vec<VersionRow> {
        l.sort_by_key(|r| std::cmp::Reverse(r.parsed()));
        l
    }

    #[test]
    fn the_candidate_is_the_newest_patch_never_a_minor_a_one_way_or_a_tried_one() {
        let l = newest_first(vec![
            v("1.64.0", false, false),
            v("1.64.1", false, false),
            v("1.64.2", false, false),
            v("1.64.3-rc.1", false, false),
            v("1.70.3", false, false),
        ]);
        let pick = |cur: &str, tried: &[&str]| {
            let tried: Vec<String> = tried.iter().map(|s| s.to_string()).collect();
            candidate(cur, &l, &tried).map(|r| r.version.clone())
        };
        assert_eq!(pick("1.64.0", &[]).as_deref(), Some("1.64.2"));
        assert_eq!(pick("1.64.0", &["1.64.2"]).as_deref(), Some("1.64.1"));
        assert_eq!(
            pick("1.64.2", &[]),
            None,
            "1.70.3 is a minor; rc a pre-release"
        );
        assert_eq!(pick("1.70.3", &[]), None);
        assert_eq!(pick("", &[]), None, "an unversioned subscription");

        let withdrawn = newest_first(vec![
            v("1.64.0", false, false),
            v("1.64.1", false, false),
            v("1.64.2", false, true),
        ]);
        assert_eq!(
            candidate("1.64.0", &withdrawn, &[]).map(|r| r.version.as_str()),
            Some("1.64.1")
        );
        let one_way = newest_first(vec![
            v("1.64.0", false, false),
            v("1.64.1", false, false),
            v("1.64.2", true, false),
            v("1.64.3", false, false),
        ]);
        assert_eq!(
            candidate("1.64.0", &one_way, &[]).map(|r| r.version.as_str()),
            Some("1.64.1"),
            "nothing at or past a one-way version"
        );
        assert!(candidate("1.64.1", &one_way, &[]).is_none());
    }
}
