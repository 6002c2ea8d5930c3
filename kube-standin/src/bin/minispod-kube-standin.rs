//! The stand-in API server as a process: for the console's browser tests,
//! and for trying the cluster link by hand without a cluster.
//!
//! `minispod-kube-standin --kubeconfig-out FILE` listens on a random
//! loopback port, writes a kubeconfig for it to FILE (CA, bearer token),
//! prints its URL on one line once it serves, and runs until SIGTERM or
//! Ctrl-C. Point `minispod-control-plane serve --kubeconfig FILE` at it and
//! create Nodes with any Kubernetes client.

use anyhow::Context;
use minispod_kube_standin::StandIn;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = match (args.next().as_deref(), args.next()) {
        (Some("--kubeconfig-out"), Some(path)) => path,
        _ => anyhow::bail!("usage: minispod-kube-standin --kubeconfig-out FILE"),
    };
    let standin = StandIn::start().await?;
    std::fs::write(&out, standin.kubeconfig(None)).with_context(|| format!("write {out}"))?;
    println!("{}", standin.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    standin.stop().await;
    Ok(())
}
