//! Versions of a catalog entry (issue #25): each published template is kept
//! under its version, with release notes, whether it can be rolled back
//! past (`one_way`) and whether it was withdrawn. The entry's own
//! `services.template` and `services.version` are always its newest
//! version that is not withdrawn (`sync_current`), so every RPC that reads
//! the entry sees what a new subscription gets.

use std::{cmp::Ordering, collections::HashMap};

use minispod_proto::v1 as pb;
use sqlx::FromRow;

use prost::Message;

use super::queries::{Lookup, ServiceRow};
use crate::{
    error::{AppError, AppResult, Violations},
    store::{Db, Tx, now_ms, timestamp, unique_violation},
    with_conn,
};

/// A version as it is ordered: one to four dot-separated numbers, then
/// optionally `-` and a pre-release (`1.70.2`, `5.130`, `6.7`,
/// `2.0.0-rc.1`). A version with a pre-release comes before the same
/// numbers without one; pre-release parts compare as SemVer's do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    parts: Vec<u64>,
    pre: String,
    text: String,
}

impl Version {
    /// Parses `s`, or says what a version looks like.
    pub fn parse(s: &str) -> Result<Version, String> {
        const RULE: &str = "must be a version: 1 to 4 dot-separated numbers, optionally \
            followed by - and a pre-release of letters, digits, dots and dashes (e.g. 1.70.2, \
            2.0.0-rc.1), at most 64 characters";
        if s.is_empty() || s.len() > 64 {
            return Err(RULE.into());
        }
        let (numbers, pre) = match s.split_once('-') {
            Some((n, p)) => (n, p),
            None => (s, ""),
        };
        if s.contains('-')
            && (pre.is_empty()
                || !pre
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'))
        {
            return Err(RULE.into());
        }
        let mut parts = Vec::new();
        for p in numbers.split('.') {
            if p.is_empty() || p.len() > 9 || !p.chars().all(|c| c.is_ascii_digit()) {
                return Err(RULE.into());
            }
            parts.push(p.parse::<u64>().map_err(|_| RULE.to_owned())?);
        }
        if parts.len() > 4 {
            return Err(RULE.into());
        }
        Ok(Version {
            parts,
            pre: pre.to_owned(),
            text: s.to_owned(),
        })
    }

    /// `s` as a version; one stored before versions were checked that does
    /// not parse orders before every version that does.
    pub fn lenient(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(|_| Version {
            parts: Vec::new(),
            pre: String::new(),
            text: s.to_owned(),
        })
    }

    /// Whether only the last of three numbers differs from `other`'s (a
    /// patch release).
    pub fn same_minor(&self, other: &Version) -> bool {
        self.parts.len() >= 2
            && other.parts.len() >= 2
            && self.parts[..2] == other.parts[..2]
            && self.pre.is_empty()
            && other.pre.is_empty()
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn compare_pre(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ => {}
    }
    let mut x = a.split('.');
    let mut y = b.split('.');
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) => {
                let o = match (p.parse::<u64>(), q.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => p.cmp(q),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let known = (!self.parts.is_empty()).cmp(&!other.parts.is_empty());
        if known != Ordering::Equal {
            return known;
        }
        let n = self.parts.len().max(other.parts.len());
        for i in 0..n {
            let o = self
                .parts
                .get(i)
                .unwrap_or(&0)
                .cmp(other.parts.get(i).unwrap_or(&0));
            if o != Ordering::Equal {
                return o;
            }
        }
        compare_pre(&self.pre, &other.pre).then_with(|| self.text.cmp(&other.text))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One version of a catalog entry as stored.
#[derive(Debug, Clone, FromRow)]
pub struct VersionRow {
    /// The catalog entry.
    pub service_id: String,
    /// The version, as published.
    pub version: String,
    /// The prost-encoded ServiceTemplate.
    pub template: Vec<u8>,
    /// Release notes.
    pub notes: String,
    /// An upgrade to it cannot be rolled back past (a data migration).
    pub one_way: bool,
    /// Unix ms when withdrawn; None while offered.
    pub withdrawn_at: Option<i64>,
    /// Unix ms when published.
    pub published_at: i64,
}

impl VersionRow {
    /// Its version, ordered.
    pub fn parsed(&self) -> Version {
        Version::lenient(&self.version)
    }

    /// Its template; an empty one (logged) when it does not decode.
    pub fn template(&self) -> pb::ServiceTemplate {
        pb::ServiceTemplate::decode(self.template.as_slice()).unwrap_or_else(|e| {
            tracing::error!(service_id = %self.service_id, version = %self.version, error = %e,
                "stored version template does not decode");
            pb::ServiceTemplate::default()
        })
    }

    /// The API's message, with `count` subscriptions running it.
    pub fn to_pb(&self, count: i64) -> pb::ServiceVersion {
        pb::ServiceVersion {
            version: self.version.clone(),
            notes: self.notes.clone(),
            one_way: self.one_way,
            withdrawn: self.withdrawn_at.is_some(),
            withdrawn_at: self.withdrawn_at.map(timestamp),
            published_at: Some(timestamp(self.published_at)),
            subscription_count: count,
            template: Some(self.template()),
        }
    }
}

const COLUMNS: &str = "service_id, version, template, notes, one_way, withdrawn_at, published_at";

/// Every version of `service_id`, newest first.
pub async fn list(tx: &mut Tx, service_id: &str) -> AppResult<Vec<VersionRow>> {
    let mut rows: Vec<VersionRow> = with_conn!(tx, |c| sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM service_versions WHERE service_id = $1"
    ))
    .bind(service_id)
    .fetch_all(c)
    .await)?;
    rows.sort_by_key(|r| std::cmp::Reverse(r.parsed()));
    Ok(rows)
}

/// Every version of `service_id`, newest first, read outside a write.
pub async fn list_read(db: &Db, service_id: &str) -> AppResult<Vec<VersionRow>> {
    let mut rows: Vec<VersionRow> = with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM service_versions WHERE service_id = $1"
    ))
    .bind(service_id)
    .fetch_all(c)
    .await)?;
    rows.sort_by_key(|r| std::cmp::Reverse(r.parsed()));
    Ok(rows)
}

