//! Label and field selectors as list and watch take them, and the
//! `LabelSelector` objects PodDisruptionBudgets carry.

use serde_json::Value;

use crate::error::ApiError;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector: requirements that must all hold. Empty selects
/// everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    /// A `LabelSelector` object with no terms selects everything, but a PDB
    /// selector that is null selects nothing.
    nothing: bool,
}

/// Split at commas that are not inside parentheses.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

fn invalid(text: &str) -> ApiError {
    ApiError::bad_request(format!(
        "unable to parse requirement: invalid label selector: {text:?}"
    ))
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn parse_set(key: &str, rest: &str, text: &str) -> Result<(String, Vec<String>), ApiError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| invalid(text))?;
    let values = inner
        .split(',')
        .map(|v| v.trim().to_string())
        .collect::<Vec<_>>();
    if !valid_key(key) {
        return Err(invalid(text));
    }
    Ok((key.to_string(), values))
}

impl LabelSelector {
    /// Parse the `labelSelector` query parameter's syntax (`a=b`, `a==b`,
    /// `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x)`, commas between).
    pub fn parse(text: &str) -> Result<LabelSelector, ApiError> {
        let mut requirements = Vec::new();
        if text.trim().is_empty() {
            return Ok(LabelSelector::default());
        }
        for term in split_terms(text) {
            let term = term.trim();
            if term.is_empty() {
                return Err(invalid(text));
            }
            let requirement = if let Some(key) = term.strip_prefix('!') {
                Requirement::DoesNotExist(key.trim().to_string())
            } else if let Some((key, value)) = term.split_once("!=") {
                Requirement::NotEquals(key.trim().into(), value.trim().into())
            } else if let Some((key, value)) = term.split_once("==") {
                Requirement::Equals(key.trim().into(), value.trim().into())
            } else if let Some((key, value)) = term.split_once('=') {
                Requirement::Equals(key.trim().into(), value.trim().into())
            } else if let Some((key, rest)) = term.split_once(" notin ") {
                let (key, values) = parse_set(key.trim(), rest, text)?;
                Requirement::NotIn(key, values)
            } else if let Some((key, rest)) = term.split_once(" in ") {
                let (key, values) = parse_set(key.trim(), rest, text)?;
                Requirement::In(key, values)
            } else {
                Requirement::Exists(term.to_string())
            };
            let key = match &requirement {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::In(k, _)
                | Requirement::NotIn(k, _)
                | Requirement::Exists(k)
                | Requirement::DoesNotExist(k) => k,
            };
            if !valid_key(key) {
                return Err(invalid(text));
            }
            requirements.push(requirement);
        }
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// From a `LabelSelector` object (`matchLabels`, `matchExpressions`);
    /// null selects nothing, `{}` everything (as PodDisruptionBudgets read it).
    pub fn from_object(selector: Option<&Value>) -> Result<LabelSelector, ApiError> {
        let Some(selector) = selector.filter(|s| !s.is_null()) else {
            return Ok(LabelSelector {
                requirements: Vec::new(),
                nothing: true,
            });
        };
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (key, value) in labels {
                let value = value.as_str().unwrap_or_default().to_string();
                requirements.push(Requirement::Equals(key.clone(), value));
            }
        }
        for expression in selector
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = expression
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let values = expression
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect::<Vec<_>>();
            let operator = expression.get("operator").and_then(Value::as_str);
            requirements.push(match operator {
                Some("In") => Requirement::In(key, values),
                Some("NotIn") => Requirement::NotIn(key, values),
                Some("Exists") => Requirement::Exists(key),
                Some("DoesNotExist") => Requirement::DoesNotExist(key),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "{other:?} is not a valid label selector operator"
                    )));
                }
            });
        }
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Whether an object with these labels (`metadata.labels`) is selected.
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        if self.nothing {
            return false;
        }
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::DoesNotExist(k) => label(k).is_none(),
        })
    }

    /// Whether this object's labels are selected.
    pub fn matches_object(&self, object: &Value) -> bool {
        self.matches(object.pointer("/metadata/labels"))
    }
}

/// The fields a field selector may name, as kube-apiserver allows for the
/// kinds served (it refuses other fields with 400).
const FIELDS: &[(&str, &str)] = &[
    ("metadata.name", "/metadata/name"),
    ("metadata.namespace", "/metadata/namespace"),
    ("spec.nodeName", "/spec/nodeName"),
    ("status.phase", "/status/phase"),
    ("spec.unschedulable", "/spec/unschedulable"),
];

/// A parsed field selector (`metadata.name=x,spec.nodeName!=y`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    terms: Vec<(&'static str, bool, String)>,
}

impl FieldSelector {
    /// Parse the `fieldSelector` query parameter; unknown fields are 400 as
    /// on a real server.
    pub fn parse(text: &str) -> Result<FieldSelector, ApiError> {
        let mut terms = Vec::new();
        if text.trim().is_empty() {
            return Ok(FieldSelector::default());
        }
        for term in text.split(',') {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: {text:?}"
                )));
            };
            let Some((_, pointer)) = FIELDS.iter().find(|(name, _)| *name == field.trim()) else {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {}",
                    field.trim()
                )));
            };
            terms.push((*pointer, equal, value.trim().to_string()));
        }
        Ok(FieldSelector { terms })
    }

    /// Whether the object is selected; a missing field reads as "".
    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(pointer, equal, value)| {
            let actual = match object.pointer(pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels() -> Value {
        json!({"app": "web", "tier": "front"})
    }

    #[test]
    fn every_label_selector_operator_matches_as_kubernetes_does() {
        let l = labels();
        let matches = |s: &str| LabelSelector::parse(s).unwrap().matches(Some(&l));
        assert!(matches("app=web"));
        assert!(matches("app==web"));
        assert!(!matches("app!=web"));
        assert!(matches("missing!=x"));
        assert!(matches("app"));
        assert!(!matches("!app"));
        assert!(matches("!missing"));
        assert!(matches("app in (web, api)"));
        assert!(!matches("app notin (web)"));
        assert!(matches("missing notin (web)"));
        assert!(matches("app=web,tier in (front,back)"));
        assert!(!matches("app=web,tier=back"));
        assert!(matches(""));
    }

    #[test]
    fn a_malformed_label_selector_is_a_bad_request() {
        assert_eq!(LabelSelector::parse("app in web").unwrap_err().code, 400);
        assert_eq!(LabelSelector::parse("a,,b").unwrap_err().code, 400);
    }

    #[test]
    fn field_selectors_read_missing_fields_as_empty() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}});
        let matches = |s: &str| FieldSelector::parse(s).unwrap().matches(&pod);
        assert!(matches("metadata.name=p,spec.nodeName==n1"));
        assert!(matches("status.phase!=Running"));
        assert!(matches("status.phase="));
        assert!(!matches("spec.nodeName!=n1"));
        assert_eq!(FieldSelector::parse("spec.foo=x").unwrap_err().code, 400);
    }

    #[test]
    fn a_null_object_selector_selects_nothing_and_an_empty_one_everything() {
        let pod = json!({"metadata": {"labels": {"app": "web"}}});
        assert!(
            !LabelSelector::from_object(None)
                .unwrap()
                .matches_object(&pod)
        );
        let all = json!({});
        assert!(
            LabelSelector::from_object(Some(&all))
                .unwrap()
                .matches_object(&pod)
        );
        let expr =
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]});
        assert!(
            LabelSelector::from_object(Some(&expr))
                .unwrap()
                .matches_object(&pod)
        );
    }
}
