//! Fair shares: what one customer's subscriptions may take.
//!
//! Every customer has limits on the number of subscriptions, the CPU their
//! components request, the memory they may use (limits) and the storage of
//! their volumes, retained volumes of deleted subscriptions included until
//! they are deleted. The defaults come from the `--tenant-max-*` flags; an
//! administrator overrides them per account (UserService.SetUserLimits).
//! Admission checks them in the write transaction that inserts the
//! subscription, before the cluster's capacity, so one customer cannot take
//! every worker and concurrent creates cannot both slip under a limit. The
//! customer's namespace's ResourceQuota carries the same limits, so the
//! cluster refuses what the store would not admit.

use minispod_proto::v1 as pb;
use prost::Message;

use super::render::{self, Totals};
use crate::{
    error::{AppError, AppResult, Violations},
    store::{Conn, Tx, now_ms},
    with_conn,
};

pub use crate::config::TenantDefaults;

impl TenantDefaults {
    fn resources(&self) -> pb::TenantResources {
        pb::TenantResources {
            subscriptions: self.subscriptions,
            cpu_millicores: self.cpu_millicores,
            memory_mb: self.memory_mb,
            storage_gb: self.storage_gb,
        }
    }
}

/// Largest value of each limit an administrator may set: far above any
/// real cluster, low enough that sums cannot overflow.
const MAX_SUBSCRIPTIONS: i32 = 1000;
const MAX_CPU_MILLICORES: i64 = 1_000_000;
const MAX_MEMORY_MB: i64 = 16 << 20;
const MAX_STORAGE_GB: i64 = 1 << 20;

/// Checks an administrator's overrides: each set value within its range.
pub fn validate(o: &pb::TenantLimitOverrides) -> AppResult<()> {
    let mut v = Violations::new();
    let mut check = |field: &str, value: Option<i64>, max: i64| {
        if let Some(x) = value
            && !(0..=max).contains(&x)
        {
            v.add(&format!("limits.{field}"), format!("must be 0 to {max}"));
        }
    };
    check(
        "subscriptions",
        o.subscriptions.map(i64::from),
        i64::from(MAX_SUBSCRIPTIONS),
    );
    check("cpu_millicores", o.cpu_millicores, MAX_CPU_MILLICORES);
    check("memory_mb", o.memory_mb, MAX_MEMORY_MB);
    check("storage_gb", o.storage_gb, MAX_STORAGE_GB);
    v.finish()
}

/// An account's overrides (all unset when it has none).
pub async fn overrides<'a>(
    conn: impl Into<Conn<'a>>,
    user_id: &str,
) -> AppResult<pb::TenantLimitOverrides> {
    /// subscriptions, cpu_millicores, memory_mb, storage_gb.
    type Row = (Option<i64>, Option<i64>, Option<i64>, Option<i64>);
    let row: Option<Row> = with_conn!(conn, |c| sqlx::query_as(
        "SELECT subscriptions, cpu_millicores, memory_mb, storage_gb FROM tenant_limits
             WHERE user_id = $1"
    )
    .bind(user_id)
    .fetch_optional(c)
    .await)?;
    Ok(row.map_or_else(Default::default, |(s, cpu, mem, sto)| {
        pb::TenantLimitOverrides {
            subscriptions: s.and_then(|x| i32::try_from(x).ok()),
            cpu_millicores: cpu,
            memory_mb: mem,
            storage_gb: sto,
        }
    }))
}

