//! Container logs: kept per pod (by uid) and container, bounded, and
//! served at `GET pods/{name}/log` as kube-apiserver (through the kubelet)
//! serves them: plain text, `container`, `tailLines`, `sinceSeconds`,
//! `sinceTime`, `timestamps`, `limitBytes`, `previous`, and `follow`,
//! which streams new lines until the pod goes or the client leaves.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use hyper::body::Frame;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::http::Shared;
use crate::kinds;

/// The longest line kept; longer ones are cut (bytes).
const LINE_LIMIT: usize = 16 * 1024;

#[derive(Debug)]
struct Line {
    seq: u64,
    time: OffsetDateTime,
    text: String,
}

#[derive(Debug, Default)]
struct ContainerLog {
    lines: VecDeque<Line>,
    next_seq: u64,
}

/// The logs of every container the stand-in runs or a test wrote to.
#[derive(Debug)]
pub struct PodLogs {
    pods: Mutex<HashMap<String, BTreeMap<String, ContainerLog>>>,
    lines_per_container: usize,
    appended: watch::Sender<u64>,
}

impl PodLogs {
    /// Empty logs keeping at most `lines_per_container` lines each.
    pub fn new(lines_per_container: usize) -> PodLogs {
        PodLogs {
            pods: Mutex::new(HashMap::new()),
            lines_per_container: lines_per_container.max(1),
            appended: watch::channel(0).0,
        }
    }

    fn bump(&self) {
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Append lines to a container's log (of the pod with this uid).
    pub fn append(&self, pod_uid: &str, container: &str, lines: &[String]) {
        let now = OffsetDateTime::now_utc();
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        let log = pods
            .entry(pod_uid.to_string())
            .or_default()
            .entry(container.to_string())
            .or_default();
        for text in lines.iter().flat_map(|l| l.split('\n')) {
            let mut text = text.to_string();
            if text.len() > LINE_LIMIT {
                let mut cut = LINE_LIMIT;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            log.lines.push_back(Line {
                seq: log.next_seq,
                time: now,
                text,
            });
            log.next_seq += 1;
            if log.lines.len() > self.lines_per_container {
                log.lines.pop_front();
            }
        }
        drop(pods);
        self.bump();
    }

    /// Forget the logs of pods not in `live` (uids); followers of those
    /// pods then end.
    pub fn retain_pods(&self, live: &HashSet<String>) {
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        let before = pods.len();
        pods.retain(|uid, _| live.contains(uid));
        let removed = pods.len() != before;
        drop(pods);
        if removed {
            self.bump();
        }
    }

    /// Lines after `after` (a sequence number; None: from the start) that
    /// the options select (the last `tailLines` of them when `tail`),
    /// rendered, and the last sequence number seen.
    fn read(
        &self,
        pod_uid: &str,
        container: &str,
        after: Option<u64>,
        tail: bool,
        options: &LogOptions,
    ) -> (String, Option<u64>) {
        let pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        let Some(log) = pods.get(pod_uid).and_then(|p| p.get(container)) else {
            return (String::new(), after);
        };
        let mut selected: Vec<&Line> = log
            .lines
            .iter()
            .filter(|l| after.is_none_or(|a| l.seq > a))
            .filter(|l| options.since.is_none_or(|since| l.time >= since))
            .collect();
        if tail && let Some(tail) = options.tail_lines {
            let skip = selected.len().saturating_sub(tail);
            selected.drain(..skip);
        }
        let last = log.lines.back().map(|l| l.seq).or(after);
        let mut out = String::new();
        for line in selected {
            if options.timestamps {
                out.push_str(&fixed_nanos(line.time));
                out.push(' ');
            }
            out.push_str(&line.text);
            out.push('\n');
        }
        (out, last)
    }
}

/// A time as the kubelet stamps log lines (RFC 3339 with nine fraction
/// digits).
fn fixed_nanos(time: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
        time.nanosecond()
    )
}

/// PodLogOptions from the query.
#[derive(Debug, Default)]
pub struct LogOptions {
    container: Option<String>,
    follow: bool,
    previous: bool,
    timestamps: bool,
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
    since: Option<OffsetDateTime>,
}

fn invalid(field: &str, value: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!("{field}: Invalid value: {value}: {why}"))
}

