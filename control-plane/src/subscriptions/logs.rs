//! Log streams of subscriptions (StreamSubscriptionLogs): the pod's log is
//! read from the cluster as a byte stream, in chunks, and cut into lines
//! here, so what a pod prints never decides what the control plane holds.
//!
//! - A line is kept up to [`MAX_LOG_LINE`] bytes; the rest of it is
//!   counted and dropped as it arrives (never buffered), and the line ends
//!   with a mark saying how much went (`… [line cut: N bytes dropped]`).
//!   A pod printing one 1 GiB line without a newline costs one read buffer
//!   and one 16 KiB line.
//! - The request to the cluster carries `limitBytes`, so one stream reads
//!   at most that much (`--log-stream-limit-bytes`); when it is reached the
//!   stream ends with RESOURCE_EXHAUSTED saying so.
//! - Lines go out in batches of at most [`LOG_BATCH`] lines and
//!   [`LOG_BATCH_BYTES`] bytes, through a channel of [`LOG_CHANNEL`]
//!   batches: a client that reads slowly slows the read from the cluster
//!   instead of growing a queue.
//! - A stream re-checks its caller as WatchSubscriptions does (every
//!   `--stream-caller-recheck`) and ends with UNAUTHENTICATED after Logout,
//!   a password change or deactivation.
//! - A user holds at most `--log-streams-per-user` streams at once (per
//!   replica); the slot is freed when the stream ends, whoever ends it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{AsyncRead, AsyncReadExt};
use minispod_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::Status;

use crate::error::AppError;

/// Longest log line sent (bytes, before its cut mark); longer ones are cut.
pub const MAX_LOG_LINE: usize = 16 * 1024;
/// Most lines in one message.
pub const LOG_BATCH: usize = 200;
/// Most bytes of lines in one message (a message may pass it by one line).
pub const LOG_BATCH_BYTES: usize = 64 * 1024;
/// Messages queued for a slow client before reading from the cluster waits.
pub const LOG_CHANNEL: usize = 4;
/// Bytes read from the cluster at once.
const READ_CHUNK: usize = 64 * 1024;
/// How long a partial batch waits for more lines before it is sent.
const BATCH_WAIT: Duration = Duration::from_millis(50);

/// Cuts a byte stream into lines of at most `max` bytes, dropping the rest
/// of a longer line as it arrives.
#[derive(Debug)]
pub struct LineCutter {
    max: usize,
    line: Vec<u8>,
    dropped: u64,
}

impl LineCutter {
    /// A cutter keeping at most `max` bytes of a line.
    pub fn new(max: usize) -> LineCutter {
        LineCutter {
            max,
            line: Vec::new(),
            dropped: 0,
        }
    }

    /// The next complete line in `input`, consuming what it read of it;
    /// None when `input` is used up without ending a line (what it held
    /// is kept, up to the limit, for the next call).
    pub fn next_line(&mut self, input: &mut &[u8]) -> Option<String> {
        let newline = input.iter().position(|b| *b == b'\n');
        let end = newline.unwrap_or(input.len());
        self.keep(&input[..end]);
        match newline {
            Some(i) => {
                *input = &input[i + 1..];
                Some(self.take())
            }
            None => {
                *input = &[];
                None
            }
        }
    }

    /// What is left of a last line without its newline, if anything.
    pub fn finish(&mut self) -> Option<String> {
        (!self.line.is_empty() || self.dropped > 0).then(|| self.take())
    }

    fn keep(&mut self, part: &[u8]) {
        let room = self.max.saturating_sub(self.line.len());
        let kept = room.min(part.len());
        self.line.extend_from_slice(&part[..kept]);
        self.dropped += (part.len() - kept) as u64;
    }

