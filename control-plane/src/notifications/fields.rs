//! The NotificationService's input, parsed once into what it means.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use minispod_proto::v1 as pb;

use super::thresholds::{Metric, Rule, Threshold};
use crate::{
    error::{AppError, AppResult, Violations},
    mail::webhook::{WebhookPolicy, WebhookUrl},
};

/// Largest page of ListOutboxMessages.
pub const MAX_PAGE_SIZE: i32 = 200;
/// Page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: i32 = 50;

/// A checked UpdateNotificationPreferencesRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferenceChanges {
    /// Mail on or off.
    pub mail: Option<bool>,
    /// A new URL (checked), or "" to turn webhooks off.
    pub webhook_url: Option<String>,
    /// The new set of events.
    pub events: Option<Vec<pb::NotificationEvent>>,
    /// Make a new secret.
    pub rotate_secret: bool,
}

impl PreferenceChanges {
    /// Parses `r`, a webhook URL against `policy`; every bad field is
    /// named.
    pub fn parse(
        r: &pb::UpdateNotificationPreferencesRequest,
        policy: &WebhookPolicy,
    ) -> AppResult<PreferenceChanges> {
        let mut v = Violations::new();
        let webhook_url = match r.webhook_url.as_deref().map(str::trim) {
            None => None,
            Some("") => Some(String::new()),
            Some(url) => v.take(
                "webhook_url",
                WebhookUrl::parse_for(url, policy).map(|_| url.to_owned()),
            ),
        };
        let events = if r.update_events {
            let mut events = Vec::new();
            for &n in &r.events {
                match pb::NotificationEvent::try_from(n) {
                    Ok(pb::NotificationEvent::Unspecified) | Err(_) => {
                        v.add("events", format!("{n} is not a notification event"));
                    }
                    Ok(e) if !events.contains(&e) => events.push(e),
                    Ok(_) => {}
                }
            }
            Some(events)
        } else {
            if !r.events.is_empty() {
                v.add("update_events", "must be true when events are given");
            }
            None
        };
        v.finish()?;
        Ok(PreferenceChanges {
            mail: r.mail,
            webhook_url,
            events,
            rotate_secret: r.rotate_webhook_secret,
        })
    }
}

/// Most thresholds SetWorkerThresholds takes.
pub const MAX_THRESHOLDS: usize = 300;
/// Longest `for_seconds` of a threshold: a day.
pub const MAX_THRESHOLD_SECONDS: u32 = 86_400;

/// Parses SetWorkerThresholds' list; every bad entry is named
/// (`thresholds[2].above_percent`). Whether the workers exist is the
/// caller's to check.
pub fn thresholds(list: &[pb::WorkerThreshold]) -> AppResult<Vec<Threshold>> {
    if list.len() > MAX_THRESHOLDS {
        return Err(AppError::invalid(
            "thresholds",
            format!("at most {MAX_THRESHOLDS}, got {}", list.len()),
        ));
    }
    let mut v = Violations::new();
    let mut out: Vec<Threshold> = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let at = |f: &str| format!("thresholds[{i}].{f}");
        let metric = pb::WorkerMetric::try_from(t.metric)
            .ok()
            .and_then(Metric::from_pb);
        if metric.is_none() {
            v.add(&at("metric"), "must be CPU, MEMORY or DISK");
        }
        let above = t.above_percent;
        if !(above > 0.0 && above <= 100.0) {
            v.add(&at("above_percent"), "must be more than 0 and at most 100");
        }
        let clear = t.clear_below_percent;
        if !(clear >= 0.0 && clear < above) {
            v.add(
                &at("clear_below_percent"),
                "must be at least 0 and below above_percent (the levels give the hysteresis)",
            );
        }
        if t.for_seconds > MAX_THRESHOLD_SECONDS {
            v.add(
                &at("for_seconds"),
                format!("must be at most {MAX_THRESHOLD_SECONDS} (a day)"),
            );
        }
        let worker_id = t.worker_id.trim().to_owned();
        if let Some(metric) = metric {
            if out
                .iter()
                .any(|o| o.worker_id == worker_id && o.metric == metric)
            {
                v.add(
                    &at("metric"),
                    format!(
                        "{} is given twice for {}",
                        metric.to_db(),
                        if worker_id.is_empty() {
                            "every worker".to_owned()
                        } else {
                            format!("worker {worker_id}")
                        }
                    ),
                );
            }
            out.push(Threshold {
                worker_id,
                metric,
                rule: Rule {
                    above,
                    clear_below: clear,
                    for_ms: i64::from(t.for_seconds) * 1000,
                },
            });
        }
    }
    v.finish()?;
    Ok(out)
}

