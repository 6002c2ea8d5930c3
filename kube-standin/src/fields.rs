//! Field paths and sets inside JSON objects: what server-side apply's
//! ownership is made of. Maps are granular down to their leaves; lists,
//! scalars and empty maps are leaves (lists are atomic, see the crate docs).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// A path of object keys from the root (`["spec", "unschedulable"]`).
pub type Path = Vec<String>;

/// A set of leaf paths.
pub type FieldSet = BTreeSet<Path>;

/// Which part of an object a write may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource: everything but `.status` when the kind has a
    /// status subresource.
    Main { status_separate: bool },
    /// The `/status` subresource: only `.status`.
    Status,
}

impl Scope {
    /// `subresource` of managedFields entries written in this scope.
    pub fn subresource(self) -> &'static str {
        match self {
            Scope::Main { .. } => "",
            Scope::Status => "status",
        }
    }

    /// Whether a top-level field is written in this scope.
    pub fn covers(self, top: &str) -> bool {
        match self {
            Scope::Main { status_separate } => !(status_separate && top == "status"),
            Scope::Status => top == "status",
        }
    }
}

/// Metadata fields the server sets, which nobody owns.
const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The leaf paths of an object that a write in `scope` owns.
pub fn leaves(object: &Value, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = object.as_object() else {
        return out;
    };
    for (key, value) in map {
        if key == "apiVersion" || key == "kind" || !scope.covers(key) {
            continue;
        }
        let mut path = vec![key.clone()];
        if key == "metadata" {
            for (meta_key, meta_value) in value.as_object().into_iter().flatten() {
                if SYSTEM_METADATA.contains(&meta_key.as_str()) {
                    continue;
                }
                path.push(meta_key.clone());
                collect(meta_value, &mut path, &mut out);
                path.pop();
            }
        } else {
            collect(value, &mut path, &mut out);
        }
    }
    out
}

fn collect(value: &Value, path: &mut Path, out: &mut FieldSet) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (key, child) in map {
                path.push(key.clone());
                collect(child, path, out);
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at a path.
pub fn get<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(object, |value, key| value.get(key))
}

/// Set the value at a path, making (or replacing non-map) parents as maps.
pub fn set(object: &mut Value, path: &[String], value: Value) {
    let mut current = object;
    for key in &path[..path.len() - 1] {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        current = current
            .as_object_mut()
            .expect("made a map above")
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !current.is_object() {
        *current = Value::Object(Map::new());
    }
    current
        .as_object_mut()
        .expect("made a map above")
        .insert(path[path.len() - 1].clone(), value);
}

/// Remove the value at a path, and maps left empty by that below the top
/// level (an emptied `metadata.labels` goes, `spec` stays).
pub fn remove(object: &mut Value, path: &[String]) {
    fn walk(value: &mut Value, path: &[String], depth: usize) {
        let Some(map) = value.as_object_mut() else {
            return;
        };
        if path.len() == 1 {
            map.remove(&path[0]);
            return;
        }
        if let Some(child) = map.get_mut(&path[0]) {
            walk(child, &path[1..], depth + 1);
            if depth >= 1 && child.as_object().is_some_and(Map::is_empty) {
                map.remove(&path[0]);
            }
        }
    }
    walk(object, path, 0);
}

/// Whether one path is a prefix of the other (they name overlapping fields).
pub fn overlaps(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// kube's way of printing a path in conflict messages: `.spec.unschedulable`.
pub fn display(path: &[String]) -> String {
    path.iter().map(|p| format!(".{p}")).collect()
}

/// Render a field set in the `FieldsV1` format (`{"f:spec": {"f:x": {}}}`).
pub fn to_fields_v1(set: &FieldSet) -> Value {
    fn node<'a>(root: &'a mut Value, path: &[String]) -> &'a mut Map<String, Value> {
        let mut node = root.as_object_mut().expect("fieldsV1 nodes are maps");
        for key in path {
            node = node
                .entry(format!("f:{key}"))
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("fieldsV1 nodes are maps");
        }
        node
    }
    let mut root = Value::Object(Map::new());
    for path in set {
        node(&mut root, path);
    }
    // A leaf that is also a parent (an owned empty map others filled in)
    // carries kube's "." marker.
    for path in set {
        let owned = node(&mut root, path);
        if !owned.is_empty() {
            owned.insert(".".into(), Value::Object(Map::new()));
        }
    }
    root
}

/// Read a `FieldsV1` value back into a set; elements other than `f:` (list
/// keys, values, indices, which the stand-in never writes) are skipped.
pub fn from_fields_v1(value: &Value) -> FieldSet {
    fn walk(value: &Value, path: &mut Path, out: &mut FieldSet) {
        let Some(map) = value.as_object() else {
            return;
        };
        if (map.is_empty() || map.contains_key(".")) && !path.is_empty() {
            out.insert(path.clone());
        }
        for (key, child) in map {
            if let Some(field) = key.strip_prefix("f:") {
                path.push(field.to_string());
                walk(child, path, out);
                path.pop();
            }
        }
    }
    let mut out = FieldSet::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn p(s: &str) -> Path {
        s.split('.').map(str::to_string).collect()
    }

    #[test]
    fn leaves_skip_system_metadata_and_treat_lists_as_atomic() {
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n", "resourceVersion": "3", "labels": {"a": "1"}},
            "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}], "unschedulable": true},
            "status": {"phase": "x"}
        });
        let set = leaves(
            &node,
            Scope::Main {
                status_separate: true,
            },
        );
        let expected: FieldSet = [
            p("metadata.labels.a"),
            p("spec.taints"),
            p("spec.unschedulable"),
        ]
        .into_iter()
        .collect();
        assert_eq!(set, expected);
        assert_eq!(
            leaves(&node, Scope::Status),
            [p("status.phase")].into_iter().collect()
        );
    }

    #[test]
    fn fields_v1_round_trips() {
        let set: FieldSet = [p("metadata.labels.a"), p("spec.taints")]
            .into_iter()
            .collect();
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:taints": {}}})
        );
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn removing_the_last_label_removes_the_labels_map_but_not_metadata() {
        let mut object = json!({"metadata": {"name": "n", "labels": {"a": "1"}}, "spec": {"x": 1}});
        remove(&mut object, &p("metadata.labels.a"));
        remove(&mut object, &p("spec.x"));
        assert_eq!(object, json!({"metadata": {"name": "n"}, "spec": {}}));
    }
}
