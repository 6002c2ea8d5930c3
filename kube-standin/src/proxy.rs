//! A TCP proxy in front of the API server that tests can cut ("losing the
//! API server") and restore.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A TCP proxy to one upstream address, stopped when dropped.
pub struct CutProxy {
    addr: SocketAddr,
    /// `true` while cut; every connection task watches it.
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Listen on 127.0.0.1 (a free port) and forward to `upstream`
    /// (`host:port`).
    pub async fn start(upstream: String) -> anyhow::Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the proxy")?;
        let addr = listener.local_addr()?;
        let (cut, cut_state) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, Arc::new(upstream), cut_state));
        Ok(CutProxy { addr, cut, task })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Close every proxied connection and refuse new ones.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Accept connections again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: Arc<String>, cut: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *cut.borrow() {
            // Refused: the connection closes before a byte is read.
            drop(client);
            continue;
        }
        let upstream = upstream.clone();
        let mut cut = cut.clone();
        connections.spawn(async move {
            let Ok(mut server) = TcpStream::connect(upstream.as_str()).await else {
                return;
            };
            let mut client = client;
            tokio::select! {
                _ = cut.wait_for(|cut| *cut) => {}
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
            }
        });
        while connections.try_join_next().is_some() {}
    }
}
