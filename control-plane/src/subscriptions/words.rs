//! Customer words and operator words.
//!
//! A customer who cannot subscribe, or whose subscription does not run,
//! is told what it means for them ("n8n cannot be started right now; the
//! operator has been told"), never the operator's instructions, the
//! fleet's figures, the namespace or a worker's name. Administrators get
//! the figures and the way to fix it. The store keeps the operator's words
//! (status reasons, events); [`for_customer`] turns them into the
//! customer's when they leave the API for one.
//!
//! When the installation, not the customer, is why a subscription is
//! refused ([`Blocked`]), administrators are told with a notice
//! (NOTIFICATION_EVENT_SUBSCRIBE_BLOCKED), at most once per cause every
//! `--notify-blocked-every` ([`BlockedNotices`]); the customer's words say
//! "the operator has been told" only when a notice was queued for at least
//! one administrator.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use tonic::Code;

use crate::{error::AppError, notifications::notices, store::now_ms};

use super::Subscriptions;

/// Why the installation cannot take a subscription now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// No Kubernetes cluster is linked.
    NoCluster,
    /// The schedulable workers have no room; the figures, for
    /// administrators.
    NoCapacity(String),
}

impl Blocked {
    /// The ErrorInfo reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Blocked::NoCluster => "NO_CLUSTER_LINKED",
            Blocked::NoCapacity(_) => "NO_CAPACITY",
        }
    }

    /// What an administrator reads: what is wrong and how to fix it.
    pub fn admin_message(&self) -> String {
        match self {
            Blocked::NoCluster => "no Kubernetes cluster is linked: start the control plane with \
                 --kubeconfig FILE (env MINISPOD_KUBECONFIG; on a K3s server \
                 /etc/rancher/k3s/k3s.yaml) or, inside the cluster, --kube-in-cluster"
                .into(),
            Blocked::NoCapacity(figures) => format!(
                "{figures}; add a worker (Enrollment), uncordon one, or end maintenance of one"
            ),
        }
    }

    /// What a customer reads about `service`; `told` when administrators
    /// were notified.
    pub fn customer_message(&self, service: &str, told: bool) -> String {
        let then = if told {
            "the operator has been told"
        } else {
            "please try again later"
        };
        format!("{service} cannot be started right now; {then}")
    }

    /// The refusal for a caller: an administrator's or a customer's words.
    pub fn error(&self, admin: bool, service: &str, told: bool) -> AppError {
        let message = if admin {
            self.admin_message()
        } else {
            self.customer_message(service, told)
        };
        AppError::refused(Code::FailedPrecondition, self.reason(), message)
    }
}

/// When administrators were last told of each cause, on this replica.
#[derive(Debug)]
pub struct BlockedNotices {
    every: Duration,
    /// Cause → (when told, whether anyone was told).
    last: Mutex<HashMap<&'static str, (Instant, bool)>>,
}

impl BlockedNotices {
    /// At most one notice per cause every `every`.
    pub fn new(every: Duration) -> Self {
        BlockedNotices {
            every,
            last: Mutex::default(),
        }
    }

    /// Whether a notice of `cause` is due now; when it is not, whether the
    /// last one reached anyone. A due notice is taken at once, so that
    /// concurrent refusals queue one notice.
    fn take(&self, cause: &'static str) -> Result<(), bool> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match last.get(cause) {
            Some((at, told)) if at.elapsed() < self.every => Err(*told),
            _ => {
                last.insert(cause, (Instant::now(), false));
                Ok(())
            }
        }
    }

    fn record(&self, cause: &'static str, told: bool) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = last.get_mut(cause) {
            entry.1 = told;
        }
    }
}

impl Subscriptions {
    /// Tells administrators that `blocked` kept a customer from subscribing
    /// to `service`, unless this cause was told within the window. Returns
    /// whether administrators were told (now or by the window's notice).
    /// A failure to queue is logged, never the customer's error.
    pub async fn tell_blocked(&self, blocked: &Blocked, service: &str) -> bool {
        let cause = blocked.reason();
        tracing::warn!(cause, service, detail = %blocked.admin_message(), "a customer could not subscribe");
        if let Err(told) = self.blocked_notices().take(cause) {
            return told;
        }
        let notice = notices::subscribe_blocked(cause, service, &blocked.admin_message(), now_ms());
        let queued = async {
            let mut tx = self.db().begin().await?;
            let n = self.notifier().queue(&mut tx, &notice).await?;
            tx.commit().await.map_err(AppError::from)?;
            Ok::<usize, AppError>(n)
        }
        .await;
        let told = match queued {
            Ok(n) => {
                if n > 0 {
                    self.notifier().wake();
                }
                n > 0
            }
            Err(e) => {
                tracing::error!(error = %e, "could not queue the subscribe-blocked notice");
                false
            }
        };
        self.blocked_notices().record(cause, told);
        told
    }
}

