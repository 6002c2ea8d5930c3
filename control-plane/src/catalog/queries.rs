//! SQL of the catalog.

use std::collections::{BTreeMap, HashMap};

use minispod_proto::v1 as pb;
use prost::Message;
use sqlx::{FromRow, QueryBuilder};

use super::fields::ServiceSpec;
use crate::{
    error::{AppError, AppResult},
    store::{Db, Page, Tx, contains_pattern, new_id, now_ms, unique_violation},
    with_conn,
};

/// A catalog entry as stored, with its tags.
#[derive(Debug, Clone, FromRow)]
pub struct ServiceRow {
    /// UUID.
    pub id: String,
    /// URL name.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Category.
    pub category: String,
    /// Application version.
    pub version: String,
    /// Image reference.
    pub image: String,
    /// Container port.
    pub port: i32,
    /// CPU request.
    pub cpu_millicores: i32,
    /// Memory request.
    pub memory_mb: i32,
    /// Storage request.
    pub storage_gb: i32,
    /// JSON object.
    pub env_template: String,
    /// Cents per month.
    pub monthly_price_cents: i64,
    /// Visible to customers.
    pub active: bool,
    /// Icon URL.
    pub icon_url: String,
    /// Docs URL.
    pub docs_url: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// The prost-encoded ServiceTemplate; None without one.
    pub template: Option<Vec<u8>>,
    /// Filled from service_tags.
    #[sqlx(skip)]
    pub tags: Vec<String>,
}

impl ServiceRow {
    /// The stored entry as a spec, to merge an update into.
    pub fn spec(&self) -> ServiceSpec {
        ServiceSpec {
            slug: self.slug.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            category: self.category.clone(),
            version: self.version.clone(),
            image: self.image.clone(),
            port: self.port,
            cpu_millicores: self.cpu_millicores,
            memory_mb: self.memory_mb,
            storage_gb: self.storage_gb,
            env_template: self.env(),
            monthly_price_cents: self.monthly_price_cents,
            active: self.active,
            tags: self.tags.clone(),
            icon_url: self.icon_url.clone(),
            docs_url: self.docs_url.clone(),
            template: self.template(),
        }
    }

    /// The deployment template, None for an entry without one (or, logged,
    /// one that no longer decodes).
    pub fn template(&self) -> Option<pb::ServiceTemplate> {
        let bytes = self.template.as_deref()?;
        match pb::ServiceTemplate::decode(bytes) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(service_id = %self.id, error = %e, "stored template does not decode");
                None
            }
        }
    }

    /// The environment template.
    pub fn env(&self) -> BTreeMap<String, String> {
        serde_json::from_str(&self.env_template).unwrap_or_default()
    }
}

const COLUMNS: &str = "s.id, s.slug, s.name, s.description, s.category, s.version, s.image, s.port,
    s.cpu_millicores, s.memory_mb, s.storage_gb, s.env_template, s.monthly_price_cents, s.active,
    s.icon_url, s.docs_url, s.created_at, s.updated_at, s.template";
const SLUG_TAKEN: &str = "a service with this slug already exists";

/// Inserts a validated entry.
pub async fn insert(tx: &mut Tx, spec: &ServiceSpec) -> AppResult<String> {
    let id = new_id();
    let now = now_ms();
    with_conn!(&mut *tx, |c| sqlx::query(
        "INSERT INTO services (id, slug, name, description, category, version, image, port,
            cpu_millicores, memory_mb, storage_gb, env_template, monthly_price_cents, active,
            icon_url, docs_url, created_at, updated_at, template)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17,
            $18)",
    )
    .bind(&id)
    .bind(&spec.slug)
    .bind(&spec.name)
    .bind(&spec.description)
    .bind(&spec.category)
    .bind(&spec.version)
    .bind(&spec.image)
    .bind(spec.port)
    .bind(spec.cpu_millicores)
    .bind(spec.memory_mb)
    .bind(spec.storage_gb)
    .bind(serde_json::to_string(&spec.env_template).map_err(anyhow::Error::from)?)
    .bind(spec.monthly_price_cents)
    .bind(spec.active)
    .bind(&spec.icon_url)
    .bind(&spec.docs_url)
    .bind(now)
    .bind(encoded_template(spec))
    .execute(c)
    .await
    .map(|r| r.rows_affected()))
    .map_err(unique_violation(SLUG_TAKEN))?;
    replace_tags(tx, &id, &spec.tags).await?;
    if let Some(t) = encoded_template(spec) {
        super::versions::upsert_current(tx, &id, &spec.version, &t).await?;
    }
    Ok(id)
}

