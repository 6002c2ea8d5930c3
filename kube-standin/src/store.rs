//! The object store: objects as JSON keyed by kind, namespace and name, one
//! global resourceVersion counter, and a bounded history of change events
//! that watches replay and follow.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::kinds::Kind;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// The watch event `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as the history keeps it.
#[derive(Debug)]
pub struct Change {
    /// The resourceVersion the change made.
    pub resource_version: u64,
    /// Kind of the object.
    pub kind: &'static Kind,
    /// What happened.
    pub event_type: EventType,
    /// The object after the change (for a deletion: as it was, with the
    /// deletion's resourceVersion).
    pub object: Value,
    /// The object before the change, for modifications (selectors need it).
    pub previous: Option<Value>,
}

type Key = (&'static str, &'static str, String, String);

fn key(kind: &'static Kind, namespace: &str, name: &str) -> Key {
    (
        kind.group,
        kind.plural,
        namespace.to_string(),
        name.to_string(),
    )
}

/// The name and namespace ("" when cluster-scoped) of an object.
pub fn name_of(object: &Value) -> (&str, &str) {
    let text = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or("");
    (text("/metadata/namespace"), text("/metadata/name"))
}

/// All objects, the counter and the history.
#[derive(Debug)]
pub struct Store {
    objects: BTreeMap<Key, Value>,
    resource_version: u64,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Changes up to this resourceVersion are no longer in the history.
    forgotten: u64,
    changes: broadcast::Sender<Arc<Change>>,
}

impl Store {
    /// An empty store keeping `history_limit` changes.
    pub fn new(history_limit: usize) -> Store {
        let (changes, _) = broadcast::channel(history_limit.max(16));
        Store {
            objects: BTreeMap::new(),
            resource_version: 0,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            forgotten: 0,
            changes,
        }
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    /// One object.
    pub fn get(&self, kind: &'static Kind, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.get(&key(kind, namespace, name))
    }

    /// Objects of a kind, in one namespace or all, sorted by namespace and name.
    pub fn list(&self, kind: &'static Kind, namespace: Option<&str>) -> Vec<&Value> {
        let start = key(kind, namespace.unwrap_or(""), "");
        self.objects
            .range(start..)
            .take_while(|((group, plural, ns, _), _)| {
                *group == kind.group
                    && *plural == kind.plural
                    && namespace.is_none_or(|wanted| ns == wanted)
            })
            .map(|(_, object)| object)
            .collect()
    }

    /// Store an object (new or replacing), stamping its resourceVersion;
    /// returns the stored object.
    pub fn put(&mut self, kind: &'static Kind, mut object: Value) -> Value {
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        let (namespace, name) = name_of(&object);
        let previous = self
            .objects
            .insert(key(kind, namespace, name), object.clone());
        let event_type = if previous.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(kind, event_type, object.clone(), previous);
        object
    }

    /// Remove an object; returns it with the deletion's resourceVersion.
    pub fn remove(&mut self, kind: &'static Kind, namespace: &str, name: &str) -> Option<Value> {
        let mut object = self.objects.remove(&key(kind, namespace, name))?;
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        self.record(kind, EventType::Deleted, object.clone(), None);
        Some(object)
    }

    fn record(
        &mut self,
        kind: &'static Kind,
        event_type: EventType,
        object: Value,
        previous: Option<Value>,
    ) {
        let change = Arc::new(Change {
            resource_version: self.resource_version,
            kind,
            event_type,
            object,
            previous,
        });
        if self.history.len() == self.history_limit
            && let Some(oldest) = self.history.pop_front()
        {
            self.forgotten = oldest.resource_version;
        }
        self.history.push_back(change.clone());
        // No receiver is not an error: nobody watches.
        let _ = self.changes.send(change);
    }

    /// Changes after `resource_version` and a receiver for the ones to come,
    /// taken together so nothing falls between; `Err(oldest)` when the
    /// history no longer reaches back that far.
    #[allow(clippy::type_complexity)]
    pub fn changes_since(
        &self,
        resource_version: u64,
    ) -> Result<(Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>), u64> {
        if resource_version < self.forgotten {
            return Err(self.forgotten + 1);
        }
        let past = self
            .history
            .iter()
            .filter(|c| c.resource_version > resource_version)
            .cloned()
            .collect();
        Ok((past, self.changes.subscribe()))
    }

    /// A receiver for changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }
}
