//! CatalogService over the network.

use minispod_proto::v1::{self as pb, get_service_request::Lookup};
use tonic::Code;

use crate::helpers::*;

fn spec(slug: &str) -> pb::CreateServiceRequest {
    pb::CreateServiceRequest {
        slug: slug.into(),
        name: format!("App {slug}"),
        description: "A test application".into(),
        category: "Databases".into(),
        version: "16.4".into(),
        image: "docker.io/library/postgres:16.4-alpine".into(),
        port: 5432,
        resources: Some(pb::ResourceRequests {
            cpu_millicores: 250,
            memory_mb: 256,
            storage_gb: 5,
        }),
        env_template: [(
            "POSTGRES_PASSWORD".to_string(),
            "${GENERATED_PASSWORD}".to_string(),
        )]
        .into(),
        monthly_price_cents: 700,
        active: true,
        tags: vec!["SQL".into(), "database".into(), "sql".into()],
        icon_url: "https://example.org/pg.png".into(),
        docs_url: String::new(),
        template: None,
    }
}

fn by_slug(slug: &str) -> pb::GetServiceRequest {
    pb::GetServiceRequest {
        lookup: Some(Lookup::Slug(slug.into())),
    }
}

#[tokio::test]
async fn the_public_catalog_shows_the_seeded_services_without_a_token() {
    let app = spawn_app().await;
    let list = app
        .catalog()
        .list_services(pb::ListServicesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = list.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["Ghost", "n8n", "WordPress"]);
    let n8n = list.services.iter().find(|s| s.slug == "n8n").unwrap();
    assert!(n8n.image.starts_with("docker.io/n8nio/n8n:"));
    assert_eq!(n8n.port, 5678);
    assert!(n8n.resources.as_ref().unwrap().memory_mb >= 256);

    let ghost = app
        .catalog()
        .get_service(by_slug("ghost"))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    assert_eq!(ghost.port, 2368);
    let same = app
        .catalog()
        .get_service(pb::GetServiceRequest {
            lookup: Some(Lookup::Id(ghost.id.clone())),
        })
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    assert_eq!(same, ghost);

    let cats = app
        .catalog()
        .list_categories(pb::ListCategoriesRequest {})
        .await
        .unwrap()
        .into_inner();
    let cats: Vec<_> = cats
        .categories
        .iter()
        .map(|c| (c.name.as_str(), c.service_count))
        .collect();
    assert_eq!(cats, [("automation", 1), ("cms", 2)]);
}