/// Replaces an account's overrides (none set: the row goes).
pub async fn set_overrides(
    tx: &mut Tx,
    user_id: &str,
    o: &pb::TenantLimitOverrides,
) -> AppResult<()> {
    let none = o.subscriptions.is_none()
        && o.cpu_millicores.is_none()
        && o.memory_mb.is_none()
        && o.storage_gb.is_none();
    if none {
        with_conn!(&mut *tx, |c| sqlx::query(
            "DELETE FROM tenant_limits WHERE user_id = $1"
        )
        .bind(user_id)
        .execute(c)
        .await
        .map(|_| ()))?;
        return Ok(());
    }
    with_conn!(&mut *tx, |c| sqlx::query(
        "INSERT INTO tenant_limits
             (user_id, subscriptions, cpu_millicores, memory_mb, storage_gb, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (user_id) DO UPDATE SET
             subscriptions = excluded.subscriptions,
             cpu_millicores = excluded.cpu_millicores,
             memory_mb = excluded.memory_mb,
             storage_gb = excluded.storage_gb,
             updated_at = excluded.updated_at"
    )
    .bind(user_id)
    .bind(o.subscriptions.map(i64::from))
    .bind(o.cpu_millicores)
    .bind(o.memory_mb)
    .bind(o.storage_gb)
    .bind(now_ms())
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// The limits in force: each override, else its default.
pub fn effective(d: &TenantDefaults, o: &pb::TenantLimitOverrides) -> pb::TenantResources {
    let d = d.resources();
    pb::TenantResources {
        subscriptions: o.subscriptions.unwrap_or(d.subscriptions),
        cpu_millicores: o.cpu_millicores.unwrap_or(d.cpu_millicores),
        memory_mb: o.memory_mb.unwrap_or(d.memory_mb),
        storage_gb: o.storage_gb.unwrap_or(d.storage_gb),
    }
}

/// What an account's subscriptions take: those not deleted (or being
/// deleted: their volumes are still there), and its retained volumes.
/// Also the pods of the live ones, for the namespace's quota.
async fn usage(tx: &mut Tx, user_id: &str) -> AppResult<(pb::TenantResources, Totals, i64)> {
    let rows: Vec<(Vec<u8>, bool)> = with_conn!(&mut *tx, |c| sqlx::query_as(
        "SELECT template, desired <> 'DELETED' FROM subscriptions WHERE user_id = $1"
    )
    .bind(user_id)
    .fetch_all(c)
    .await)?;
    let (retained_count, retained_gb): (i64, Option<i64>) = with_conn!(&mut *tx, |c| {
        sqlx::query_as(
            "SELECT COUNT(*), CAST(SUM(size_gb) AS BIGINT) FROM retained_volumes
             WHERE namespace = $1",
        )
        .bind(render::namespace_of(user_id))
        .fetch_one(c)
        .await
    })?;
    let (mut totals, mut live, mut live_pods) = (Totals::default(), 0, 0);
    for (t, is_live) in &rows {
        let t = pb::ServiceTemplate::decode(t.as_slice())
            .map(|t| Totals::of(&t))
            .unwrap_or_default();
        totals.add(t);
        if *is_live {
            live += 1;
            live_pods += t.pods;
        }
    }
    // What the account's backups store counts too (#26), in whole GiB.
    let backup_bytes: i64 = with_conn!(&mut *tx, |c| {
        sqlx::query_scalar(BACKUP_BYTES)
            .bind(user_id)
            .fetch_one(c)
            .await
    })?;
    totals.storage_gb += retained_gb.unwrap_or(0) + (backup_bytes + (1 << 30) - 1) / (1 << 30);
    totals.volumes += retained_count;
    let usage = pb::TenantResources {
        subscriptions: live,
        cpu_millicores: totals.cpu_request_millicores,
        memory_mb: totals.memory_limit_mb,
        storage_gb: totals.storage_gb,
    };
    Ok((usage, totals, live_pods))
}

/// What account `$1`'s backups store: the bytes their copies uploaded
/// (after deduplication), of every backup that can be restored or is
/// being forgotten.
pub(crate) const BACKUP_BYTES: &str = "SELECT CAST(COALESCE(SUM(t.bytes_added), 0) AS BIGINT) \
    FROM volume_transfers t JOIN backups b ON b.id = t.job_id \
    WHERE b.user_id = $1 AND b.status IN ('COMPLETE', 'EXPIRING') AND t.kind = 'BACKUP'";

/// The share of an account: limits, overrides and usage.
pub async fn share(tx: &mut Tx, d: &TenantDefaults, user_id: &str) -> AppResult<pb::TenantShare> {
    let overrides = overrides(&mut *tx, user_id).await?;
    let (usage, ..) = usage(tx, user_id).await?;
    Ok(pb::TenantShare {
        limits: Some(effective(d, &overrides)),
        overrides: Some(overrides),
        usage: Some(usage),
    })
}

/// The account's storage in use (volumes, retained volumes and backups,
/// GiB) and its limit.
pub async fn storage(tx: &mut Tx, d: &TenantDefaults, user_id: &str) -> AppResult<(i64, i64)> {
    let limits = effective(d, &overrides(&mut *tx, user_id).await?);
    let (usage, ..) = usage(tx, user_id).await?;
    Ok((usage.storage_gb, limits.storage_gb))
}

/// Refuses a new subscription of `template` that would take the account
/// past one of its limits: RESOURCE_EXHAUSTED, saying which and by how
/// much. Runs in the write transaction that inserts the subscription.
pub async fn admit(
    tx: &mut Tx,
    d: &TenantDefaults,
    user_id: &str,
    template: &pb::ServiceTemplate,
) -> AppResult<()> {
    let limits = effective(d, &overrides(&mut *tx, user_id).await?);
    let (usage, ..) = usage(tx, user_id).await?;
    let need = Totals::of(template);
    let mut over = Vec::new();
    if usage.subscriptions >= limits.subscriptions {
        over.push(format!(
            "you have {} of the {} subscriptions you may have",
            usage.subscriptions, limits.subscriptions
        ));
    }
    let mut check = |what: &str, unit: &str, used: i64, asked: i64, limit: i64| {
        if used + asked > limit {
            over.push(format!(
                "this service needs {asked}{unit} {what} and you use {used}{unit} of your \
                 {limit}{unit}"
            ));
        }
    };
    check(
        "CPU",
        "m",
        usage.cpu_millicores,
        need.cpu_request_millicores,
        limits.cpu_millicores,
    );
    check(
        "memory",
        " MiB",
        usage.memory_mb,
        need.memory_limit_mb,
        limits.memory_mb,
    );
    check(
        "storage (retained volumes of deleted subscriptions and backups count until they are \
         deleted)",
        " GiB",
        usage.storage_gb,
        need.storage_gb,
        limits.storage_gb,
    );
    if over.is_empty() {
        return Ok(());
    }
    Err(AppError::ResourceExhausted {
        message: format!(
            "over your limits: {}; delete a subscription or ask an administrator for more",
            over.join("; ")
        ),
        retry_after: None,
    })
}

/// Refuses an upgrade of one of `user_id`'s subscriptions from the
/// template `from` to `to` when the new version needs more CPU, memory or
/// storage than the current one and the account would then be past that
/// limit: FAILED_PRECONDITION (reason OVER_LIMITS) naming each limit with
/// its figures. A version that needs no more of something passes on it,
/// even for an account already over (an administrator lowered its limits).
/// Runs in the upgrade's write transaction, as [`admit`] runs in the
/// create's.
pub async fn admit_upgrade(
    tx: &mut Tx,
    d: &TenantDefaults,
    user_id: &str,
    from: &pb::ServiceTemplate,
    to: &pb::ServiceTemplate,
) -> AppResult<()> {
    let limits = effective(d, &overrides(&mut *tx, user_id).await?);
    let (usage, ..) = usage(tx, user_id).await?;
    let over = over_on_upgrade(&usage, &limits, &Totals::of(from), &Totals::of(to));
    if over.is_empty() {
        return Ok(());
    }
    Err(AppError::refused(
        tonic::Code::FailedPrecondition,
        "OVER_LIMITS",
        format!(
            "the new version is over your limits: {}; free some room or ask an administrator \
             for more",
            over.join("; ")
        ),
    ))
}

/// The limits an upgrade from `was` to `will` takes the account (now
/// using `usage`, `was` included) past, in words.
fn over_on_upgrade(
    usage: &pb::TenantResources,
    limits: &pb::TenantResources,
    was: &Totals,
    will: &Totals,
) -> Vec<String> {
    let mut over = Vec::new();
    let mut check = |what: &str, unit: &str, used: i64, was: i64, will: i64, limit: i64| {
        let after = used - was + will;
        if will > was && after > limit {
            over.push(format!(
                "its {what} limit: it needs {will}{unit} where the current version needs \
                 {was}{unit}, which makes {after}{unit} of your {limit}{unit}"
            ));
        }
    };
    check(
        "CPU",
        "m",
        usage.cpu_millicores,
        was.cpu_request_millicores,
        will.cpu_request_millicores,
        limits.cpu_millicores,
    );
    check(
        "memory",
        " MiB",
        usage.memory_mb,
        was.memory_limit_mb,
        will.memory_limit_mb,
        limits.memory_mb,
    );
    check(
        "storage",
        " GiB",
        usage.storage_gb,
        was.storage_gb,
        will.storage_gb,
        limits.storage_gb,
    );
    over
}

/// What the customer's namespace's ResourceQuota allows: CPU, memory and
/// storage at the customer's limits (the cluster then refuses what
/// admission would not take), pods and claims at what the live
/// subscriptions and retained volumes hold; plus the domain ownership
/// responder's pod while the customer has a pending domain.
pub async fn quota(tx: &mut Tx, d: &TenantDefaults, user_id: &str) -> AppResult<render::Quota> {
    let limits = effective(d, &overrides(&mut *tx, user_id).await?);
    let (_, all, pods) = usage(&mut *tx, user_id).await?;
    // The domain ownership responder runs while a domain is pending: it is
    // the installation's, so it gets room beside the customer's limits.
    let responder = super::domains::queries::has_pending(tx, user_id).await?;
    let (cpu, memory, pod) = if responder {
        use super::domains::objects::{RESPONDER_CPU_MILLICORES, RESPONDER_MEMORY_MB};
        (RESPONDER_CPU_MILLICORES, RESPONDER_MEMORY_MB, 1)
    } else {
        (0, 0, 0)
    };
    Ok(render::Quota {
        cpu_millicores: limits.cpu_millicores + cpu,
        memory_mb: limits.memory_mb + memory,
        storage_gb: limits.storage_gb,
        claims: all.volumes,
        pods: pods + pod,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_override_follows_the_default() {
        let d = TenantDefaults {
            subscriptions: 5,
            cpu_millicores: 4000,
            memory_mb: 8192,
            storage_gb: 100,
        };
        let o = pb::TenantLimitOverrides {
            subscriptions: Some(1),
            storage_gb: Some(0),
            ..Default::default()
        };
        let e = effective(&d, &o);
        assert_eq!(e.subscriptions, 1);
        assert_eq!(e.storage_gb, 0);
        assert_eq!(e.cpu_millicores, d.cpu_millicores);
        assert_eq!(e.memory_mb, d.memory_mb);
    }

    #[test]
    fn overrides_out_of_range_are_refused_by_field() {
        let o = pb::TenantLimitOverrides {
            subscriptions: Some(-1),
            memory_mb: Some(MAX_MEMORY_MB + 1),
            cpu_millicores: Some(500),
            ..Default::default()
        };
        let e = validate(&o).unwrap_err().to_string();
        assert!(e.contains("limits.subscriptions"), "{e}");
        assert!(e.contains("limits.memory_mb"), "{e}");
        assert!(!e.contains("limits.cpu_millicores"), "{e}");
        assert!(validate(&pb::TenantLimitOverrides::default()).is_ok());
    }
}
