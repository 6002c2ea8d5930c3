// An administrator's notices (parts/notices.tsx), the thresholds on the
// workers' figures with the ones crossed now, and the outbox every mail and
// webhook goes through, with the failed ones to retry.
import { useEffect, useState } from "preact/hooks";
import { notifications } from "../api";
import { Checkbox, ErrorBanner, Field, Notice, PageTitle, useAction, useLoad } from "../parts/components";
import { NoticePreferences } from "../parts/notices";
import { dateTime } from "../format";
import { OutboxKind, OutboxStatus, WorkerMetric, type OutboxMessage, type WorkerThreshold } from "../gen/minispod/v1/notifications_pb";
import { setQuery, useLocation } from "../router";

const metrics: [WorkerMetric, string][] = [
  [WorkerMetric.CPU, "CPU"],
  [WorkerMetric.MEMORY, "Memory"],
  [WorkerMetric.DISK, "Disk"],
];

type Row = { on: boolean; above: string; clear: string; seconds: string };

const blank: Row = { on: false, above: "90", clear: "80", seconds: "300" };

// The fleet-wide thresholds as a form, one row per metric; the workers' own
// thresholds are kept as they are when saving.
function Thresholds() {
  const loaded = useLoad(() => notifications.getWorkerThresholds({}), []);
  const [rows, setRows] = useState<Record<number, Row>>({});
  const [saved, setSaved] = useState("");
  const fill = (list: WorkerThreshold[]) => {
    const next: Record<number, Row> = {};
    for (const [m] of metrics) {
      const t = list.find((t) => t.metric === m && t.workerId === "");
      next[m] = t ? { on: true, above: String(t.abovePercent), clear: String(t.clearBelowPercent), seconds: String(t.forSeconds) } : { ...blank };
    }
    setRows(next);
  };
  useEffect(() => {
    if (loaded.data) fill(loaded.data.thresholds);
  }, [loaded.data]);
  const own = (loaded.data?.thresholds ?? []).filter((t) => t.workerId !== "");
  const save = useAction(async () => {
    setSaved("");
    const fleet = metrics
      .filter(([m]) => rows[m]?.on)
      .map(([m]) => ({ metric: m, workerId: "", abovePercent: Number(rows[m].above), clearBelowPercent: Number(rows[m].clear), forSeconds: Number(rows[m].seconds) }));
    const res = await notifications.setWorkerThresholds({ thresholds: [...fleet, ...own] });
    fill(res.thresholds);
    setSaved("Thresholds saved.");
  });
  const set = (m: WorkerMetric, change: Partial<Row>) => setRows({ ...rows, [m]: { ...(rows[m] ?? blank), ...change } });
  const problem = save.problem;
  const fieldOf = (m: WorkerMetric, name: string) => {
    const i = metrics.filter(([k]) => rows[k]?.on).findIndex(([k]) => k === m);
    return i < 0 ? undefined : problem?.fields[`thresholds[${i}].${name}`];
  };
  return (
    <section class="card" aria-labelledby="thresholds-h">
      <h2 id="thresholds-h">Worker thresholds</h2>
      <p class="muted">Told once when a worker stays at or above a level for the duration, and once when it then stays below the clear level as long. Choose the events above to hear of them.</p>
      <ErrorBanner problem={loaded.problem} />
      <form
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          void save.act();
        }}
      >
        <ErrorBanner problem={problem} shownFields={metrics.flatMap((_, i) => ["above_percent", "clear_below_percent", "for_seconds"].map((f) => `thresholds[${i}].${f}`))} />
        {saved && <Notice>{saved}</Notice>}
        {metrics.map(([m, label]) => {
          const r = rows[m] ?? blank;
          return (
            <fieldset key={m} data-metric={label}>
              <legend>{label}</legend>
              <Checkbox label={`Watch ${label.toLowerCase()} on every worker`} checked={r.on} onChecked={(on) => set(m, { on })} />
              {r.on && (
                <div class="split">
                  <Field label={`${label}: told at or above (%)`} type="number" value={r.above} onValue={(above) => set(m, { above })} error={fieldOf(m, "above_percent")} />
                  <Field label={`${label}: cleared below (%)`} type="number" value={r.clear} onValue={(clear) => set(m, { clear })} error={fieldOf(m, "clear_below_percent")} />
                  <Field label={`${label}: for (seconds)`} type="number" value={r.seconds} onValue={(seconds) => set(m, { seconds })} error={fieldOf(m, "for_seconds")} />
                </div>
              )}
            </fieldset>
          );
        })}
        {own.length > 0 && <p class="muted">{own.length} threshold(s) of single workers are kept as they are.</p>}
        <button class="primary" type="submit" disabled={save.busy || !loaded.data}>
          Save thresholds
        </button>
      </form>
      <h3>Crossed now</h3>
      {(loaded.data?.crossed ?? []).length === 0 ? (
        <p class="muted">None.</p>
      ) : (
        <ul>
          {loaded.data!.crossed.map((c) => (
            <li key={`${c.workerId}-${c.metric}`}>
              <a href={`/workers/${encodeURIComponent(c.workerId)}`}>{c.workerName}</a>: {metrics.find(([m]) => m === c.metric)?.[1]} at {c.percent.toFixed(1)}% since {dateTime(c.since)}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

const statusText: Record<OutboxStatus, string> = {
  [OutboxStatus.UNSPECIFIED]: "unknown",
  [OutboxStatus.PENDING]: "pending",
  [OutboxStatus.SENT]: "sent",
  [OutboxStatus.FAILED]: "failed",
};

function Outbox() {
  const { query } = useLocation();
  const onlyFailed = query.get("status") === "failed";
  const [extra, setExtra] = useState<OutboxMessage[]>([]);
  const [next, setNext] = useState("");
  const list = useLoad(async () => {
    const res = await notifications.listOutboxMessages({ status: onlyFailed ? OutboxStatus.FAILED : OutboxStatus.UNSPECIFIED, pageSize: 50 });
    setExtra([]);
    setNext(res.nextPageToken);
    return res;
  }, [onlyFailed]);
  const more = useAction(async () => {
    const res = await notifications.listOutboxMessages({ status: onlyFailed ? OutboxStatus.FAILED : OutboxStatus.UNSPECIFIED, pageSize: 50, pageToken: next });
    setExtra([...extra, ...res.messages]);
    setNext(res.nextPageToken);
  });
  const retry = useAction(async (id: string) => {
    await notifications.retryOutboxMessage({ id });
    list.reload();
  });
  const rows = [...(list.data?.messages ?? []), ...extra];
  return (
    <section aria-labelledby="outbox-h">
      <div class="page-head">
        <h2 id="outbox-h">Outbox</h2>
        <Checkbox label="Only failed" checked={onlyFailed} onChecked={(on) => setQuery({ status: on ? "failed" : undefined })} />
        <button type="button" onClick={() => list.reload()}>
          Refresh
        </button>
      </div>
      {list.data && (
        <p role="status">
          {String(list.data.pending)} waiting to be sent, {String(list.data.failed)} failed.
        </p>
      )}
      <ErrorBanner problem={list.problem ?? retry.problem ?? more.problem} />
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">Queued</th>
              <th scope="col">Kind</th>
              <th scope="col">To</th>
              <th scope="col">Subject</th>
              <th scope="col">Status</th>
              <th scope="col">Tries</th>
              <th scope="col">Last error</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((m) => (
              <tr key={m.id} data-message={m.id} data-status={statusText[m.status]}>
                <td>{dateTime(m.createdAt)}</td>
                <td>{m.kind === OutboxKind.MAIL ? "mail" : "webhook"}</td>
                <td class="wrap">{m.recipient}</td>
                <td>
                  {m.subject}
                  <div class="muted">{m.purpose}</div>
                </td>
                <td>
                  {statusText[m.status]}
                  {m.status === OutboxStatus.PENDING && m.nextAttemptAt && <div class="muted">next try {dateTime(m.nextAttemptAt)}</div>}
                  {m.status === OutboxStatus.SENT && <div class="muted">{dateTime(m.sentAt)}</div>}
                </td>
                <td>{m.attempts}</td>
                <td class="wrap">{m.lastError || <span class="muted">—</span>}</td>
                <td>
                  {m.status === OutboxStatus.FAILED && (
                    <button type="button" class="small" aria-label={`Retry ${m.subject} to ${m.recipient}`} disabled={retry.busy} onClick={() => void retry.act(m.id)}>
                      Retry
                    </button>
                  )}
                </td>
              </tr>
            ))}
            {list.data && rows.length === 0 && (
              <tr>
                <td colSpan={8} class="muted">
                  {onlyFailed ? "No failed messages." : "Nothing was sent yet."}
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      {next && (
        <button type="button" disabled={more.busy} onClick={() => void more.act()}>
          Show older
        </button>
      )}
    </section>
  );
}

export function NotificationsPage() {
  return (
    <>
      <PageTitle>Notifications</PageTitle>
      <NoticePreferences customer={false} />
      <Thresholds />
      <Outbox />
    </>
  );
}
