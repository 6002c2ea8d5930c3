//! The catalog a first start begins with: n8n, Ghost and WordPress, each a
//! complete deployable template for its real image.
//!
//! Seeding happens once per database (a `settings` row records it), so an
//! administrator who deletes a seeded entry does not see it come back. A
//! database seeded before entries had templates gets the templates of the
//! seeded entries it still has, once (a second `settings` row).

use minispod_proto::v1 as pb;
use prost::Message;

use super::{
    fields::ServiceSpec,
    queries::{self, Lookup},
    versions,
};
use crate::{
    error::{AppError, AppResult},
    store::{Db, Tx, insert_setting, now_ms},
};

/// Set when the catalog was seeded.
const SEEDED: &str = "catalog.seeded";
/// Set when the seeded entries got their templates (new databases get both
/// at once).
const TEMPLATES_SEEDED: &str = "catalog.templates_seeded";
/// Set when the seeded entries' components, and the subscriptions made
/// from them, got the user they run as (new databases get it with the
/// rest).
const SECURITY_SEEDED: &str = "catalog.security_seeded";
/// Set when the seeded entries got their versions (issue #25; new
/// databases get them with the rest).
const VERSIONS_SEEDED: &str = "catalog.versions_seeded";

fn env(pairs: &[(&str, &str)]) -> Vec<pb::TemplateEnvVar> {
    pairs
        .iter()
        .map(|(name, value)| pb::TemplateEnvVar {
            name: (*name).to_owned(),
            value: (*value).to_owned(),
        })
        .collect()
}

fn port(name: &str, container_port: i32) -> pb::ComponentPort {
    pb::ComponentPort {
        name: name.into(),
        container_port,
    }
}

fn volume(name: &str, mount_path: &str, size_gb: i32) -> pb::ComponentVolume {
    pb::ComponentVolume {
        name: name.into(),
        mount_path: mount_path.into(),
        size_gb,
    }
}

fn http_probe(path: &str, port: &str, initial_delay: i32, period: i32) -> Option<pb::Probe> {
    Some(pb::Probe {
        check: Some(pb::probe::Check::HttpPath(path.into())),
        port: port.into(),
        initial_delay_seconds: initial_delay,
        period_seconds: period,
        failure_threshold: 6,
    })
}

fn tcp_probe(port: &str, initial_delay: i32, period: i32) -> Option<pb::Probe> {
    Some(pb::Probe {
        check: Some(pb::probe::Check::Tcp(true)),
        port: port.into(),
        initial_delay_seconds: initial_delay,
        period_seconds: period,
        failure_threshold: 6,
    })
}

fn resources(
    cpu: i32,
    cpu_limit: i32,
    memory: i32,
    memory_limit: i32,
) -> Option<pb::ComponentResources> {
    Some(pb::ComponentResources {
        cpu_request_millicores: cpu,
        memory_request_mb: memory,
        cpu_limit_millicores: cpu_limit,
        memory_limit_mb: memory_limit,
    })
}

/// Runs as `uid`, with `gid` as primary group and owner of its volumes.
fn runs_as(uid: i64, gid: i64) -> Option<pb::ComponentSecurity> {
    Some(pb::ComponentSecurity {
        run_as_user: uid,
        run_as_group: gid,
        fs_group: gid,
    })
}

fn generated(name: &str, kind: pb::GeneratedValueKind, length: i32) -> pb::GeneratedValue {
    pb::GeneratedValue {
        name: name.into(),
        kind: kind as i32,
        length,
    }
}