    fn take(&mut self) -> String {
        if self.dropped == 0 && self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        if self.dropped > 0
            && let Err(e) = std::str::from_utf8(&self.line)
            && e.error_len().is_none()
        {
            // The cut went through a character: drop its first bytes too.
            let cut = self.line.len() - e.valid_up_to();
            self.line.truncate(e.valid_up_to());
            self.dropped += cut as u64;
        }
        let mut text = String::from_utf8_lossy(&self.line).into_owned();
        if text.len() > self.max {
            // Invalid bytes became U+FFFD (three bytes each).
            let mut at = self.max;
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            self.dropped += (text.len() - at) as u64;
            text.truncate(at);
        }
        if self.dropped > 0 {
            text.push_str(&format!(" … [line cut: {} bytes dropped]", self.dropped));
        }
        self.line.clear();
        self.dropped = 0;
        text
    }
}

/// Open log streams per user, at most `max` each.
#[derive(Debug, Clone)]
pub struct LogSlots {
    open: Arc<Mutex<HashMap<String, usize>>>,
    max: usize,
}

impl LogSlots {
    /// Slots for at most `max` streams per user.
    pub fn new(max: usize) -> LogSlots {
        LogSlots {
            open: Arc::default(),
            max: max.max(1),
        }
    }

    /// A slot for one more stream of `user`, or RESOURCE_EXHAUSTED.
    pub fn take(&self, user: &str) -> Result<LogSlot, AppError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(user.to_owned()).or_default();
        if *n >= self.max {
            return Err(AppError::ResourceExhausted {
                message: format!(
                    "at most {} log streams may be open at once per user; close one first",
                    self.max
                ),
                retry_after: None,
            });
        }
        *n += 1;
        Ok(LogSlot {
            slots: self.clone(),
            user: user.to_owned(),
        })
    }

    /// Streams `user` holds open.
    pub fn open(&self, user: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(user).copied().unwrap_or(0)
    }
}

/// One open stream's slot, given back when dropped.
#[derive(Debug)]
pub struct LogSlot {
    slots: LogSlots,
    user: String,
}

impl Drop for LogSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

pub use crate::auth::CallerCheck;

/// One log stream: from the cluster's reader to the client's channel.
pub struct LogPump<R> {
    /// The cluster's answer to the log request.
    pub reader: R,
    /// Where batches go.
    pub tx: mpsc::Sender<Result<pb::StreamSubscriptionLogsResponse, Status>>,
    /// The pod read.
    pub pod: String,
    /// `limitBytes` of the request (the stream ends when reached).
    pub limit_bytes: u64,
    /// The caller, checked again while the stream runs.
    pub caller: CallerCheck,
    /// The caller's slot, freed when the pump ends.
    pub slot: LogSlot,
}

enum Event {
    Read(std::io::Result<usize>),
    Flush,
    ClientGone,
    Recheck,
}

impl<R: AsyncRead + Unpin + Send> LogPump<R> {
    fn batch(&self, lines: Vec<String>) -> pb::StreamSubscriptionLogsResponse {
        pb::StreamSubscriptionLogsResponse {
            pod: self.pod.clone(),
            lines,
        }
    }

