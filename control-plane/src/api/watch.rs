//! The loop behind every Watch RPC (WatchWorkers, WatchSubscriptions),
//! written once: a snapshot read in pages, SNAPSHOT_END, then the changes
//! as they are broadcast; a watcher too slow for the broadcast starts over
//! with a fresh snapshot; the caller is checked again every
//! `--stream-caller-recheck`, and the stream ends with the refusal once
//! the caller may no longer watch.

use std::{future::Future, pin::Pin};

use tokio::sync::{broadcast, mpsc};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::Status;

use crate::{auth::CallerCheck, error::AppResult, store::Page};

/// A watch's messages, as the RPC returns them.
pub type WatchStream<M> = Pin<Box<dyn Stream<Item = Result<M, Status>> + Send>>;

/// Messages a watch's client has not read yet, at most.
const BUFFER: usize = 256;

/// What one watch reads: its snapshot and how a broadcast change becomes
/// messages.
#[tonic::async_trait]
pub trait Feed: Send + 'static {
    /// What the broadcast carries.
    type Change: Clone + Send + 'static;
    /// What the stream carries.
    type Message: Send + 'static;

    /// Rows per snapshot page.
    const PAGE: i64;

    /// The messages of the snapshot page `page`, and how many rows were
    /// read (a page shorter than `PAGE` is the last).
    async fn snapshot(&mut self, page: Page) -> AppResult<(Vec<Self::Message>, i64)>;

    /// The message that ends the snapshot.
    fn snapshot_end(&self) -> Self::Message;

    /// The messages `change` makes for this watcher (none to skip it).
    async fn change(&mut self, change: Self::Change) -> Vec<Self::Message>;
}

/// Runs `feed` over `changes` (subscribed before any snapshot read, so no
/// change falls between) until the client leaves, `until` resolves, the
/// broadcast closes or `check` refuses the caller.
pub fn spawn<F, U>(
    mut feed: F,
    mut changes: broadcast::Receiver<F::Change>,
    check: CallerCheck,
    until: U,
) -> WatchStream<F::Message>
where
    F: Feed,
    U: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        tokio::pin!(until);
        'snapshot: loop {
            let mut page = Page {
                offset: 0,
                limit: F::PAGE,
            };
            loop {
                let (messages, n) = match feed.snapshot(page).await {
                    Ok(read) => read,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                for m in messages {
                    if tx.send(Ok(m)).await.is_err() {
                        return;
                    }
                }
                if n < page.limit {
                    break;
                }
                page.offset += n;
            }
            if tx.send(Ok(feed.snapshot_end())).await.is_err() {
                return;
            }
            let mut recheck = tokio::time::interval(check.every);
            recheck.tick().await;
            loop {
                let item = tokio::select! {
                    item = changes.recv() => item,
                    // A send that fails means the client left.
                    () = tx.closed() => return,
                    () = &mut until => return,
                    _ = recheck.tick() => {
                        if let Err(e) = check.still_allowed().await {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                        continue;
                    }
                };
                match item {
                    Ok(change) => {
                        for m in feed.change(change).await {
                            if tx.send(Ok(m)).await.is_err() {
                                return;
                            }
                        }
                    }
                    // Too slow to keep up: start over with a fresh snapshot.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue 'snapshot,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}
