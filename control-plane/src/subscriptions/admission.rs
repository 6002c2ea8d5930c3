//! Admission: whether a new subscription may be created (the template, the
//! customer's limits, then the installation's room), and creating it.

use std::collections::BTreeMap;

use minispod_proto::v1 as pb;
use prost::Message;
use rand::Rng;
use tonic::Code;

use super::{
    Change, Subscriptions, limits,
    queries::{self, SubscriptionRow},
    render,
    words::Blocked,
};
use crate::{
    catalog::{template, versions},
    error::{AppError, AppResult, Violations},
    store::{Tx, new_id, now_ms},
    users::queries::UserRow,
};

/// Whether `u` is an administrator.
pub fn is_admin(u: &UserRow) -> bool {
    u.role == "ADMINISTRATOR"
}

/// A subscription name: a DNS label of 1 to 30, starting with a letter.
fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=30).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(
            "must be 1 to 30 lower-case letters, digits and inner dashes, starting with a letter"
                .into(),
        )
    }
}

/// A value made once per subscription.
pub(super) fn generate(g: &pb::GeneratedValue) -> String {
    let len = if g.length == 0 { 32 } else { g.length as usize };
    let alphabet: &[u8] = match g.kind() {
        pb::GeneratedValueKind::Hex => b"0123456789abcdef",
        _ => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    };
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// The template of a catalog entry that has a deployable one, or the
/// refusal (NO_TEMPLATE) in the caller's words.
fn deployable_template(
    stored: Option<Vec<u8>>,
    slug: &str,
    name: &str,
    admin: bool,
) -> AppResult<pb::ServiceTemplate> {
    stored
        .and_then(|t| pb::ServiceTemplate::decode(t.as_slice()).ok())
        .filter(|t| !t.components.is_empty())
        .ok_or_else(|| {
            let message = if admin {
                format!(
                    "service {slug} has no deployment template: add one in the catalog (Edit \
                     template) or with UpdateService.template"
                )
            } else {
                format!("{name} cannot be subscribed to yet")
            };
            AppError::refused(Code::FailedPrecondition, "NO_TEMPLATE", message)
        })
}

/// The version a new subscription runs and its template: `asked` when
/// named (refused when withdrawn), else the entry's newest version that is
/// not withdrawn. An entry without versions (no template) is refused as
/// before (NO_TEMPLATE).
async fn pick_version(
    db: &crate::store::Db,
    service_id: &str,
    asked: &str,
    current: Option<Vec<u8>>,
    (slug, name): (&str, &str),
    admin: bool,
) -> AppResult<(String, pb::ServiceTemplate)> {
    let versions = versions::list_read(db, service_id).await?;
    if versions.is_empty() {
        if !asked.is_empty() {
            return Err(AppError::invalid("version", "this service has no versions"));
        }
        return Ok((
            String::new(),
            deployable_template(current, slug, name, admin)?,
        ));
    }
    let chosen = if asked.is_empty() {
        versions
            .iter()
            .find(|v| v.withdrawn_at.is_none())
            .ok_or_else(|| {
                AppError::FailedPrecondition(format!(
                    "every version of {name} was withdrawn: it cannot be subscribed to now"
                ))
            })?
    } else {
        let v = versions
            .iter()
            .find(|v| v.version == asked)
            .ok_or_else(|| {
                AppError::invalid("version", format!("{name} has no version {asked:?}"))
            })?;
        if v.withdrawn_at.is_some() {
            return Err(AppError::FailedPrecondition(format!(
                "version {asked} of {name} was withdrawn: choose another version"
            )));
        }
        v
    };
    let template = deployable_template(Some(chosen.template.clone()), slug, name, admin)?;
    Ok((chosen.version.clone(), template))
}

fn mib(bytes: i64) -> i64 {
    bytes / (1024 * 1024)
}

impl Subscriptions {
    /// Why the installation cannot take a subscription of `t` now: no
    /// linked cluster, or no room on the schedulable workers (the figures,
    /// for administrators). Runs inside the write transaction that stores
    /// it, and write transactions are serialised (SQLite has one writer; on
    /// PostgreSQL each first takes one transaction-scoped advisory lock,
    /// see `Db::begin`), so concurrent creates are admitted one after the
    /// other, each counting those admitted before it.
    async fn room_for(&self, tx: &mut Tx, t: &pb::ServiceTemplate) -> AppResult<Option<Blocked>> {
        let link = self.link();
        if !link.is_linked() {
            return Ok(Some(Blocked::NoCluster));
        }
        let schedulable: std::collections::HashSet<String> = queries::schedulable_workers(tx)
            .await?
            .into_iter()
            .collect();
        // Before the free figures: a pod the link starts counting between
        // the two reads is then counted twice (refusing too much for a
        // moment) rather than not at all.
        let (held_cpu, held_mem) = self.unscheduled_requests(tx).await?;
        let free: Vec<_> = link
            .free_by_worker()
            .into_iter()
            .filter(|(w, _, _, takes)| *takes && schedulable.contains(w))
            .map(|(_, _, r, _)| r)
            .collect();
        let (need_cpu, need_mem) = t.components.iter().fold((0i64, 0i64), |(c, m), x| {
            let r = render::pod_resources(x);
            (c + r.cpu_request_millicores, m + r.memory_request_mb)
        });
        let have_cpu: i64 = free.iter().map(|r| r.cpu).sum::<i64>() - held_cpu;
        let have_mem: i64 = free.iter().map(|r| mib(r.memory)).sum::<i64>() - held_mem;
        let biggest = t
            .components
            .iter()
            .map(|c| (c, render::pod_resources(c)))
            .find(|(_, r)| {
                !free.iter().any(|f| {
                    f.cpu >= r.cpu_request_millicores
                        && mib(f.memory) >= r.memory_request_mb
                        && f.pods >= 1
                })
            });
        if need_cpu > have_cpu || need_mem > have_mem || biggest.is_some() {
            let mut msg = format!(
                "not enough capacity: this service requests {need_cpu}m CPU and {need_mem} MiB \
                 memory; the {} schedulable worker(s) have {}m CPU and {} MiB free",
                free.len(),
                have_cpu.max(0),
                have_mem.max(0)
            );
            if held_cpu > 0 || held_mem > 0 {
                msg.push_str(&format!(
                    " (besides {held_cpu}m CPU and {held_mem} MiB for subscriptions not \
                     scheduled yet)"
                ));
            }
            if let Some((c, r)) = biggest {
                msg.push_str(&format!(
                    "; no worker can hold component {} ({}m CPU, {} MiB)",
                    c.name, r.cpu_request_millicores, r.memory_request_mb
                ));
            }
            return Ok(Some(Blocked::NoCapacity(msg)));
        }
        Ok(None)
    }

    /// CPU (millicores) and memory (MiB) requested by the components of
    /// admitted subscriptions that have no pod the cluster link counts yet
    /// (just created, pending, being moved): the link's free figures do
    /// not show what they will take.
    async fn unscheduled_requests(&self, tx: &mut Tx) -> AppResult<(i64, i64)> {
        let link = self.link();
        let (mut cpu, mut mem) = (0i64, 0i64);
        for (id, template) in queries::running_templates(tx).await? {
            let Ok(t) = pb::ServiceTemplate::decode(template.as_slice()) else {
                continue;
            };
            let pods = self.pods_of(&id);
            for c in &t.components {
                let counted = pods
                    .iter()
                    .any(|p| p.component == c.name && link.counts_pod(&p.namespace, &p.name));
                if !counted {
                    let r = render::pod_resources(c);
                    cpu += r.cpu_request_millicores;
                    mem += r.memory_request_mb;
                }
            }
        }
        Ok((cpu, mem))
    }

    /// Admits and stores a new subscription of `caller`; its id.
    pub async fn create(
        &self,
        caller: &UserRow,
        r: pb::CreateSubscriptionRequest,
    ) -> AppResult<String> {
        let mut v = Violations::new();
        v.take("name", check_name(&r.name));
        if r.service_id.is_empty() {
            v.add("service_id", "is required");
        }
        if r.variables.len() > 64 {
            v.add("variables", "at most 64 values");
        }
        v.finish()?;
        let service = queries::deployable(self.db(), &r.service_id).await?;
        let Some((service_id, slug, service_name, active, price, template)) =
            service.filter(|s| s.3 || is_admin(caller))
        else {
            return Err(AppError::NotFound(format!("no service {:?}", r.service_id)));
        };
        let _ = active;
        let (version, template) = pick_version(
            self.db(),
            &service_id,
            &r.version,
            template,
            (&slug, &service_name),
            is_admin(caller),
        )
        .await?;
        let given: BTreeMap<String, String> = r.variables.into_iter().collect();
        let mut v = Violations::new();
        let variables = template::validate_values(&template, &given, &mut v);
        v.finish()?;
        let generated: BTreeMap<String, String> = template
            .generated
            .iter()
            .map(|g| (g.name.clone(), generate(g)))
            .collect();
        let service = (service_id, slug, service_name, price);
        self.admit_and_insert(
            caller,
            &r.name,
            service,
            (version, template),
            &variables,
            &generated,
        )
        .await
    }

    /// Deletes subscription `row` (DELETING until the reconciler has removed
    /// its objects), with its event.
    pub async fn delete(&self, row: &SubscriptionRow) -> AppResult<()> {
        let mut tx = self.db().begin().await?;
        queries::change(&mut tx, &row.id, None, Some(("DELETED", "")), None).await?;
        queries::record_status(
            &mut tx,
            &row.id,
            "DELETING",
            "deletion asked for",
            row.ever_ran,
            &row.workers,
            row.applied_generation,
            None,
        )
        .await?;
        tx.commit().await?;
        self.changed(
            &row.id,
            Some(pb::SubscriptionEvent {
                status: pb::SubscriptionStatus::Deleting as i32,
                reason: "deletion asked for".into(),
                at: Some(crate::store::timestamp(now_ms())),
            }),
        );
        Ok(())
    }

    /// A new subscription of `owner` named `name`, made from a backup: the
    /// catalog entry `service_id` (or, when no entry has that id, the one of
    /// its slug) at the backup's `version` and `template`,
    /// with its variables and generated secrets (the data restored into it
    /// needs the same). Admitted like CreateSubscription; its id.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_from_backup(
        &self,
        owner: &UserRow,
        name: &str,
        (service_id, service_slug): (&str, &str),
        version: &str,
        template: pb::ServiceTemplate,
        variables: &BTreeMap<String, String>,
        generated: &BTreeMap<String, String>,
    ) -> AppResult<String> {
        let mut v = Violations::new();
        v.take("new_subscription_name", check_name(name));
        v.finish()?;
        // By its id, or by its slug on another control plane (a backup
        // imported after a disaster: the catalog was seeded again).
        let found = match queries::deployable(self.db(), service_id).await? {
            Some(s) => Some(s),
            None if !service_slug.is_empty() => {
                queries::deployable(self.db(), service_slug).await?
            }
            None => None,
        };
        let Some((service_id, slug, service_name, _, price, _)) = found else {
            return Err(AppError::FailedPrecondition(
                "the backup's catalog entry no longer exists".into(),
            ));
        };
        self.admit_and_insert(
            owner,
            name,
            (service_id, slug, service_name, price),
            (version.to_owned(), template),
            variables,
            generated,
        )
        .await
    }

    /// Admits (the owner's limits, then the installation's room) and stores
    /// a new subscription of `caller`; its id.
    async fn admit_and_insert(
        &self,
        caller: &UserRow,
        name: &str,
        (service_id, slug, service_name, price): (String, String, String, i64),
        (version, template): (String, pb::ServiceTemplate),
        variables: &BTreeMap<String, String>,
        generated: &BTreeMap<String, String>,
    ) -> AppResult<String> {
        let now = now_ms();
        let id = new_id();
        // Closed until its owner opens it (`gate`): the first visitor of
        // n8n, Ghost or WordPress creates the administrator.
        let (_, gate) = self.new_gate(&id);
        let row = SubscriptionRow {
            gate,
            variables: self.seal_map(&id, variables),
            generated: self.seal_map(&id, generated),
            id,
            name: name.to_owned(),
            user_id: caller.id.clone(),
            user_email: caller.email.clone(),
            service_id,
            service_slug: slug,
            service_name,
            namespace: render::namespace_of(&caller.id),
            template: template.encode_to_vec(),
            monthly_price_cents: price,
            desired: "RUNNING".into(),
            suspended_by: String::new(),
            status: "PENDING".into(),
            status_reason: "waiting to be applied to the cluster".into(),
            status_changed_at: now,
            ever_ran: false,
            generation: 1,
            applied_generation: 0,
            restarted_at: 0,
            workers: ",".into(),
            created_at: now,
            updated_at: now,
            version,
            previous_version: String::new(),
            previous_template: None,
            previous_variables: String::new(),
            previous_status: String::new(),
            upgrade_deadline_at: 0,
            upgrade_failure: String::new(),
        };
        let mut tx = self.db().begin().await?;
        // The customer's own limits first: past them, the cluster's room
        // is not theirs to take.
        limits::admit(&mut tx, &self.settings().tenant, &caller.id, &template).await?;
        if let Some(blocked) = self.room_for(&mut tx, &template).await? {
            drop(tx);
            let told = if is_admin(caller) {
                // An administrator trying it is told already.
                false
            } else {
                self.tell_blocked(&blocked, &row.service_name).await
            };
            return Err(blocked.error(is_admin(caller), &row.service_name, told));
        }
        queries::insert(&mut tx, &row).await.map_err(|e| match e {
            AppError::AlreadyExists(m) => AppError::InvalidArgument {
                message: format!("name: {m}"),
                violations: vec![crate::error::FieldViolation {
                    field: "name".into(),
                    description: m,
                }],
            },
            e => e,
        })?;
        tx.commit().await.map_err(AppError::from)?;
        tracing::info!(subscription = %row.id, name = %row.name, service = %row.service_slug, user_id = %caller.id, "subscription created");
        self.changed(&row.id, None);
        Ok(row.id)
    }

    /// CreateSubscription's checks for `caller` and `service_id`, without
    /// creating anything: the template, the caller's own limits, then the
    /// installation's (a linked cluster, room on the workers; a customer
    /// blocked by these is told like one refused by CreateSubscription).
    pub async fn check(&self, caller: &UserRow, service_id: &str) -> AppResult<()> {
        let admin = is_admin(caller);
        let service = queries::deployable(self.db(), service_id).await?;
        let Some((_, slug, name, _, _, template)) = service.filter(|s| s.3 || admin) else {
            return Err(AppError::NotFound(format!("no service {service_id:?}")));
        };
        let template = deployable_template(template, &slug, &name, admin)?;
        // The same transaction as CreateSubscription's admission, rolled
        // back: the answer counts what Create would count.
        let mut tx = self.db().begin().await?;
        limits::admit(&mut tx, &self.settings().tenant, &caller.id, &template).await?;
        let blocked = self.room_for(&mut tx, &template).await?;
        drop(tx);
        match blocked {
            None => Ok(()),
            Some(b) => {
                let told = !admin && self.tell_blocked(&b, &name).await;
                Err(b.error(admin, &name, told))
            }
        }
    }

    /// Tells watchers and the reconciler that `id` changed.
    pub fn changed(&self, id: &str, event: Option<pb::SubscriptionEvent>) {
        self.publish(Change::Upserted(id.to_owned(), event));
        self.enqueue_now(id.to_owned());
    }
}
