//! WorkerService's writes: editing a worker, its state, enrollment
//! tokens, takeovers and readmissions.

use std::collections::BTreeMap;

use minispod_proto::v1::{self as pb, WorkerStatus};

use super::WorkerApi;
use crate::{
    error::{AppError, AppResult, Violations},
    store::timestamp,
    workers::{
        enrollment::{NewToken, store_new_token, validate_facts},
        queries::{self as workers_db, RemovedMachineRow, StateChange, TaintJson},
        session::change_state,
    },
};

pub(super) fn parse_status_filter(v: i32) -> AppResult<Option<WorkerStatus>> {
    match WorkerStatus::try_from(v) {
        Ok(WorkerStatus::Unspecified) => Ok(None),
        Ok(s) => Ok(Some(s)),
        Err(_) => Err(AppError::invalid("status", format!("unknown status {v}"))),
    }
}

/// Kubernetes rules, simplified: keys are an optional DNS prefix and a name
/// of at most 63 alphanumerics, dashes, dots and underscores; values at most
/// 63 of the same.
pub(super) fn label_part_ok(s: &str, allow_empty: bool) -> bool {
    if s.is_empty() {
        return allow_empty;
    }
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

pub(super) fn label_key_ok(k: &str) -> bool {
    match k.rsplit_once('/') {
        Some((prefix, name)) => {
            prefix.len() <= 253
                && !prefix.is_empty()
                && prefix.split('.').all(|l| label_part_ok(l, false))
                && label_part_ok(name, false)
        }
        None => label_part_ok(k, false),
    }
}

impl WorkerApi {
    pub(super) async fn update(&self, r: pb::UpdateWorkerRequest) -> AppResult<pb::Worker> {
        let mut v = Violations::new();
        let labels = r
            .labels
            .map(|l| l.labels.into_iter().collect::<BTreeMap<_, _>>());
        if let Some(labels) = &labels {
            if labels.len() > 64 {
                v.add("labels", "at most 64 labels");
            }
            for (k, val) in labels {
                if !label_key_ok(k) || !label_part_ok(val, true) {
                    v.add("labels", format!("{k:?}={val:?} is not a valid label"));
                }
            }
        }
        let taints = r.taints.map(|t| t.taints);
        if let Some(taints) = &taints {
            if taints.len() > 32 {
                v.add("taints", "at most 32 taints");
            }
            for t in taints {
                if !label_key_ok(&t.key) || !label_part_ok(&t.value, true) {
                    v.add(
                        "taints",
                        format!("{:?}={:?} is not a valid taint", t.key, t.value),
                    );
                }
                if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&t.effect.as_str()) {
                    v.add(
                        "taints",
                        format!(
                            "effect {:?} must be NoSchedule, PreferNoSchedule or NoExecute",
                            t.effect
                        ),
                    );
                }
            }
        }
        if r.notes.as_ref().is_some_and(|n| n.chars().count() > 2000) {
            v.add("notes", "must be at most 2000 characters");
        }
        v.finish()?;
        let labels = labels
            .map(|l| serde_json::to_string(&l))
            .transpose()
            .map_err(anyhow::Error::from)?;
        let taints = taints
            .map(|t| {
                let t: Vec<TaintJson> = t
                    .into_iter()
                    .map(|t| TaintJson {
                        key: t.key,
                        value: t.value,
                        effect: t.effect,
                    })
                    .collect();
                serde_json::to_string(&t)
            })
            .transpose()
            .map_err(anyhow::Error::from)?;
        let mut tx = self.hub.db().begin().await?;
        let id = workers_db::resolve(&mut tx, &r.id).await?.id;
        let row = workers_db::update_meta(
            &mut tx,
            &id,
            labels.as_deref(),
            taints.as_deref(),
            r.notes.as_deref(),
        )
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no worker with id {id:?}")))?;
        tx.commit().await?;
        self.hub.publish(&row);
        Ok(self.hub.worker(&row))
    }

    /// Applies `change` to the worker `key` names (its id or its name).
    pub(super) async fn state(&self, key: &str, change: StateChange<'_>) -> AppResult<pb::Worker> {
        let id = workers_db::resolve(self.hub.db().read(), key).await?.id;
        let row = change_state(&self.hub, &id, change)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no worker with id {id:?}")))?;
        Ok(self.hub.worker(&row))
    }

    pub(super) async fn create_token(
        &self,
        admin: &str,
        r: pb::CreateEnrollmentTokenRequest,
    ) -> AppResult<pb::CreateEnrollmentTokenResponse> {
        let mut v = Violations::new();
        let ttl = if r.ttl_seconds == 0 {
            86_400
        } else {
            r.ttl_seconds
        };
        if !(60..=31_536_000).contains(&ttl) {
            v.add("ttl_seconds", "must be between 60 and 31536000");
        }
        if !(0..=100_000).contains(&r.max_uses) {
            v.add("max_uses", "must be between 0 and 100000");
        }
        if r.description.chars().count() > 200 {
            v.add("description", "must be at most 200 characters");
        }
        let machine_id = r.machine_id.trim().to_owned();
        if !machine_id.is_empty() {
            let probe = pb::MachineFacts {
                hostname: "h".into(),
                machine_id: machine_id.clone(),
                ..Default::default()
            };
            if validate_facts(&probe).is_err() {
                v.add(
                    "machine_id",
                    "must be 1 to 128 letters, digits, dashes or underscores",
                );
            }
        }
        v.finish()?;
        let (token, row) = store_new_token(
            self.hub.db(),
            NewToken {
                ttl: std::time::Duration::from_secs(ttl.unsigned_abs()),
                max_uses: r.max_uses.unsigned_abs(),
                description: r.description,
                machine_id: Some(machine_id),
            },
            Some(admin),
        )
        .await?;
        Ok(pb::CreateEnrollmentTokenResponse {
            token: token.expose().to_owned(),
            enrollment_token: Some((&row).into()),
            ca_hash: self.ca_hash.clone(),
            server_url: self.agent_url.clone(),
        })
    }
}

