//! Daily backups: when the next is due, and which scheduled backups the
//! retention keeps (restic's `--keep-daily`/`--keep-weekly` rules, applied
//! to the backups' rows: the newest of each of the last N days that have
//! one, and of each of the last M weeks).

use std::collections::BTreeSet;

use minispod_proto::v1 as pb;

use crate::error::{AppError, AppResult};

const DAY_MS: i64 = 86_400_000;

/// The next HH:MM UTC strictly after `now` (Unix ms).
pub fn next_at(now: i64, hour: i32, minute: i32) -> i64 {
    let today = now.div_euclid(DAY_MS) * DAY_MS;
    let at = today + (i64::from(hour) * 60 + i64::from(minute)) * 60_000;
    if at > now { at } else { at + DAY_MS }
}

/// Checks a schedule's fields.
pub fn check(s: &pb::BackupSchedule) -> AppResult<()> {
    if !(0..24).contains(&s.hour) {
        return Err(AppError::invalid("schedule.hour", "must be 0 to 23 (UTC)"));
    }
    if !(0..60).contains(&s.minute) {
        return Err(AppError::invalid("schedule.minute", "must be 0 to 59"));
    }
    if s.keep_daily < 0 || s.keep_weekly < 0 {
        return Err(AppError::invalid(
            "schedule.keep_daily",
            "cannot be negative",
        ));
    }
    let keep = s.keep_daily + s.keep_weekly;
    if s.enabled && !(1..=400).contains(&keep) {
        return Err(AppError::invalid(
            "schedule.keep_daily",
            "keep_daily + keep_weekly must be 1 to 400",
        ));
    }
    Ok(())
}

/// Of `backups` (id, finished at, Unix ms), the ids the retention drops.
pub fn expired(backups: &[(String, i64)], keep_daily: i32, keep_weekly: i32) -> Vec<String> {
    let mut newest_first: Vec<&(String, i64)> = backups.iter().collect();
    newest_first.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    let mut keep = BTreeSet::new();
    for (period, count) in [(1, keep_daily), (7, keep_weekly)] {
        let mut seen = BTreeSet::new();
        for (id, at) in &newest_first {
            // Weeks start on Monday: the epoch was a Thursday.
            let day = at.div_euclid(DAY_MS);
            let key = if period == 1 {
                day
            } else {
                (day + 3).div_euclid(7)
            };
            if seen.len() as i32 >= count && !seen.contains(&key) {
                break;
            }
            if seen.insert(key) {
                keep.insert(id.clone());
            }
        }
    }
    newest_first
        .iter()
        .filter(|(id, _)| !keep.contains(id))
        .map(|(id, _)| id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_run_is_the_next_occurrence_of_the_time() {
        let day = 20_000 * DAY_MS;
        assert_eq!(next_at(day, 2, 30), day + 9_000_000);
        assert_eq!(next_at(day + 9_000_000, 2, 30), day + DAY_MS + 9_000_000);
        assert_eq!(next_at(day + 10_000_000, 2, 30), day + DAY_MS + 9_000_000);
    }

    #[test]
    fn retention_keeps_the_newest_of_each_day_and_week() {
        // Two backups a day for 30 days.
        let base = 20_000 * DAY_MS;
        let all: Vec<(String, i64)> = (0..60)
            .map(|i| (format!("b{i:02}"), base + i * DAY_MS / 2 + 1000))
            .collect();
        let dropped = expired(&all, 7, 4);
        let kept: Vec<&String> = all
            .iter()
            .map(|(id, _)| id)
            .filter(|id| !dropped.contains(id))
            .collect();
        // 7 days' newest, plus the newest of 4 weeks (overlapping the days
        // of the newest week).
        assert!(kept.contains(&&"b59".to_owned()));
        assert!(!kept.contains(&&"b58".to_owned()), "one per day");
        let days: Vec<i64> = kept
            .iter()
            .map(|id| {
                all.iter()
                    .find(|(i, _)| i == *id)
                    .unwrap()
                    .1
                    .div_euclid(DAY_MS)
            })
            .collect();
        assert_eq!(days.iter().collect::<BTreeSet<_>>().len(), days.len());
        assert!(kept.len() >= 7 && kept.len() <= 11, "{kept:?}");
        assert_eq!(dropped.len() + kept.len(), 60);
        // Nothing kept: all dropped; more days than there are: the newest
        // of each of the 30 days kept, the other 30 dropped.
        assert_eq!(expired(&all, 0, 0).len(), 60);
        assert_eq!(expired(&all, 100, 0).len(), 30);
        assert!(expired(&all[..1], 1, 0).is_empty());
    }
}
