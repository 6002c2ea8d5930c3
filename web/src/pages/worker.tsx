// One worker: every fact, its certificate, K3s join error, its Kubernetes
// node (conditions, capacity, requests, taints) and drain, labels, taints
// and notes (editable), cordon, maintenance and delete, and the machine
// asking to take it over (approve). Live from the
// shared stream when it carries the worker; usable while it is offline.
import { useEffect, useState } from "preact/hooks";
import { workers } from "../api";
import { WorkerHistory } from "../parts/chart";
import { Confirm, ErrorBanner, Notice, PageTitle, TextArea, useAction, useLoad, useNow } from "../parts/components";
import { ago, bytes, dateTime, plural, statusWord, timestampMs, until } from "../format";
import { DrainState, WorkerStatus, type Taint, type Worker, type WorkerDrain, type WorkerNode, type WorkerResources } from "../gen/minispod/v1/workers_pb";
import { fleet } from "../live";
import { HintText } from "../parts/cluster";
import { LinkBadge } from "../parts/fleet";
import { navigate } from "../router";
import { useStore } from "../store";

function labelsText(labels: Record<string, string>): string {
  return Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join("\n");
}

function taintsText(taints: Taint[]): string {
  return taints.map((t) => `${t.key}${t.value ? `=${t.value}` : ""}:${t.effect}`).join("\n");
}

function parseLabels(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const i = line.indexOf("=");
    if (i < 0) out[line] = "";
    else out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return out;
}

function parseTaints(text: string): { key: string; value: string; effect: string }[] {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean)
    .map((line) => {
      const colon = line.lastIndexOf(":");
      const kv = colon < 0 ? line : line.slice(0, colon);
      const effect = colon < 0 ? "" : line.slice(colon + 1).trim();
      const eq = kv.indexOf("=");
      return eq < 0 ? { key: kv.trim(), value: "", effect } : { key: kv.slice(0, eq).trim(), value: kv.slice(eq + 1).trim(), effect };
    });
}