/// n8n keeps workflows, credentials and its SQLite database in
/// `/home/node/.n8n`; the encryption key of stored credentials must never
/// change, so it is generated once. Behind the subscription's TLS ingress it
/// is told its public URL and to trust one proxy hop.
fn n8n_template() -> pb::ServiceTemplate {
    pb::ServiceTemplate {
        components: vec![pb::TemplateComponent {
            name: "n8n".into(),
            image: "docker.io/n8nio/n8n:1.64.0".into(),
            ports: vec![port("http", 5678)],
            env: env(&[
                ("N8N_HOST", "${DOMAIN}"),
                ("N8N_PORT", "5678"),
                ("N8N_PROTOCOL", "https"),
                ("WEBHOOK_URL", "${PUBLIC_URL}/"),
                ("N8N_EDITOR_BASE_URL", "${PUBLIC_URL}/"),
                ("N8N_PROXY_HOPS", "1"),
                ("N8N_ENCRYPTION_KEY", "${N8N_ENCRYPTION_KEY}"),
                ("GENERIC_TIMEZONE", "${TIMEZONE}"),
                ("TZ", "${TIMEZONE}"),
                ("N8N_DIAGNOSTICS_ENABLED", "false"),
            ]),
            volumes: vec![volume("data", "/home/node/.n8n", 5)],
            // /healthz answers 200 once the HTTP server is up.
            readiness_probe: http_probe("/healthz", "http", 10, 10),
            liveness_probe: http_probe("/healthz", "http", 30, 20),
            resources: resources(500, 1000, 512, 1024),
            expose_port: "http".into(),
            args: vec![],
            workload: pb::WorkloadKind::Deployment as i32,
            // Stopped while its volumes are copied (README, "Backups").
            backup: pb::BackupMode::Stop as i32,
            // The image's own `USER node`: uid and gid 1000.
            security: runs_as(1000, 1000),
        }],
        variables: vec![pb::TemplateVariable {
            name: "TIMEZONE".into(),
            label: "Time zone".into(),
            description: "IANA time zone of schedule triggers, e.g. Europe/Berlin.".into(),
            r#type: pb::VariableType::String as i32,
            options: vec![],
            default_value: "UTC".into(),
            required: true,
            pattern: "[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}".into(),
        }],
        generated: vec![generated(
            "N8N_ENCRYPTION_KEY",
            pb::GeneratedValueKind::Hex,
            64,
        )],
        notes: "Open ${PUBLIC_URL}/ to create the owner account of your n8n instance.\n\
                Webhooks are reached at ${PUBLIC_URL}/webhook/<path>; schedules run in \
                the ${TIMEZONE} time zone."
            .into(),
    }
}

/// Ghost on SQLite in its content volume (images, themes and the database
/// together, one volume to back up). Ghost redirects plain-HTTP requests to
/// its https URL unless the proxy says https, so kubelet's probes, which
/// cannot set that header, check the port over TCP.
fn ghost_template() -> pb::ServiceTemplate {
    pb::ServiceTemplate {
        components: vec![pb::TemplateComponent {
            name: "ghost".into(),
            image: "docker.io/library/ghost:5.96-alpine".into(),
            ports: vec![port("http", 2368)],
            env: env(&[
                ("url", "${PUBLIC_URL}"),
                ("NODE_ENV", "production"),
                ("database__client", "sqlite3"),
                (
                    "database__connection__filename",
                    "/var/lib/ghost/content/data/ghost.db",
                ),
                ("logging__level", "${LOG_LEVEL}"),
            ]),
            volumes: vec![volume("content", "/var/lib/ghost/content", 10)],
            readiness_probe: tcp_probe("http", 10, 10),
            liveness_probe: tcp_probe("http", 60, 20),
            resources: resources(250, 1000, 512, 1024),
            expose_port: "http".into(),
            args: vec![],
            workload: pb::WorkloadKind::Deployment as i32,
            // Stopped while its volumes are copied (README, "Backups").
            backup: pb::BackupMode::Stop as i32,
            // The image's `node` user (1000:1000); started non-root, the
            // entrypoint skips its step down and seeds an empty content
            // volume as that user.
            security: runs_as(1000, 1000),
        }],
        variables: vec![pb::TemplateVariable {
            name: "LOG_LEVEL".into(),
            label: "Log level".into(),
            description: "How much Ghost writes to its log.".into(),
            r#type: pb::VariableType::Select as i32,
            options: vec!["info".into(), "warn".into(), "error".into()],
            default_value: "info".into(),
            required: false,
            pattern: String::new(),
        }],
        generated: vec![],
        notes: "Open ${PUBLIC_URL}/ghost to create the admin account; the first account \
                created owns the site. Your site is at ${PUBLIC_URL}/. To send newsletters \
                and staff invitations, set up a mail service in Ghost's settings."
            .into(),
    }
}

