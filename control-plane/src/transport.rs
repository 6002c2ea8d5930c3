//! The listener's defences against clients that hold resources without
//! doing anything: how many connections, TLS handshakes and HTTP/2 streams
//! a client may keep open, how long a call may take to arrive, how much
//! unfinished request data the server buffers across all calls, and which
//! proxies may name the client behind them.
//!
//! Every bound is a flag (`serve --help`); README.md's security notes give
//! the defaults and why.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use clap::Args;
use http_body::Frame;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, transport::server::Connected};

use crate::rate_limit::{Cidr, address_key};

/// Handshakes in progress at once over all addresses; more wait in the
/// kernel's backlog.
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Bounds on what clients may hold (flags of `serve`).
#[derive(Debug, Clone, Args)]
pub struct TransportLimits {
    /// Connections open at once, TLS handshakes included; beyond it new
    /// connections are closed as they are accepted.
    #[arg(long, env = "MINISPOD_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,

    /// Connections one client address (for IPv6, one /64) may hold at once;
    /// 0 for no limit. Trusted proxies are exempt.
    #[arg(
        long,
        env = "MINISPOD_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 256
    )]
    pub max_connections_per_address: usize,

    /// TLS handshakes one client address may have in progress at once;
    /// more from it are closed as they are accepted.
    #[arg(
        long,
        env = "MINISPOD_MAX_HANDSHAKES_PER_ADDRESS",
        default_value_t = 16
    )]
    pub max_handshakes_per_address: usize,

    /// How long a client may take to finish the TLS handshake.
    #[arg(long, env = "MINISPOD_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = minispod_support::parse_duration)]
    pub handshake_timeout: Duration,

    /// Calls (HTTP/2 streams) one connection may have open at once; more
    /// wait in the client until one ends.
    #[arg(long, env = "MINISPOD_MAX_CONCURRENT_STREAMS", default_value_t = 100)]
    pub max_concurrent_streams: u32,

    /// Longest time from a call's headers to its response: a unary call
    /// whose request has not fully arrived by then ends CANCELLED. Streams
    /// (agents, watches) are bounded only until they start. Not applied to
    /// the agents' transfers into a directory destination (`/restic/`),
    /// which end after 60 s without data instead.
    #[arg(long, env = "MINISPOD_REQUEST_TIMEOUT", default_value = "30s", value_parser = minispod_support::parse_duration)]
    pub request_timeout: Duration,

    /// Bytes of unfinished request messages the server holds across all
    /// calls; a call whose data would exceed it ends RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "MINISPOD_MAX_REQUEST_BUFFER",
        default_value_t = 16 * 1024 * 1024
    )]
    pub max_request_buffer: usize,

    /// Proxies (addresses or CIDRs, repeat or comma-separate) whose
    /// `x-forwarded-for` names the client: the client is the right-most
    /// address in it that is not itself a trusted proxy. Trusted proxies
    /// are exempt from the per-address connection limits. Default: none,
    /// the TCP peer is the client.
    #[arg(
        long = "trusted-proxy",
        env = "MINISPOD_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<Cidr>,
}

/// Counts of one address.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    connections: usize,
    handshakes: usize,
}

/// Admits connections and handshakes within [`TransportLimits`].
#[derive(Debug)]
pub struct Gate {
    limits: TransportLimits,
    total: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, Held>>,
    /// When each limit last had its refusals told in the log (unix ms), so
    /// a client stalled by one is told at once but not once per connection.
    told: [AtomicU64; 3],
}

/// Which limit refused a connection or handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-connections`.
    Total,
    /// `--max-connections-per-address`.
    PerAddress,
    /// `--max-handshakes-per-address`.
    Handshakes,
}

/// How often each limit's refusals are told (at most once per this).
const TELL_EVERY_MS: u64 = 60_000;

/// A connection's place within the limits, given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    gate: Arc<Gate>,
    /// The address counted, None when exempt from per-address limits.
    key: Option<IpAddr>,
}

/// A handshake's place within the per-address limit.
#[derive(Debug)]
struct HandshakeTicket {
    gate: Arc<Gate>,
    key: Option<IpAddr>,
}

impl Gate {
    /// A gate with these limits.
    pub fn new(limits: TransportLimits) -> Arc<Gate> {
        Arc::new(Gate {
            limits,
            total: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
            told: Default::default(),
        })
    }