impl LogOptions {
    /// Parse and validate the query parameters as PodLogOptions.
    pub fn parse(param: impl Fn(&str) -> Option<String>) -> Result<LogOptions, ApiError> {
        let flag = |name: &str| matches!(param(name).as_deref(), Some("true" | "1"));
        let number = |name: &str| -> Result<Option<i64>, ApiError> {
            match param(name) {
                None => Ok(None),
                Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                    ApiError::bad_request(format!("{name}: invalid value {v:?}: not an integer"))
                }),
            }
        };
        let tail_lines = number("tailLines")?;
        if let Some(t) = tail_lines.filter(|t| *t < 0) {
            return Err(invalid(
                "tailLines",
                &t.to_string(),
                "must be greater than or equal to 0",
            ));
        }
        let limit_bytes = number("limitBytes")?;
        if let Some(l) = limit_bytes.filter(|l| *l < 1) {
            return Err(invalid(
                "limitBytes",
                &l.to_string(),
                "must be greater than 0",
            ));
        }
        let since_seconds = number("sinceSeconds")?;
        if let Some(s) = since_seconds.filter(|s| *s < 1) {
            return Err(invalid(
                "sinceSeconds",
                &s.to_string(),
                "must be greater than 0",
            ));
        }
        let since_time = match param("sinceTime") {
            None => None,
            Some(t) => Some(OffsetDateTime::parse(&t, &Rfc3339).map_err(|_| {
                ApiError::bad_request(format!(
                    "sinceTime: invalid value {t:?}: not an RFC 3339 time"
                ))
            })?),
        };
        if since_seconds.is_some() && since_time.is_some() {
            return Err(ApiError::bad_request(
                "sinceSeconds: Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified",
            ));
        }
        let since = since_time.or_else(|| {
            since_seconds.map(|s| OffsetDateTime::now_utc() - time::Duration::seconds(s))
        });
        Ok(LogOptions {
            container: param("container").filter(|c| !c.is_empty()),
            follow: flag("follow"),
            previous: flag("previous"),
            timestamps: flag("timestamps"),
            tail_lines: tail_lines.map(|t| usize::try_from(t).unwrap_or(usize::MAX)),
            limit_bytes: limit_bytes.map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
            since,
        })
    }
}

/// What a log request answers.
pub enum LogAnswer {
    /// The whole log, as selected.
    Text(String),
    /// `follow=true`: what there is, then new lines as they come.
    Follow(std::pin::Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Sync>>),
}

fn names(list: Option<&Value>) -> Vec<String> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

fn cut(mut text: String, limit: Option<usize>) -> String {
    if let Some(limit) = limit
        && text.len() > limit
    {
        let mut at = limit;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
    text
}

/// GET `pods/{name}/log`, with the checks kube-apiserver and the kubelet
/// make, in their order.
pub fn serve_log(
    shared: &Arc<Shared>,
    pod: &Value,
    options: LogOptions,
) -> Result<LogAnswer, ApiError> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let containers = names(pod.pointer("/spec/containers"));
    let init = names(pod.pointer("/spec/initContainers"));
    let container = match &options.container {
        Some(c) => c.clone(),
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            return Err(ApiError::bad_request(message));
        }
    };
    if !containers.contains(&container) && !init.contains(&container) {
        return Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    // No node yet: kube-apiserver has nowhere to ask and answers nothing.
    if pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Ok(LogAnswer::Text(String::new()));
    }
    let status = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .and_then(|l| l.iter().find(|c| c["name"] == container.as_str()));
    if options.previous {
        return Err(ApiError::bad_request(format!(
            "previous terminated container \"{container}\" in pod \"{name}\" not found"
        )));
    }
    if let Some(reason) = status
        .and_then(|s| s.pointer("/state/waiting/reason"))
        .and_then(Value::as_str)
    {
        let why = match reason {
            "ErrImagePull" | "ImagePullBackOff" => "trying and failing to pull image",
            other => other,
        };
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {why}"
        )));
    }
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let (text, last) = shared.logs.read(&uid, &container, None, true, &options);
    let text = cut(text, options.limit_bytes);
    if !options.follow {
        return Ok(LogAnswer::Text(text));
    }
    let namespace = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let remaining = options.limit_bytes.map(|l| l.saturating_sub(text.len()));
    let follow = Follow {
        shared: shared.clone(),
        namespace,
        name,
        uid,
        container,
        last,
        options,
        remaining,
        appended: shared.logs.appended.subscribe(),
        pending: Some(text),
    };
    Ok(LogAnswer::Follow(Box::pin(follow.into_stream())))
}