/// WordPress with its own MariaDB. The image writes wp-config.php (with
/// fresh salts) into /var/www/html on first start and already honours
/// X-Forwarded-Proto; WP_HOME and WP_SITEURL pin the public URL.
fn wordpress_template() -> pb::ServiceTemplate {
    pb::ServiceTemplate {
        components: vec![
            pb::TemplateComponent {
                name: "wordpress".into(),
                image: "docker.io/library/wordpress:6.6-apache".into(),
                ports: vec![port("http", 80)],
                env: env(&[
                    ("WORDPRESS_DB_HOST", "${DB_HOST}"),
                    ("WORDPRESS_DB_USER", "wordpress"),
                    ("WORDPRESS_DB_PASSWORD", "${DB_PASSWORD}"),
                    ("WORDPRESS_DB_NAME", "wordpress"),
                    ("WORDPRESS_TABLE_PREFIX", "${TABLE_PREFIX}"),
                    (
                        "WORDPRESS_CONFIG_EXTRA",
                        "define('WP_HOME', '${PUBLIC_URL}');\n\
                         define('WP_SITEURL', '${PUBLIC_URL}');",
                    ),
                ]),
                volumes: vec![volume("html", "/var/www/html", 5)],
                // A static file: Apache is serving, whatever WordPress's own
                // redirects (to the installer, to the https URL) say.
                readiness_probe: http_probe("/wp-includes/images/blank.gif", "http", 10, 10),
                liveness_probe: tcp_probe("http", 30, 20),
                resources: resources(250, 1000, 256, 512),
                expose_port: "http".into(),
                args: vec![],
                workload: pb::WorkloadKind::Deployment as i32,
                // Stopped while its volumes are copied (README, "Backups").
                backup: pb::BackupMode::Stop as i32,
                // Debian's www-data (33:33), whom Apache serves as anyway;
                // started non-root, the entrypoint copies WordPress in as
                // that user. Port 80 is bound thanks to the pod's
                // net.ipv4.ip_unprivileged_port_start=0 (ports below 1024).
                security: runs_as(33, 33),
            },
            pb::TemplateComponent {
                name: "db".into(),
                image: "docker.io/library/mariadb:11.4".into(),
                ports: vec![port("mysql", 3306)],
                env: env(&[
                    ("MARIADB_DATABASE", "wordpress"),
                    ("MARIADB_USER", "wordpress"),
                    ("MARIADB_PASSWORD", "${DB_PASSWORD}"),
                    ("MARIADB_ROOT_PASSWORD", "${DB_ROOT_PASSWORD}"),
                    // A newer image upgrades the system tables of old data.
                    ("MARIADB_AUTO_UPGRADE", "1"),
                ]),
                volumes: vec![volume("data", "/var/lib/mysql", 5)],
                readiness_probe: tcp_probe("mysql", 10, 10),
                liveness_probe: tcp_probe("mysql", 60, 20),
                resources: resources(250, 1000, 256, 1024),
                expose_port: String::new(),
                args: vec![],
                workload: pb::WorkloadKind::StatefulSet as i32,
                // Stopped while its volumes are copied (README, "Backups").
                backup: pb::BackupMode::Stop as i32,
                // The image's `mysql` user (999:999); started non-root, the
                // entrypoint skips gosu and initialises the data directory
                // as that user.
                security: runs_as(999, 999),
            },
        ],
        variables: vec![pb::TemplateVariable {
            name: "TABLE_PREFIX".into(),
            label: "Table prefix".into(),
            description: "Prefix of WordPress's database tables.".into(),
            r#type: pb::VariableType::String as i32,
            options: vec![],
            default_value: "wp_".into(),
            required: true,
            pattern: "[A-Za-z0-9_]{1,20}".into(),
        }],
        generated: vec![
            generated("DB_PASSWORD", pb::GeneratedValueKind::Password, 32),
            generated("DB_ROOT_PASSWORD", pb::GeneratedValueKind::Password, 32),
        ],
        notes: "Open ${PUBLIC_URL}/wp-admin/install.php to choose the site's language, \
                title and administrator account. The database runs in its own container \
                with passwords generated for this subscription."
            .into(),
    }
}

