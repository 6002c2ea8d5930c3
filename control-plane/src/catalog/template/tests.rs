//! The template rules, checked against a sound template and its broken
//! variants.

use std::collections::BTreeMap;

use minispod_proto::v1 as pb;

use super::names::check_pinned_image;
use super::*;
use crate::error::{AppError, Violations};

fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The fields of every violation `check` records.
fn violated(check: impl FnOnce(&mut Violations)) -> Vec<String> {
    let mut v = Violations::new();
    check(&mut v);
    match v.finish() {
        Ok(()) => vec![],
        Err(AppError::InvalidArgument { violations, .. }) => {
            violations.into_iter().map(|x| x.field).collect()
        }
        Err(e) => panic!("unexpected {e:?}"),
    }
}

fn port(name: &str, n: i32) -> pb::ComponentPort {
    pb::ComponentPort {
        name: name.into(),
        container_port: n,
    }
}

fn env(name: &str, value: &str) -> pb::TemplateEnvVar {
    pb::TemplateEnvVar {
        name: name.into(),
        value: value.into(),
    }
}

fn resources(cpu: i32, mem: i32) -> Option<pb::ComponentResources> {
    Some(pb::ComponentResources {
        cpu_request_millicores: cpu,
        memory_request_mb: mem,
        cpu_limit_millicores: 0,
        memory_limit_mb: mem * 2,
    })
}

fn sample() -> pb::ServiceTemplate {
    pb::ServiceTemplate {
        components: vec![
            pb::TemplateComponent {
                name: "web".into(),
                image: "docker.io/library/wordpress:6.6-apache".into(),
                ports: vec![port("http", 80)],
                env: vec![
                    env("WORDPRESS_DB_HOST", "${DB_HOST}"),
                    env("WORDPRESS_DB_PASSWORD", "${DB_PASSWORD}"),
                    env("SITE", "${PUBLIC_URL}/ $${LITERAL}"),
                ],
                volumes: vec![pb::ComponentVolume {
                    name: "html".into(),
                    mount_path: "/var/www/html".into(),
                    size_gb: 5,
                }],
                readiness_probe: Some(pb::Probe {
                    check: Some(pb::probe::Check::HttpPath("/".into())),
                    port: "http".into(),
                    ..Default::default()
                }),
                liveness_probe: None,
                resources: resources(250, 256),
                expose_port: "http".into(),
                args: vec![],
                workload: pb::WorkloadKind::Deployment as i32,
                backup: pb::BackupMode::Live as i32,
                security: Some(pb::ComponentSecurity {
                    run_as_user: 33,
                    run_as_group: 0,
                    fs_group: 0,
                }),
            },
            pb::TemplateComponent {
                name: "db".into(),
                image: "docker.io/library/mariadb:11.4".into(),
                ports: vec![port("mysql", 3306)],
                env: vec![env("MARIADB_PASSWORD", "${DB_PASSWORD}")],
                volumes: vec![pb::ComponentVolume {
                    name: "data".into(),
                    mount_path: "/var/lib/mysql".into(),
                    size_gb: 3,
                }],
                readiness_probe: Some(pb::Probe {
                    check: Some(pb::probe::Check::Tcp(true)),
                    port: "mysql".into(),
                    ..Default::default()
                }),
                resources: resources(250, 512),
                workload: pb::WorkloadKind::StatefulSet as i32,
                ..Default::default()
            },
        ],
        variables: vec![pb::TemplateVariable {
            name: "ADMIN_EMAIL".into(),
            label: "Administrator email".into(),
            r#type: pb::VariableType::Email as i32,
            ..Default::default()
        }],
        generated: vec![pb::GeneratedValue {
            name: "DB_PASSWORD".into(),
            kind: pb::GeneratedValueKind::Password as i32,
            length: 0,
        }],
        notes: "Open ${PUBLIC_URL}/wp-admin (${ADMIN_EMAIL}).".into(),
    }
}

