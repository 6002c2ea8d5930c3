// Charts of the history the server keeps (HistoryService): hand-written
// SVG, no chart library. Every chart has a title and a description for
// screen readers, a one-line summary in words, and its figures as a table
// behind "Show the figures" (drawn only when opened: a day has 1,440 steps).
import { useEffect, useState } from "preact/hooks";
import { history, problem as problemOf, type Problem } from "../api";
import { ErrorBanner } from "./components";
import { bytes, subscriptionStatusName, timestampMs } from "../format";
import type { FleetPoint, HistoryWindow, ResourcePoint, SubscriptionPoint } from "../gen/minispod/v1/history_pb";
import { SubscriptionStatus } from "../gen/minispod/v1/subscriptions_pb";

/** The ranges a chart offers, in seconds. */
export const RANGES = [
  { label: "6 h", seconds: 6 * 3600 },
  { label: "24 h", seconds: 24 * 3600 },
  { label: "30 d", seconds: 30 * 86400 },
] as const;

/** How often a chart asks again: once per step of its answer, within these. */
const REFRESH_MIN_MS = 5_000;
const REFRESH_MAX_MS = 60_000;

/** Chooses one of RANGES; a group of toggle buttons. */
export function RangePicker({ value, onValue, label }: { value: number; onValue: (s: number) => void; label: string }) {
  return (
    <div class="range-picker" role="group" aria-label={label}>
      {RANGES.map((r) => (
        <button key={r.seconds} type="button" class={value === r.seconds ? "" : "secondary"} aria-pressed={value === r.seconds} onClick={() => onValue(r.seconds)}>
          {r.label}
        </button>
      ))}
    </div>
  );
}

function rangeLabel(seconds: number): string {
  return RANGES.find((r) => r.seconds === seconds)?.label ?? `${Math.round(seconds / 3600)} h`;
}

function when(ms: number, spanMs: number): string {
  const d = new Date(ms);
  return spanMs > 2 * 86400_000 ? d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) : d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

function durationMs(d: { seconds: bigint; nanos: number } | undefined): number {
  return d ? Number(d.seconds) * 1000 + Math.floor(d.nanos / 1e6) : 0;
}

/** One line of a chart: (time ms, value) pairs, oldest first. */
export interface Series {
  name: string;
  values: [number, number][];
}

const W = 640;
const H = 180;
const PAD = { left: 48, right: 12, top: 10, bottom: 24 };

/**
 * A line chart of `series` over [start, end]; a gap wider than two steps
 * (the worker was offline) breaks the line. `max` is the top of the y axis;
 * `format` writes a value for the axis, the summary and the table.
 */