/// `t` with the images of the named components replaced.
fn with_images(mut t: pb::ServiceTemplate, images: &[(&str, &str)]) -> pb::ServiceTemplate {
    for c in &mut t.components {
        if let Some((_, image)) = images.iter().find(|(name, _)| *name == c.name) {
            c.image = (*image).to_owned();
        }
    }
    t
}

/// n8n 1.70.3: the same setup on a newer image (the data directory and
/// encryption key carry over; n8n migrates its database on start).
fn n8n_1_70_template() -> pb::ServiceTemplate {
    with_images(n8n_template(), &[("n8n", "docker.io/n8nio/n8n:1.70.3")])
}

/// Ghost 5.130 on the official image's 5.130 line (Ghost migrates its
/// SQLite database on start).
fn ghost_5_130_template() -> pb::ServiceTemplate {
    with_images(
        ghost_template(),
        &[("ghost", "docker.io/library/ghost:5.130-alpine")],
    )
}

/// WordPress 6.7 with the same MariaDB 11.4 (the LTS line).
fn wordpress_6_7_template() -> pb::ServiceTemplate {
    with_images(
        wordpress_template(),
        &[("wordpress", "docker.io/library/wordpress:6.7-apache")],
    )
}

/// An earlier version a seeded entry ships besides its newest.
struct Earlier {
    version: &'static str,
    template: fn() -> pb::ServiceTemplate,
}

/// A seeded entry: `template` (its newest version, `version`) gives image,
/// port, resources and environment; `earlier` are the versions before it,
/// so that the upgrade path is there from the first start.
struct Entry {
    slug: &'static str,
    name: &'static str,
    description: &'static str,
    category: &'static str,
    version: &'static str,
    monthly_price_cents: i64,
    tags: &'static [&'static str],
    icon_url: &'static str,
    docs_url: &'static str,
    template: fn() -> pb::ServiceTemplate,
    notes: &'static str,
    earlier: &'static [Earlier],
}

const ENTRIES: [Entry; 3] = [
    Entry {
        slug: "n8n",
        name: "n8n",
        description: "Workflow automation: connect APIs, databases and apps with a visual editor.",
        category: "automation",
        version: "1.70.3",
        monthly_price_cents: 900,
        tags: &["automation", "workflow", "low-code"],
        icon_url: "https://n8n.io/favicon.ico",
        docs_url: "https://docs.n8n.io/hosting/",
        template: n8n_1_70_template,
        notes: "n8n 1.70: newer nodes and fixes; workflows and credentials carry over.",
        earlier: &[Earlier {
            version: "1.64.0",
            template: n8n_template,
        }],
    },
    Entry {
        slug: "ghost",
        name: "Ghost",
        description: "Publishing platform for blogs, newsletters and memberships.",
        category: "cms",
        version: "5.130",
        monthly_price_cents: 1200,
        tags: &["blog", "cms", "newsletter"],
        icon_url: "https://ghost.org/favicon.ico",
        docs_url: "https://ghost.org/docs/",
        template: ghost_5_130_template,
        notes: "Ghost 5.130: the latest of the 5.x line; content and members carry over.",
        earlier: &[Earlier {
            version: "5.96",
            template: ghost_template,
        }],
    },
    Entry {
        slug: "wordpress",
        name: "WordPress",
        description: "The most widely used CMS for websites and blogs.",
        category: "cms",
        version: "6.7",
        monthly_price_cents: 1000,
        tags: &["blog", "cms", "php"],
        icon_url: "https://wordpress.org/favicon.ico",
        docs_url: "https://wordpress.org/documentation/",
        template: wordpress_6_7_template,
        notes: "WordPress 6.7; the database stays on MariaDB 11.4.",
        earlier: &[Earlier {
            version: "6.6",
            template: wordpress_template,
        }],
    },
];