/// The outbox status a listing keeps, if any.
pub fn outbox_status(n: i32) -> AppResult<Option<&'static str>> {
    match pb::OutboxStatus::try_from(n) {
        Ok(pb::OutboxStatus::Unspecified) => Ok(None),
        Ok(pb::OutboxStatus::Pending) => Ok(Some("PENDING")),
        Ok(pb::OutboxStatus::Sent) => Ok(Some("SENT")),
        Ok(pb::OutboxStatus::Failed) => Ok(Some("FAILED")),
        Err(_) => Err(AppError::invalid(
            "status",
            format!("{n} is not an outbox status"),
        )),
    }
}

/// A page of the outbox: its size and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxPage {
    /// Rows wanted.
    pub size: i64,
    /// The last row of the previous page: (created_at, id).
    pub after: Option<(i64, String)>,
}

impl OutboxPage {
    /// Parses `page_size` (0: the default) and `page_token`.
    pub fn parse(page_size: i32, page_token: &str) -> AppResult<OutboxPage> {
        let mut v = Violations::new();
        if !(0..=MAX_PAGE_SIZE).contains(&page_size) {
            v.add(
                "page_size",
                format!("must be between 1 and {MAX_PAGE_SIZE} (0 for {DEFAULT_PAGE_SIZE})"),
            );
        }
        let after = if page_token.is_empty() {
            None
        } else {
            let decoded = URL_SAFE_NO_PAD
                .decode(page_token)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| {
                    let (at, id) = s.strip_prefix("k:")?.split_once(':')?;
                    Some((at.parse::<i64>().ok()?, id.to_owned()))
                });
            if decoded.is_none() {
                v.add("page_token", "is not a token this server issued");
            }
            decoded
        };
        v.finish()?;
        let size = if page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            page_size
        };
        Ok(OutboxPage {
            size: i64::from(size),
            after,
        })
    }

    /// The token of the page after the row `(created_at, id)`.
    pub fn token_after(created_at: i64, id: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!("k:{created_at}:{id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_strangers_are_refused() {
        let token = OutboxPage::token_after(1_700_000_000_000, "abc");
        assert_eq!(
            OutboxPage::parse(0, &token).unwrap(),
            OutboxPage {
                size: 50,
                after: Some((1_700_000_000_000, "abc".into()))
            }
        );
        assert!(OutboxPage::parse(0, "bm9wZQ").is_err());
        assert!(OutboxPage::parse(201, "").is_err());
    }

    #[test]
    fn unknown_events_and_insecure_urls_are_named() {
        let r = pb::UpdateNotificationPreferencesRequest {
            webhook_url: Some("http://hooks.example.org/x".into()),
            events: vec![1, 99],
            update_events: true,
            ..Default::default()
        };
        let Err(AppError::InvalidArgument { violations, .. }) =
            PreferenceChanges::parse(&r, &WebhookPolicy::default())
        else {
            panic!("refused")
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["webhook_url", "events"]);
    }

    #[test]
    fn thresholds_need_levels_with_hysteresis_and_one_per_metric_and_worker() {
        let ok = pb::WorkerThreshold {
            metric: pb::WorkerMetric::Cpu as i32,
            worker_id: String::new(),
            above_percent: 90.0,
            clear_below_percent: 80.0,
            for_seconds: 300,
        };
        assert_eq!(
            thresholds(std::slice::from_ref(&ok)).unwrap()[0]
                .rule
                .for_ms,
            300_000
        );
        let list = [
            ok.clone(),
            ok.clone(),
            pb::WorkerThreshold {
                clear_below_percent: 95.0,
                ..ok.clone()
            },
            pb::WorkerThreshold {
                metric: 0,
                above_percent: 101.0,
                ..ok
            },
        ];
        let Err(AppError::InvalidArgument { violations, .. }) = thresholds(&list) else {
            panic!("refused")
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "thresholds[1].metric",
                "thresholds[2].clear_below_percent",
                "thresholds[2].metric",
                "thresholds[3].metric",
                "thresholds[3].above_percent"
            ]
        );
    }
}
