//! The worker status state machine.
//!
//! The status is never set directly: it follows from four facts, so no
//! sequence of events can leave it inconsistent with them.

use minispod_proto::v1::WorkerStatus;

/// The facts a worker's status follows from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusFacts {
    /// An administrator put the worker in maintenance.
    pub maintenance: bool,
    /// Its stream is open.
    pub online: bool,
    /// The agent reports ready.
    pub ready: bool,
    /// Its Kubernetes node is Ready (true while no cluster is linked).
    pub node_ready: bool,
    /// It ever opened a stream.
    pub ever_connected: bool,
}

/// MAINTENANCE wins (it survives reconnects); otherwise the stream decides:
/// open with the agent and its node ready is ACTIVE, open otherwise
/// NOT_READY, closed INACTIVE, never opened PENDING.
pub fn derive(f: StatusFacts) -> WorkerStatus {
    match f {
        StatusFacts {
            maintenance: true, ..
        } => WorkerStatus::Maintenance,
        StatusFacts {
            online: true,
            ready: true,
            node_ready: true,
            ..
        } => WorkerStatus::Active,
        StatusFacts { online: true, .. } => WorkerStatus::NotReady,
        StatusFacts {
            ever_connected: false,
            ..
        } => WorkerStatus::Pending,
        _ => WorkerStatus::Inactive,
    }
}

/// The status of a worker whose stream is gone, as an SQL expression over
/// its `maintenance` and `ever_connected` columns: [`derive`] evaluated for
/// every combination, so a bulk update in SQL cannot disagree with it.
pub fn offline_status_sql() -> String {
    let s = |maintenance, ever_connected| {
        to_db(derive(StatusFacts {
            maintenance,
            online: false,
            ready: false,
            node_ready: false,
            ever_connected,
        }))
    };
    format!(
        "CASE WHEN maintenance AND ever_connected THEN '{}' WHEN maintenance THEN '{}' \
         WHEN ever_connected THEN '{}' ELSE '{}' END",
        s(true, true),
        s(true, false),
        s(false, true),
        s(false, false)
    )
}

/// The stored statuses a worker outside maintenance can have only while
/// its stream is open, as an SQL list (`'ACTIVE', 'NOT_READY'`), from
/// [`derive`].
pub fn online_statuses_sql() -> String {
    let mut names: Vec<&str> = [(true, true), (false, true), (true, false), (false, false)]
        .into_iter()
        .map(|(ready, node_ready)| {
            to_db(derive(StatusFacts {
                maintenance: false,
                online: true,
                ready,
                node_ready,
                ever_connected: true,
            }))
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The status's name as stored.
pub fn to_db(s: WorkerStatus) -> &'static str {
    match s {
        WorkerStatus::Pending => "PENDING",
        WorkerStatus::Active => "ACTIVE",
        WorkerStatus::Maintenance => "MAINTENANCE",
        WorkerStatus::NotReady => "NOT_READY",
        WorkerStatus::Inactive | WorkerStatus::Unspecified => "INACTIVE",
    }
}

/// The stored name as a status.
pub fn from_db(s: &str) -> WorkerStatus {
    match s {
        "PENDING" => WorkerStatus::Pending,
        "ACTIVE" => WorkerStatus::Active,
        "MAINTENANCE" => WorkerStatus::Maintenance,
        "NOT_READY" => WorkerStatus::NotReady,
        _ => WorkerStatus::Inactive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_combination_has_the_documented_status() {
        for bits in 0..32u8 {
            let f = StatusFacts {
                maintenance: bits & 1 != 0,
                online: bits & 2 != 0,
                ready: bits & 4 != 0,
                ever_connected: bits & 8 != 0,
                node_ready: bits & 16 != 0,
            };
            let s = derive(f);
            if f.maintenance {
                assert_eq!(s, WorkerStatus::Maintenance);
            } else if f.online {
                assert_eq!(s == WorkerStatus::Active, f.ready && f.node_ready, "{f:?}");
                assert_eq!(
                    s == WorkerStatus::NotReady,
                    !(f.ready && f.node_ready),
                    "{f:?}"
                );
            } else {
                assert!(
                    matches!(s, WorkerStatus::Inactive | WorkerStatus::Pending),
                    "{f:?}"
                );
            }
            assert_eq!(from_db(to_db(s)), s);
        }
    }

    #[test]
    fn the_sql_forms_are_derived_from_the_machine() {
        assert_eq!(
            offline_status_sql(),
            "CASE WHEN maintenance AND ever_connected THEN 'MAINTENANCE' WHEN maintenance THEN 'MAINTENANCE' \
             WHEN ever_connected THEN 'INACTIVE' ELSE 'PENDING' END"
        );
        assert_eq!(online_statuses_sql(), "'ACTIVE', 'NOT_READY'");
    }

    #[test]
    fn losing_the_stream_always_leaves_active_and_not_ready() {
        let up = StatusFacts {
            online: true,
            ready: true,
            node_ready: true,
            ever_connected: true,
            ..Default::default()
        };
        assert_eq!(derive(up), WorkerStatus::Active);
        assert_eq!(
            derive(StatusFacts {
                online: false,
                ..up
            }),
            WorkerStatus::Inactive
        );
        let maint = StatusFacts {
            maintenance: true,
            ..up
        };
        assert_eq!(
            derive(StatusFacts {
                online: false,
                ..maint
            }),
            WorkerStatus::Maintenance
        );
    }
}