    /// Tells in the log (a WARN naming the limit's flag, at most once a
    /// minute per limit) that `peer` was refused by `why`; every refusal
    /// is at DEBUG. True when it warned.
    fn tell(&self, why: Refusal, peer: SocketAddr) -> bool {
        let (slot, flag, value) = match why {
            Refusal::Total => (0, "--max-connections", self.limits.max_connections),
            Refusal::PerAddress => (
                1,
                "--max-connections-per-address",
                self.limits.max_connections_per_address,
            ),
            Refusal::Handshakes => (
                2,
                "--max-handshakes-per-address",
                self.limits.max_handshakes_per_address,
            ),
        };
        tracing::debug!(%peer, ?why, "connection refused");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.told[slot].load(Ordering::Relaxed);
        let tell = (last == 0 || now.saturating_sub(last) >= TELL_EVERY_MS)
            && self.told[slot]
                .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
        if tell {
            tracing::warn!(%peer, limit = flag, value, "refusing connections over a limit (told at most once a minute; raise the flag if these clients are legitimate)");
        }
        tell
    }

    /// Connections held now.
    pub fn open_connections(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    fn key(&self, peer: IpAddr) -> Option<IpAddr> {
        if self.limits.trusted_proxies.iter().any(|c| c.contains(peer)) {
            None
        } else {
            Some(address_key(peer))
        }
    }

    /// A connection from `peer`, or the limit it would exceed.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Ticket, Refusal> {
        let total = self.total.fetch_add(1, Ordering::AcqRel);
        if total >= self.limits.max_connections {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Total);
        }
        let key = self.key(peer);
        if let Some(k) = key {
            let mut held = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
            let h = held.entry(k).or_default();
            let cap = self.limits.max_connections_per_address;
            if cap > 0 && h.connections >= cap {
                drop(held);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::PerAddress);
            }
            h.connections += 1;
        }
        Ok(Ticket {
            gate: self.clone(),
            key,
        })
    }

    fn begin_handshake(self: &Arc<Self>, ticket: &Ticket) -> Option<HandshakeTicket> {
        if let Some(k) = ticket.key {
            let mut held = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
            let h = held.entry(k).or_default();
            if h.handshakes >= self.limits.max_handshakes_per_address {
                return None;
            }
            h.handshakes += 1;
        }
        Some(HandshakeTicket {
            gate: self.clone(),
            key: ticket.key,
        })
    }

    fn release(&self, key: Option<IpAddr>, connection: bool) {
        if let Some(k) = key {
            let mut held = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = held.get_mut(&k) {
                if connection {
                    h.connections = h.connections.saturating_sub(1);
                } else {
                    h.handshakes = h.handshakes.saturating_sub(1);
                }
                if h.connections == 0 && h.handshakes == 0 {
                    held.remove(&k);
                }
            }
        }
        if connection {
            self.total.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.release(self.key, true);
    }
}

impl Drop for HandshakeTicket {
    fn drop(&mut self) {
        self.gate.release(self.key, false);
    }
}

/// A connection that holds its [`Ticket`] for as long as it is open.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    _ticket: Ticket,
}

impl<S: Connected> Connected for Guarded<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Plaintext connections from `listener`, within the gate's limits.
pub fn plain_incoming(
    listener: TcpListener,
    gate: Arc<Gate>,
) -> ReceiverStream<std::io::Result<Guarded<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = accept_admitted(&listener, &gate) => a,
                () = tx.closed() => break,
            };
            let (tcp, _, ticket) = accepted;
            let conn = Guarded {
                inner: tcp,
                _ticket: ticket,
            };
            if tx.send(Ok(conn)).await.is_err() {
                break;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// The next connection within the gate's limits; those beyond are closed.
async fn accept_admitted(
    listener: &TcpListener,
    gate: &Arc<Gate>,
) -> (TcpStream, SocketAddr, Ticket) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly
                // instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match gate.admit(peer.ip()) {
            Ok(ticket) => {
                let _ = tcp.set_nodelay(true);
                return (tcp, peer, ticket);
            }
            Err(why) => {
                gate.tell(why, peer);
            }
        }
    }
}