    /// Runs until the log ends, the client leaves or the caller may no
    /// longer read.
    pub async fn run(mut self) {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut cutter = LineCutter::new(MAX_LOG_LINE);
        let mut batch: Vec<String> = Vec::new();
        let mut batch_bytes = 0usize;
        let mut received = 0u64;
        let mut flush_at: Option<tokio::time::Instant> = None;
        let mut recheck = tokio::time::interval(self.caller.every);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        recheck.tick().await;
        loop {
            let flush = async {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                n = self.reader.read(&mut buf) => Event::Read(n),
                () = flush => Event::Flush,
                () = self.tx.closed() => Event::ClientGone,
                _ = recheck.tick() => Event::Recheck,
            };
            match event {
                Event::ClientGone => return,
                Event::Recheck => {
                    if let Err(status) = self.caller.still_allowed().await {
                        let _ = self.tx.send(Err(status)).await;
                        return;
                    }
                }
                Event::Flush => {
                    flush_at = None;
                    batch_bytes = 0;
                    let msg = self.batch(std::mem::take(&mut batch));
                    if self.tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                Event::Read(Ok(n)) if n > 0 => {
                    received += n as u64;
                    let mut input = &buf[..n];
                    while let Some(line) = cutter.next_line(&mut input) {
                        batch_bytes += line.len();
                        batch.push(line);
                        if batch.len() >= LOG_BATCH || batch_bytes >= LOG_BATCH_BYTES {
                            flush_at = None;
                            batch_bytes = 0;
                            let msg = self.batch(std::mem::take(&mut batch));
                            if self.tx.send(Ok(msg)).await.is_err() {
                                return;
                            }
                        }
                    }
                    if !batch.is_empty() && flush_at.is_none() {
                        flush_at = Some(tokio::time::Instant::now() + BATCH_WAIT);
                    }
                }
                Event::Read(result) => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, pod = %self.pod, "log stream ended");
                    }
                    batch.extend(cutter.finish());
                    if !batch.is_empty() {
                        let msg = self.batch(std::mem::take(&mut batch));
                        if self.tx.send(Ok(msg)).await.is_err() {
                            return;
                        }
                    }
                    if received >= self.limit_bytes {
                        let _ = self
                            .tx
                            .send(Err(Status::resource_exhausted(format!(
                                "the log stream reached its limit of {} bytes; ask again with \
                                 since_seconds or tail_lines to read on",
                                self.limit_bytes
                            ))))
                            .await;
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut_all(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut cutter = LineCutter::new(max);
        let mut lines = Vec::new();
        for chunk in chunks {
            let mut input = *chunk;
            while let Some(l) = cutter.next_line(&mut input) {
                lines.push(l);
            }
        }
        lines.extend(cutter.finish());
        lines
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        assert_eq!(
            cut_all(100, &[b"hel", b"lo\nwor", b"ld\r\n", b"\nlast"]),
            ["hello", "world", "", "last"]
        );
        assert!(cut_all(100, &[b"", b""]).is_empty());
    }

    #[test]
    fn a_long_line_is_cut_marked_and_the_next_one_is_whole() {
        let long = vec![b'x'; 1000];
        let lines = cut_all(10, &[&long, &long, b"\nnext\n"]);
        assert_eq!(
            lines,
            ["xxxxxxxxxx … [line cut: 1990 bytes dropped]", "next"]
        );
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        // "é" is two bytes: a limit of 3 would split the second one.
        let lines = cut_all(3, &["éé and more\n".as_bytes()]);
        assert_eq!(lines, ["é … [line cut: 11 bytes dropped]"]);
        let bad = cut_all(4, &[b"\xff\xff\xff\xff\n"]);
        assert!(bad[0].starts_with('\u{fffd}'), "{bad:?}");
        assert!(bad[0].ends_with("bytes dropped]"), "{bad:?}");
    }

    #[test]
    fn the_cutter_holds_no_more_than_its_limit() {
        let mut cutter = LineCutter::new(16 * 1024);
        let chunk = vec![b'y'; 64 * 1024];
        for _ in 0..1024 {
            let mut input = chunk.as_slice();
            assert!(cutter.next_line(&mut input).is_none());
            assert!(cutter.line.capacity() <= 32 * 1024);
        }
        let last = cutter.finish().unwrap();
        assert!(last.ends_with(&format!(
            "[line cut: {} bytes dropped]",
            64 * 1024 * 1024 - 16 * 1024
        )));
    }

    #[test]
    fn slots_are_limited_per_user_and_freed_on_drop() {
        let slots = LogSlots::new(2);
        let a = slots.take("ann").unwrap();
        let _b = slots.take("ann").unwrap();
        assert!(matches!(
            slots.take("ann"),
            Err(AppError::ResourceExhausted { .. })
        ));
        let _other = slots.take("bob").unwrap();
        drop(a);
        assert_eq!(slots.open("ann"), 1);
        let _c = slots.take("ann").unwrap();
    }
}