export function LineChart({ id, title, series, start, end, step, max, format }: { id: string; title: string; series: Series[]; start: number; end: number; step: number; max: number; format: (v: number) => string }) {
  const [showTable, setShowTable] = useState(false);
  const span = Math.max(1, end - start);
  const x = (t: number) => PAD.left + ((t - start) / span) * (W - PAD.left - PAD.right);
  const y = (v: number) => PAD.top + (1 - Math.min(1, Math.max(0, v / (max || 1)))) * (H - PAD.top - PAD.bottom);
  const paths = series.map((s) => {
    let d = "";
    let last = -Infinity;
    for (const [t, v] of s.values) {
      const cmd = t - last > 2 * step ? "M" : "L";
      d += `${cmd}${x(t + step / 2).toFixed(1)},${y(v).toFixed(1)}`;
      last = t;
    }
    return d;
  });
  const first = series[0]?.values ?? [];
  const summary = (() => {
    if (first.length === 0) return `No figures in the last ${rangeLabel(span / 1000)}: nothing reported.`;
    let peak = first[0];
    let sum = 0;
    for (const p of first) {
      sum += p[1];
      if (p[1] > peak[1]) peak = p;
    }
    const latest = first[first.length - 1];
    return `${series[0].name}: mean ${format(sum / first.length)}, peak ${format(peak[1])} at ${when(peak[0], span)}, latest ${format(latest[1])} at ${when(latest[0], span)}.`;
  })();
  const ticks = [0, 0.5, 1].map((f) => f * max);
  return (
    <figure class="chart" aria-labelledby={`${id}-t`}>
      <figcaption id={`${id}-t`}>{title}</figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-labelledby={`${id}-st`} aria-describedby={`${id}-sd`} data-points={first.length}>
        <title id={`${id}-st`}>{title}</title>
        <desc id={`${id}-sd`}>{summary}</desc>
        {ticks.map((v) => (
          <g key={v}>
            <line x1={PAD.left} x2={W - PAD.right} y1={y(v)} y2={y(v)} class="grid" />
            <text x={PAD.left - 6} y={y(v) + 4} text-anchor="end" class="axis">
              {format(v)}
            </text>
          </g>
        ))}
        <text x={PAD.left} y={H - 6} class="axis">
          {when(start, span)}
        </text>
        <text x={W - PAD.right} y={H - 6} text-anchor="end" class="axis">
          {when(end, span)}
        </text>
        {paths.map((d, i) => (
          <path key={i} d={d} class={`line line-${i}`} />
        ))}
        {first.length === 1 && <circle cx={x(first[0][0] + step / 2)} cy={y(first[0][1])} r="3" class="dot" />}
      </svg>
      <p class="chart-summary">{summary}</p>
      <details onToggle={(e) => setShowTable((e.currentTarget as HTMLDetailsElement).open)}>
        <summary>Show the figures</summary>
        {showTable && (
          <table class="chart-table">
            <caption class="sr-only">{title}</caption>
            <thead>
              <tr>
                <th scope="col">From</th>
                {series.map((s) => (
                  <th key={s.name} scope="col">
                    {s.name}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {first.map(([t], i) => (
                <tr key={t}>
                  <td>{new Date(t).toLocaleString()}</td>
                  {series.map((s) => (
                    <td key={s.name}>{s.values[i] ? format(s.values[i][1]) : "—"}</td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </details>
    </figure>
  );
}

/** Loads `load(rangeSeconds)` now, on a range change and once per step of the answer (at most every minute). */
function useHistory<T extends { window?: HistoryWindow }>(load: (rangeSeconds: number, signal: AbortSignal) => Promise<T>, deps: unknown[]) {
  const [range, setRange] = useState<number>(RANGES[0].seconds);
  const [data, setData] = useState<T>();
  const [problem, setProblem] = useState<Problem>();
  useEffect(() => {
    const ctl = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      let every = REFRESH_MAX_MS;
      try {
        const d = await load(range, ctl.signal);
        if (ctl.signal.aborted) return;
        setData(d);
        setProblem(undefined);
        every = Math.min(REFRESH_MAX_MS, Math.max(REFRESH_MIN_MS, durationMs(d.window?.step)));
      } catch (e) {
        if (!ctl.signal.aborted) setProblem(problemOf(e));
      }
      if (!ctl.signal.aborted) timer = setTimeout(run, every);
    };
    void run();
    return () => {
      ctl.abort();
      clearTimeout(timer);
    };
  }, [range, ...deps]);
  return { range, setRange, data, problem };
}

const pct = (v: number) => `${v.toFixed(v >= 10 || v === 0 ? 0 : 1)} %`;
const share = (used: number, total: number) => (total > 0 ? Math.min(100, (used / total) * 100) : 0);

interface Resources {
  window?: HistoryWindow;
  points: (ResourcePoint | FleetPoint)[];
}

/** CPU, memory and disk charts of a worker or of the fleet. */
function ResourceCharts({ id, who, data }: { id: string; who: string; data: Resources }) {
  const w = data.window;
  const start = timestampMs(w?.start) ?? 0;
  const end = timestampMs(w?.end) ?? 0;
  const step = durationMs(w?.step);
  const at = (p: ResourcePoint | FleetPoint) => timestampMs(p.at) ?? 0;
  // Memory and disk as a share of allocatable when known, else in bytes.
  const knowsTotals = data.points.some((p) => p.memoryAllocatableBytes > 0);
  const common = { start, end, step };
  const memory: Series = { name: knowsTotals ? "Memory in use" : "Memory in use (bytes)", values: data.points.map((p) => [at(p), knowsTotals ? share(p.memoryUsedBytes, p.memoryAllocatableBytes) : p.memoryUsedBytes]) };
  const disk: Series = { name: knowsTotals ? "Disk in use" : "Disk in use (bytes)", values: data.points.map((p) => [at(p), knowsTotals ? share(p.storageUsedBytes, p.storageAllocatableBytes) : p.storageUsedBytes]) };
  const byteMax = (s: Series) => Math.max(1, ...s.values.map((v) => v[1])) * 1.1;
  return (
    <div class="charts">
      <LineChart id={`${id}-cpu`} title={`${who}: CPU in use`} series={[{ name: "CPU in use", values: data.points.map((p) => [at(p), p.cpuUsedPercent]) }]} max={100} format={pct} {...common} />
      <LineChart id={`${id}-mem`} title={`${who}: memory in use`} series={[memory]} max={knowsTotals ? 100 : byteMax(memory)} format={knowsTotals ? pct : bytes} {...common} />
      <LineChart id={`${id}-disk`} title={`${who}: disk in use`} series={[disk]} max={knowsTotals ? 100 : byteMax(disk)} format={knowsTotals ? pct : bytes} {...common} />
    </div>
  );
}

/** A worker's CPU, memory and disk over the chosen range. */
export function WorkerHistory({ workerId }: { workerId: string }) {
  const h = useHistory((s, signal) => history.getWorkerHistory({ workerId, range: { seconds: BigInt(s) } }, { signal }), [workerId]);
  return (
    <section aria-labelledby="history-h" class="history">
      <div class="history-head">
        <h2 id="history-h">Use over time</h2>
        <RangePicker value={h.range} onValue={h.setRange} label="Time range of the charts" />
      </div>
      <ErrorBanner problem={h.problem} />
      {h.data ? <ResourceCharts id="worker" who="This worker" data={h.data} /> : !h.problem && <p class="muted">Loading…</p>}
    </section>
  );
}

/** The fleet's CPU, memory and disk over the chosen range. */
export function FleetHistory() {
  const h = useHistory((s, signal) => history.getFleetHistory({ range: { seconds: BigInt(s) } }, { signal }), []);
  const latest = h.data?.points[h.data.points.length - 1];
  return (
    <section aria-labelledby="fleet-history-h" class="history">
      <div class="history-head">
        <h2 id="fleet-history-h">Fleet use over time</h2>
        <RangePicker value={h.range} onValue={h.setRange} label="Time range of the fleet charts" />
      </div>
      <ErrorBanner problem={h.problem} />
      {latest && <p class="muted">{`${Math.round(latest.workers).toLocaleString()} ${Math.round(latest.workers) === 1 ? "worker" : "workers"} reporting in the latest step; CPU is their mean, memory and disk their sums.`}</p>}
      {h.data ? <ResourceCharts id="fleet" who="The fleet" data={h.data} /> : !h.problem && <p class="muted">Loading…</p>}
    </section>
  );
}

const statusClass: Partial<Record<SubscriptionStatus, string>> = {
  [SubscriptionStatus.RUNNING]: "ok",
  [SubscriptionStatus.DEGRADED]: "warn",
  [SubscriptionStatus.FAILED]: "bad",
  [SubscriptionStatus.SUSPENDED]: "off",
  [SubscriptionStatus.DELETING]: "off",
};

/** A subscription's status band and restarts over the chosen range. */
export function SubscriptionHistory({ subscriptionId }: { subscriptionId: string }) {
  const h = useHistory((s, signal) => history.getSubscriptionHistory({ subscriptionId, range: { seconds: BigInt(s) } }, { signal }), [subscriptionId]);
  const [showTable, setShowTable] = useState(false);
  const d = h.data;
  const start = timestampMs(d?.window?.start) ?? 0;
  const end = timestampMs(d?.window?.end) ?? 0;
  const step = durationMs(d?.window?.step);
  const points: SubscriptionPoint[] = d?.points ?? [];
  const span = Math.max(1, end - start);
  const x = (t: number) => PAD.left + ((t - start) / span) * (W - PAD.left - PAD.right);
  const maxRestarts = Math.max(1, ...points.map((p) => Number(p.restarts)));
  // The changes in words: each status from the step it began in.
  const changes: { at: number; status: SubscriptionStatus }[] = [];
  for (const p of points) {
    for (const s of p.statuses) {
      if (changes.length === 0 || changes[changes.length - 1].status !== s) changes.push({ at: timestampMs(p.at) ?? 0, status: s });
    }
  }
  const total = Number(d?.totalRestarts ?? 0n);
  const summary = d
    ? `${changes.length === 0 ? "No status recorded" : `Status: ${changes.map((c) => `${subscriptionStatusName[c.status]} from ${when(c.at, span)}`).join(", ")}`}. ${total.toLocaleString()} ${total === 1 ? "restart" : "restarts"} in the last ${rangeLabel(h.range)}.`
    : "";
  const band = 28;
  const barTop = 44;
  const barH = H - barTop - PAD.bottom;
  return (
    <section aria-labelledby="sub-history-h" class="history">
      <div class="history-head">
        <h2 id="sub-history-h">Status and restarts over time</h2>
        <RangePicker value={h.range} onValue={h.setRange} label="Time range of the chart" />
      </div>
      <ErrorBanner problem={h.problem} />
      {d && (
        <figure class="chart" aria-labelledby="sub-history-t">
          <figcaption id="sub-history-t">Status (band) and container restarts (bars)</figcaption>
          <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-labelledby="sub-history-st" aria-describedby="sub-history-sd" data-points={points.length}>
            <title id="sub-history-st">Status and restarts over the last {rangeLabel(h.range)}</title>
            <desc id="sub-history-sd">{summary}</desc>
            {points.map((p) => {
              const t = timestampMs(p.at) ?? 0;
              const cls = p.status === SubscriptionStatus.UNSPECIFIED ? "none" : statusClass[p.status] ?? "busy";
              const failedInStep = p.statuses.includes(SubscriptionStatus.FAILED) && p.status !== SubscriptionStatus.FAILED;
              return (
                <g key={t}>
                  <rect x={x(t)} y={PAD.top} width={Math.max(0.5, x(t + step) - x(t))} height={band} class={`band ${failedInStep ? "bad" : cls}`} />
                  {p.restarts > 0n && <rect x={x(t)} y={barTop + barH * (1 - Number(p.restarts) / maxRestarts)} width={Math.max(1, x(t + step) - x(t) - 0.5)} height={(barH * Number(p.restarts)) / maxRestarts} class="bar" />}
                </g>
              );
            })}
            <text x={PAD.left - 6} y={PAD.top + 18} text-anchor="end" class="axis">
              status
            </text>
            <text x={PAD.left - 6} y={barTop + 10} text-anchor="end" class="axis">
              {maxRestarts}
            </text>
            <text x={PAD.left - 6} y={H - PAD.bottom} text-anchor="end" class="axis">
              0
            </text>
            <text x={PAD.left} y={H - 6} class="axis">
              {when(start, span)}
            </text>
            <text x={W - PAD.right} y={H - 6} text-anchor="end" class="axis">
              {when(end, span)}
            </text>
          </svg>
          <p class="chart-summary">{summary}</p>
          <details onToggle={(e) => setShowTable((e.currentTarget as HTMLDetailsElement).open)}>
            <summary>Show the figures</summary>
            {showTable && (
              <table class="chart-table">
                <caption class="sr-only">Status and restarts per step</caption>
                <thead>
                  <tr>
                    <th scope="col">From</th>
                    <th scope="col">Status</th>
                    <th scope="col">Restarts</th>
                  </tr>
                </thead>
                <tbody>
                  {points
                    .filter((p) => p.status !== SubscriptionStatus.UNSPECIFIED)
                    .map((p) => (
                      <tr key={String(p.at?.seconds)}>
                        <td>{new Date(timestampMs(p.at) ?? 0).toLocaleString()}</td>
                        <td>{p.statuses.map((s) => subscriptionStatusName[s]).join(" → ")}</td>
                        <td>{p.restarts.toLocaleString()}</td>
                      </tr>
                    ))}
                </tbody>
              </table>
            )}
          </details>
        </figure>
      )}
    </section>
  );
}
