//! The texts of the notices a subscription's owner gets: what happened to
//! their app in their words (the status reason as customers read it,
//! never a worker's name or the cluster's messages), a link to the
//! subscription, and the webhook's JSON (`subscription`: id, name, status,
//! reason).

use minispod_proto::v1 as pb;
use serde_json::{Map, json};

use super::notices::{Notice, rfc3339, span};

/// A subscription as its owner's notices name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRef {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
}

fn link(s: &SubscriptionRef) -> (&'static str, String) {
    ("Open the subscription", format!("/subscriptions/{}", s.id))
}

fn fields(s: &SubscriptionRef, status: &str, reason: &str) -> Map<String, serde_json::Value> {
    let mut m = Map::new();
    m.insert(
        "subscription".into(),
        json!({ "id": s.id, "name": s.name, "status": status, "reason": reason }),
    );
    m
}

fn because(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    }
}

/// Down since `since`, past the grace: FAILED when `failed`, else DEGRADED.
pub fn down(s: &SubscriptionRef, failed: bool, reason: &str, since: i64, at: i64) -> Notice {
    let mut fields = fields(s, if failed { "FAILED" } else { "DEGRADED" }, reason);
    fields.insert("down_since".into(), rfc3339(since).into());
    let (event, purpose, summary, what) = if failed {
        (
            pb::NotificationEvent::SubscriptionFailed,
            "subscription_down",
            format!("{} is down", s.name),
            "has not been working",
        )
    } else {
        (
            pb::NotificationEvent::SubscriptionDegraded,
            "subscription_degraded",
            format!("{} is not fully working", s.name),
            "has not been fully working",
        )
    };
    Notice {
        event,
        purpose,
        summary,
        paragraphs: {
            let mut p = vec![format!(
                "{} {what} since {} ({} now).",
                s.name,
                rfc3339(since),
                span(at - since)
            )];
            if !reason.is_empty() {
                p.push(format!("What we see: {reason}."));
            }
            p.push("It is being retried. You will hear when it works again.".into());
            p
        },
        action: link(s),
        at,
        fields,
    }
}

/// Running again after a told outage since `since`.
pub fn recovered(s: &SubscriptionRef, since: i64, at: i64) -> Notice {
    let mut fields = fields(s, "RUNNING", "");
    fields.insert("down_since".into(), rfc3339(since).into());
    fields.insert("down_seconds".into(), ((at - since).max(0) / 1000).into());
    Notice {
        event: pb::NotificationEvent::SubscriptionRecovered,
        purpose: "subscription_recovered",
        summary: format!("{} works again", s.name),
        paragraphs: vec![format!(
            "{} works again, after {} of trouble.",
            s.name,
            span(at - since)
        )],
        action: link(s),
        at,
        fields,
    }
}

/// `outages` outages in the `window_ms` after the last notice.
pub fn flapping(
    s: &SubscriptionRef,
    outages: i32,
    window_ms: i64,
    still_down: bool,
    reason: &str,
    at: i64,
) -> Notice {
    let status = if still_down { "DEGRADED" } else { "RUNNING" };
    let mut fields = fields(s, status, if still_down { reason } else { "" });
    fields.insert("flapping".into(), true.into());
    fields.insert("outages".into(), outages.into());
    fields.insert("window_seconds".into(), (window_ms / 1000).into());
    let times = if outages == 1 {
        "once".to_owned()
    } else {
        format!("{outages} times")
    };
    let now = if still_down {
        format!(
            "It is not working right now{}; you will hear when it is back.",
            because(reason)
        )
    } else {
        "It works right now.".into()
    };
    Notice {
        // Those who hear of outages hear of this one.
        event: pb::NotificationEvent::SubscriptionDegraded,
        purpose: "subscription_flapping",
        summary: format!("{} was interrupted {times} in {}", s.name, span(window_ms)),
        paragraphs: vec![
            format!(
                "{} stopped working {times} in the {} after our last notice. Such interruptions are summarised instead of told one by one.",
                s.name,
                span(window_ms)
            ),
            now,
        ],
        action: link(s),
        at,
        fields,
    }
}