/// Overwrites entry `id` with a validated spec; false when there is none.
pub async fn update(tx: &mut Tx, id: &str, spec: &ServiceSpec) -> AppResult<bool> {
    let done = with_conn!(&mut *tx, |c| {
        sqlx::query(
        "UPDATE services SET slug = $2, name = $3, description = $4, category = $5, version = $6,
            image = $7, port = $8, cpu_millicores = $9, memory_mb = $10, storage_gb = $11,
            env_template = $12, monthly_price_cents = $13, active = $14, icon_url = $15,
            docs_url = $16, updated_at = $17, template = $18
         WHERE id = $1",
    )
    .bind(id)
    .bind(&spec.slug)
    .bind(&spec.name)
    .bind(&spec.description)
    .bind(&spec.category)
    .bind(&spec.version)
    .bind(&spec.image)
    .bind(spec.port)
    .bind(spec.cpu_millicores)
    .bind(spec.memory_mb)
    .bind(spec.storage_gb)
    .bind(serde_json::to_string(&spec.env_template).map_err(anyhow::Error::from)?)
    .bind(spec.monthly_price_cents)
    .bind(spec.active)
    .bind(&spec.icon_url)
    .bind(&spec.docs_url)
    .bind(now_ms())
    .bind(encoded_template(spec))
    .execute(c)
    .await
.map(|r| r.rows_affected())
    })
    .map_err(unique_violation(SLUG_TAKEN))?;
    if done == 0 {
        return Ok(false);
    }
    replace_tags(tx, id, &spec.tags).await?;
    // The entry's template is its version `spec.version` (published now,
    // or edited in place).
    if let Some(t) = encoded_template(spec) {
        super::versions::upsert_current(tx, id, &spec.version, &t).await?;
    }
    Ok(true)
}

fn encoded_template(spec: &ServiceSpec) -> Option<Vec<u8>> {
    spec.template.as_ref().map(Message::encode_to_vec)
}

