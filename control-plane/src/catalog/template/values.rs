//! A customer's variable values: their types, options and patterns, the
//! names whose values are secrets, and the effective values of a
//! subscription.

use std::collections::{BTreeMap, BTreeSet};

use minispod_proto::v1 as pb;

use super::MAX_VALUE_CHARS;
use super::names::{compile_pattern, is_email};
use crate::error::Violations;

/// The effective type of a variable (UNSPECIFIED is STRING); None for a
/// number no VariableType has.
pub(super) fn variable_type(var: &pb::TemplateVariable) -> Option<pb::VariableType> {
    match pb::VariableType::try_from(var.r#type).ok()? {
        pb::VariableType::Unspecified => Some(pb::VariableType::String),
        t => Some(t),
    }
}

/// Checks one non-empty value of `var` against its type, options and
/// pattern (`pattern` compiled by the caller, if any).
pub(super) fn check_value(
    var: &pb::TemplateVariable,
    pattern: Option<&regex::Regex>,
    value: &str,
) -> Result<(), String> {
    if value.chars().count() > MAX_VALUE_CHARS {
        return Err(format!("must be at most {MAX_VALUE_CHARS} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err("must be one line without control characters".into());
    }
    let type_error = match variable_type(var) {
        Some(pb::VariableType::Number) => {
            let digits = value.strip_prefix('-').unwrap_or(value);
            let integer = !digits.is_empty()
                && digits.chars().all(|c| c.is_ascii_digit())
                && value.parse::<i64>().is_ok();
            (!integer).then(|| "must be an integer".to_owned())
        }
        Some(pb::VariableType::Boolean) => (value != "true" && value != "false")
            .then(|| "must be \"true\" or \"false\"".to_owned()),
        Some(pb::VariableType::Select) => (!var.options.iter().any(|o| o == value))
            .then(|| format!("must be one of {}", var.options.join(", "))),
        Some(pb::VariableType::Email) => {
            (!is_email(value)).then(|| "must be an email address".to_owned())
        }
        _ => None,
    };
    if let Some(e) = type_error {
        return Err(e);
    }
    if let Some(re) = pattern
        && !re.is_match(value)
    {
        return Err(format!("must match the pattern {}", var.pattern));
    }
    Ok(())
}

/// The names whose values are secrets: every generated value and every
/// SECRET variable. An environment value that uses one is delivered from
/// the subscription's Secret; notes may not use them.
pub fn secret_names(t: &pb::ServiceTemplate) -> BTreeSet<String> {
    t.generated
        .iter()
        .map(|g| g.name.clone())
        .chain(
            t.variables
                .iter()
                .filter(|x| variable_type(x) == Some(pb::VariableType::Secret))
                .map(|x| x.name.clone()),
        )
        .collect()
}

/// Checks a customer's variable values against template `t` (field paths
/// `variables.NAME`) and returns the effective values: one entry for every
/// variable of `t`, the given value, else its default, else empty. An empty
/// given value counts as none. Unknown names, missing required values and
/// values that break their variable's type, options, pattern or length
/// (at most [`MAX_VALUE_CHARS`]) are violations.
pub fn validate_values(
    t: &pb::ServiceTemplate,
    given: &BTreeMap<String, String>,
    v: &mut Violations,
) -> BTreeMap<String, String> {
    for name in given.keys() {
        if !t.variables.iter().any(|x| &x.name == name) {
            let shown: String = name.chars().take(64).collect();
            v.add(
                &format!("variables.{shown}"),
                "is not a variable of this service",
            );
        }
    }
    let mut out = BTreeMap::new();
    for var in &t.variables {
        let field = format!("variables.{}", var.name);
        let value = match given.get(&var.name) {
            Some(x) if !x.is_empty() => x.clone(),
            _ => var.default_value.clone(),
        };
        if value.is_empty() {
            if var.required {
                v.add(&field, "is required");
            }
        } else {
            let pattern = if var.pattern.is_empty() {
                Ok(None)
            } else {
                compile_pattern(&var.pattern).map(Some)
            };
            match pattern {
                Ok(re) => {
                    if let Err(e) = check_value(var, re.as_ref(), &value) {
                        v.add(&field, e);
                    }
                }
                // Only a template saved before its rules were checked gets here.
                Err(e) => v.add(&field, format!("the service's pattern {e}")),
            }
        }
        out.insert(var.name.clone(), value);
    }
    out
}