#[tokio::test]
async fn administrators_create_update_and_delete_services() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let created = app
        .catalog()
        .create_service(authed(spec("postgres"), &admin))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    assert_eq!(created.category, "databases");
    assert_eq!(created.tags, ["database", "sql"]);
    assert_eq!(
        created.env_template["POSTGRES_PASSWORD"],
        "${GENERATED_PASSWORD}"
    );

    let updated = app
        .catalog()
        .update_service(authed(
            pb::UpdateServiceRequest {
                id: created.id.clone(),
                version: Some("17.0".into()),
                image: Some("docker.io/library/postgres:17.0".into()),
                tags: Some(pb::StringList {
                    values: vec!["postgres".into()],
                }),
                active: Some(false),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    assert_eq!((updated.version.as_str(), updated.active), ("17.0", false));
    assert_eq!(updated.tags, ["postgres"]);
    assert_eq!(updated.port, 5432, "fields not set are kept");

    // Inactive: hidden from the public and from customers, visible to
    // administrators (who must be able to open it to edit or re-activate it).
    expect_code(
        app.catalog().get_service(by_slug("postgres")).await,
        Code::NotFound,
    );
    let (customer, _) = app.register("cora@example.org", "customer-pass-1").await;
    expect_code(
        app.catalog()
            .get_service(authed(by_slug("postgres"), &customer))
            .await,
        Code::NotFound,
    );
    let seen = app
        .catalog()
        .get_service(authed(by_slug("postgres"), &admin))
        .await
        .expect("an administrator gets an inactive service")
        .into_inner()
        .service
        .unwrap();
    assert!(!seen.active);
    let all = app
        .catalog()
        .list_all_services(authed(
            pb::ListAllServicesRequest {
                active: Some(false),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        all.services
            .iter()
            .map(|s| s.slug.as_str())
            .collect::<Vec<_>>(),
        ["postgres"]
    );

    let stats = app
        .catalog()
        .get_catalog_stats(authed(pb::GetCatalogStatsRequest {}, &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.total, stats.active, stats.inactive), (4, 3, 1));
    assert_eq!(stats.average_monthly_price_cents, (900 + 1200 + 1000) / 3);
    assert!(
        stats
            .categories
            .iter()
            .any(|c| c.name == "databases" && c.service_count == 1)
    );

    app.catalog()
        .delete_service(authed(
            pb::DeleteServiceRequest {
                id: created.id.clone(),
            },
            &admin,
        ))
        .await
        .unwrap();
    expect_code(
        app.catalog()
            .delete_service(authed(
                pb::DeleteServiceRequest {
                    id: created.id.clone(),
                },
                &admin,
            ))
            .await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn admin_methods_refuse_anonymous_callers_and_plain_users() {
    let app = spawn_app().await;
    let (_, user) = app.register("cust@example.org", "customer-pass").await;
    for token in [None, Some(user.as_str())] {
        let want = if token.is_some() {
            Code::PermissionDenied
        } else {
            Code::Unauthenticated
        };
        let c = || app.catalog();
        let id = || "x".to_string();
        expect_code(
            c().create_service(maybe_authed(spec("sneaky"), token))
                .await,
            want,
        );
        let update = pb::UpdateServiceRequest {
            id: id(),
            ..Default::default()
        };
        expect_code(c().update_service(maybe_authed(update, token)).await, want);
        let delete = pb::DeleteServiceRequest { id: id() };
        expect_code(c().delete_service(maybe_authed(delete, token)).await, want);
        let all = pb::ListAllServicesRequest::default();
        expect_code(c().list_all_services(maybe_authed(all, token)).await, want);
        let stats = pb::GetCatalogStatsRequest {};
        expect_code(
            c().get_catalog_stats(maybe_authed(stats, token)).await,
            want,
        );
    }
    let list = app
        .catalog()
        .list_services(pb::ListServicesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.total_size, 3, "nothing was written");
}

#[tokio::test]
async fn invalid_services_are_refused_field_by_field() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let mut bad = spec("Bad_Slug");
    bad.image = "Not An Image".into();
    bad.port = 70000;
    bad.resources = Some(pb::ResourceRequests {
        cpu_millicores: 0,
        memory_mb: -1,
        storage_gb: 1,
    });
    bad.monthly_price_cents = -5;
    bad.docs_url = "ftp://example.org".into();
    bad.env_template.insert("1BAD".into(), "v".into());
    let s = expect_code(
        app.catalog().create_service(authed(bad, &admin)).await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violated_fields(&s),
        [
            "slug",
            "image",
            "port",
            "resources.cpu_millicores",
            "resources.memory_mb",
            "env_template",
            "monthly_price_cents",
            "docs_url"
        ]
    );
    let mut no_resources = spec("ok-slug");
    no_resources.resources = None;
    let s = expect_code(
        app.catalog()
            .create_service(authed(no_resources, &admin))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["resources"]);

    let n8n = app
        .catalog()
        .get_service(by_slug("n8n"))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    let s = expect_code(
        app.catalog()
            .update_service(authed(
                pb::UpdateServiceRequest {
                    id: n8n.id.clone(),
                    port: Some(0),
                    ..Default::default()
                },
                &admin,
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["port"]);
    expect_code(
        app.catalog()
            .get_service(pb::GetServiceRequest { lookup: None })
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        app.catalog()
            .list_services(pb::ListServicesRequest {
                page_size: -1,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
}

#[tokio::test]
async fn unknown_services_are_not_found_and_slugs_are_unique() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    expect_code(
        app.catalog().get_service(by_slug("nope")).await,
        Code::NotFound,
    );
    expect_code(
        app.catalog()
            .update_service(authed(
                pb::UpdateServiceRequest {
                    id: "missing".into(),
                    name: Some("X".into()),
                    ..Default::default()
                },
                &admin,
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        app.catalog()
            .create_service(authed(spec("ghost"), &admin))
            .await,
        Code::AlreadyExists,
    );
    let pg = app
        .catalog()
        .create_service(authed(spec("pg"), &admin))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    expect_code(
        app.catalog()
            .update_service(authed(
                pb::UpdateServiceRequest {
                    id: pg.id,
                    slug: Some("n8n".into()),
                    ..Default::default()
                },
                &admin,
            ))
            .await,
        Code::AlreadyExists,
    );
}

#[tokio::test]
async fn listings_filter_by_search_category_and_tags_and_page() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    for i in 0..5 {
        app.catalog()
            .create_service(authed(spec(&format!("db-{i}")), &admin))
            .await
            .unwrap();
    }
    let list = |r: pb::ListServicesRequest| {
        let mut c = app.catalog();
        async move { c.list_services(r).await.unwrap().into_inner() }
    };
    let cms = list(pb::ListServicesRequest {
        category: "CMS".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(
        cms.services
            .iter()
            .map(|s| s.slug.as_str())
            .collect::<Vec<_>>(),
        ["ghost", "wordpress"]
    );
    let blog_php = list(pb::ListServicesRequest {
        tags: vec!["blog".into(), "php".into()],
        ..Default::default()
    })
    .await;
    assert_eq!(
        blog_php
            .services
            .iter()
            .map(|s| s.slug.as_str())
            .collect::<Vec<_>>(),
        ["wordpress"]
    );
    let search = list(pb::ListServicesRequest {
        search: "workflow".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(
        search
            .services
            .iter()
            .map(|s| s.slug.as_str())
            .collect::<Vec<_>>(),
        ["n8n"]
    );

    let first = list(pb::ListServicesRequest {
        page_size: 3,
        ..Default::default()
    })
    .await;
    assert_eq!((first.services.len(), first.total_size), (3, 8));
    let second = list(pb::ListServicesRequest {
        page_size: 3,
        page_token: first.next_page_token,
        ..Default::default()
    })
    .await;
    let third = list(pb::ListServicesRequest {
        page_size: 3,
        page_token: second.next_page_token.clone(),
        ..Default::default()
    })
    .await;
    assert_eq!(third.services.len(), 2);
    assert!(third.next_page_token.is_empty());
    let mut slugs: Vec<_> = first
        .services
        .iter()
        .chain(&second.services)
        .chain(&third.services)
        .map(|s| s.slug.clone())
        .collect();
    slugs.sort();
    slugs.dedup();
    assert_eq!(slugs.len(), 8);
}

fn component(name: &str, image: &str, port_name: &str, port: i32) -> pb::TemplateComponent {
    pb::TemplateComponent {
        name: name.into(),
        image: image.into(),
        ports: vec![pb::ComponentPort {
            name: port_name.into(),
            container_port: port,
        }],
        resources: Some(pb::ComponentResources {
            cpu_request_millicores: 100,
            memory_request_mb: 128,
            cpu_limit_millicores: 500,
            memory_limit_mb: 256,
        }),
        ..Default::default()
    }
}

/// An app and its PostgreSQL: 2 components, one variable, one secret.
fn template() -> pb::ServiceTemplate {
    let mut app = component("app", "ghcr.io/example/app:2.1.0", "http", 8080);
    app.expose_port = "http".into();
    app.env = vec![
        pb::TemplateEnvVar {
            name: "DATABASE_URL".into(),
            value: "postgres://app:${DB_PASSWORD}@${DB_HOST}:5432/app".into(),
        },
        pb::TemplateEnvVar {
            name: "BASE_URL".into(),
            value: "${PUBLIC_URL}".into(),
        },
        pb::TemplateEnvVar {
            name: "LANGUAGE".into(),
            value: "${LANGUAGE}".into(),
        },
    ];
    app.readiness_probe = Some(pb::Probe {
        check: Some(pb::probe::Check::HttpPath("/health".into())),
        port: "http".into(),
        ..Default::default()
    });
    app.volumes = vec![pb::ComponentVolume {
        name: "uploads".into(),
        mount_path: "/data".into(),
        size_gb: 2,
    }];
    let mut db = component("db", "docker.io/library/postgres:16.4-alpine", "pg", 5432);
    db.workload = pb::WorkloadKind::StatefulSet as i32;
    db.env = vec![pb::TemplateEnvVar {
        name: "POSTGRES_PASSWORD".into(),
        value: "${DB_PASSWORD}".into(),
    }];
    db.volumes = vec![pb::ComponentVolume {
        name: "data".into(),
        mount_path: "/var/lib/postgresql/data".into(),
        size_gb: 8,
    }];
    pb::ServiceTemplate {
        components: vec![app, db],
        variables: vec![pb::TemplateVariable {
            name: "LANGUAGE".into(),
            label: "Language".into(),
            r#type: pb::VariableType::Select as i32,
            options: vec!["en".into(), "de".into()],
            default_value: "en".into(),
            ..Default::default()
        }],
        generated: vec![pb::GeneratedValue {
            name: "DB_PASSWORD".into(),
            kind: pb::GeneratedValueKind::Password as i32,
            length: 24,
        }],
        notes: "Open ${PUBLIC_URL}/ (language ${LANGUAGE}).".into(),
    }
}

/// A CreateServiceRequest with [`template`] and nothing it derives.
fn templated(slug: &str) -> pb::CreateServiceRequest {
    pb::CreateServiceRequest {
        image: String::new(),
        port: 0,
        resources: None,
        env_template: Default::default(),
        template: Some(template()),
        ..spec(slug)
    }
}

#[tokio::test]
async fn seeded_services_carry_deployable_templates() {
    let app = spawn_app().await;
    let list = app
        .catalog()
        .list_services(pb::ListServicesRequest::default())
        .await
        .unwrap()
        .into_inner();
    for s in &list.services {
        let t = s
            .template
            .as_ref()
            .unwrap_or_else(|| panic!("{} has none", s.slug));
        let exposed: Vec<_> = t
            .components
            .iter()
            .filter(|c| !c.expose_port.is_empty())
            .collect();
        assert_eq!(exposed.len(), 1, "{}", s.slug);
        assert_eq!(s.image, exposed[0].image, "{}", s.slug);
        assert!(!t.notes.is_empty(), "{}", s.slug);
    }
    let wordpress = list
        .services
        .iter()
        .find(|s| s.slug == "wordpress")
        .unwrap();
    let t = wordpress.template.as_ref().unwrap();
    let names: Vec<_> = t.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["wordpress", "db"]);
    assert_eq!(t.components[1].image, "docker.io/library/mariadb:11.4");
    assert_eq!(
        t.components[1].workload,
        pb::WorkloadKind::StatefulSet as i32
    );
    let generated: Vec<_> = t.generated.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(generated, ["DB_PASSWORD", "DB_ROOT_PASSWORD"]);
    assert_eq!(wordpress.port, 80);
    assert_eq!(wordpress.env_template["WORDPRESS_DB_HOST"], "${DB_HOST}");
    assert_eq!(wordpress.resources.as_ref().unwrap().storage_gb, 10);

    // GetService (by slug, the customer's path) carries it too.
    let n8n = app
        .catalog()
        .get_service(by_slug("n8n"))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    let t = n8n.template.unwrap();
    assert_eq!(t.generated[0].name, "N8N_ENCRYPTION_KEY");
    assert_eq!(t.variables[0].default_value, "UTC");
}

#[tokio::test]
async fn a_template_round_trips_and_derives_image_port_and_resources() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    // Figures the template derives may not be given otherwise.
    let mut req = spec("with-db");
    req.template = Some(template());
    req.env_template.clear();
    let s = expect_code(
        app.catalog()
            .create_service(authed(req.clone(), &admin))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["image", "port", "resources"]);

    let created = app
        .catalog()
        .create_service(authed(templated("with-db"), &admin))
        .await
        .expect("a valid template is accepted")
        .into_inner()
        .service
        .unwrap();
    assert_eq!(created.template.as_ref(), Some(&template()));
    assert_eq!(created.image, "ghcr.io/example/app:2.1.0");
    assert_eq!(created.port, 8080);
    assert_eq!(
        created.resources,
        Some(pb::ResourceRequests {
            cpu_millicores: 200,
            memory_mb: 256,
            storage_gb: 10,
        })
    );
    assert_eq!(
        created.env_template,
        [
            (
                "DATABASE_URL".to_string(),
                "postgres://app:${DB_PASSWORD}@${DB_HOST}:5432/app".to_string()
            ),
            ("BASE_URL".to_string(), "${PUBLIC_URL}".to_string()),
            ("LANGUAGE".to_string(), "${LANGUAGE}".to_string()),
        ]
        .into()
    );
    let listed = app
        .catalog()
        .list_all_services(authed(
            pb::ListAllServicesRequest {
                search: "with-db".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.services, [created]);

    // A service without a template still works, and has none.
    let plain = app
        .catalog()
        .create_service(authed(spec("plain"), &admin))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    assert_eq!(plain.template, None);
    assert_eq!(plain.port, 5432);
}

#[tokio::test]
async fn update_replaces_the_template_and_rederives_the_figures() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let created = app
        .catalog()
        .create_service(authed(templated("swap"), &admin))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();

    // An update of other fields keeps the template.
    let renamed = app
        .catalog()
        .update_service(authed(
            pb::UpdateServiceRequest {
                id: created.id.clone(),
                name: Some("Swapped".into()),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    assert_eq!(renamed.template, created.template);
    assert_eq!(renamed.port, 8080);
    // Repeating a derived figure is fine; changing it is refused.
    app.catalog()
        .update_service(authed(
            pb::UpdateServiceRequest {
                id: created.id.clone(),
                port: Some(8080),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("the same port");
    let s = expect_code(
        app.catalog()
            .update_service(authed(
                pb::UpdateServiceRequest {
                    id: created.id.clone(),
                    image: Some("docker.io/library/nginx:1.27".into()),
                    env_template: Some(pb::StringMap::default()),
                    ..Default::default()
                },
                &admin,
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["image", "env_template"]);

    let mut single = component("web", "docker.io/library/nginx:1.27-alpine", "web", 80);
    single.expose_port = "web".into();
    let replacement = pb::ServiceTemplate {
        components: vec![single],
        ..Default::default()
    };
    let updated = app
        .catalog()
        .update_service(authed(
            pb::UpdateServiceRequest {
                id: created.id.clone(),
                template: Some(replacement.clone()),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    assert_eq!(updated.template, Some(replacement));
    assert_eq!(updated.name, "Swapped");
    assert_eq!(updated.image, "docker.io/library/nginx:1.27-alpine");
    assert_eq!(updated.port, 80);
    assert_eq!(
        updated.resources,
        Some(pb::ResourceRequests {
            cpu_millicores: 100,
            memory_mb: 128,
            storage_gb: 1,
        })
    );
    assert!(updated.env_template.is_empty());

    // A malformed replacement changes nothing.
    let s = expect_code(
        app.catalog()
            .update_service(authed(
                pb::UpdateServiceRequest {
                    id: created.id.clone(),
                    template: Some(pb::ServiceTemplate::default()),
                    ..Default::default()
                },
                &admin,
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["template.components"]);
    let kept = app
        .catalog()
        .get_service(authed(by_slug("swap"), &admin))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    assert_eq!(kept, updated);
}

#[tokio::test]
async fn malformed_templates_are_refused_field_by_field() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let mut t = template();
    t.components[0].image = "ghcr.io/example/app:latest".into();
    t.components[0].ports[0].container_port = 0;
    t.components[0].env[1].value = "${PUBLIC_URL".into();
    t.components[0].readiness_probe.as_mut().unwrap().port = "nope".into();
    t.components[1].expose_port = "pg".into();
    t.components[1].volumes[0].mount_path = "relative/path".into();
    t.variables[0].default_value = "fr".into();
    t.variables.push(pb::TemplateVariable {
        name: "DOMAIN".into(),
        label: "Shadow".into(),
        pattern: "(".into(),
        ..Default::default()
    });
    t.generated[0].length = 8;
    t.notes = "Your password: ${DB_PASSWORD}".into();
    let mut req = templated("broken");
    req.slug = "Broken Slug".into();
    req.template = Some(t);
    let s = expect_code(
        app.catalog().create_service(authed(req, &admin)).await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violated_fields(&s),
        [
            "slug",
            "template.components",
            "template.components[0].image",
            "template.components[0].ports[0].container_port",
            "template.components[0].env[1].value",
            "template.components[0].readiness_probe.port",
            "template.components[1].volumes[0].mount_path",
            "template.variables[0].default_value",
            "template.variables[1].name",
            "template.variables[1].pattern",
            "template.generated[0].length",
            "template.notes",
        ]
    );
    let list = app
        .catalog()
        .list_services(pb::ListServicesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.total_size, 3, "nothing was written");
}

/// A CreateServiceRequest as JSON (proto3 JSON names) whose only component
/// is `component`.
fn json_request(slug: &str, component: serde_json::Value) -> String {
    serde_json::json!({
        "slug": slug,
        "name": "Hostile",
        "description": "Wants the host.",
        "category": "tools",
        "version": "1",
        "active": true,
        "template": { "components": [component] },
    })
    .to_string()
}

fn json_component() -> serde_json::Value {
    serde_json::json!({
        "name": "app",
        "image": "ghcr.io/example/app:2.1.0",
        "ports": [{ "name": "http", "containerPort": 8080 }],
        "resources": { "cpuRequestMillicores": 100, "memoryRequestMb": 128 },
        "exposePort": "http",
    })
}

#[tokio::test]
async fn a_template_cannot_ask_for_the_host_or_root_whoever_sends_it() {
    use crate::transport::{grpcurl, run};
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let ca = app.data_dir.0.join("pki/ca.crt");
    let target = format!("localhost:{}", app.addr.port());
    let create = |body: String| {
        let mut cmd = grpcurl();
        cmd.arg("-cacert")
            .arg(&ca)
            .arg("-H")
            .arg(format!("authorization: Bearer {admin}"))
            .arg("-d")
            .arg(body)
            .arg(&target)
            .arg("minispod.v1.CatalogService/CreateService");
        cmd
    };

    // What Kubernetes would take in a pod spec has no field in a template:
    // the request cannot even be written, let alone stored.
    let mut asks = Vec::new();
    for (field, value) in [
        ("hostNetwork", serde_json::json!(true)),
        ("hostPID", serde_json::json!(true)),
        ("hostIPC", serde_json::json!(true)),
        ("privileged", serde_json::json!(true)),
        (
            "securityContext",
            serde_json::json!({ "capabilities": { "add": ["SYS_ADMIN"] } }),
        ),
        ("capabilities", serde_json::json!(["NET_ADMIN"])),
    ] {
        let mut c = json_component();
        c[field] = value;
        asks.push((field, c));
    }
    let mut c = json_component();
    c["ports"][0]["hostPort"] = serde_json::json!(80);
    asks.push(("hostPort", c));
    let mut c = json_component();
    c["volumes"] =
        serde_json::json!([{ "name": "root", "mountPath": "/host", "sizeGb": 1, "hostPath": "/" }]);
    asks.push(("hostPath", c));
    let mut c = json_component();
    c["security"] = serde_json::json!({ "runAsUser": 1000, "privileged": true });
    asks.push(("privileged", c));
    for (field, component) in asks {
        let (ok, out, err) = run(&mut create(json_request("hostile", component))).await;
        assert!(!ok, "{field} accepted: {out}");
        assert!(
            err.contains(&format!("has no known field named {field}")),
            "{field}: {err}"
        );
    }

    // What a template can say is checked on save, with the field's path.
    let mut c = json_component();
    c["security"] = serde_json::json!({ "runAsUser": 0 });
    c["volumes"] = serde_json::json!([
        { "name": "token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "sizeGb": 1 },
        { "name": "kernel", "mountPath": "/proc/sys", "sizeGb": 1 },
    ]);
    let (ok, out, err) = run(&mut create(json_request("hostile", c))).await;
    assert!(!ok, "accepted: {out}");
    assert!(err.contains("Code: InvalidArgument"), "{err}");
    for field in [
        "template.components[0].volumes[0].mount_path: must not be /var/run/secrets or under it",
        "template.components[0].volumes[1].mount_path: must not be /proc or under it",
        "template.components[0].security.run_as_user: must not be 0",
    ] {
        assert!(err.contains(field), "{field}: {err}");
    }

    // The same through the typed client, and nothing was stored.
    let mut req = templated("hostile");
    req.template.as_mut().unwrap().components[1].security = Some(pb::ComponentSecurity {
        run_as_user: 0,
        run_as_group: 0,
        fs_group: 0,
    });
    let status = app
        .catalog()
        .create_service(authed(req, &admin))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        ["template.components[1].security.run_as_user"]
    );
    let all = app
        .catalog()
        .list_all_services(authed(
            pb::ListAllServicesRequest {
                page_size: 500,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(all.services.iter().all(|s| s.slug != "hostile"));

    // A sound template with its user is stored as sent.
    let mut c = json_component();
    c["security"] = serde_json::json!({ "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000 });
    let (ok, out, err) = run(&mut create(json_request("tame", c))).await;
    assert!(ok, "{err}");
    assert!(out.contains("\"fsGroup\": \"2000\""), "{out}");
}