/// An open `follow=true` request.
struct Follow {
    shared: Arc<Shared>,
    namespace: String,
    name: String,
    uid: String,
    container: String,
    last: Option<u64>,
    options: LogOptions,
    remaining: Option<usize>,
    appended: watch::Receiver<u64>,
    pending: Option<String>,
}

impl Follow {
    fn pod_exists(&self) -> bool {
        let api = self.shared.api.lock().unwrap_or_else(|e| e.into_inner());
        api.store
            .get(kinds::pods(), &self.namespace, &self.name)
            .and_then(|p| p.pointer("/metadata/uid"))
            .and_then(Value::as_str)
            == Some(self.uid.as_str())
    }

    fn into_stream(self) -> impl Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Sync {
        futures::stream::unfold(self, |mut follow| async move {
            loop {
                if let Some(text) = follow.pending.take().filter(|t| !t.is_empty()) {
                    return Some((Ok(Frame::data(Bytes::from(text))), follow));
                }
                if follow.remaining == Some(0) {
                    return None;
                }
                let (text, last) = follow.shared.logs.read(
                    &follow.uid,
                    &follow.container,
                    follow.last,
                    false,
                    &follow.options,
                );
                follow.last = last;
                if !text.is_empty() {
                    let text = cut(text, follow.remaining);
                    follow.remaining = follow.remaining.map(|r| r.saturating_sub(text.len()));
                    follow.pending = Some(text);
                    continue;
                }
                if !follow.pod_exists() {
                    return None;
                }
                // New lines wake us; a pod deleted without logs is seen
                // at the next look.
                tokio::select! {
                    changed = follow.appended.changed() => if changed.is_err() { return None },
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_keep_the_newest_lines_and_select_by_tail() {
        let logs = PodLogs::new(3);
        let lines: Vec<String> = (1..=5).map(|i| format!("line {i}")).collect();
        logs.append("uid", "c", &lines);
        let options = LogOptions {
            tail_lines: Some(2),
            ..LogOptions::default()
        };
        let (text, last) = logs.read("uid", "c", None, true, &options);
        assert_eq!(text, "line 4\nline 5\n");
        assert_eq!(last, Some(4));
        let (all, _) = logs.read("uid", "c", None, true, &LogOptions::default());
        assert_eq!(all, "line 3\nline 4\nline 5\n");
        let (after, _) = logs.read("uid", "c", Some(3), false, &options);
        assert_eq!(after, "line 5\n");
        logs.retain_pods(&HashSet::new());
        assert_eq!(logs.read("uid", "c", None, true, &options).0, "");
    }

    #[test]
    fn timestamps_have_nine_fraction_digits() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_120_000_000).unwrap();
        assert_eq!(fixed_nanos(t), "2023-11-14T22:13:20.120000000Z");
    }

    #[test]
    fn log_options_are_validated() {
        let q = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(LogOptions::parse(q(&[("tailLines", "-1")])).is_err());
        assert!(LogOptions::parse(q(&[("limitBytes", "0")])).is_err());
        assert!(LogOptions::parse(q(&[("sinceSeconds", "x")])).is_err());
        let o = LogOptions::parse(q(&[("tailLines", "3"), ("follow", "true")])).unwrap();
        assert_eq!(o.tail_lines, Some(3));
        assert!(o.follow);
    }
}
