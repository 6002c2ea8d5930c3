//! WATCH: newline-delimited JSON events over a chunked response, replayed
//! from the history and then pushed as changes are committed; selectors
//! turn objects that stop (start) matching into DELETED (ADDED) events.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

use crate::api::Api;
use crate::error::ApiError;
use crate::kinds::Kind;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{Change, EventType};

/// What a watch asks for, from its query parameters.
#[derive(Debug)]
pub struct WatchRequest {
    /// Kind watched.
    pub kind: &'static Kind,
    /// One namespace, or all.
    pub namespace: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `resourceVersion`: unset, "" or "0" starts with the current objects.
    pub resource_version: Option<String>,
    /// `sendInitialEvents=true`: current objects first, then a bookmark
    /// marked `k8s.io/initial-events-end`.
    pub send_initial_events: bool,
    /// `allowWatchBookmarks`.
    pub allow_bookmarks: bool,
    /// `timeoutSeconds` (default 1800, kube-apiserver's upper bound).
    pub timeout: Duration,
}

impl WatchRequest {
    fn selects(&self, kind: &'static Kind, object: &Value) -> bool {
        kind == self.kind
            && self.namespace.as_deref().is_none_or(|ns| {
                object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    == Some(ns)
            })
            && self.labels.matches_object(object)
            && self.fields.matches(object)
    }

    /// The event this change means to this watch, if any.
    fn translate(&self, change: &Change) -> Option<(&'static str, Value)> {
        let now = self.selects(change.kind, &change.object);
        match change.event_type {
            EventType::Added => now.then(|| ("ADDED", change.object.clone())),
            EventType::Deleted => now.then(|| ("DELETED", change.object.clone())),
            EventType::Modified => {
                let before = change
                    .previous
                    .as_ref()
                    .is_some_and(|p| self.selects(change.kind, p));
                match (before, now) {
                    (true, true) => Some(("MODIFIED", change.object.clone())),
                    (false, true) => Some(("ADDED", change.object.clone())),
                    (true, false) => {
                        // kube-apiserver sends the object as it last
                        // matched, with the change's resourceVersion.
                        let mut last = change.previous.clone().unwrap_or(Value::Null);
                        last["metadata"]["resourceVersion"] =
                            json!(change.resource_version.to_string());
                        Some(("DELETED", last))
                    }
                    (false, false) => None,
                }
            }
        }
    }

    fn bookmark(&self, resource_version: u64, initial_end: bool) -> Bytes {
        let mut object = json!({
            "kind": self.kind.kind,
            "apiVersion": self.kind.api_version(),
            "metadata": {"resourceVersion": resource_version.to_string()},
        });
        if initial_end {
            object["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line("BOOKMARK", object)
    }
}

fn line(event_type: &str, object: Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&json!({"type": event_type, "object": object}))
        .expect("JSON values serialize");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// An open watch: events queued to send, and the feed of new changes.
pub struct Watch {
    request: WatchRequest,
    queue: VecDeque<Bytes>,
    changes: Option<broadcast::Receiver<Arc<Change>>>,
    last_resource_version: u64,
    deadline: Instant,
    bookmark_interval: Duration,
}

impl Watch {
    /// Open a watch over the current state (the caller holds the lock, so
    /// nothing is missed between the replay and the feed).
    pub fn open(
        api: &Api,
        request: WatchRequest,
        bookmark_interval: Duration,
    ) -> Result<Watch, ApiError> {
        let deadline = Instant::now() + request.timeout;
        let mut queue = VecDeque::new();
        let from = request
            .resource_version
            .as_deref()
            .filter(|rv| !rv.is_empty() && *rv != "0");
        let (changes, last) = match from {
            Some(rv) if !request.send_initial_events => {
                let rv: u64 = rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {rv:?}"))
                })?;
                match api.store.changes_since(rv) {
                    Ok((past, changes)) => {
                        let last = rv.max(past.last().map_or(0, |c| c.resource_version));
                        for change in &past {
                            if let Some((event_type, object)) = request.translate(change) {
                                queue.push_back(line(event_type, object));
                            }
                        }
                        (Some(changes), last)
                    }
                    Err(oldest) => {
                        let status =
                            ApiError::expired(format!("too old resource version: {rv} ({oldest})"))
                                .to_status();
                        queue.push_back(line("ERROR", status));
                        (None, rv)
                    }
                }
            }
            _ => {
                let namespace = request.namespace.as_deref();
                for object in api.store.list(request.kind, namespace) {
                    if request.selects(request.kind, object) {
                        queue.push_back(line("ADDED", object.clone()));
                    }
                }
                let last = api.store.resource_version();
                if request.send_initial_events && request.allow_bookmarks {
                    queue.push_back(request.bookmark(last, true));
                }
                (Some(api.store.subscribe()), last)
            }
        };
        Ok(Watch {
            request,
            queue,
            changes,
            last_resource_version: last,
            deadline,
            bookmark_interval,
        })
    }

    /// The response body: events as they come, until the timeout, a lagging
    /// receiver (the client then watches again) or the stand-in stops.
    pub fn into_stream(self) -> impl Stream<Item = Result<Frame<Bytes>, Infallible>> + Send {
        let first_bookmark = Instant::now() + self.bookmark_interval;
        futures::stream::unfold(
            (self, first_bookmark),
            |(mut watch, mut next_bookmark)| async move {
                loop {
                    if let Some(bytes) = watch.queue.pop_front() {
                        return Some((Ok(Frame::data(bytes)), (watch, next_bookmark)));
                    }
                    let Watch {
                        request,
                        queue,
                        changes,
                        last_resource_version,
                        deadline,
                        bookmark_interval,
                    } = &mut watch;
                    let changes = changes.as_mut()?;
                    tokio::select! {
                        _ = tokio::time::sleep_until(*deadline) => return None,
                        _ = tokio::time::sleep_until(next_bookmark), if request.allow_bookmarks => {
                            next_bookmark = Instant::now() + *bookmark_interval;
                            // Everything committed so far is in the channel:
                            // send it first, so the bookmark's version is true.
                            loop {
                                match changes.try_recv() {
                                    Ok(change) => take(request, queue, last_resource_version, &change),
                                    Err(broadcast::error::TryRecvError::Empty) => break,
                                    Err(_) => return None,
                                }
                            }
                            queue.push_back(request.bookmark(*last_resource_version, false));
                        }
                        received = changes.recv() => match received {
                            Ok(change) => take(request, queue, last_resource_version, &change),
                            Err(RecvError::Lagged(_) | RecvError::Closed) => return None,
                        },
                    }
                }
            },
        )
    }
}

fn take(request: &WatchRequest, queue: &mut VecDeque<Bytes>, last: &mut u64, change: &Change) {
    *last = change.resource_version;
    if let Some((event_type, object)) = request.translate(change) {
        queue.push_back(line(event_type, object));
    }
}