pub(super) fn removed_machine(r: &RemovedMachineRow) -> pb::RemovedMachine {
    pb::RemovedMachine {
        machine_id: r.machine_id.clone(),
        worker_id: r.worker_id.clone(),
        name: r.name.clone(),
        removed_by: r.removed_by.clone().unwrap_or_default(),
        removed_at: Some(timestamp(r.removed_at)),
    }
}

impl WorkerApi {
    pub(super) async fn approve_takeover(
        &self,
        admin: &str,
        key: &str,
        machine_id: &str,
    ) -> AppResult<pb::Worker> {
        if machine_id.is_empty() {
            return Err(AppError::invalid(
                "machine_id",
                "give the machine id the worker's takeover shows",
            ));
        }
        let mut tx = self.hub.db().begin().await?;
        let worker = workers_db::resolve(&mut tx, key).await?;
        match worker.takeover_machine_id.as_deref() {
            None => {
                return Err(AppError::FailedPrecondition(format!(
                    "no machine asked to take over worker {:?}",
                    worker.name
                )));
            }
            Some(m) if m != machine_id => {
                return Err(AppError::FailedPrecondition(format!(
                    "the machine asking to take over worker {:?} is now {m:?}, not {machine_id:?}",
                    worker.name
                )));
            }
            Some(_) => {}
        }
        if worker.online {
            return Err(AppError::FailedPrecondition(format!(
                "worker {:?} is online: its machine still runs, so the asking machine is another \
                 one with the same host name; rename one of them (or delete the worker first)",
                worker.name
            )));
        }
        let row = workers_db::approve_takeover(&mut tx, &worker.id, machine_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no worker with id {:?}", worker.id)))?;
        tx.commit().await?;
        self.hub.publish(&row);
        tracing::warn!(by = admin, worker_id = %row.id, name = %row.name, old_machine_id = %row.machine_id,
            new_machine_id = machine_id, "takeover of the worker approved: the new machine gets it at its next enrollment");
        Ok(self.hub.worker(&row))
    }

    pub(super) async fn readmit(
        &self,
        admin: &str,
        machine_id: &str,
    ) -> AppResult<pb::RemovedMachine> {
        if machine_id.trim().is_empty() {
            return Err(AppError::invalid("machine_id", "is required"));
        }
        let mut tx = self.hub.db().begin().await?;
        let row = workers_db::readmit_machine(&mut tx, machine_id)
            .await?
            .ok_or_else(|| {
                AppError::NotFound(format!("machine {machine_id:?} is not a removed machine"))
            })?;
        tx.commit().await?;
        tracing::info!(by = admin, machine_id, "removed machine readmitted");
        Ok(removed_machine(&row))
    }
}
