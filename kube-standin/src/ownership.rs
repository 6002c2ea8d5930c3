//! Field ownership: `metadata.managedFields`, server-side apply (conflicts,
//! force, removal of fields a manager stopped applying) and the ownership
//! that other writes record as operation Update.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::fields::{self, FieldSet, Scope};
use crate::kinds::Kind;

/// `operation` of a managedFields entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Any other write (create, update, merge patch).
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One managedFields entry.
#[derive(Debug, Clone)]
pub struct Entry {
    manager: String,
    operation: Operation,
    api_version: String,
    time: String,
    subresource: String,
    fields: FieldSet,
}

impl Entry {
    fn is(&self, manager: &str, operation: Operation, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }

    /// How kube-apiserver names a manager in conflict messages.
    fn describe(&self) -> String {
        match self.operation {
            Operation::Apply => format!("{:?}", self.manager),
            Operation::Update => format!(
                "{:?} using {} at {}",
                self.manager, self.api_version, self.time
            ),
        }
    }
}

/// The managedFields entries of an object.
pub fn read(object: &Value) -> Vec<Entry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let operation = match entry.get("operation")?.as_str()? {
                "Apply" => Operation::Apply,
                _ => Operation::Update,
            };
            let text = |k: &str| {
                entry
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            Some(Entry {
                manager: text("manager"),
                operation,
                api_version: text("apiVersion"),
                time: text("time"),
                subresource: text("subresource"),
                fields: entry
                    .get("fieldsV1")
                    .map(fields::from_fields_v1)
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Write entries into `metadata.managedFields`, dropping empty ones (and the
/// field itself when none is left), and paths the object no longer has.
pub fn write(object: &mut Value, mut entries: Vec<Entry>) {
    for entry in &mut entries {
        entry
            .fields
            .retain(|path| fields::get(object, path).is_some());
    }
    entries.retain(|e| !e.fields.is_empty());
    let rendered = entries
        .iter()
        .map(|e| {
            let mut value = json!({
                "manager": e.manager,
                "operation": e.operation.as_str(),
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields::to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                value["subresource"] = json!(e.subresource);
            }
            value
        })
        .collect::<Vec<_>>();
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if rendered.is_empty() {
        metadata.remove("managedFields");
    } else {
        metadata.insert("managedFields".into(), Value::Array(rendered));
    }
}

fn entry_for<'a>(
    entries: &'a mut Vec<Entry>,
    manager: &str,
    operation: Operation,
    kind: &Kind,
    scope: Scope,
    now: &str,
) -> &'a mut Entry {
    let subresource = scope.subresource();
    let index = match entries
        .iter()
        .position(|e| e.is(manager, operation, subresource))
    {
        Some(index) => index,
        None => {
            entries.push(Entry {
                manager: manager.to_string(),
                operation,
                api_version: kind.api_version(),
                time: now.to_string(),
                subresource: subresource.to_string(),
                fields: FieldSet::new(),
            });
            entries.len() - 1
        }
    };
    let entry = &mut entries[index];
    entry.time = now.to_string();
    entry
}

/// Record a non-apply write: the manager takes the fields it changed, and
/// every other manager loses them.
pub fn record_update(
    kind: &Kind,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    scope: Scope,
    now: &str,
) {
    let mut entries = old.map(read).unwrap_or_default();
    let empty = Value::Null;
    let old = old.unwrap_or(&empty);
    let new_leaves = fields::leaves(new, scope);
    // A map emptied by removing its fields (`spec: {}` once the last
    // taint went) is no field the writer set: structured-merge-diff
    // records only what the write added or changed.
    let emptied = |p: &Vec<String>| {
        fields::get(new, p).is_some_and(|v| v.as_object().is_some_and(|m| m.is_empty()))
            && fields::get(old, p).is_some_and(Value::is_object)
    };
    let changed: FieldSet = new_leaves
        .iter()
        .filter(|p| fields::get(old, p) != fields::get(new, p) && !emptied(p))
        .cloned()
        .collect();
    let removed: FieldSet = fields::leaves(old, scope)
        .into_iter()
        .filter(|p| fields::get(new, p).is_none())
        .collect();
    if !changed.is_empty() || !removed.is_empty() {
        for entry in entries.iter_mut() {
            entry.fields.retain(|owned| {
                !changed.iter().any(|c| fields::overlaps(owned, c)) && !removed.contains(owned)
            });
        }
        if !changed.is_empty() {
            entry_for(&mut entries, manager, Operation::Update, kind, scope, now)
                .fields
                .extend(changed);
        }
    }
    write(new, entries);
}

/// Server-side apply of `applied` by `manager` over `live` (None: the apply
/// creates the object). Returns the merged object with its managedFields, or
/// the 409 Conflict kube-apiserver answers.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    kind: &Kind,
    name: &str,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    scope: Scope,
    now: &str,
) -> Result<Value, ApiError> {
    let mut entries = live.map(read).unwrap_or_default();
    let subresource = scope.subresource();
    let mut merged = match live {
        Some(live) => live.clone(),
        None => json!({
            "apiVersion": applied["apiVersion"],
            "kind": applied["kind"],
            "metadata": {
                "name": applied.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
            },
        }),
    };
    let applied_set = fields::leaves(applied, scope);

    // Conflicts: fields this apply changes that another manager owns.
    let mut conflicts: Vec<(usize, Vec<String>)> = Vec::new();
    for path in &applied_set {
        if fields::get(&merged, path) == fields::get(applied, path) {
            continue;
        }
        for (index, entry) in entries.iter().enumerate() {
            if entry.is(manager, Operation::Apply, subresource) {
                continue;
            }
            for owned in &entry.fields {
                if fields::overlaps(owned, path) {
                    conflicts.push((index, owned.clone()));
                }
            }
        }
    }
    conflicts.sort();
    conflicts.dedup();
    if !conflicts.is_empty() {
        if !force {
            return Err(conflict_error(kind, name, &entries, &conflicts));
        }
        for (index, owned) in &conflicts {
            entries[*index].fields.remove(owned);
        }
    }

    // Fields this manager applied before and omits now go, unless someone
    // else owns them too.
    let previous = entries
        .iter()
        .find(|e| e.is(manager, Operation::Apply, subresource))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for path in previous.difference(&applied_set) {
        let shared = entries
            .iter()
            .filter(|e| !e.is(manager, Operation::Apply, subresource))
            .any(|e| e.fields.iter().any(|owned| fields::overlaps(owned, path)));
        if !shared {
            fields::remove(&mut merged, path);
        }
    }
    for path in &applied_set {
        let value = fields::get(applied, path).cloned().unwrap_or(Value::Null);
        fields::set(&mut merged, path, value);
    }
    entry_for(&mut entries, manager, Operation::Apply, kind, scope, now).fields = applied_set;
    write(&mut merged, entries);
    Ok(merged)
}

fn conflict_error(
    kind: &Kind,
    name: &str,
    entries: &[Entry],
    conflicts: &[(usize, Vec<String>)],
) -> ApiError {
    let causes = conflicts
        .iter()
        .map(|(index, path)| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {}", entries[*index].describe()),
                "field": fields::display(path),
            })
        })
        .collect();
    // structured-merge-diff's wording: one conflict inline, several grouped
    // by manager.
    let body = if let [(index, path)] = conflicts {
        format!(
            "conflict with {}: {}",
            entries[*index].describe(),
            fields::display(path)
        )
    } else {
        let mut by_manager: Vec<(String, Vec<String>)> = Vec::new();
        for (index, path) in conflicts {
            let who = entries[*index].describe();
            match by_manager.iter_mut().find(|(m, _)| *m == who) {
                Some((_, paths)) => paths.push(fields::display(path)),
                None => by_manager.push((who, vec![fields::display(path)])),
            }
        }
        by_manager.sort();
        by_manager
            .iter()
            .flat_map(|(who, paths)| {
                std::iter::once(format!("conflicts with {who}:"))
                    .chain(paths.iter().map(|p| format!("- {p}")))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let count = conflicts.len();
    let plural = if count == 1 { "" } else { "s" };
    ApiError::apply_conflict(
        kind,
        name,
        format!("Apply failed with {count} conflict{plural}: {body}"),
        causes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds;

    fn node() -> &'static Kind {
        kinds::lookup("", "v1", "nodes").unwrap()
    }

    const MAIN: Scope = Scope::Main {
        status_separate: true,
    };

    fn apply_as(
        live: Option<&Value>,
        applied: Value,
        manager: &str,
        force: bool,
    ) -> Result<Value, ApiError> {
        apply(
            node(),
            "n",
            live,
            &applied,
            manager,
            force,
            MAIN,
            "2026-01-01T00:00:00Z",
        )
    }

    #[test]
    fn another_managers_labels_survive_an_apply_that_omits_its_own() {
        let base = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}});
        let mut mine = base.clone();
        mine["metadata"]["labels"] = json!({"ours": "1", "gone": "x"});
        let live = apply_as(None, mine, "minispod", false).unwrap();
        let mut theirs = base.clone();
        theirs["metadata"]["labels"] = json!({"theirs": "2"});
        let live = apply_as(Some(&live), theirs, "kubectl", false).unwrap();
        let mut again = base.clone();
        again["metadata"]["labels"] = json!({"ours": "1"});
        let live = apply_as(Some(&live), again, "minispod", false).unwrap();
        assert_eq!(
            live["metadata"]["labels"],
            json!({"ours": "1", "theirs": "2"})
        );
    }

    #[test]
    fn a_changed_field_another_manager_owns_conflicts_unless_forced() {
        let applied = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}, "spec": {"unschedulable": true}});
        let live = apply_as(None, applied, "kubectl", false).unwrap();
        let ours = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}, "spec": {"unschedulable": false}});
        let err = apply_as(Some(&live), ours.clone(), "minispod", false).unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.unschedulable"
        );
        let forced = apply_as(Some(&live), ours, "minispod", true).unwrap();
        assert_eq!(forced["spec"]["unschedulable"], json!(false));
        let managers = forced["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(
            managers.len(),
            1,
            "kubectl lost its only field: {managers:?}"
        );
        assert_eq!(managers[0]["manager"], "minispod");
    }

    #[test]
    fn applying_the_same_value_shares_ownership() {
        let applied = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}, "spec": {"unschedulable": true}});
        let live = apply_as(None, applied.clone(), "kubectl", false).unwrap();
        let live = apply_as(Some(&live), applied, "minispod", false).unwrap();
        assert_eq!(
            live["metadata"]["managedFields"].as_array().unwrap().len(),
            2
        );
    }
}