#[test]
fn placeholders_are_listed_in_order_with_the_escape_skipped() {
    assert_eq!(
        placeholders("a ${B} $${C} ${D_2}${B}").unwrap(),
        ["B", "D_2", "B"]
    );
    assert_eq!(
        placeholders("no placeholders, $ and {} alone").unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(placeholders("$$${X}").unwrap(), Vec::<String>::new());
    assert_eq!(placeholders("").unwrap(), Vec::<String>::new());
}

#[test]
fn malformed_placeholders_are_errors() {
    let e = placeholders("x ${OPEN").unwrap_err();
    assert!(e.contains("unclosed"), "{e}");
    for bad in ["${}", "${lower}", "${1X}", "${A-B}", "${ A}", "${A${B}}"] {
        assert!(placeholders(bad).is_err(), "{bad:?} accepted");
    }
    assert!(placeholders(&format!("${{{}}}", "A".repeat(65))).is_err());
}

#[test]
fn expand_substitutes_and_unescapes() {
    let vals = values(&[("DOMAIN", "a.example.org"), ("N", "")]);
    assert_eq!(
        expand("https://${DOMAIN}/$${DOMAIN}/${N}end", &vals).unwrap(),
        "https://a.example.org/${DOMAIN}/end"
    );
    // A value is not expanded again.
    let vals = values(&[("A", "${B}")]);
    assert_eq!(expand("${A}", &vals).unwrap(), "${B}");
    let e = expand("${MISSING}", &vals).unwrap_err();
    assert!(e.contains("MISSING"), "{e}");
    assert!(expand("${A", &vals).is_err());
}

#[test]
fn host_placeholders_use_underscores() {
    assert_eq!(host_placeholder("db"), "DB_HOST");
    assert_eq!(host_placeholder("my-db2"), "MY_DB2_HOST");
}

#[test]
fn a_sound_template_passes_and_derives_its_figures() {
    let t = sample();
    assert_eq!(violated(|v| validate(&t, v)), Vec::<String>::new());
    let d = derived(&t);
    assert_eq!(d.image, "docker.io/library/wordpress:6.6-apache");
    assert_eq!(d.port, 80);
    assert_eq!((d.cpu_millicores, d.memory_mb, d.storage_gb), (500, 768, 8));
    assert_eq!(d.env["WORDPRESS_DB_HOST"], "${DB_HOST}");
    let mut no_volumes = t.clone();
    for c in &mut no_volumes.components {
        c.volumes.clear();
    }
    assert_eq!(derived(&no_volumes).storage_gb, 1);
    assert_eq!(
        secret_names(&t).into_iter().collect::<Vec<_>>(),
        ["DB_PASSWORD"]
    );
}

#[test]
fn the_names_of_the_owners_gate_are_not_a_templates_to_take() {
    let mut t = sample();
    t.components[0].name = "minispod-gate".into();
    t.components[0].ports[0].name = "minispod-gate".into();
    t.components[0].expose_port = "minispod-gate".into();
    t.components[0].readiness_probe = None;
    t.components[0].volumes[0].name = "minispod-gate-run".into();
    assert_eq!(
        violated(|v| validate(&t, v)),
        [
            "template.components[0].name",
            "template.components[0].ports[0].name",
            "template.components[0].volumes[0].name",
        ]
    );
}

#[test]
fn every_broken_rule_of_a_component_is_reported_at_its_path() {
    let mut t = sample();
    let web = &mut t.components[0];
    web.image = "docker.io/library/wordpress:latest".into();
    web.ports.push(port("http", 70000));
    web.env.push(env("1BAD", "${NOPE}"));
    web.volumes.push(pb::ComponentVolume {
        name: "html".into(),
        mount_path: "/var/www/html/".into(),
        size_gb: 0,
    });
    web.readiness_probe = Some(pb::Probe {
        check: Some(pb::probe::Check::HttpPath("healthz".into())),
        port: "nope".into(),
        initial_delay_seconds: 4000,
        period_seconds: -1,
        failure_threshold: 101,
    });
    web.resources = Some(pb::ComponentResources {
        cpu_request_millicores: 500,
        memory_request_mb: 0,
        cpu_limit_millicores: 100,
        memory_limit_mb: 0,
    });
    web.args = vec!["--x=${UNCLOSED".into()];
    let db = &mut t.components[1];
    db.name = "Db".into();
    db.image = "docker.io/library/mariadb".into();
    db.resources = None;
    db.expose_port = "mysql".into();
    db.workload = 9;
    db.backup = 7;
    assert_eq!(
        violated(|v| validate(&t, v)),
        [
            "template.components",
            "template.components[0].image",
            "template.components[0].ports[1].name",
            "template.components[0].ports[1].container_port",
            // DB_HOST is unknown: "Db" is not a component name.
            "template.components[0].env[0].value",
            "template.components[0].env[3].name",
            "template.components[0].env[3].value",
            "template.components[0].volumes[1].name",
            "template.components[0].volumes[1].mount_path",
            "template.components[0].volumes[1].size_gb",
            "template.components[0].readiness_probe.http_path",
            "template.components[0].readiness_probe.port",
            "template.components[0].readiness_probe.initial_delay_seconds",
            "template.components[0].readiness_probe.period_seconds",
            "template.components[0].readiness_probe.failure_threshold",
            "template.components[0].resources.memory_request_mb",
            "template.components[0].resources.cpu_limit_millicores",
            "template.components[0].args[0]",
            "template.components[1].name",
            "template.components[1].image",
            "template.components[1].resources",
            "template.components[1].backup",
            "template.components[1].workload",
        ]
    );
}

#[test]
fn variable_and_generated_rules_are_reported_at_their_paths() {
    let mut t = sample();
    let var = |name: &str, ty: pb::VariableType| pb::TemplateVariable {
        name: name.into(),
        label: "Label".into(),
        r#type: ty as i32,
        ..Default::default()
    };
    t.variables = vec![
        var("DOMAIN", pb::VariableType::String),
        var("DB_HOST", pb::VariableType::String),
        pb::TemplateVariable {
            pattern: "[a-".into(),
            ..var("PATTERNED", pb::VariableType::String)
        },
        pb::TemplateVariable {
            options: vec![],
            ..var("PICK", pb::VariableType::Select)
        },
        pb::TemplateVariable {
            options: vec!["a".into(), "a".into()],
            default_value: "b".into(),
            ..var("PICK_TWO", pb::VariableType::Select)
        },
        pb::TemplateVariable {
            options: vec!["x".into()],
            default_value: "12x".into(),
            ..var("COUNT", pb::VariableType::Number)
        },
        pb::TemplateVariable {
            label: String::new(),
            pattern: "[a-z]+".into(),
            default_value: "ABC".into(),
            ..var("lower", pb::VariableType::String)
        },
        pb::TemplateVariable {
            r#type: 42,
            ..var("TYPED", pb::VariableType::String)
        },
        var("DB_PASSWORD", pb::VariableType::Secret),
        var("API_TOKEN", pb::VariableType::Secret),
    ];
    t.generated.push(pb::GeneratedValue {
        name: "KEY".into(),
        kind: 7,
        length: 8,
    });
    t.notes = "${DB_PASSWORD} ${API_TOKEN} ${WHO}".into();
    assert_eq!(
        violated(|v| validate(&t, v)),
        [
            "template.variables[0].name",
            "template.variables[1].name",
            "template.variables[2].pattern",
            "template.variables[3].options",
            "template.variables[4].options[1]",
            "template.variables[4].default_value",
            "template.variables[5].options",
            "template.variables[5].default_value",
            "template.variables[6].name",
            "template.variables[6].label",
            "template.variables[6].default_value",
            "template.variables[7].type",
            "template.generated[0].name",
            "template.generated[1].kind",
            "template.generated[1].length",
            "template.notes",
            "template.notes",
            "template.notes",
        ]
    );
}

#[test]
fn root_and_mounts_over_the_systems_own_paths_are_refused() {
    let mut t = sample();
    t.components[0].security = Some(pb::ComponentSecurity {
        run_as_user: 0,
        run_as_group: -1,
        fs_group: MAX_ID + 1,
    });
    t.components[1].security = Some(pb::ComponentSecurity {
        run_as_user: -5,
        ..Default::default()
    });
    for (i, path) in [
        "/proc",
        "/sys/fs",
        "/dev/",
        "/var/run/secrets/kubernetes.io",
    ]
    .into_iter()
    .enumerate()
    {
        t.components[0].volumes.push(pb::ComponentVolume {
            name: format!("v{i}"),
            mount_path: path.into(),
            size_gb: 1,
        });
    }
    // Not under a forbidden path: a prefix of the name only.
    t.components[1].volumes[0].mount_path = "/devdata".into();
    assert_eq!(
        violated(|v| validate(&t, v)),
        [
            "template.components[0].volumes",
            "template.components[0].volumes[1].mount_path",
            "template.components[0].volumes[2].mount_path",
            "template.components[0].volumes[3].mount_path",
            "template.components[0].volumes[4].mount_path",
            "template.components[0].security.run_as_user",
            "template.components[0].security.run_as_group",
            "template.components[0].security.fs_group",
            "template.components[1].security.run_as_user",
        ]
    );
    let mut v = Violations::new();
    validate(&t, &mut v);
    let e = v.finish().unwrap_err().to_string();
    assert!(e.contains("never run as root"), "{e}");
    assert_eq!(
        run_as(&sample().components[0]),
        Some((33, 33, 33)),
        "group and fs group default to the user"
    );
    assert_eq!(run_as(&sample().components[1]), None);
}

#[test]
fn pinned_images_only() {
    for ok in [
        "docker.io/library/ghost:5.96-alpine",
        "localhost:5000/app:1",
        "ghcr.io/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        assert!(check_pinned_image(ok).is_ok(), "{ok} refused");
    }
    for bad in [
        "ghost",
        "ghost:latest",
        "localhost:5000/app",
        " ghost:5",
        "ghost:5 ",
    ] {
        assert!(check_pinned_image(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn exactly_one_component_exposes_a_port() {
    let mut t = sample();
    t.components[0].expose_port.clear();
    assert_eq!(violated(|v| validate(&t, v)), ["template.components"]);
    t.components.clear();
    assert_eq!(violated(|v| validate(&t, v)), ["template.components"]);
}

#[test]
fn customer_values_are_checked_and_defaults_applied() {
    let var = |name: &str, ty: pb::VariableType| pb::TemplateVariable {
        name: name.into(),
        label: "Label".into(),
        r#type: ty as i32,
        ..Default::default()
    };
    let t = pb::ServiceTemplate {
        variables: vec![
            pb::TemplateVariable {
                default_value: "UTC".into(),
                ..var("TIMEZONE", pb::VariableType::String)
            },
            pb::TemplateVariable {
                required: true,
                ..var("ADMIN_EMAIL", pb::VariableType::Email)
            },
            var("WORKERS", pb::VariableType::Number),
            var("DEBUG", pb::VariableType::Boolean),
            pb::TemplateVariable {
                options: vec!["small".into(), "large".into()],
                default_value: "small".into(),
                ..var("SIZE", pb::VariableType::Select)
            },
            pb::TemplateVariable {
                pattern: "[a-z]{3,8}".into(),
                ..var("HANDLE", pb::VariableType::String)
            },
            var("OPTIONAL", pb::VariableType::String),
        ],
        ..Default::default()
    };
    let mut v = Violations::new();
    let out = validate_values(
        &t,
        &values(&[
            ("ADMIN_EMAIL", "ada@example.org"),
            ("WORKERS", "-4"),
            ("DEBUG", "true"),
            ("HANDLE", "ada"),
            ("TIMEZONE", ""),
        ]),
        &mut v,
    );
    assert!(v.finish().is_ok());
    assert_eq!(
        out,
        values(&[
            ("TIMEZONE", "UTC"),
            ("ADMIN_EMAIL", "ada@example.org"),
            ("WORKERS", "-4"),
            ("DEBUG", "true"),
            ("SIZE", "small"),
            ("HANDLE", "ada"),
            ("OPTIONAL", ""),
        ])
    );

    let long = "a".repeat(MAX_VALUE_CHARS + 1);
    let given = values(&[
        ("WORKERS", "4.5"),
        ("DEBUG", "yes"),
        ("SIZE", "medium"),
        // Whole-value match: a match inside is not enough.
        ("HANDLE", "adam-lovelace"),
        ("OPTIONAL", &long),
        ("EXTRA", "x"),
    ]);
    assert_eq!(
        violated(|v| {
            validate_values(&t, &given, v);
        }),
        [
            "variables.EXTRA",
            "variables.ADMIN_EMAIL",
            "variables.WORKERS",
            "variables.DEBUG",
            "variables.SIZE",
            "variables.HANDLE",
            "variables.OPTIONAL",
        ]
    );
    for bad in [
        "ada",
        "ada@",
        "@x.org",
        "ada@org",
        "a da@x.org",
        "a@b@c.org",
        "a@x..org",
    ] {
        let given = values(&[("ADMIN_EMAIL", bad)]);
        assert_eq!(
            violated(|v| {
                validate_values(&t, &given, v);
            }),
            ["variables.ADMIN_EMAIL"],
            "{bad:?} accepted"
        );
    }
    let given = values(&[
        ("ADMIN_EMAIL", "a@x.org"),
        ("WORKERS", "99999999999999999999"),
    ]);
    assert_eq!(
        violated(|v| {
            validate_values(&t, &given, v);
        }),
        ["variables.WORKERS"]
    );
}