export function WorkerPage({ id }: { id: string }) {
  const f = useStore(fleet);
  const loaded = useLoad(async () => (await workers.getWorker({ lookup: { case: "id", value: id } })).worker, [id]);
  const [local, setLocal] = useState<Worker>();
  const streamed = f.workers.get(id);
  // The freshest copy: the stream's, or the one an action just returned.
  const w = pick(streamed, local ?? loaded.data);
  const [labels, setLabels] = useState("");
  const [taints, setTaints] = useState("");
  const [notes, setNotes] = useState("");
  const [editing, setEditing] = useState(false);
  const [done, setDone] = useState("");
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [confirmTakeover, setConfirmTakeover] = useState(false);
  const now = useNow();
  useEffect(() => {
    if (w && !editing) {
      setLabels(labelsText(w.labels));
      setTaints(taintsText(w.taints));
      setNotes(w.notes);
    }
  }, [w?.updatedAt?.seconds, w?.id, editing]);

  const action = useAction(async (what: string, run: () => Promise<Worker | undefined>) => {
    setDone("");
    const updated = await run();
    if (updated) setLocal(updated);
    setDone(what);
  });
  const save = () =>
    action.act("Saved labels, taints and notes.", async () => {
      const res = await workers.updateWorker({ id, labels: { labels: parseLabels(labels) }, taints: { taints: parseTaints(taints) }, notes });
      setEditing(false);
      return res.worker;
    });
  const del = useAction(async () => {
    await workers.deleteWorker({ id });
    navigate("/workers");
  });

  if (loaded.problem && !w) {
    return (
      <>
        <PageTitle>Worker</PageTitle>
        <ErrorBanner problem={loaded.problem} />
        <p>
          <a href="/workers">Back to the fleet</a>
        </p>
      </>
    );
  }
  if (!w) return <p class="loading">Loading…</p>;
  const maintenance = w.status === WorkerStatus.MAINTENANCE;
  const facts: [string, string][] = [
    ["Status", statusWord[w.status]],
    ["Online", w.online ? "yes" : "no"],
    ["Ready", w.ready ? "yes" : "no"],
    ["Schedulable", w.schedulable ? "yes" : "no"],
    ["Cordoned", w.cordoned ? "yes" : "no"],
    ["Worker id", w.id],
    ["Machine id", w.machineId || "—"],
    ["IP address", w.ipAddress || "—"],
    ["CPU", `${w.cpuModel || "—"} (${plural(w.cpuCores, "core")}), ${w.cpuUsedPercent.toFixed(1)} % used`],
    ["Architecture", w.architecture || "—"],
    ["Memory", `${bytes(w.memoryUsedBytes)} used of ${bytes(w.memoryBytes)}`],
    ["Storage", `${bytes(w.storageUsedBytes)} used of ${bytes(w.storageBytes)}`],
    ["Pods", `${w.podCount} of ${w.maxPods}`],
    ["Operating system", w.os || "—"],
    ["Kernel", w.kernelVersion || "—"],
    ["Kubelet", w.kubeletVersion || "—"],
    ["Container runtime", w.containerRuntime || "—"],
    ["Agent version", w.agentVersion || "—"],
    ["Last heartbeat", `${ago(timestampMs(w.lastHeartbeatAt), now)} (${dateTime(w.lastHeartbeatAt)})`],
    ["Certificate expires", `${until(timestampMs(w.certificateExpiresAt), now)} (${dateTime(w.certificateExpiresAt)})`],
    ["Enrolled", dateTime(w.enrolledAt)],
    ["Created", dateTime(w.createdAt)],
    ["Updated", dateTime(w.updatedAt)],
  ];
  return (
    <>
      <p class="crumbs">
        <a href="/workers">Fleet</a> /
      </p>
      <PageTitle
        actions={
          <>
            <LinkBadge />
            <button type="button" disabled={action.busy} onClick={() => action.act(w.cordoned ? "Uncordoned." : "Cordoned.", async () => (await workers.setWorkerSchedulable({ id, schedulable: w.cordoned })).worker)}>
              {w.cordoned ? "Uncordon" : "Cordon"}
            </button>
            <button type="button" disabled={action.busy} onClick={() => action.act(maintenance ? "Maintenance ended." : "Maintenance started.", async () => (await workers.setWorkerStatus({ id, status: maintenance ? WorkerStatus.ACTIVE : WorkerStatus.MAINTENANCE })).worker)}>
              {maintenance ? "End maintenance" : "Start maintenance"}
            </button>
            <button type="button" class="danger" onClick={() => setConfirmDelete(true)}>
              Delete worker
            </button>
          </>
        }
      >
        {w.name || w.id}
      </PageTitle>
      <ErrorBanner problem={action.problem ?? del.problem} />
      {done && <Notice>{done}</Notice>}
      {w.k3sJoinError && (
        <div class="banner error" role="alert">
          <p>
            <strong>K3s join failed:</strong> {w.k3sJoinError}
          </p>
        </div>
      )}
      {w.status === WorkerStatus.NOT_READY && w.notReadyReason && (
        <p class="banner warn" role="status">
          <strong>Not ready:</strong> {w.notReadyReason}
          {w.notReadyHint && (
            <>
              <br />
              <span id="fix">
                <strong>How to fix:</strong> <HintText text={w.notReadyHint} />
              </span>
            </>
          )}
        </p>
      )}
      {w.drain && w.drain.state !== DrainState.UNSPECIFIED && <DrainBanner drain={w.drain} />}
      {w.takeover && <TakeoverBanner w={w} busy={action.busy} onApprove={() => setConfirmTakeover(true)} now={now} />}
      {!w.online && <p class="banner warn">This worker is offline: its stream is closed. What you see is its last report; changes still apply and reach it when it reconnects.</p>}
      <WorkerHistory workerId={w.id} />
      <div class="split">
        <section aria-labelledby="facts-h" class="card">
          <h2 id="facts-h">Facts</h2>
          <dl class="facts">
            {facts.map(([k, v]) => (
              <div key={k}>
                <dt>{k}</dt>
                <dd>{v}</dd>
              </div>
            ))}
          </dl>
        </section>
        <NodeCard w={w} />
        <section aria-labelledby="edit-h" class="card">
          <h2 id="edit-h">Labels, taints and notes</h2>
          <form
            noValidate
            onSubmit={(e) => {
              e.preventDefault();
              void save();
            }}
            onInput={() => setEditing(true)}
          >
            <TextArea label="Labels" value={labels} onValue={setLabels} rows={4} hint="One key=value per line." error={action.problem?.fields.labels} />
            <TextArea label="Taints" value={taints} onValue={setTaints} rows={3} hint="One key=value:Effect per line (NoSchedule, PreferNoSchedule, NoExecute)." error={action.problem?.fields.taints} />
            <TextArea label="Notes" value={notes} onValue={setNotes} rows={4} error={action.problem?.fields.notes} />
            <div class="actions">
              <button class="primary" type="submit" disabled={action.busy}>
                Save
              </button>
              {editing && (
                <button type="button" onClick={() => setEditing(false)}>
                  Discard changes
                </button>
              )}
            </div>
          </form>
        </section>
      </div>
      <Confirm open={confirmDelete} title={`Delete ${w.name || w.id}?`} confirmLabel="Delete" danger onCancel={() => setConfirmDelete(false)} onConfirm={() => {
        setConfirmDelete(false);
        void del.act();
      }}>
        <p>The worker's record goes and its certificate is revoked; its agent is disconnected. This cannot be undone.</p>
      </Confirm>
      {w.takeover && (
        <Confirm open={confirmTakeover} title={`Give ${w.name || w.id} to machine ${w.takeover.machineId}?`} confirmLabel="Approve takeover" onCancel={() => setConfirmTakeover(false)} onConfirm={() => {
          setConfirmTakeover(false);
          const machineId = w.takeover?.machineId ?? "";
          void action.act(`Takeover approved: machine ${machineId} becomes this worker when it next enrolls.`, async () => (await workers.approveWorkerTakeover({ id, machineId })).worker);
        }}>
          <p>At its next enrollment, machine {w.takeover.machineId} gets this worker's record: its labels, taints, notes and history. The certificate of machine {w.machineId} stops being accepted.</p>
        </Confirm>
      )}
    </>
  );
}

