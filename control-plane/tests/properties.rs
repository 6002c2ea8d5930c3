//! Property tests of the request validators and the worker status machine.

use minispod_control_plane::{
    catalog::fields::{ServiceSpec, check_image, check_slug},
    users::fields::{Email, Password, PersonName},
    workers::status::{StatusFacts, derive},
};
use minispod_proto::v1::WorkerStatus;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn emails_parse_to_a_fixed_point(s in "\\PC{0,80}") {
        if let Ok(e) = Email::parse(&s) {
            let e = e.as_str();
            prop_assert_eq!(e.matches('@').count(), 1);
            prop_assert!(e.len() <= 254);
            prop_assert_eq!(e.to_lowercase(), e);
            prop_assert!(!e.chars().any(char::is_whitespace));
            let again = Email::parse(e).unwrap();
            prop_assert_eq!(again.as_str(), e);
        }
    }

    #[test]
    fn plausible_emails_are_accepted_in_lower_case(
        local in "[a-zA-Z0-9][a-zA-Z0-9_%+-]{0,20}",
        domain in "[a-zA-Z0-9]{1,10}",
        tld in "[a-zA-Z]{2,6}",
    ) {
        let raw = format!(" {local}@{domain}.{tld} ");
        let parsed = Email::parse(&raw);
        prop_assert!(parsed.is_ok(), "{raw:?} refused");
        let expected = raw.trim().to_lowercase();
        let parsed = parsed.unwrap();
        prop_assert_eq!(parsed.as_str(), expected.as_str());
    }

    #[test]
    fn passwords_and_names_respect_their_bounds(s in "\\PC{0,200}") {
        let n = s.chars().count();
        prop_assert_eq!(Password::parse(&s).is_ok(), (8..=128).contains(&n) && !s.trim().is_empty());
        if let Ok(name) = PersonName::parse(&s) {
            prop_assert!(!name.as_str().is_empty() && name.as_str().chars().count() <= 100);
            prop_assert_eq!(name.as_str().trim(), name.as_str());
        }
    }

    #[test]
    fn accepted_images_and_slugs_are_well_formed(s in "[a-zA-Z0-9./:@_ -]{0,80}") {
        if check_image(&s).is_ok() {
            prop_assert!(!s.is_empty() && s.len() <= 255 && !s.contains(' '));
        }
        if check_slug(&s).is_ok() {
            prop_assert!(s.len() >= 2 && !s.starts_with('-') && !s.ends_with('-'));
            prop_assert!(s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        }
    }

    #[test]
    fn service_numbers_are_accepted_exactly_within_range(
        port in -10i32..70_000,
        cpu in -10i32..70_000,
        mem in -10i32..300_000,
        disk in -10i32..20_000,
        price in -10i64..2_000_000_000,
    ) {
        let spec = ServiceSpec {
            slug: "app".into(), name: "App".into(), description: String::new(), category: "misc".into(),
            version: "1".into(), image: "nginx:1".into(), port, cpu_millicores: cpu, memory_mb: mem,
            storage_gb: disk, env_template: Default::default(), monthly_price_cents: price, active: true,
            tags: vec![], icon_url: String::new(), docs_url: String::new(), template: None,
        };
        let ok = (1..=65_535).contains(&port) && (1..=64_000).contains(&cpu) && (1..=262_144).contains(&mem)
            && (1..=16_384).contains(&disk) && (0..=1_000_000_000).contains(&price);
        prop_assert_eq!(spec.validated().is_ok(), ok);
    }

    /// Any sequence of stream, node and administrator events keeps the
    /// status consistent with the facts it follows from.
    #[test]
    fn the_status_machine_never_contradicts_its_facts(events in proptest::collection::vec(0u8..8, 0..60)) {
        let mut f = StatusFacts::default();
        let mut was_connected = false;
        for e in events {
            match e {
                0 => { f.online = true; f.ever_connected = true; }
                1 => f.online = false,
                2 => f.ready = true,
                3 => f.ready = false,
                4 => f.maintenance = true,
                5 => f.maintenance = false,
                6 => f.node_ready = true,
                _ => f.node_ready = false,
            }
            was_connected |= f.online;
            let s = derive(f);
            if f.maintenance {
                prop_assert_eq!(s, WorkerStatus::Maintenance);
            } else if !f.online {
                prop_assert!(matches!(s, WorkerStatus::Inactive | WorkerStatus::Pending));
                prop_assert_eq!(s == WorkerStatus::Pending, !was_connected);
            } else {
                prop_assert_eq!(s, if f.ready && f.node_ready { WorkerStatus::Active } else { WorkerStatus::NotReady });
            }
        }
    }
}