/// A status reason or an event's reason, as stored (the operator's words),
/// in a customer's words: no worker names, fleet figures, namespaces or
/// the cluster's own messages.
pub fn for_customer(reason: &str) -> String {
    if reason.is_empty() {
        return String::new();
    }
    let mut out: Vec<String> = Vec::new();
    for part in reason.split("; ") {
        let p = part_for_customer(part);
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out.join("; ")
}

/// One `; `-separated part of a reason (`reconcile::derive` writes
/// `component NAME: WHAT` parts).
fn part_for_customer(part: &str) -> String {
    if part.starts_with("the cluster refused to ") {
        return "the cluster refused to start it; it is retried".into();
    }
    let Some((name, what)) = part
        .strip_prefix("component ")
        .and_then(|rest| rest.split_once(": "))
    else {
        // The reconciler's and the API's own sentences ("waiting to be
        // applied to the cluster", "suspended by an administrator: …",
        // "deletion asked for") are already the customer's words.
        return part.to_owned();
    };
    let what = if what == "waiting for its pod" {
        "starting".to_owned()
    } else if what.starts_with("running but not ready")
        || what.starts_with("crash loop (")
        || what == "rolling out"
        || what.starts_with("its rollout cannot be read")
    {
        // An upgrade's progress (`reconcile/rollout.rs`), in customer
        // words already.
        what.to_owned()
    } else if what == "its image cannot be pulled" {
        "its image cannot be downloaded".to_owned()
    } else if what.starts_with("worker ") && what.ends_with(" is offline") {
        "the machine it runs on is offline; it starts again elsewhere or when the machine is back"
            .to_owned()
    } else if what.starts_with("image ") && what.contains(" cannot be pulled") {
        "its image cannot be downloaded".to_owned()
    } else if let Some(rest) = what.strip_prefix("keeps crashing (") {
        // "(N restarts): the kubelet's words": the words name the pod and
        // its namespace.
        match rest.split_once(')') {
            Some((n, _)) => format!("keeps crashing ({n})"),
            None => "keeps crashing".to_owned(),
        }
    } else if what.starts_with("no capacity") {
        "waiting for room in the cluster".to_owned()
    } else {
        "starting".to_owned()
    };
    format!("component {name}: {what}")
}

/// A pod's reason for a customer: the waiting reason alone
/// (`ContainerCreating`, `CrashLoopBackOff`), never the kubelet's or the
/// scheduler's message (node counts, taints, the namespace).
pub fn pod_reason_for_customer(waiting: &str) -> String {
    if waiting == "Unschedulable" {
        "waiting for room in the cluster".into()
    } else {
        waiting.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_names_figures_and_kubelet_words_do_not_reach_customers() {
        let stored = "component db: worker host-7 is offline; component app: no capacity: \
                      0/3 nodes are available: 3 Insufficient cpu; component web: keeps \
                      crashing (6 restarts): back-off 5m0s restarting failed container=web \
                      pod=blog-web-1_ms-abc(123)";
        let told = for_customer(stored);
        assert_eq!(
            told,
            "component db: the machine it runs on is offline; it starts again elsewhere or \
             when the machine is back; component app: waiting for room in the cluster; \
             component web: keeps crashing (6 restarts)"
        );
        for secret in ["host-7", "0/3", "Insufficient", "ms-abc", "container="] {
            assert!(!told.contains(secret), "{secret} in {told}");
        }
    }

    #[test]
    fn the_clusters_refusal_is_told_without_its_message() {
        let told = for_customer(
            "the cluster refused to apply the Deployment blog-app: deployments.apps is \
             forbidden: User \"system:serviceaccount:minispod:cp\" cannot create in namespace \
             ms-abc",
        );
        assert!(
            told.starts_with("the cluster refused to start it"),
            "{told}"
        );
        assert!(!told.contains("ms-abc") && !told.contains("serviceaccount"));
    }

    #[test]
    fn the_apis_own_sentences_stay_as_they_are() {
        for s in [
            "",
            "waiting to be applied to the cluster",
            "suspended by an administrator: unpaid invoice",
            "deletion asked for",
        ] {
            assert_eq!(for_customer(s), s);
        }
        assert_eq!(
            for_customer("component app: waiting for its pod; component db: waiting for its pod"),
            "component app: starting; component db: starting"
        );
    }

    #[test]
    fn customers_are_told_the_operator_knows_only_when_a_notice_went_out() {
        let b = Blocked::NoCluster;
        assert_eq!(
            b.customer_message("n8n", true),
            "n8n cannot be started right now; the operator has been told"
        );
        assert!(!b.customer_message("n8n", false).contains("told"));
        assert!(b.admin_message().contains("--kubeconfig"));
        let e = Blocked::NoCapacity("x".into()).error(false, "Ghost", true);
        assert_eq!(e.reason(), Some("NO_CAPACITY"));
        assert!(!e.to_string().contains('x'));
    }

    #[test]
    fn one_notice_per_cause_per_window() {
        let n = BlockedNotices::new(Duration::from_secs(60));
        assert_eq!(n.take("NO_CAPACITY"), Ok(()));
        n.record("NO_CAPACITY", true);
        assert_eq!(n.take("NO_CAPACITY"), Err(true));
        assert_eq!(n.take("NO_CLUSTER_LINKED"), Ok(()));
        assert_eq!(n.take("NO_CLUSTER_LINKED"), Err(false));
        let n = BlockedNotices::new(Duration::ZERO);
        assert_eq!(n.take("NO_CAPACITY"), Ok(()));
        assert_eq!(n.take("NO_CAPACITY"), Ok(()));
    }
}
