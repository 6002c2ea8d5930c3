//! Upgrades (issue #25): moving a subscription to a newer version of its
//! catalog entry. This file holds what an upgrade changes (the plan), its
//! checks, and the row's switch to UPGRADING, all in one write
//! transaction; the rollout, its success and its rollback are the
//! reconciler's (`rollout.rs`).
//!
//! While UPGRADING the row keeps the version, template, variables and
//! status it came from (`previous_*`), so the reconciler can put them back
//! by itself.

use minispod_proto::v1 as pb;
use prost::Message;
use tonic::Code;

use super::{Subscriptions, admission::is_admin, queries, queries::SubscriptionRow};
use crate::{
    catalog::{
        template,
        versions::{self, Version, VersionRow, VersionSummary},
    },
    error::{AppError, AppResult, Violations},
    store::{Tx, now_ms, timestamp},
    users::queries::UserRow,
    with_conn,
};

/// How recent a complete backup must be for an upgrade past a one-way
/// version to go ahead without an administrator's force.
const ONE_WAY_BACKUP_WITHIN: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The version fields of a subscription's message (the rest default):
/// what it runs, the newest version it could move to and its notes,
/// whether its own was withdrawn, and its upgrade in progress or the last
/// one's failure. `versions` are its entry's, newest first.
pub fn version_fields(
    r: &SubscriptionRow,
    versions: Option<&Vec<VersionSummary>>,
) -> pb::Subscription {
    let mine = Version::lenient(&r.version);
    let newest = versions.and_then(|l| l.iter().find(|v| !v.withdrawn));
    let (latest_version, latest_notes) = match newest {
        Some(v) if v.version > mine => (v.version.to_string(), v.notes.clone()),
        _ => (String::new(), String::new()),
    };
    let version_withdrawn = versions.is_some_and(|l| {
        l.iter()
            .any(|v| v.withdrawn && v.version.to_string() == r.version)
    });
    let upgrading = !r.previous_version.is_empty();
    pb::Subscription {
        version: r.version.clone(),
        latest_version,
        latest_notes,
        version_withdrawn,
        upgrading_from: r.previous_version.clone(),
        upgrade_deadline: upgrading.then(|| timestamp(r.upgrade_deadline_at)),
        upgrade_failure: r.upgrade_failure.clone(),
        ..Default::default()
    }
}

/// What moving from `from` (version `from_version`) to `to` changes:
/// images, variables added (with the default each takes) and removed, the
/// notes of every version in `between` (after `from_version` up to `to`,
/// oldest first), and the first one-way version among them.
pub fn plan(
    from: &pb::ServiceTemplate,
    from_version: &str,
    to: &VersionRow,
    between: &[&VersionRow],
) -> pb::UpgradePlan {
    let target = to.template();
    let mut image_changes = Vec::new();
    for c in &target.components {
        match from.components.iter().find(|f| f.name == c.name) {
            Some(f) if f.image == c.image => {}
            Some(f) => image_changes.push(pb::ImageChange {
                component: c.name.clone(),
                from_image: f.image.clone(),
                to_image: c.image.clone(),
            }),
            None => image_changes.push(pb::ImageChange {
                component: c.name.clone(),
                from_image: String::new(),
                to_image: c.image.clone(),
            }),
        }
    }
    for f in &from.components {
        if !target.components.iter().any(|c| c.name == f.name) {
            image_changes.push(pb::ImageChange {
                component: f.name.clone(),
                from_image: f.image.clone(),
                to_image: String::new(),
            });
        }
    }
    let variables_added = target
        .variables
        .iter()
        .filter(|v| !from.variables.iter().any(|f| f.name == v.name))
        .map(|v| pb::AddedVariable {
            name: v.name.clone(),
            label: v.label.clone(),
            default_value: v.default_value.clone(),
        })
        .collect();
    let variables_removed = from
        .variables
        .iter()
        .filter(|f| !target.variables.iter().any(|v| v.name == f.name))
        .map(|f| f.name.clone())
        .collect();
    pb::UpgradePlan {
        from_version: from_version.to_owned(),
        to_version: to.version.clone(),
        image_changes,
        variables_added,
        variables_removed,
        notes: between
            .iter()
            .map(|v| pb::VersionNotes {
                version: v.version.clone(),
                notes: v.notes.clone(),
            })
            .collect(),
        one_way_version: between
            .iter()
            .find(|v| v.one_way)
            .map(|v| v.version.clone())
            .unwrap_or_default(),
        backup_first: false,
    }
}

