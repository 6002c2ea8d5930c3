//! The rules of a template as a whole, checked when an administrator saves
//! one: its variables, generated values and notes; the components' own
//! rules are in `components`.

use std::collections::BTreeSet;

use minispod_proto::v1 as pb;

use super::components::validate_components;
use super::names::{compile_pattern, is_dns_label, is_upper_snake};
use super::placeholders::{check_placeholders, host_placeholder};
use super::values::{check_value, secret_names, variable_type};
use super::{BUILT_INS, MAX_VALUE_CHARS};
use crate::error::Violations;

/// Checks a template against every rule the proto states, adding one
/// violation per broken rule with paths such as
/// `template.components[0].image` or `template.variables[2].pattern`.
pub fn validate(t: &pb::ServiceTemplate, v: &mut Violations) {
    // The names a placeholder may use, gathered first so components may
    // refer to each other and to every variable.
    let hosts: BTreeSet<String> = t
        .components
        .iter()
        .filter(|c| is_dns_label(&c.name, 20))
        .map(|c| host_placeholder(&c.name))
        .collect();
    let mut known: BTreeSet<String> = BUILT_INS.iter().map(|s| (*s).to_owned()).collect();
    known.extend(hosts.iter().cloned());
    known.extend(t.variables.iter().map(|x| x.name.clone()));
    known.extend(t.generated.iter().map(|g| g.name.clone()));
    let no_forbidden = BTreeSet::new();

    validate_components(t, &known, &no_forbidden, v);

    // Variables and generated values share one namespace, and must not
    // shadow a built-in or a component host.
    let mut names = BTreeSet::new();
    let mut check_name = |name: &str, field: &str, v: &mut Violations| {
        if !is_upper_snake(name, 64) {
            v.add(
                field,
                "must be 1 to 64 upper-case letters, digits and underscores, starting with a letter",
            );
        } else if BUILT_INS.contains(&name) {
            v.add(field, format!("{name} is a built-in placeholder"));
        } else if hosts.contains(name) {
            v.add(
                field,
                format!("{name} is the host placeholder of a component"),
            );
        } else if !names.insert(name.to_owned()) {
            v.add(
                field,
                format!("{name} is used by another variable or generated value"),
            );
        }
    };

    if t.variables.len() > 32 {
        v.add("template.variables", "must have at most 32 variables");
    }
    for (i, var) in t.variables.iter().enumerate() {
        let p = format!("template.variables[{i}]");
        check_name(&var.name, &format!("{p}.name"), v);
        let label = var.label.chars().count();
        if label == 0 || label > 100 || var.label.trim().is_empty() {
            v.add(&format!("{p}.label"), "must be 1 to 100 characters");
        }
        if var.description.chars().count() > 500 {
            v.add(
                &format!("{p}.description"),
                "must be at most 500 characters",
            );
        }
        let ty = variable_type(var);
        if ty.is_none() {
            v.add(&format!("{p}.type"), "is not a VariableType");
        }
        if ty == Some(pb::VariableType::Select) {
            if var.options.is_empty() || var.options.len() > 50 {
                v.add(
                    &format!("{p}.options"),
                    "a SELECT variable must have 1 to 50 options",
                );
            }
            let mut seen = BTreeSet::new();
            for (j, o) in var.options.iter().enumerate() {
                if o.is_empty()
                    || o.chars().count() > MAX_VALUE_CHARS
                    || o.chars().any(char::is_control)
                {
                    v.add(
                        &format!("{p}.options[{j}]"),
                        format!("must be 1 to {MAX_VALUE_CHARS} characters on one line"),
                    );
                } else if !seen.insert(o) {
                    v.add(
                        &format!("{p}.options[{j}]"),
                        format!("{o:?} is listed twice"),
                    );
                }
            }
        } else if !var.options.is_empty() {
            v.add(
                &format!("{p}.options"),
                "only SELECT variables have options",
            );
        }
        let mut pattern = None;
        if !var.pattern.is_empty() {
            if var.pattern.chars().count() > 200 {
                v.add(&format!("{p}.pattern"), "must be at most 200 characters");
            } else {
                pattern = v.take(&format!("{p}.pattern"), compile_pattern(&var.pattern));
            }
        }
        if !var.default_value.is_empty()
            && ty.is_some()
            && (pattern.is_some() || var.pattern.is_empty())
            && let Err(e) = check_value(var, pattern.as_ref(), &var.default_value)
        {
            v.add(&format!("{p}.default_value"), e);
        }
    }

    if t.generated.len() > 16 {
        v.add(
            "template.generated",
            "must have at most 16 generated values",
        );
    }
    for (i, g) in t.generated.iter().enumerate() {
        let p = format!("template.generated[{i}]");
        check_name(&g.name, &format!("{p}.name"), v);
        if pb::GeneratedValueKind::try_from(g.kind).is_err() {
            v.add(&format!("{p}.kind"), "is not a GeneratedValueKind");
        }
        if g.length != 0 && !(16..=128).contains(&g.length) {
            v.add(
                &format!("{p}.length"),
                "must be 0 (32) or between 16 and 128",
            );
        }
    }

    if t.notes.chars().count() > 5000 {
        v.add("template.notes", "must be at most 5000 characters");
    }
    // Notes are shown to the customer: secrets stay out of them.
    let secret = secret_names(t);
    check_placeholders(
        &t.notes,
        &known,
        &secret,
        "is a secret (a generated value or a SECRET variable), not shown in notes",
        "template.notes",
        v,
    );
}
