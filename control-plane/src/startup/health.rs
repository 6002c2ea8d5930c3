//! grpc.health.v1: the API services while the store answers, and the
//! cluster link.

use std::time::Duration;

use minispod_proto::v1 as pb;

use crate::{cluster::ClusterLink, store::Db};

/// The names grpc.health.v1 reports: the server as a whole ("") and every
/// API service, all SERVING while the store answers and NOT_SERVING from the
/// moment shutdown begins.
pub(super) const API_SERVICES: [&str; 10] = crate::api::HEALTH_NAMES;

/// The grpc.health.v1 name of the cluster link: SERVING while it is
/// CONNECTED. Only that name: a lost API server must not take the control
/// plane out of a load balancer, since agents' streams do not need it.
pub const CLUSTER_HEALTH: &str = "minispod.cluster";

/// Reports the cluster link's state on grpc.health.v1 as [`CLUSTER_HEALTH`].
pub(super) async fn report_cluster_health(
    link: ClusterLink,
    health: tonic_health::server::HealthReporter,
) {
    use tonic_health::ServingStatus;
    let mut last = None;
    loop {
        let up = link.state() == pb::ClusterLinkState::Connected;
        if last != Some(up) {
            let status = if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status(CLUSTER_HEALTH, status).await;
            last = Some(up);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How often the database is checked for grpc.health.v1.
const DATABASE_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Reports NOT_SERVING on grpc.health.v1 (overall and for every API
/// service) while the database does not answer, and SERVING again once it
/// does, so probes and load balancers route around a replica cut off from it.
pub(super) async fn report_database_health(db: Db, health: tonic_health::server::HealthReporter) {
    use tonic_health::ServingStatus;
    let mut serving = true;
    loop {
        tokio::time::sleep(DATABASE_CHECK_INTERVAL).await;
        let up = matches!(
            tokio::time::timeout(DATABASE_CHECK_INTERVAL, db.ping()).await,
            Ok(Ok(()))
        );
        if up == serving {
            continue;
        }
        serving = up;
        let status = if up {
            tracing::info!("database reachable again: SERVING");
            ServingStatus::Serving
        } else {
            tracing::warn!("database unreachable: NOT_SERVING");
            ServingStatus::NotServing
        };
        for name in API_SERVICES {
            health.set_service_status(name, status).await;
        }
    }
}