/// The version `asked` of `versions` (newest first), or the newest that
/// is not withdrawn when `asked` is empty.
fn target<'a>(versions: &'a [VersionRow], asked: &str, name: &str) -> AppResult<&'a VersionRow> {
    if asked.is_empty() {
        return versions
            .iter()
            .find(|v| v.withdrawn_at.is_none())
            .ok_or_else(|| {
                AppError::FailedPrecondition(format!("{name} has no version to upgrade to"))
            });
    }
    let v = versions
        .iter()
        .find(|v| v.version == asked)
        .ok_or_else(|| AppError::invalid("version", format!("{name} has no version {asked:?}")))?;
    if v.withdrawn_at.is_some() {
        return Err(AppError::FailedPrecondition(format!(
            "version {asked} of {name} was withdrawn: choose another version"
        )));
    }
    Ok(v)
}

/// Who starts an upgrade.
#[derive(Debug, Clone, Copy)]
pub enum By<'a> {
    /// A caller of UpgradeSubscription: an administrator, or the user
    /// `user_id` (who must own the subscription).
    Caller {
        /// The caller is an administrator.
        admin: bool,
        /// The caller.
        user_id: &'a str,
    },
    /// The subscription's auto-update policy (`autoupdate`): never forced,
    /// only a RUNNING subscription, and the version is recorded as tried
    /// in the transaction that starts it.
    AutoUpdate,
}

/// The refusal of an upgrade past `plan`'s one-way version when no backup
/// can be taken first (no destination), for an administrator or not.
pub fn one_way_refusal(plan: &pb::UpgradePlan, admin: bool) -> AppError {
    AppError::refused(
        Code::FailedPrecondition,
        "ONE_WAY_VERSION",
        format!(
            "version {} migrates data and cannot be rolled back past; back it up first (a \
             complete backup of version {} from the last 24 hours; no backup destination is \
             configured to take one){}",
            plan.one_way_version,
            plan.from_version,
            if admin {
                ", or set force to upgrade anyway"
            } else {
                ", or ask an administrator to upgrade it"
            }
        ),
    )
}

impl Subscriptions {
    /// UpgradeSubscription for `caller`: the plan, and whether the upgrade
    /// started (false for a dry run). See the proto for the refusals.
    pub async fn upgrade(
        &self,
        caller: &UserRow,
        r: &pb::UpgradeSubscriptionRequest,
    ) -> AppResult<pb::UpgradePlan> {
        let by = By::Caller {
            admin: is_admin(caller),
            user_id: &caller.id,
        };
        self.upgrade_by(by, r).await
    }

