//! The texts of fleet notices: a subject that says it all (it is also the
//! webhook's summary and the outbox list's subject), a few plain sentences,
//! a link into the console, and the webhook's JSON event.

use minispod_proto::v1 as pb;
use serde_json::{Map, Value, json};

use crate::mail::{
    Mail,
    templates::{Rendered, compose},
};

/// A worker as a notice names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRef {
    /// Its id.
    pub id: String,
    /// Its host name.
    pub name: String,
}

/// One notice, ready to be queued for each recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// The event recipients opt in to (UNSPECIFIED for a test notice, which
    /// goes to the caller only).
    pub event: pb::NotificationEvent,
    /// The outbox purpose and the webhook's `event`: `worker_offline`, ...
    pub purpose: &'static str,
    /// Subject line and webhook summary.
    pub summary: String,
    /// The mail's sentences.
    pub paragraphs: Vec<String>,
    /// The mail's button: label and console path.
    pub action: (&'static str, String),
    /// When it happened (Unix ms).
    pub at: i64,
    /// What the webhook's JSON carries besides event, summary, at and link.
    pub fields: Map<String, Value>,
}

impl Notice {
    /// The mail to an administrator called `name`.
    pub fn mail(&self, name: &str, mail: &Mail) -> Rendered {
        let link = mail.link(&self.action.1);
        compose(
            &self.summary,
            name,
            &self.paragraphs,
            Some((self.action.0, &link)),
            "You get this mail because you asked for these notices; change that in the console under Notifications.",
        )
    }

    /// The mail to a subscription's owner called `name`.
    pub fn mail_to_owner(&self, name: &str, mail: &Mail) -> Rendered {
        let link = mail.link(&self.action.1);
        compose(
            &self.summary,
            name,
            &self.paragraphs,
            Some((self.action.0, &link)),
            "You get this mail because it is about your subscription; choose which notices you get in the console under Profile.",
        )
    }

