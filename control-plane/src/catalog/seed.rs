//! The catalog a first start begins with: n8n, Ghost and WordPress.
//!
//! Seeding happens once per database (a `settings` row records it), so an
//! administrator who deletes a seeded entry does not see it come back.

use std::collections::BTreeMap;

use super::{fields::ServiceSpec, queries};
use crate::{
    error::AppResult,
    store::{Db, insert_setting},
};

const SEEDED: &str = "catalog.seeded";

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn entries() -> Vec<ServiceSpec> {
    vec![
        ServiceSpec {
            slug: "n8n".into(),
            name: "n8n".into(),
            description:
                "Workflow automation: connect APIs, databases and apps with a visual editor.".into(),
            category: "automation".into(),
            version: "1.64.0".into(),
            image: "docker.io/n8nio/n8n:1.64.0".into(),
            port: 5678,
            cpu_millicores: 500,
            memory_mb: 512,
            storage_gb: 5,
            env_template: env(&[
                ("N8N_PORT", "5678"),
                ("N8N_PROTOCOL", "https"),
                ("N8N_ENCRYPTION_KEY", "${GENERATED_SECRET}"),
                ("GENERIC_TIMEZONE", "UTC"),
            ]),
            monthly_price_cents: 900,
            active: true,
            tags: vec!["automation".into(), "workflow".into(), "low-code".into()],
            icon_url: "https://n8n.io/favicon.ico".into(),
            docs_url: "https://docs.n8n.io/hosting/".into(),
        },
        ServiceSpec {
            slug: "ghost".into(),
            name: "Ghost".into(),
            description: "Publishing platform for blogs, newsletters and memberships.".into(),
            category: "cms".into(),
            version: "5.96".into(),
            image: "docker.io/library/ghost:5.96-alpine".into(),
            port: 2368,
            cpu_millicores: 500,
            memory_mb: 1024,
            storage_gb: 10,
            env_template: env(&[
                ("url", "https://${DOMAIN}"),
                ("database__client", "sqlite3"),
                (
                    "database__connection__filename",
                    "/var/lib/ghost/content/data/ghost.db",
                ),
                ("NODE_ENV", "production"),
            ]),
            monthly_price_cents: 1200,
            active: true,
            tags: vec!["blog".into(), "cms".into(), "newsletter".into()],
            icon_url: "https://ghost.org/favicon.ico".into(),
            docs_url: "https://ghost.org/docs/".into(),
        },
        ServiceSpec {
            slug: "wordpress".into(),
            name: "WordPress".into(),
            description: "The most widely used CMS for websites and blogs.".into(),
            category: "cms".into(),
            version: "6.6".into(),
            image: "docker.io/library/wordpress:6.6-apache".into(),
            port: 80,
            cpu_millicores: 500,
            memory_mb: 512,
            storage_gb: 10,
            env_template: env(&[
                ("WORDPRESS_DB_HOST", "${DB_HOST}"),
                ("WORDPRESS_DB_USER", "wordpress"),
                ("WORDPRESS_DB_PASSWORD", "${GENERATED_PASSWORD}"),
                ("WORDPRESS_DB_NAME", "wordpress"),
            ]),
            monthly_price_cents: 1000,
            active: true,
            tags: vec!["blog".into(), "cms".into(), "php".into()],
            icon_url: "https://wordpress.org/favicon.ico".into(),
            docs_url: "https://wordpress.org/documentation/".into(),
        },
    ]
}

/// Seeds the catalog unless this database was seeded before; returns the
/// number of entries added.
pub async fn seed_once(db: &Db) -> AppResult<usize> {
    let mut tx = db.begin().await?;
    if !insert_setting(&mut tx, SEEDED, "1").await? {
        return Ok(0);
    }
    let mut added = 0;
    for spec in entries() {
        let spec = spec.validated()?;
        queries::insert(&mut tx, &spec).await?;
        added += 1;
    }
    tx.commit().await?;
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_entries_pass_the_catalog_rules() {
        for e in entries() {
            let slug = e.slug.clone();
            assert!(e.validated().is_ok(), "{slug} is invalid");
        }
    }
}