    /// An upgrade started by `by`: UpgradeSubscription's and the
    /// auto-update's one path (the same checks, rollout, rollback,
    /// notices and events).
    pub async fn upgrade_by(
        &self,
        by: By<'_>,
        r: &pb::UpgradeSubscriptionRequest,
    ) -> AppResult<pb::UpgradePlan> {
        if r.id.is_empty() {
            return Err(AppError::invalid("id", "is required"));
        }
        let (admin, auto) = match by {
            By::Caller { admin, .. } => (admin, false),
            By::AutoUpdate => (false, true),
        };
        let visible = |row: &SubscriptionRow| match by {
            By::Caller { admin, user_id } => admin || row.user_id == user_id,
            By::AutoUpdate => true,
        };
        let row = match queries::get(self.db(), &r.id).await? {
            Some(row) if row.desired != "DELETED" && visible(&row) => row,
            _ => return Err(queries::not_found(&r.id)),
        };
        if auto && row.status != "RUNNING" {
            return Err(AppError::FailedPrecondition(format!(
                "subscription {} is {}: only a running subscription is upgraded automatically",
                row.name,
                row.status.to_lowercase()
            )));
        }
        if row.desired != "RUNNING" {
            return Err(AppError::FailedPrecondition(format!(
                "subscription {} is suspended: resume it before upgrading",
                row.name
            )));
        }
        if !row.previous_version.is_empty() {
            return Err(AppError::FailedPrecondition(format!(
                "subscription {} is upgrading from {} to {} already",
                row.name, row.previous_version, row.version
            )));
        }
        let versions = versions::list_read(self.db(), &row.service_id).await?;
        let to = target(&versions, &r.version, &row.service_name)?;
        let current = Version::lenient(&row.version);
        if to.parsed() <= current {
            return Err(AppError::FailedPrecondition(format!(
                "subscription {} runs version {} already; an upgrade goes to a newer version",
                row.name, row.version
            )));
        }
        let mut between: Vec<&VersionRow> = versions
            .iter()
            .filter(|v| v.parsed() > current && v.parsed() <= to.parsed())
            .collect();
        between.reverse();
        let from_template = pb::ServiceTemplate::decode(row.template.as_slice())
            .map_err(|e| AppError::Internal(anyhow::Error::new(e).context("stored template")))?;
        let mut plan = plan(&from_template, &row.version, to, &between);
        if !plan.one_way_version.is_empty() {
            if auto {
                return Err(AppError::refused(
                    Code::FailedPrecondition,
                    "ONE_WAY_VERSION",
                    format!(
                        "version {} migrates data and cannot be rolled back past; it is never \
                         applied automatically",
                        plan.one_way_version
                    ),
                ));
            }
            // A complete backup of the version it runs, taken within the
            // day, is the way back (#26): without one, the caller takes
            // one first (`backup_first`; BackupService follows it with this
            // upgrade), unless an administrator forces it.
            let backed_up = queries::recent_backup(
                self.db(),
                &row.id,
                &row.version,
                now_ms() - ONE_WAY_BACKUP_WITHIN.as_millis() as i64,
            )
            .await?
            .is_some();
            if !backed_up && r.force && !admin {
                return Err(AppError::PermissionDenied(
                    "only an administrator can force an upgrade past a one-way version".into(),
                ));
            }
            if !backed_up && !r.force {
                plan.backup_first = true;
            }
        }
        // The values it keeps, with the new variables' defaults.
        let target_template = to.template();
        let mut given = self.open_map(&row.id, &row.variables)?;
        given.retain(|k, _| target_template.variables.iter().any(|v| &v.name == k));
        let mut v = Violations::new();
        let values = template::validate_values(&target_template, &given, &mut v);
        if let Err(AppError::InvalidArgument { message, .. }) = v.finish() {
            return Err(AppError::FailedPrecondition(format!(
                "version {} cannot take this subscription's values: {message}",
                to.version
            )));
        }
        // The customer's limits, in the transaction that starts it (a dry
        // run's is rolled back).
        let mut tx = self.db().begin().await?;
        if queries::copying(&mut tx, &row.id).await? {
            return Err(AppError::FailedPrecondition(format!(
                "a backup or a restore of subscription {} is under way; upgrade it once that ends",
                row.name
            )));
        }
        super::limits::admit_upgrade(
            &mut tx,
            &self.settings().tenant,
            &row.user_id,
            &from_template,
            &target_template,
        )
        .await?;
        if r.dry_run || plan.backup_first {
            return Ok(plan);
        }
        let mut generated = self.open_map(&row.id, &row.generated)?;
        for g in &target_template.generated {
            generated
                .entry(g.name.clone())
                .or_insert_with(|| super::admission::generate(g));
        }
        let reason = format!(
            "{} from {} to {}: 0 of {} components ready",
            if auto {
                "upgrading automatically in its maintenance window"
            } else {
                "upgrading"
            },
            display(&row.version),
            to.version,
            target_template.components.len()
        );
        let now = now_ms();
        let deadline = now + self.settings().upgrade_deadline.as_millis() as i64;
        if auto && !super::autoupdate::record_try(&mut tx, &row.id, &to.version, now).await? {
            return Err(AppError::FailedPrecondition(format!(
                "version {} was tried automatically already",
                to.version
            )));
        }
        let started = start(
            &mut tx,
            &row,
            Start {
                version: &to.version,
                template: &target_template.encode_to_vec(),
                variables: &self.seal_map(&row.id, &values),
                generated: &self.seal_map(&row.id, &generated),
                reason: &reason,
                deadline,
                now,
            },
        )
        .await?;
        if !started {
            return Err(AppError::FailedPrecondition(format!(
                "subscription {} changed meanwhile; try again",
                row.name
            )));
        }
        tx.commit().await.map_err(AppError::from)?;
        tracing::info!(subscription = %row.id, name = %row.name, from = %row.version, to = %to.version,
            automatic = auto, "subscription upgrade started");
        self.changed(
            &row.id,
            Some(pb::SubscriptionEvent {
                status: pb::SubscriptionStatus::Upgrading as i32,
                reason,
                at: Some(timestamp(now)),
            }),
        );
        Ok(plan)
    }