async fn replace_tags(tx: &mut Tx, id: &str, tags: &[String]) -> AppResult<()> {
    with_conn!(&mut *tx, |c| sqlx::query(
        "DELETE FROM service_tags WHERE service_id = $1"
    )
    .bind(id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    if tags.is_empty() {
        return Ok(());
    }
    with_conn!(tx, |c| {
        let mut q = QueryBuilder::new("INSERT INTO service_tags (service_id, tag) ");
        q.push_values(tags, |mut b, tag| {
            b.push_bind(id).push_bind(tag);
        });
        q.build().execute(c).await?.rows_affected()
    });
    Ok(())
}

/// Deletes entry `id`; false when there is none.
pub async fn delete(tx: &mut Tx, id: &str) -> AppResult<bool> {
    let done = with_conn!(&mut *tx, |c| sqlx::query(
        "DELETE FROM services WHERE id = $1"
    )
    .bind(id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// How GetService names an entry.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    /// By id.
    Id(&'a str),
    /// By slug.
    Slug(&'a str),
}

/// The entry named by `lookup`, active ones only when `active_only`.
pub async fn get(db: &Db, lookup: Lookup<'_>, active_only: bool) -> AppResult<ServiceRow> {
    let (column, value) = match lookup {
        Lookup::Id(v) => ("id", v),
        Lookup::Slug(v) => ("slug", v),
    };
    let row: Option<ServiceRow> = with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM services s WHERE s.{column} = $1 AND (s.active OR NOT $2)"
    ))
    .bind(value)
    .bind(active_only)
    .fetch_optional(c)
    .await)?;
    let mut row =
        row.ok_or_else(|| AppError::NotFound(format!("no service with {column} {value:?}")))?;
    row.tags = tags_of(db, std::slice::from_ref(&row.id))
        .await?
        .remove(&row.id)
        .unwrap_or_default();
    Ok(row)
}

/// What a listing keeps.
#[derive(Debug, Default)]
pub struct ServiceFilter {
    /// Substring of name, slug or description; empty keeps all.
    pub search: String,
    /// Category to keep; empty keeps all.
    pub category: String,
    /// Tags every kept entry carries.
    pub tags: Vec<String>,
    /// Activity to keep; None keeps all.
    pub active: Option<bool>,
}

fn push_filter<'a, DB: sqlx::Database>(
    q: &mut QueryBuilder<'a, DB>,
    f: &'a ServiceFilter,
    pattern: &'a str,
) where
    bool: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    q.push(" WHERE 1 = 1");
    if let Some(active) = f.active {
        q.push(" AND s.active = ").push_bind(active);
    }
    if !f.category.is_empty() {
        q.push(" AND s.category = ").push_bind(f.category.as_str());
    }
    if !pattern.is_empty() {
        q.push(" AND (lower(s.name) LIKE ").push_bind(pattern);
        q.push(" ESCAPE '\\' OR s.slug LIKE ").push_bind(pattern);
        q.push(" ESCAPE '\\' OR lower(s.description) LIKE ")
            .push_bind(pattern);
        q.push(" ESCAPE '\\')");
    }
    for tag in &f.tags {
        q.push(" AND EXISTS (SELECT 1 FROM service_tags t WHERE t.service_id = s.id AND t.tag = ")
            .push_bind(tag.as_str())
            .push(")");
    }
}

/// One page of entries by name, and the number matching the filter.
pub async fn list(
    db: &Db,
    filter: &ServiceFilter,
    page: Page,
) -> AppResult<(Vec<ServiceRow>, i64)> {
    let pattern = if filter.search.is_empty() {
        String::new()
    } else {
        contains_pattern(&filter.search)
    };
    let (mut rows, total): (Vec<ServiceRow>, i64) = with_conn!(db, |c| {
        let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM services s"));
        push_filter(&mut q, filter, &pattern);
        q.push(" ORDER BY lower(s.name), s.id LIMIT ")
            .push_bind(page.limit)
            .push(" OFFSET ")
            .push_bind(page.offset);
        let rows = q.build_query_as().fetch_all(&mut *c).await?;
        let mut count = QueryBuilder::new("SELECT COUNT(*) FROM services s");
        push_filter(&mut count, filter, &pattern);
        let total = count.build_query_scalar().fetch_one(&mut *c).await?;
        (rows, total)
    });

    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut tags = tags_of(db, &ids).await?;
    for r in &mut rows {
        r.tags = tags.remove(&r.id).unwrap_or_default();
    }
    Ok((rows, total))
}

async fn tags_of(db: &Db, ids: &[String]) -> AppResult<HashMap<String, Vec<String>>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let rows: Vec<(String, String)> = with_conn!(db, |c| {
        let mut q =
            QueryBuilder::new("SELECT service_id, tag FROM service_tags WHERE service_id IN (");
        let mut sep = q.separated(", ");
        for id in ids {
            sep.push_bind(id.as_str());
        }
        q.push(") ORDER BY tag");
        q.build_query_as().fetch_all(c).await?
    });
    for (id, tag) in rows {
        out.entry(id).or_default().push(tag);
    }
    Ok(out)
}

/// Categories with their number of entries (active ones only when `active_only`).
pub async fn categories(db: &Db, active_only: bool) -> AppResult<Vec<(String, i64)>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT category, COUNT(*) FROM services WHERE active OR NOT $1
         GROUP BY category ORDER BY category",
    )
    .bind(active_only)
    .fetch_all(c)
    .await)?)
}

/// (total, active, average price of active entries in cents).
pub async fn totals(db: &Db) -> AppResult<(i64, i64, i64)> {
    let (total, active, avg): (i64, i64, Option<f64>) = with_conn!(db.read(), |c| sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN active THEN 1 ELSE 0 END), 0),
                CAST(AVG(CASE WHEN active THEN monthly_price_cents END) AS DOUBLE PRECISION)
         FROM services",
    )
    .fetch_one(c)
    .await)?;
    Ok((total, active, avg.map(|a| a.round() as i64).unwrap_or(0)))
}

// A subscription deploys its own copy of its entry's template; the seed's
// migrations of seeded entries (`seed.rs`) update those copies too.

/// (id, template) of every subscription to the catalog entry `slug`.
pub async fn templates_of_service(tx: &mut Tx, slug: &str) -> AppResult<Vec<(String, Vec<u8>)>> {
    Ok(with_conn!(tx, |c| sqlx::query_as(
        "SELECT id, template FROM subscriptions WHERE service_slug = $1 ORDER BY id"
    )
    .bind(slug)
    .fetch_all(c)
    .await)?)
}

/// Replaces the template subscription `id` deploys, bumping the generation
/// so that the reconciler applies it.
pub async fn replace_template(tx: &mut Tx, id: &str, template: &[u8]) -> AppResult<()> {
    with_conn!(tx, |c| sqlx::query(
        "UPDATE subscriptions SET template = $1, generation = generation + 1, updated_at = $2
         WHERE id = $3"
    )
    .bind(template)
    .bind(now_ms())
    .bind(id)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}