/// Its containers restarted `restarts` times within `window_ms`.
pub fn crash_loop(
    s: &SubscriptionRef,
    restarts: i32,
    window_ms: i64,
    status: &str,
    at: i64,
) -> Notice {
    let mut fields = fields(s, status, "");
    fields.insert("restarts".into(), restarts.into());
    fields.insert("window_seconds".into(), (window_ms / 1000).into());
    Notice {
        event: pb::NotificationEvent::SubscriptionCrashLoop,
        purpose: "subscription_crash_loop",
        summary: format!("{} keeps restarting", s.name),
        paragraphs: vec![
            format!(
                "{} restarted {restarts} times within {}: it is probably stopping right after it starts.",
                s.name,
                span(window_ms)
            ),
            "Its logs in the console usually say why (a setting it needs, a database it cannot reach).".into(),
        ],
        action: link(s),
        at,
        fields,
    }
}

/// An administrator suspended it (`reason` as its status says it).
pub fn suspended(s: &SubscriptionRef, reason: &str, at: i64) -> Notice {
    Notice {
        event: pb::NotificationEvent::SubscriptionSuspended,
        purpose: "subscription_suspended",
        summary: format!("{} was suspended", s.name),
        paragraphs: vec![
            format!("The operator suspended {}{}.", s.name, because(reason)),
            "It does not run until it is resumed; its data is kept.".into(),
        ],
        action: link(s),
        at,
        fields: fields(s, "SUSPENDED", reason),
    }
}

/// An administrator resumed it.
pub fn resumed(s: &SubscriptionRef, at: i64) -> Notice {
    Notice {
        event: pb::NotificationEvent::SubscriptionResumed,
        purpose: "subscription_resumed",
        summary: format!("{} was resumed", s.name),
        paragraphs: vec![format!(
            "The operator resumed {}: it is starting again.",
            s.name
        )],
        action: link(s),
        at,
        fields: fields(s, "PROVISIONING", "resumed"),
    }
}

/// An upgrade of a subscription from version `from` to `to` did not become
/// ready and was rolled back; `reason` in the customer's words.
pub fn rolled_back(s: &SubscriptionRef, from: &str, to: &str, reason: &str, at: i64) -> Notice {
    let mut fields = fields(s, "", reason);
    fields.insert(
        "upgrade".into(),
        json!({ "from_version": from, "to_version": to, "rolled_back": true }),
    );
    Notice {
        event: pb::NotificationEvent::SubscriptionRolledBack,
        purpose: "subscription_rolled_back",
        summary: format!("The upgrade of {} to {to} was rolled back", s.name),
        paragraphs: vec![
            format!(
                "{} did not become ready on version {to}{}, so it went back to version {from}, as it was before the upgrade.",
                s.name,
                because(reason)
            ),
            "Nothing was lost; you can try the upgrade again later.".into(),
        ],
        action: link(s),
        at,
        fields,
    }
}

/// The domain `host` of a subscription was not verified in time and is
/// no longer checked; `reason` says why its last check failed.
pub fn domain_failed(s: &SubscriptionRef, host: &str, reason: &str, at: i64) -> Notice {
    let mut fields = fields(s, "", reason);
    fields.insert(
        "domain".into(),
        json!({ "host": host, "state": "FAILED", "reason": reason }),
    );
    Notice {
        event: pb::NotificationEvent::DomainFailed,
        purpose: "domain_failed",
        summary: format!("{host} could not be verified for {}", s.name),
        paragraphs: vec![
            format!(
                "{host} was not verified for {}{}, so it is no longer checked and does not serve it.",
                s.name,
                because(reason)
            ),
            "Check its DNS record, then remove the domain and add it again to check anew.".into(),
        ],
        action: link(s),
        at,
        fields,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::Mail;

    #[test]
    fn an_owner_notice_names_the_subscription_and_links_to_it() {
        let s = SubscriptionRef {
            id: "s1".into(),
            name: "shop".into(),
        };
        let n = down(&s, false, "component web: starting", 0, 180_000);
        assert_eq!(n.summary, "shop is not fully working");
        assert_eq!(n.event, pb::NotificationEvent::SubscriptionDegraded);
        let json = n.json(&Mail::without_smtp("https://console.example.org"));
        assert_eq!(json["event"], "subscription_degraded");
        assert_eq!(json["subscription"]["status"], "DEGRADED");
        assert_eq!(json["link"], "https://console.example.org/subscriptions/s1");
        let mail = n.mail_to_owner("Ada", &Mail::without_smtp("https://c.example.org"));
        assert!(mail.text.contains("under Profile"), "{}", mail.text);
        assert!(mail.text.contains("3 minutes now"), "{}", mail.text);
    }
}