    /// UpgradeServiceSubscriptions: every running subscription of the
    /// entry `service_id` on an older version than the target, each
    /// through [`Subscriptions::upgrade`] (administrators only).
    pub async fn upgrade_service(
        &self,
        caller: &UserRow,
        r: &pb::UpgradeServiceSubscriptionsRequest,
    ) -> AppResult<pb::UpgradeServiceSubscriptionsResponse> {
        if r.service_id.is_empty() {
            return Err(AppError::invalid("service_id", "is required"));
        }
        let Some((service_id, _, name, ..)) = queries::deployable(self.db(), &r.service_id).await?
        else {
            return Err(AppError::NotFound(format!("no service {:?}", r.service_id)));
        };
        let versions = versions::list_read(self.db(), &service_id).await?;
        let to = target(&versions, &r.version, &name)?.clone();
        let ids: Vec<(String, String, String)> = with_conn!(self.db().read(), |c| sqlx::query_as(
            "SELECT id, name, version FROM subscriptions
             WHERE service_id = $1 AND desired = 'RUNNING' ORDER BY created_at LIMIT 10000"
        )
        .bind(&service_id)
        .fetch_all(c)
        .await)?;
        let mut out = pb::UpgradeServiceSubscriptionsResponse {
            to_version: to.version.clone(),
            ..Default::default()
        };
        for (id, sub_name, version) in ids {
            if Version::lenient(&version) >= to.parsed() {
                continue;
            }
            let one = pb::UpgradeSubscriptionRequest {
                id: id.clone(),
                version: to.version.clone(),
                force: r.force,
                dry_run: r.dry_run,
            };
            match self.upgrade(caller, &one).await {
                Ok(plan) if plan.backup_first => out.refused.push(pb::UpgradeRefusal {
                    subscription_id: id,
                    name: sub_name,
                    message: format!(
                        "version {} migrates data and cannot be rolled back past: upgrade it \
                         alone (UpgradeSubscription backs it up first), or set force",
                        plan.one_way_version
                    ),
                }),
                Ok(_) => out.upgraded.push(id),
                Err(AppError::Internal(e)) => return Err(AppError::Internal(e)),
                Err(e) => out.refused.push(pb::UpgradeRefusal {
                    subscription_id: id,
                    name: sub_name,
                    message: e.to_string(),
                }),
            }
        }
        Ok(out)
    }
}

