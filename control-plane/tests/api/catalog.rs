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