/// TLS connections from `listener`: each handshake runs in its own task
/// with a deadline, at most `max_handshakes_per_address` at once per
/// address, so clients that stall mid-handshake hold up nobody else.
pub fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    gate: Arc<Gate>,
) -> ReceiverStream<std::io::Result<Guarded<tokio_rustls::server::TlsStream<TcpStream>>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    let timeout = gate.limits.handshake_timeout;
    tokio::spawn(async move {
        loop {
            let Ok(permit) = pending.clone().acquire_owned().await else {
                break;
            };
            // Stop accepting (and release the port) once the server is gone.
            let (tcp, peer, ticket) = tokio::select! {
                a = accept_admitted(&listener, &gate) => a,
                () = tx.closed() => break,
            };
            let Some(handshake) = gate.begin_handshake(&ticket) else {
                gate.tell(Refusal::Handshakes, peer);
                continue;
            };
            let (acceptor, conns) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let outcome = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
                drop(handshake);
                match outcome {
                    Ok(Ok(stream)) => {
                        let conn = Guarded {
                            inner: stream,
                            _ticket: ticket,
                        };
                        let _ = conns.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The shared allowance of unfinished request data.
#[derive(Debug)]
pub struct RequestBuffer {
    limit: usize,
    held: AtomicUsize,
}

impl RequestBuffer {
    /// An allowance of `limit` bytes.
    pub fn new(limit: usize) -> Arc<RequestBuffer> {
        Arc::new(RequestBuffer {
            limit,
            held: AtomicUsize::new(0),
        })
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn try_take(&self, n: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                h.checked_add(n).filter(|t| *t <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }
}

/// A tower layer counting each call's unfinished gRPC message against a
/// [`RequestBuffer`].
#[derive(Debug, Clone)]
pub struct RequestBufferLayer(pub Arc<RequestBuffer>);

impl<S> tower::Layer<S> for RequestBufferLayer {
    type Service = RequestBufferService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestBufferService {
            inner,
            buffer: self.0.clone(),
        }
    }
}

/// See [`RequestBufferLayer`].
#[derive(Debug, Clone)]
pub struct RequestBufferService<S> {
    inner: S,
    buffer: Arc<RequestBuffer>,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for RequestBufferService<S>
where
    S: tower::Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let body = tonic::body::Body::new(Counted {
            inner: body,
            buffer: self.buffer.clone(),
            frame: FrameState::default(),
        });
        self.inner.call(http::Request::from_parts(parts, body))
    }
}

/// Where a body is within the gRPC message it is delivering.
#[derive(Debug, Default)]
struct FrameState {
    /// Bytes of the 5-byte message header seen so far.
    header: [u8; 5],
    header_len: usize,
    /// Payload bytes still to come for the current message.
    remaining: usize,
    /// Bytes of the current message counted against the buffer.
    held: usize,
}

impl FrameState {
    /// Walks `data`; returns (bytes newly held, bytes released because
    /// their message completed).
    fn advance(&mut self, mut data: &[u8]) -> (usize, usize) {
        let (mut added, mut released) = (0, 0);
        while !data.is_empty() {
            if self.header_len < 5 {
                let n = (5 - self.header_len).min(data.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
                self.header_len += n;
                data = &data[n..];
                added += n;
                self.held += n;
                if self.header_len == 5 {
                    let len = u32::from_be_bytes([
                        self.header[1],
                        self.header[2],
                        self.header[3],
                        self.header[4],
                    ]);
                    self.remaining = len as usize;
                }
            } else {
                let n = self.remaining.min(data.len());
                data = &data[n..];
                self.remaining -= n;
                added += n;
                self.held += n;
            }
            if self.header_len == 5 && self.remaining == 0 {
                released += self.held;
                *self = FrameState::default();
            }
        }
        (added, released)
    }
}

/// A request body whose unfinished message is counted against the buffer.
struct Counted {
    inner: tonic::body::Body,
    buffer: Arc<RequestBuffer>,
    frame: FrameState,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let before = this.frame.held;
                    let (added, released) = this.frame.advance(data);
                    // Take what is new; give back what completed.
                    if added > 0 && !this.buffer.try_take(added) {
                        this.frame.held = before;
                        this.frame = FrameState::default();
                        this.buffer.give_back(before);
                        return Poll::Ready(Some(Err(Status::resource_exhausted(
                            "the server holds too much unfinished request data; retry shortly",
                        ))));
                    }
                    if released > 0 {
                        this.buffer.give_back(released);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Status::from_error(e.into())))),
            other => other.map(|o| o.map(|r| r.map_err(|e| Status::from_error(e.into())))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.frame.held > 0 {
            self.buffer.give_back(self.frame.held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: u32) -> Vec<u8> {
        let mut f = vec![0u8];
        f.extend_from_slice(&len.to_be_bytes());
        f.extend(std::iter::repeat_n(7u8, len as usize));
        f
    }

    #[test]
    fn a_message_is_held_until_it_completes() {
        let mut s = FrameState::default();
        let f = frame(10);
        assert_eq!(s.advance(&f[..3]), (3, 0));
        assert_eq!(s.advance(&f[3..8]), (5, 0));
        assert_eq!(s.held, 8);
        assert_eq!(s.advance(&f[8..]), (7, 15));
        assert_eq!(s.held, 0);
        // Two messages and half of a third in one chunk.
        let mut chunk = frame(2);
        chunk.extend(frame(0));
        chunk.extend(&frame(4)[..6]);
        assert_eq!(s.advance(&chunk), (chunk.len(), 12));
        assert_eq!(s.held, 6);
    }

    #[test]
    fn the_buffer_refuses_beyond_its_limit() {
        let b = RequestBuffer::new(10);
        assert!(b.try_take(6));
        assert!(!b.try_take(5));
        assert!(b.try_take(4));
        b.give_back(10);
        assert_eq!(b.held(), 0);
    }

    fn limits(per_address: usize, handshakes: usize, total: usize) -> TransportLimits {
        TransportLimits {
            max_connections: total,
            max_connections_per_address: per_address,
            max_handshakes_per_address: handshakes,
            handshake_timeout: Duration::from_secs(1),
            max_concurrent_streams: 10,
            request_timeout: Duration::from_secs(1),
            max_request_buffer: 1024,
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        }
    }

    #[test]
    fn connections_are_counted_per_address_and_in_total() {
        let gate = Gate::new(limits(2, 1, 4));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t1 = gate.admit(a).unwrap();
        let _t2 = gate.admit(a).unwrap();
        assert_eq!(
            gate.admit(a).err(),
            Some(Refusal::PerAddress),
            "a third from one address"
        );
        let _t3 = gate.admit(b).unwrap();
        // A trusted proxy is exempt from the per-address cap, not the total.
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let _t4 = gate.admit(proxy).unwrap();
        assert_eq!(
            gate.admit(proxy).err(),
            Some(Refusal::Total),
            "the total is reached"
        );
        drop(t1);
        let again = gate.admit(a);
        assert!(again.is_ok(), "a closed connection frees its place");
        assert_eq!(gate.open_connections(), 4);
    }

    #[test]
    fn ipv6_clients_are_counted_by_64() {
        let gate = Gate::new(limits(1, 1, 100));
        let _t = gate.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(gate.admit("2001:db8:1:2::ffff".parse().unwrap()).is_err());
        assert!(gate.admit("2001:db8:1:3::1".parse().unwrap()).is_ok());
    }

    #[test]
    fn handshakes_are_capped_per_address() {
        let gate = Gate::new(limits(10, 1, 100));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let (t1, t2) = (gate.admit(a).unwrap(), gate.admit(a).unwrap());
        let h1 = gate.begin_handshake(&t1).unwrap();
        assert!(gate.begin_handshake(&t2).is_none());
        drop(h1);
        assert!(gate.begin_handshake(&t2).is_some());
    }

    #[test]
    fn each_limit_is_told_at_once_then_at_most_once_a_minute() {
        let gate = Gate::new(limits(1, 1, 100));
        let peer: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        assert!(gate.tell(Refusal::PerAddress, peer), "the first refusal");
        assert!(!gate.tell(Refusal::PerAddress, peer), "again at once");
        assert!(gate.tell(Refusal::Handshakes, peer), "another limit");
        assert!(gate.tell(Refusal::Total, peer));
        // A minute later it is told again.
        gate.told[1].store(1, Ordering::Relaxed);
        assert!(gate.tell(Refusal::PerAddress, peer));
    }
}