impl Entry {
    fn spec(&self) -> ServiceSpec {
        ServiceSpec {
            slug: self.slug.into(),
            name: self.name.into(),
            description: self.description.into(),
            category: self.category.into(),
            version: self.version.into(),
            // Derived from the template by `validated`.
            image: String::new(),
            port: 0,
            cpu_millicores: 0,
            memory_mb: 0,
            storage_gb: 0,
            env_template: Default::default(),
            monthly_price_cents: self.monthly_price_cents,
            active: true,
            tags: self.tags.iter().map(|t| (*t).to_owned()).collect(),
            icon_url: self.icon_url.into(),
            docs_url: self.docs_url.into(),
            template: Some((self.template)()),
        }
    }
}

/// Seeds the catalog unless this database was seeded before, and gives the
/// seeded entries of a database seeded before templates existed their
/// template (once; entries deleted since stay deleted, entries that have a
/// template keep it). Returns the number of entries added or completed.
pub async fn seed_once(db: &Db) -> AppResult<usize> {
    let mut tx = db.begin().await?;
    let fresh = insert_setting(&mut tx, SEEDED, "1").await?;
    let templates_due = insert_setting(&mut tx, TEMPLATES_SEEDED, "1").await?;
    let security_due = insert_setting(&mut tx, SECURITY_SEEDED, "1").await?;
    let versions_due = insert_setting(&mut tx, VERSIONS_SEEDED, "1").await?;
    let mut changed = 0;
    if fresh {
        for entry in &ENTRIES {
            let id = queries::insert(&mut tx, &entry.spec().validated()?).await?;
            add_versions(&mut tx, entry, &id).await?;
            changed += 1;
        }
    } else if templates_due {
        for entry in &ENTRIES {
            let row = match queries::get(db, Lookup::Slug(entry.slug), false).await {
                Ok(row) => row,
                Err(AppError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            if row.template.is_some() {
                continue;
            }
            // The administrator's choices (name, price, tags, ...) stay;
            // what the template derives is replaced.
            let mut spec = row.spec();
            spec.template = Some((entry.template)());
            match spec.validated() {
                Ok(spec) => {
                    queries::update(&mut tx, &row.id, &spec).await?;
                    changed += 1;
                    tracing::info!(slug = entry.slug, "seeded catalog entry got its template");
                }
                Err(e) => {
                    tracing::warn!(slug = entry.slug, error = %e, "seeded catalog entry left without a template");
                }
            }
        }
    }
    if !fresh && security_due {
        changed += fill_in_security(db, &mut tx).await?;
    }
    tx.commit().await?;
    if !fresh && versions_due {
        // After the commit: the entries' own rows are read afresh.
        let mut tx = db.begin().await?;
        for entry in &ENTRIES {
            let row = match queries::get(db, Lookup::Slug(entry.slug), false).await {
                Ok(row) => row,
                Err(AppError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            if add_versions(&mut tx, entry, &row.id).await? > 0 {
                versions::sync_current(db, &mut tx, &row.id).await?;
                tracing::info!(slug = entry.slug, "seeded catalog entry got its versions");
            }
        }
        tx.commit().await?;
    }
    Ok(changed)
}

/// Adds the seeded versions (earlier ones and the newest, with its notes)
/// the entry `service_id` does not have yet; how many were added.
async fn add_versions(tx: &mut Tx, e: &Entry, service_id: &str) -> AppResult<usize> {
    let have: Vec<String> = versions::list(tx, service_id)
        .await?
        .into_iter()
        .map(|v| v.version)
        .collect();
    let now = now_ms();
    let mut added = 0;
    let all = e
        .earlier
        .iter()
        .map(|x| (x.version, x.template, ""))
        .chain([(e.version, e.template, e.notes)]);
    for (version, template, notes) in all {
        if have.iter().any(|h| h == version) {
            continue;
        }
        let row = versions::VersionRow {
            service_id: service_id.to_owned(),
            version: version.to_owned(),
            template: template().encode_to_vec(),
            notes: notes.to_owned(),
            one_way: false,
            withdrawn_at: None,
            published_at: now,
        };
        versions::insert(tx, &row).await?;
        added += 1;
    }
    versions::set_notes_if_empty(tx, service_id, e.version, e.notes).await?;
    Ok(added)
}

/// The image without its tag or digest.
fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => &image[..i],
        _ => image,
    }
}

/// Gives the components of `t` that have no security the seeded one's, where
/// `seeded` has a component of the same name running the same image
/// repository. Returns whether anything changed.
fn add_security(t: &mut pb::ServiceTemplate, seeded: &pb::ServiceTemplate) -> bool {
    let mut changed = false;
    for c in t.components.iter_mut().filter(|c| c.security.is_none()) {
        if let Some(s) = seeded
            .components
            .iter()
            .find(|s| s.name == c.name && repository(&s.image) == repository(&c.image))
        {
            c.security = s.security;
            changed |= c.security.is_some();
        }
    }
    changed
}

/// For a database seeded before templates said who components run as: the
/// seeded entries it still has, and every subscription made from them,
/// get the seeded uid/gid/fsGroup of the components they still run (an
/// administrator's own components and images are left alone). A
/// subscription's template is its own copy, so without this its pods would
/// be refused by the kubelet (root images under runAsNonRoot). Returns the
/// number of entries and subscriptions changed.
async fn fill_in_security(db: &Db, tx: &mut Tx) -> AppResult<usize> {
    let mut changed = 0;
    for entry in &ENTRIES {
        let seeded = (entry.template)();
        match queries::get(db, Lookup::Slug(entry.slug), false).await {
            Ok(row) => {
                if let Some(mut t) = row.template()
                    && add_security(&mut t, &seeded)
                {
                    let mut spec = row.spec();
                    spec.template = Some(t);
                    match spec.validated() {
                        Ok(spec) => {
                            queries::update(tx, &row.id, &spec).await?;
                            changed += 1;
                        }
                        Err(e) => {
                            tracing::warn!(slug = entry.slug, error = %e, "seeded catalog entry left without security settings");
                        }
                    }
                }
            }
            Err(AppError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        for (id, bytes) in super::queries::templates_of_service(tx, entry.slug).await? {
            let Ok(mut t) = pb::ServiceTemplate::decode(bytes.as_slice()) else {
                continue;
            };
            if add_security(&mut t, &seeded) {
                super::queries::replace_template(tx, &id, &t.encode_to_vec()).await?;
                changed += 1;
            }
        }
        tracing::info!(
            slug = entry.slug,
            "seeded components got the user they run as"
        );
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{catalog::template, error::Violations};

    #[test]
    fn every_seeded_template_passes_the_template_rules() {
        for e in &ENTRIES {
            let all = e.earlier.iter().map(|x| (x.version, x.template));
            for (version, t) in all.chain([(e.version, e.template)]) {
                let mut v = Violations::new();
                template::validate(&t(), &mut v);
                if let Err(err) = v.finish() {
                    panic!("{} {version}: {err}", e.slug);
                }
            }
        }
    }

    #[test]
    fn every_seeded_entry_ships_two_pinned_versions_from_live_image_lines() {
        for e in &ENTRIES {
            assert!(!e.earlier.is_empty(), "{}", e.slug);
            let newest = versions::Version::parse(e.version).unwrap();
            for x in e.earlier {
                assert!(versions::Version::parse(x.version).unwrap() < newest);
                assert_ne!((x.template)(), (e.template)(), "{} {}", e.slug, x.version);
            }
            let all = e.earlier.iter().map(|x| x.template).chain([e.template]);
            for t in all {
                for c in t().components {
                    // Pinned: a tag other than latest on the last path part.
                    let last = c.image.rsplit('/').next().unwrap();
                    let tag = last.split_once(':').map(|(_, t)| t);
                    assert!(tag.is_some_and(|t| t != "latest"), "{}", c.image);
                    // Bitnami's versioned images moved to bitnamilegacy
                    // (August 2025) and get no updates.
                    assert!(!c.image.contains("bitnami"), "{}", c.image);
                }
            }
        }
    }

    #[test]
    fn seed_entries_pass_the_catalog_rules_and_derive_their_figures() {
        let specs: Vec<ServiceSpec> = ENTRIES
            .iter()
            .map(|e| {
                e.spec()
                    .validated()
                    .unwrap_or_else(|err| panic!("{}: {err}", e.slug))
            })
            .collect();
        let figures: Vec<_> = specs
            .iter()
            .map(|s| (s.slug.as_str(), s.image.as_str(), s.port, s.storage_gb))
            .collect();
        assert_eq!(
            figures,
            [
                ("n8n", "docker.io/n8nio/n8n:1.70.3", 5678, 5),
                ("ghost", "docker.io/library/ghost:5.130-alpine", 2368, 10),
                (
                    "wordpress",
                    "docker.io/library/wordpress:6.7-apache",
                    80,
                    10
                ),
            ]
        );
        assert_eq!(specs[2].cpu_millicores, 500, "wordpress and db");
        assert_eq!(specs[2].env_template["WORDPRESS_DB_HOST"], "${DB_HOST}");
    }

    #[test]
    fn seeded_templates_expand_with_every_name_they_use() {
        for e in &ENTRIES {
            let t = (e.template)();
            let mut v = Violations::new();
            let mut values = template::validate_values(&t, &Default::default(), &mut v);
            assert!(v.finish().is_ok(), "{}: defaults are valid values", e.slug);
            for b in template::BUILT_INS {
                values.insert(b.to_owned(), "x".to_owned());
            }
            for c in &t.components {
                values.insert(template::host_placeholder(&c.name), c.name.clone());
            }
            for g in &t.generated {
                values.insert(g.name.clone(), "secret".to_owned());
            }
            for c in &t.components {
                for env in &c.env {
                    template::expand(&env.value, &values)
                        .unwrap_or_else(|err| panic!("{} {}: {err}", e.slug, env.name));
                }
            }
            template::expand(&t.notes, &values).unwrap();
        }
    }

    async fn temp_db() -> (Db, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("minispod-seed-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = Db::connect(None, &dir, &Default::default()).await.unwrap();
        (db, dir)
    }

    #[tokio::test]
    async fn a_new_database_is_seeded_once_with_templates() {
        let (db, dir) = temp_db().await;
        assert_eq!(seed_once(&db).await.unwrap(), 3);
        assert_eq!(seed_once(&db).await.unwrap(), 0);
        for e in &ENTRIES {
            let row = queries::get(&db, Lookup::Slug(e.slug), false)
                .await
                .unwrap();
            assert_eq!(row.template(), Some((e.template)()), "{}", e.slug);
        }
        db.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    fn without_security(mut t: pb::ServiceTemplate) -> pb::ServiceTemplate {
        for c in &mut t.components {
            c.security = None;
        }
        t
    }

    #[tokio::test]
    async fn entries_and_subscriptions_from_before_security_get_the_seeded_users_once() {
        let (db, dir) = temp_db().await;
        let mut tx = db.begin().await.unwrap();
        insert_setting(&mut tx, SEEDED, "1").await.unwrap();
        insert_setting(&mut tx, TEMPLATES_SEEDED, "1")
            .await
            .unwrap();
        let mut ids = Vec::new();
        for e in &ENTRIES {
            let spec = ServiceSpec {
                template: Some(without_security((e.template)())),
                ..e.spec()
            };
            ids.push(
                queries::insert(&mut tx, &spec.validated().unwrap())
                    .await
                    .unwrap(),
            );
        }
        // A WordPress subscription; its administrator had swapped the
        // database for PostgreSQL, which is left as it is.
        let mut old = without_security(wordpress_template());
        old.components[1].image = "docker.io/library/postgres:16".into();
        let row = crate::subscriptions::queries::SubscriptionRow {
            id: "sub-1".into(),
            name: "site".into(),
            user_id: "user-1".into(),
            user_email: "ann@example.com".into(),
            service_id: ids[2].clone(),
            service_slug: "wordpress".into(),
            service_name: "WordPress".into(),
            namespace: "ms-user-1".into(),
            template: old.encode_to_vec(),
            variables: "{}".into(),
            generated: "{}".into(),
            monthly_price_cents: 1000,
            desired: "RUNNING".into(),
            suspended_by: String::new(),
            status: "RUNNING".into(),
            status_reason: String::new(),
            status_changed_at: 0,
            ever_ran: true,
            generation: 3,
            applied_generation: 3,
            restarted_at: 0,
            workers: String::new(),
            created_at: 0,
            updated_at: 0,
            gate: String::new(),
            ..Default::default()
        };
        crate::subscriptions::queries::insert(&mut tx, &row)
            .await
            .unwrap();
        tx.commit().await.unwrap();

        assert_eq!(
            seed_once(&db).await.unwrap(),
            4,
            "three entries, one subscription"
        );
        for e in &ENTRIES {
            let row = queries::get(&db, Lookup::Slug(e.slug), false)
                .await
                .unwrap();
            assert_eq!(row.template(), Some((e.template)()), "{}", e.slug);
        }
        let mut tx = db.begin().await.unwrap();
        let subs = super::queries::templates_of_service(&mut tx, "wordpress")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let t = pb::ServiceTemplate::decode(subs[0].1.as_slice()).unwrap();
        assert_eq!(
            t.components[0].security,
            wordpress_template().components[0].security
        );
        assert_eq!(t.components[1].security, None, "not the seeded image");
        let row = crate::subscriptions::queries::get(&db, "sub-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.generation, 4, "rolled out");
        assert_eq!(seed_once(&db).await.unwrap(), 0, "once");
        db.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn entries_seeded_before_templates_get_theirs_once_and_deleted_ones_stay_gone() {
        let (db, dir) = temp_db().await;
        // What an earlier version left: the seeded setting and entries
        // without a template; Ghost was deleted, n8n's price changed.
        let mut tx = db.begin().await.unwrap();
        insert_setting(&mut tx, SEEDED, "1").await.unwrap();
        for e in ENTRIES.iter().filter(|e| e.slug != "ghost") {
            let d = template::derived(&(e.template)());
            let old = ServiceSpec {
                image: d.image,
                port: d.port,
                cpu_millicores: 500,
                memory_mb: 512,
                storage_gb: 5,
                env_template: d.env,
                monthly_price_cents: if e.slug == "n8n" {
                    1500
                } else {
                    e.monthly_price_cents
                },
                template: None,
                ..e.spec()
            };
            queries::insert(&mut tx, &old.validated().unwrap())
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();

        assert_eq!(seed_once(&db).await.unwrap(), 2);
        let n8n = queries::get(&db, Lookup::Slug("n8n"), false).await.unwrap();
        // The newest seeded version; the earlier one is kept as a version.
        assert_eq!(n8n.template(), Some(n8n_1_70_template()));
        assert_eq!(
            n8n.monthly_price_cents, 1500,
            "the administrator's price stays"
        );
        assert_eq!((n8n.cpu_millicores, n8n.memory_mb), (500, 512));
        let wordpress = queries::get(&db, Lookup::Slug("wordpress"), false)
            .await
            .unwrap();
        assert_eq!(wordpress.template(), Some(wordpress_6_7_template()));
        assert_eq!(wordpress.storage_gb, 10);
        assert!(matches!(
            queries::get(&db, Lookup::Slug("ghost"), false).await,
            Err(AppError::NotFound(_))
        ));

        // Once: a template removed by hand afterwards is not put back.
        let mut tx = db.begin().await.unwrap();
        let mut spec = n8n.spec();
        spec.template = None;
        queries::update(&mut tx, &n8n.id, &spec).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(seed_once(&db).await.unwrap(), 0);
        let n8n = queries::get(&db, Lookup::Slug("n8n"), false).await.unwrap();
        assert_eq!(n8n.template, None);
        db.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