/// What a subscription's message says of its entry's versions: per
/// service id, every version (newest first) with its notes and whether it
/// is withdrawn.
pub async fn summaries(
    db: &Db,
    service_ids: &[String],
) -> AppResult<HashMap<String, Vec<VersionSummary>>> {
    let mut out: HashMap<String, Vec<VersionSummary>> = HashMap::new();
    if service_ids.is_empty() {
        return Ok(out);
    }
    let rows: Vec<(String, String, String, Option<i64>)> = with_conn!(db.read(), |c| {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT service_id, version, notes, withdrawn_at FROM service_versions
             WHERE service_id IN (",
        );
        let mut sep = q.separated(", ");
        for id in service_ids {
            sep.push_bind(id.as_str());
        }
        q.push(")");
        q.build_query_as().fetch_all(c).await?
    });
    for (id, version, notes, withdrawn_at) in rows {
        out.entry(id).or_default().push(VersionSummary {
            version: Version::lenient(&version),
            notes,
            withdrawn: withdrawn_at.is_some(),
        });
    }
    for list in out.values_mut() {
        list.sort_by(|a, b| b.version.cmp(&a.version));
    }
    Ok(out)
}

/// One version as a subscription's message needs it.
#[derive(Debug, Clone)]
pub struct VersionSummary {
    /// The version.
    pub version: Version,
    /// Its release notes.
    pub notes: String,
    /// Withdrawn: no new subscriptions, running ones told to move.
    pub withdrawn: bool,
}

/// Stores a new version; ALREADY_EXISTS when the entry has it.
pub async fn insert(tx: &mut Tx, r: &VersionRow) -> AppResult<()> {
    with_conn!(tx, |c| sqlx::query(
        "INSERT INTO service_versions (service_id, version, template, notes, one_way,
            withdrawn_at, published_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
    )
    .bind(&r.service_id)
    .bind(&r.version)
    .bind(&r.template)
    .bind(&r.notes)
    .bind(r.one_way)
    .bind(r.withdrawn_at)
    .bind(r.published_at)
    .execute(c)
    .await
    .map(|_| ()))
    .map_err(unique_violation(
        "this catalog entry already has that version",
    ))
}