    /// The webhook's JSON event.
    pub fn json(&self, mail: &Mail) -> Value {
        let mut body = Map::new();
        body.insert("event".into(), self.purpose.into());
        body.insert("summary".into(), self.summary.clone().into());
        body.insert("at".into(), rfc3339(self.at).into());
        body.insert("link".into(), mail.link(&self.action.1).into());
        for (k, v) in &self.fields {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

fn worker_fields(w: &WorkerRef) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("worker".into(), json!({ "id": w.id, "name": w.name }));
    m
}

fn worker_link(w: &WorkerRef) -> (&'static str, String) {
    ("Open the worker", format!("/workers/{}", w.id))
}

/// A worker's stream has been down since `since` (past the grace).
pub fn worker_offline(w: &WorkerRef, since: i64, at: i64) -> Notice {
    let mut fields = worker_fields(w);
    fields.insert("offline_since".into(), rfc3339(since).into());
    Notice {
        event: pb::NotificationEvent::WorkerOffline,
        purpose: "worker_offline",
        summary: format!("Worker {} is offline", w.name),
        paragraphs: vec![
            format!(
                "Worker {} lost its connection to the control plane at {} and has not come back for {}.",
                w.name,
                rfc3339(since),
                span(at - since)
            ),
            "Its pods are being moved to other workers. You will hear when it is back.".into(),
        ],
        action: worker_link(w),
        at,
        fields,
    }
}

/// A worker announced as offline is back, after an outage since `since`.
pub fn worker_online(w: &WorkerRef, since: i64, at: i64) -> Notice {
    let mut fields = worker_fields(w);
    fields.insert("offline_since".into(), rfc3339(since).into());
    fields.insert(
        "offline_seconds".into(),
        ((at - since).max(0) / 1000).into(),
    );
    Notice {
        event: pb::NotificationEvent::WorkerOnline,
        purpose: "worker_online",
        summary: format!("Worker {} is back online", w.name),
        paragraphs: vec![format!(
            "Worker {} is connected again, after {} offline.",
            w.name,
            span(at - since)
        )],
        action: worker_link(w),
        at,
        fields,
    }
}

/// A worker went offline `outages` times in the `window_ms` after its last
/// notice; `still_offline` when it is down now.
pub fn worker_flapping(
    w: &WorkerRef,
    outages: i32,
    window_ms: i64,
    still_offline: bool,
    at: i64,
) -> Notice {
    let mut fields = worker_fields(w);
    fields.insert("flapping".into(), true.into());
    fields.insert("outages".into(), outages.into());
    fields.insert("window_seconds".into(), (window_ms / 1000).into());
    fields.insert("online".into(), (!still_offline).into());
    let times = if outages == 1 {
        "once".to_owned()
    } else {
        format!("{outages} times")
    };
    let now = if still_offline {
        "It is offline now; you will hear when it is back."
    } else {
        "It is online now."
    };
    Notice {
        event: pb::NotificationEvent::WorkerOffline,
        purpose: "worker_offline",
        summary: format!(
            "Worker {} went offline {times} in {}",
            w.name,
            span(window_ms)
        ),
        paragraphs: vec![
            format!(
                "Worker {} went offline {times} in the {} after its last notice. Such outages are summarised instead of told one by one.",
                w.name,
                span(window_ms)
            ),
            now.into(),
        ],
        action: worker_link(w),
        at,
        fields,
    }
}

/// A worker has been NOT_READY since `since`, for `reason`.
pub fn worker_not_ready(w: &WorkerRef, since: i64, reason: &str, at: i64) -> Notice {
    let mut fields = worker_fields(w);
    fields.insert("not_ready_since".into(), rfc3339(since).into());
    fields.insert("reason".into(), reason.into());
    let why = if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    };
    Notice {
        event: pb::NotificationEvent::WorkerNotReady,
        purpose: "worker_not_ready",
        summary: format!("Worker {} is not ready", w.name),
        paragraphs: vec![format!(
            "Worker {} is connected but has not been ready for {}{why}; nothing new is scheduled on it.",
            w.name,
            span(at - since)
        )],
        action: worker_link(w),
        at,
        fields,
    }
}

/// A new worker enrolled.
pub fn worker_enrolled(w: &WorkerRef, ip_address: &str, at: i64) -> Notice {
    let mut fields = worker_fields(w);
    fields.insert("ip_address".into(), ip_address.into());
    let from = if ip_address.is_empty() {
        String::new()
    } else {
        format!(" from {ip_address}")
    };
    Notice {
        event: pb::NotificationEvent::WorkerEnrolled,
        purpose: "worker_enrolled",
        summary: format!("New worker {} enrolled", w.name),
        paragraphs: vec![format!(
            "A new machine, {}, joined the fleet{from}. If you did not expect it, revoke the enrollment token it used and delete the worker.",
            w.name
        )],
        action: worker_link(w),
        at,
        fields,
    }
}

/// A worker's `metric` (its words: `CPU`, `memory`, `disk`) has been at
/// or above the threshold since `since`; `percent` now.
pub fn worker_threshold(
    w: &WorkerRef,
    metric: &str,
    percent: f64,
    rule: &super::thresholds::Rule,
    since: i64,
    at: i64,
) -> Notice {
    let mut fields = worker_fields(w);
    fields.insert(
        "threshold".into(),
        json!({ "metric": metric.to_uppercase(), "percent": round1(percent),
                "above_percent": rule.above, "clear_below_percent": rule.clear_below,
                "for_seconds": rule.for_ms / 1000, "since": rfc3339(since), "crossed": true }),
    );
    Notice {
        event: pb::NotificationEvent::WorkerThreshold,
        purpose: "worker_threshold",
        summary: format!("Worker {} {metric} at {}%", w.name, round1(percent)),
        paragraphs: vec![
            format!(
                "Worker {}'s {metric} use has been at or above {}% for {} (since {}); it is {}% now.",
                w.name,
                rule.above,
                span(at - since),
                rfc3339(since),
                round1(percent)
            ),
            format!(
                "You will hear once it stays below {}% for {}.",
                rule.clear_below,
                span(rule.for_ms)
            ),
        ],
        action: worker_link(w),
        at,
        fields,
    }
}

/// A crossed threshold (since `crossed_at`) cleared: below its clear level
/// since `since`; `percent` now.
pub fn worker_threshold_cleared(
    w: &WorkerRef,
    metric: &str,
    percent: f64,
    rule: &super::thresholds::Rule,
    crossed_at: i64,
    since: i64,
    at: i64,
) -> Notice {
    let mut fields = worker_fields(w);
    fields.insert(
        "threshold".into(),
        json!({ "metric": metric.to_uppercase(), "percent": round1(percent),
                "above_percent": rule.above, "clear_below_percent": rule.clear_below,
                "for_seconds": rule.for_ms / 1000, "since": rfc3339(since),
                "crossed_at": rfc3339(crossed_at), "crossed": false }),
    );
    Notice {
        event: pb::NotificationEvent::WorkerThresholdCleared,
        purpose: "worker_threshold_cleared",
        summary: format!(
            "Worker {} {metric} back under {}%",
            w.name, rule.clear_below
        ),
        paragraphs: vec![format!(
            "Worker {}'s {metric} use has stayed below {}% for {}; it is {}% now.",
            w.name,
            rule.clear_below,
            span(at - since),
            round1(percent)
        )],
        action: worker_link(w),
        at,
        fields,
    }
}

/// `x` to one decimal.
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// A subscription turned FAILED.
pub fn subscription_failed(id: &str, name: &str, reason: &str, at: i64) -> Notice {
    let mut fields = Map::new();
    fields.insert(
        "subscription".into(),
        json!({ "id": id, "name": name, "reason": reason }),
    );
    Notice {
        event: pb::NotificationEvent::SubscriptionFailed,
        purpose: "subscription_failed",
        summary: format!("Subscription {name} failed"),
        paragraphs: vec![format!("Subscription {name} failed: {reason}.")],
        action: ("Open the subscription", format!("/subscriptions/{id}")),
        at,
        fields,
    }
}

/// Subscription `name`'s scheduled backups failed `failures` times in a
/// row, the last for `reason`.
pub fn backup_failed(id: &str, name: &str, failures: i64, reason: &str, at: i64) -> Notice {
    let mut fields = Map::new();
    fields.insert(
        "backup".into(),
        json!({ "subscription_id": id, "subscription_name": name, "failures_in_a_row": failures, "reason": reason }),
    );
    Notice {
        event: pb::NotificationEvent::BackupFailed,
        purpose: "backup_failed",
        summary: if failures > 1 {
            format!("Backups of {name} failed {failures} times in a row")
        } else {
            format!("A backup of {name} failed")
        },
        paragraphs: vec![if failures > 1 {
            format!(
                "The scheduled backup of subscription {name} failed {failures} times in a row; the last time: {reason}."
            )
        } else {
            format!("A backup of subscription {name} failed: {reason}.")
        }],
        action: ("Open the backups", "/backups".to_owned()),
        at,
        fields,
    }
}

/// A customer could not subscribe to `service` because of the
/// installation (`cause`: NO_CLUSTER_LINKED, NO_CAPACITY); `detail` is
/// what is short and how to fix it.
pub fn subscribe_blocked(cause: &str, service: &str, detail: &str, at: i64) -> Notice {
    let mut fields = Map::new();
    fields.insert(
        "blocked".into(),
        json!({ "cause": cause, "service": service, "detail": detail }),
    );
    let (summary, action) = match cause {
        "NO_CLUSTER_LINKED" => (
            "Customers cannot subscribe: no Kubernetes cluster is linked".to_owned(),
            ("Open the dashboard", "/".to_owned()),
        ),
        _ => (
            "Customers cannot subscribe: the workers have no room".to_owned(),
            ("Open the fleet", "/workers".to_owned()),
        ),
    };
    Notice {
        event: pb::NotificationEvent::SubscribeBlocked,
        purpose: "subscribe_blocked",
        summary,
        paragraphs: vec![
            format!(
                "A customer tried to subscribe to {service} and was told it cannot be started right now."
            ),
            format!("Why: {detail}."),
            "You are told again at most once in the notice window while it lasts.".into(),
        ],
        action,
        at,
        fields,
    }
}

/// The notice SendTestNotification queues; its link leads to where the
/// caller sets their notices (an administrator's page, or a customer's
/// profile).
pub fn test(at: i64, admin: bool) -> Notice {
    Notice {
        event: pb::NotificationEvent::Unspecified,
        purpose: "test",
        summary: "MiniSpod test notice".into(),
        paragraphs: vec!["This is a test notice: your notices will reach you this way.".into()],
        action: (
            "Open notification settings",
            if admin { "/notifications" } else { "/profile" }.into(),
        ),
        at,
        fields: Map::new(),
    }
}

pub use crate::workers::rfc3339;

/// A span of time as people say it: `45 seconds`, `10 minutes`, `3 hours`.
pub fn span(ms: i64) -> String {
    let s = (ms.max(0) + 500) / 1000;
    let (n, unit) = if s < 120 {
        (s, "second")
    } else if s < 2 * 3600 {
        ((s + 30) / 60, "minute")
    } else {
        ((s + 1800) / 3600, "hour")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_people_say_them() {
        assert_eq!(span(1_000), "1 second");
        assert_eq!(span(45_400), "45 seconds");
        assert_eq!(span(600_000), "10 minutes");
        assert_eq!(span(3 * 3_600_000), "3 hours");
    }

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn a_flapping_summary_counts_the_outages_in_the_window() {
        let w = WorkerRef {
            id: "w1".into(),
            name: "node-a".into(),
        };
        let n = worker_flapping(&w, 7, 600_000, false, 0);
        assert_eq!(
            n.summary,
            "Worker node-a went offline 7 times in 10 minutes"
        );
        assert_eq!(n.fields["outages"], 7);
        let mail = Mail::without_smtp("https://console.example.org");
        let json = n.json(&mail);
        assert_eq!(json["event"], "worker_offline");
        assert_eq!(json["worker"]["name"], "node-a");
        assert_eq!(json["link"], "https://console.example.org/workers/w1");
    }
}