/// A version for sentences: '' is "an unversioned template".
pub fn display(version: &str) -> &str {
    if version.is_empty() {
        "an unversioned template"
    } else {
        version
    }
}

/// What [`start`] writes.
struct Start<'a> {
    version: &'a str,
    template: &'a [u8],
    variables: &'a str,
    generated: &'a str,
    reason: &'a str,
    deadline: i64,
    now: i64,
}

/// Switches `row` to the new version (UPGRADING, the previous version,
/// template, variables and status kept), with its event; false when the
/// row changed since it was read (suspended, deleted, upgrading).
async fn start(tx: &mut Tx, row: &SubscriptionRow, s: Start<'_>) -> AppResult<bool> {
    let done = with_conn!(&mut *tx, |c| sqlx::query(
        "UPDATE subscriptions SET previous_version = version, previous_template = template,
            previous_variables = variables, previous_status = status,
            version = $2, template = $3, variables = $4, generated = $5,
            status = 'UPGRADING', status_reason = $6, status_changed_at = $7, updated_at = $7,
            generation = generation + 1, upgrade_deadline_at = $8, upgrade_failure = ''
         WHERE id = $1 AND previous_version = '' AND desired = 'RUNNING' AND generation = $9"
    )
    .bind(&row.id)
    .bind(s.version)
    .bind(s.template)
    .bind(s.variables)
    .bind(s.generated)
    .bind(s.reason)
    .bind(s.now)
    .bind(s.deadline)
    .bind(row.generation)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    if done != 1 {
        return Ok(false);
    }
    queries::add_event(tx, &row.id, "UPGRADING", s.reason, s.now).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(name: &str, image: &str) -> pb::TemplateComponent {
        pb::TemplateComponent {
            name: name.into(),
            image: image.into(),
            ..Default::default()
        }
    }

    fn version(v: &str, t: &pb::ServiceTemplate, notes: &str, one_way: bool) -> VersionRow {
        VersionRow {
            service_id: "s".into(),
            version: v.into(),
            template: t.encode_to_vec(),
            notes: notes.into(),
            one_way,
            withdrawn_at: None,
            published_at: 0,
        }
    }

    #[test]
    fn a_plan_names_the_images_the_new_variables_and_every_versions_notes() {
        let from = pb::ServiceTemplate {
            components: vec![component("app", "x/app:1"), component("cache", "x/c:1")],
            variables: vec![pb::TemplateVariable {
                name: "OLD".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let to_t = pb::ServiceTemplate {
            components: vec![component("app", "x/app:2"), component("db", "x/db:1")],
            variables: vec![pb::TemplateVariable {
                name: "NEW".into(),
                label: "New".into(),
                default_value: "yes".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mid = version("1.5", &from, "fixes", false);
        let to = version("2.0", &to_t, "migrates", true);
        let p = plan(&from, "1.0", &to, &[&mid, &to]);
        assert_eq!(p.from_version, "1.0");
        assert_eq!(p.to_version, "2.0");
        let changes: Vec<(&str, &str, &str)> = p
            .image_changes
            .iter()
            .map(|c| {
                (
                    c.component.as_str(),
                    c.from_image.as_str(),
                    c.to_image.as_str(),
                )
            })
            .collect();
        assert_eq!(
            changes,
            vec![
                ("app", "x/app:1", "x/app:2"),
                ("db", "", "x/db:1"),
                ("cache", "x/c:1", "")
            ]
        );
        assert_eq!(p.variables_added[0].name, "NEW");
        assert_eq!(p.variables_added[0].default_value, "yes");
        assert_eq!(p.variables_removed, vec!["OLD".to_owned()]);
        assert_eq!(p.notes.len(), 2);
        assert_eq!(p.notes[0].version, "1.5");
        assert_eq!(p.one_way_version, "2.0");
    }
}