/// Keeps the version row of the entry's current template: CreateService
/// and UpdateService write `services.template` under `services.version`,
/// so that version is published (or, when it exists, edited in place).
pub async fn upsert_current(
    tx: &mut Tx,
    service_id: &str,
    version: &str,
    template: &[u8],
) -> AppResult<()> {
    with_conn!(tx, |c| sqlx::query(
        "INSERT INTO service_versions (service_id, version, template, notes, one_way,
            withdrawn_at, published_at) VALUES ($1, $2, $3, '', FALSE, NULL, $4)
         ON CONFLICT (service_id, version) DO UPDATE SET template = excluded.template"
    )
    .bind(service_id)
    .bind(version)
    .bind(template)
    .bind(now_ms())
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Gives `version` of `service_id` its release notes when it has none.
pub async fn set_notes_if_empty(
    tx: &mut Tx,
    service_id: &str,
    version: &str,
    notes: &str,
) -> AppResult<()> {
    with_conn!(tx, |c| sqlx::query(
        "UPDATE service_versions SET notes = $3
         WHERE service_id = $1 AND version = $2 AND notes = ''"
    )
    .bind(service_id)
    .bind(version)
    .bind(notes)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Marks `version` of `service_id` withdrawn (kept while subscriptions
/// run it); false when there is no such version.
pub async fn withdraw(tx: &mut Tx, service_id: &str, version: &str) -> AppResult<bool> {
    let done = with_conn!(tx, |c| sqlx::query(
        "UPDATE service_versions SET withdrawn_at = COALESCE(withdrawn_at, $3)
         WHERE service_id = $1 AND version = $2"
    )
    .bind(service_id)
    .bind(version)
    .bind(now_ms())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// How many subscriptions (not being deleted) run each version of
/// `service_id`.
pub async fn counts(db: &Db, service_id: &str) -> AppResult<HashMap<String, i64>> {
    let rows: Vec<(String, i64)> = with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT version, COUNT(*) FROM subscriptions
         WHERE service_id = $1 AND desired <> 'DELETED' GROUP BY version"
    )
    .bind(service_id)
    .fetch_all(c)
    .await)?;
    Ok(rows.into_iter().collect())
}

/// Makes the entry's own template and version its newest version that is
/// not withdrawn (what a new subscription gets); nothing when every one is
/// withdrawn (CreateSubscription then refuses).
pub async fn sync_current(db: &Db, tx: &mut Tx, service_id: &str) -> AppResult<()> {
    let versions = list(tx, service_id).await?;
    let Some(newest) = versions.iter().find(|v| v.withdrawn_at.is_none()) else {
        return Ok(());
    };
    let row = super::queries::get(db, super::queries::Lookup::Id(service_id), false).await?;
    if row.version == newest.version && row.template.as_deref() == Some(&newest.template[..]) {
        return Ok(());
    }
    let mut spec = row.spec();
    spec.version = newest.version.clone();
    spec.template = Some(newest.template());
    let spec = spec.validated()?;
    if !super::queries::update(tx, service_id, &spec).await? {
        return Err(AppError::NotFound(format!(
            "no service with id {service_id:?}"
        )));
    }
    Ok(())
}

/// The catalog entry named by its id or its slug (any, active or not).
pub async fn entry(db: &Db, id_or_slug: &str) -> AppResult<ServiceRow> {
    if id_or_slug.is_empty() {
        return Err(AppError::invalid("service_id", "is required"));
    }
    match super::queries::get(db, Lookup::Id(id_or_slug), false).await {
        Err(AppError::NotFound(_)) => {
            super::queries::get(db, Lookup::Slug(id_or_slug), false).await
        }
        other => other,
    }
}

/// PublishServiceVersion: `r.version` of the entry, its template checked as
/// CreateService's; the entry's own template becomes its newest version
/// that is not withdrawn. The version and the entry after it.
pub async fn publish(
    db: &Db,
    r: pb::PublishServiceVersionRequest,
) -> AppResult<(VersionRow, ServiceRow)> {
    let version = r.version.trim().to_owned();
    let mut v = Violations::new();
    v.take("version", Version::parse(&version));
    if r.notes.chars().count() > 5000 {
        v.add("notes", "must be at most 5000 characters");
    }
    if r.template.is_none() {
        v.add("template", "is required");
    }
    v.finish()?;
    let row = entry(db, &r.service_id).await?;
    // The entry's rules, with this template: its errors name the
    // template's fields ("template.components[0].image").
    let mut spec = row.spec();
    spec.version = version.clone();
    spec.template = r.template;
    let spec = spec.validated()?;
    let template = spec
        .template
        .as_ref()
        .map(Message::encode_to_vec)
        .unwrap_or_default();
    let stored = VersionRow {
        service_id: row.id.clone(),
        version,
        template,
        notes: r.notes,
        one_way: r.one_way,
        withdrawn_at: None,
        published_at: now_ms(),
    };
    let mut tx = db.begin().await?;
    insert(&mut tx, &stored).await?;
    sync_current(db, &mut tx, &row.id).await?;
    tx.commit().await?;
    let service = super::queries::get(db, Lookup::Id(&row.id), false).await?;
    Ok((stored, service))
}

/// WithdrawServiceVersion: the version is no longer offered; the entry's
/// own template becomes its newest version that is not withdrawn.
pub async fn withdraw_version(
    db: &Db,
    r: &pb::WithdrawServiceVersionRequest,
) -> AppResult<pb::ServiceVersion> {
    let row = entry(db, &r.service_id).await?;
    let mut tx = db.begin().await?;
    if !withdraw(&mut tx, &row.id, r.version.trim()).await? {
        return Err(AppError::NotFound(format!(
            "{} has no version {:?}",
            row.name, r.version
        )));
    }
    sync_current(db, &mut tx, &row.id).await?;
    tx.commit().await?;
    let counts = counts(db, &row.id).await?;
    list_read(db, &row.id)
        .await?
        .into_iter()
        .find(|v| v.version == r.version.trim())
        .map(|v| v.to_pb(counts.get(&v.version).copied().unwrap_or(0)))
        .ok_or_else(|| AppError::NotFound(format!("no version {:?}", r.version)))
}

/// ListServiceVersions: the entry's versions, newest first, with how many
/// subscriptions run each.
pub async fn list_versions(db: &Db, service_id: &str) -> AppResult<Vec<pb::ServiceVersion>> {
    let row = entry(db, service_id).await?;
    let counts = counts(db, &row.id).await?;
    Ok(list_read(db, &row.id)
        .await?
        .iter()
        .map(|v| v.to_pb(counts.get(&v.version).copied().unwrap_or(0)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn versions_order_by_their_numbers_then_pre_releases_first() {
        assert!(v("1.70.2") > v("1.64.0"));
        assert!(v("1.10") > v("1.9.9"));
        assert!(v("5.130") > v("5.96"));
        assert_eq!(v("6.7").cmp(&v("6.7.0")), "6.7".cmp("6.7.0"));
        assert!(v("2.0.0-rc.1") < v("2.0.0"));
        assert!(v("2.0.0-rc.2") > v("2.0.0-rc.1"));
        assert!(v("2.0.0-rc.10") > v("2.0.0-rc.9"));
        assert!(v("2.0.0-alpha") < v("2.0.0-beta"));
        assert!(Version::lenient("latest") < v("0.0.1"));
    }

    #[test]
    fn only_version_shaped_text_is_a_version() {
        for bad in [
            "",
            "v1.2",
            "1..2",
            "1.2.3.4.5",
            "1.2-",
            "1.2 3",
            "latest",
            "1.2-a b",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?}");
        }
        for good in [
            "1",
            "1.2",
            "1.70.2",
            "11.4.3.1",
            "2.0.0-rc.1",
            "5.96-alpine",
        ] {
            assert!(Version::parse(good).is_ok(), "{good:?}");
        }
        assert!(v("1.70.2").same_minor(&v("1.70.3")));
        assert!(!v("1.70.2").same_minor(&v("1.71.0")));
    }
}