/** A machine with this worker's host name and another machine id asks to
 * become it (a reinstalled machine, usually); its enrollment is refused
 * until an administrator approves, or deletes this worker. */
function TakeoverBanner({ w, busy, onApprove, now }: { w: Worker; busy: boolean; onApprove: () => void; now: number }) {
  const t = w.takeover;
  if (!t) return null;
  const asked = `${ago(timestampMs(t.requestedAt), now)} (${dateTime(t.requestedAt)})`;
  if (t.approvedAt) {
    return (
      <div class="banner" role="status">
        <p>
          <strong>Takeover approved</strong> {dateTime(t.approvedAt)}: machine {t.machineId} becomes this worker when its agent next enrolls (it retries by itself).
        </p>
      </div>
    );
  }
  return (
    <div class="banner warn" role="status">
      <p>
        <strong>Another machine asks to be this worker:</strong> machine id {t.machineId}
        {t.ipAddress ? ` at ${t.ipAddress}` : ""}, last asked {asked}. It reports this worker's name, {w.name}, with a new machine id (this worker's is {w.machineId}): a reinstalled machine, or another machine with the same host name. Its enrollment is refused until you approve the takeover, which gives it this worker's record, or delete this worker, which lets it enroll as a new worker.
      </p>
      <p>
        <button type="button" class="primary" disabled={busy || w.online} onClick={onApprove}>
          Approve takeover
        </button>
        {w.online && " This worker is online, so its machine still runs: rename one of the two hosts instead."}
      </p>
    </div>
  );
}

const drainName: Record<DrainState, string> = {
  [DrainState.UNSPECIFIED]: "none",
  [DrainState.RUNNING]: "draining",
  [DrainState.BLOCKED]: "waiting for a disruption budget",
  [DrainState.DONE]: "drained",
  [DrainState.FAILED]: "failed",
  [DrainState.CANCELLED]: "cancelled",
};

function millicores(m: bigint): string {
  return m % 1000n === 0n ? `${m / 1000n}` : `${(Number(m) / 1000).toFixed(2)}`;
}

function resources(r: WorkerResources | undefined): string {
  if (!r) return "—";
  return `${millicores(r.cpuMillicores)} CPU, ${bytes(r.memoryBytes)} memory, ${bytes(r.storageBytes)} storage, ${r.pods} pods`;
}

function DrainBanner({ drain }: { drain: WorkerDrain }) {
  const tone = drain.state === DrainState.FAILED || drain.state === DrainState.BLOCKED ? "warn" : "ok";
  return (
    <p class={`banner ${tone}`} role="status">
      <strong>Drain: {drainName[drain.state]}</strong> — {drain.podsEvicted} of {drain.podsToEvict} pods evicted, {drain.podsRemaining} still on the node
      {drain.error && <>. {drain.error}</>}
    </p>
  );
}

/** The worker's Kubernetes node as the cluster link last saw it. */
function NodeCard({ w }: { w: Worker }) {
  const node: WorkerNode | undefined = w.node;
  if (!node) return null;
  const facts: [string, string][] = [
    ["Node", node.name],
    ["Node ready", node.ready ? "yes" : "no"],
    ["Unschedulable", node.unschedulable ? "yes (cordoned)" : "no"],
    ["Capacity", resources(w.capacity)],
    ["Allocatable", resources(w.allocatable)],
    ["Requested by pods", resources(w.allocated)],
    ["OS image", node.osImage || "—"],
    ["Node taints", node.taints.map((t) => `${t.key}${t.value ? `=${t.value}` : ""}:${t.effect}`).join(", ") || "none"],
  ];
  return (
    <section aria-labelledby="node-h" class="card">
      <h2 id="node-h">Kubernetes node</h2>
      {node.stale && <p class="banner warn">The cluster cannot be reached: these are the last figures seen.</p>}
      <dl class="facts">
        {facts.map(([k, v]) => (
          <div key={k}>
            <dt>{k}</dt>
            <dd>{v}</dd>
          </div>
        ))}
      </dl>
      <table>
        <caption>Conditions</caption>
        <thead>
          <tr>
            <th scope="col">Condition</th>
            <th scope="col">Status</th>
            <th scope="col">Message</th>
          </tr>
        </thead>
        <tbody>
          {node.conditions.map((c) => (
            <tr key={c.type}>
              <td>{c.type}</td>
              <td>{c.status}</td>
              <td>{c.message || c.reason || "—"}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function pick(a: Worker | undefined, b: Worker | undefined): Worker | undefined {
  if (!a) return b;
  if (!b) return a;
  return (timestampMs(a.updatedAt) ?? 0) >= (timestampMs(b.updatedAt) ?? 0) ? a : b;
}
