// The cluster link card of the dashboard: always shown, linked or not.
// Linked: what (the API server, its version), how it is (connected,
// connecting, unreachable with the last error) and how many nodes are
// workers'. Not linked: what that means (subscriptions cannot start) and
// what to do (the flag, its environment variable, K3s's kubeconfig path).
import { workers } from "../api";
import { ErrorBanner, useLoad } from "./components";
import { dateTime } from "../format";
import { ClusterLinkState } from "../gen/minispod/v1/workers_pb";

const stateWord: Record<ClusterLinkState, string> = {
  [ClusterLinkState.UNSPECIFIED]: "unknown",
  [ClusterLinkState.UNLINKED]: "Not linked",
  [ClusterLinkState.CONNECTING]: "Connecting",
  [ClusterLinkState.CONNECTED]: "Connected",
  [ClusterLinkState.LOST]: "Unreachable",
};

export function ClusterCard() {
  const link = useLoad(() => workers.getClusterLink({}), []);
  const l = link.data;
  return (
    <section class="card" aria-labelledby="cluster-h" data-cluster-state={l ? ClusterLinkState[l.state] : undefined}>
      <h2 id="cluster-h">Kubernetes cluster</h2>
      <ErrorBanner problem={link.problem} />
      {l && l.state === ClusterLinkState.UNLINKED && (
        <>
          <p class="banner warn" role="status">
            Not linked: customers cannot subscribe, and subscriptions cannot start, until a cluster is linked.
          </p>
          <p>To link one, start the control plane with the cluster's kubeconfig:</p>
          <pre class="wrap">
            <code>minispod-control-plane serve --kubeconfig /etc/rancher/k3s/k3s.yaml …</code>
          </pre>
          <p>
            or set <code>MINISPOD_KUBECONFIG</code> (<code>kubeconfig</code> in the <code>--config</code> file). On a K3s server the file is{" "}
            <code>/etc/rancher/k3s/k3s.yaml</code>; the control plane's identity needs the rights in <code>deploy/kubernetes/control-plane-rbac.yaml</code>. Running
            inside the cluster, use <code>--kube-in-cluster</code> instead.
          </p>
        </>
      )}
      {l && l.state !== ClusterLinkState.UNLINKED && (
        <>
          <dl class="facts">
            <div>
              <dt>Link</dt>
              <dd>{stateWord[l.state]}</dd>
            </div>
            <div>
              <dt>API server</dt>
              <dd>
                <code>{l.server || "—"}</code>
              </dd>
            </div>
            <div>
              <dt>Version</dt>
              <dd>{l.serverVersion || "—"}</dd>
            </div>
            <div>
              <dt>Nodes</dt>
              <dd>
                {`${l.nodes}`} ({`${l.linkedNodes}`} of them workers')
              </dd>
            </div>
            <div>
              <dt>Since</dt>
              <dd>{dateTime(l.since)}</dd>
            </div>
          </dl>
          {l.error && (
            <p class="banner warn" role="status">
              {l.state === ClusterLinkState.LOST ? "The API server cannot be reached: " : "Last error: "}
              {l.error}. The control plane retries by itself; check the kubeconfig's server address and credentials.
            </p>
          )}
        </>
      )}
    </section>
  );
}

/** A server hint with its `commands` set as code. */
export function HintText({ text }: { text: string }) {
  return (
    <>
      {text.split("`").map((part, i) => (i % 2 === 1 ? <code key={i}>{part}</code> : part))}
    </>
  );
}
