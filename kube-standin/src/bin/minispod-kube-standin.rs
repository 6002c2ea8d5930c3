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

const HELP: &str = "\
A stand-in for a Kubernetes API server, for MiniSpod's tests and for trying
the cluster link by hand without a cluster. It is not Kubernetes: it keeps
objects in memory, plays a scheduler, a kubelet and a few controllers, and
enforces the RBAC and admission MiniSpod relies on.

Usage: minispod-kube-standin --kubeconfig-out FILE [--storage-root DIR]

Listens on a random loopback port, writes a kubeconfig for it to FILE
(its CA and an administrator's bearer token), prints its URL on one line
once it serves, and runs until SIGTERM or Ctrl-C. Then:
  minispod-control-plane serve --kubeconfig FILE

Options:
  --kubeconfig-out FILE  where to write the kubeconfig
  --storage-root DIR     give local-path volumes real directories, node N's
                         under DIR/N (as /var/lib/rancher/k3s/storage on a
                         K3s node): a node agent run with
                         --volumes-dir DIR/N backs them up and restores them
  -h, --help             this help
  -V, --version          the version
";

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = match (args.next().as_deref(), args.next()) {
        (Some("--kubeconfig-out"), Some(path)) => path,
        (Some("-h" | "--help"), _) => {
            print!("{HELP}");
            return Ok(());
        }
        (Some("-V" | "--version"), _) => {
            println!("minispod-kube-standin {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        _ => anyhow::bail!(
            "usage: minispod-kube-standin --kubeconfig-out FILE [--storage-root DIR] (--help says more)"
        ),
    };
    let storage_root = match (args.next().as_deref(), args.next()) {
        (None, _) => None,
        (Some("--storage-root"), Some(dir)) => Some(std::path::PathBuf::from(dir)),
        _ => anyhow::bail!(
            "usage: minispod-kube-standin --kubeconfig-out FILE [--storage-root DIR] (--help says more)"
        ),
    };
    let standin = StandIn::start_with(minispod_kube_standin::Settings {
        storage_root,
        ..minispod_kube_standin::Settings::default()
    })
    .await?;
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
