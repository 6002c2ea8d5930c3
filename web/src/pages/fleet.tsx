// The fleet: a live table of every worker from the shared WatchWorkers
// stream. Filters and sort live in the URL. Only the rows in view are
// rendered (fixed row height, a spacer for the rest), so 10,000 workers
// scroll smoothly; the heartbeat ages tick once a second. A metrics flush
// (every worker's figures at once) neither filters nor sorts again unless
// the order is by a figure, and then once the flush is over, by numbers
// (web/bench/console-frames.mjs measures the frames). While the stream
// reconnects the table is shown stale.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { PageTitle, Select, StaleNote, useNow } from "../parts/components";
import { ago, bytes, count, percent, plural, statusFromName, statusName, statusWord, timestampMs } from "../format";
import { WorkerStatus, type Worker } from "../gen/minispod/v1/workers_pb";
import { fleet, isStale } from "../live";
import { byFigures, orderIds, Settle, sortKeys, type SortKey } from "../order";
import { LinkBadge } from "../parts/fleet";
import { setQuery, useLocation } from "../router";
import { useStore } from "../store";

const ROW_HEIGHT = 44;
const OVERSCAN = 8;

const columns: [SortKey | undefined, string][] = [
  ["status", "Status"],
  ["name", "Name"],
  ["ip", "IP"],
  ["cpu", "CPU"],
  ["memory", "Memory"],
  ["disk", "Disk"],
  ["heartbeat", "Last heartbeat"],
  [undefined, "Labels"],
];

/** Sets one style property through the CSSOM (the CSP forbids inline style attributes). */
const css = (prop: string, value: string) => (el: HTMLElement | null) => {
  el?.style.setProperty(prop, value);
};

const yesNo = (v: string | null) => (v === "yes" ? true : v === "no" ? false : undefined);

function Meter({ value, label }: { value: number; label: string }) {
  return (
    <span class="meter" title={label}>
      <span class="meter-bar" ref={css("width", `${value.toFixed(0)}%`)} />
      <span class="meter-text">{value.toFixed(0)} %</span>
    </span>
  );
}

/** `version`, following it once it has settled (see Settle in order.ts). */
function useSettled(version: number): number {
  const [settled, setSettled] = useState(version);
  const clock = useMemo(() => new Settle(), []);
  const timer = useRef<ReturnType<typeof setTimeout>>();
  useEffect(() => {
    if (version === settled) return;
    clearTimeout(timer.current);
    timer.current = setTimeout(() => {
      clock.done();
      setSettled(version);
    }, clock.changed(performance.now()));
  }, [version]);
  useEffect(() => () => clearTimeout(timer.current), []);
  return settled;
}

export function FleetPage() {
  const f = useStore(fleet);
  const { query } = useLocation();
  const status = statusFromName(query.get("status"));
  const online = yesNo(query.get("online"));
  const schedulable = yesNo(query.get("schedulable"));
  const search = query.get("q") ?? "";
  const sort = sortKeys.find((k) => k === query.get("sort")) ?? "name";
  const desc = query.get("dir") === "desc";
  const [searchText, setSearchText] = useState(search);

  // The matching workers' ids in name order: filtered again only when a
  // worker comes, goes or changes (not on heartbeat figures, which no
  // filter looks at), walking the fleet's own name order.
  const matching = useMemo(() => {
    const needle = search.trim().toLowerCase();
    const out: string[] = [];
    for (const id of f.byName.ids) {
      const w = f.workers.get(id);
      if (!w) continue;
      if (status !== undefined && w.status !== status) continue;
      if (online !== undefined && w.online !== online) continue;
      if (schedulable !== undefined && w.schedulable !== schedulable) continue;
      if (needle && !w.name.toLowerCase().includes(needle) && !w.ipAddress.includes(needle) && !w.id.startsWith(needle) && !Object.entries(w.labels).some(([k, v]) => `${k}=${v}`.toLowerCase().includes(needle))) continue;
      out.push(id);
    }
    return out;
  }, [f.membership, status, online, schedulable, search]);
  // In the chosen order: by name it is already; the figures' orders sort
  // again once the figures have settled after a change (see Settle), the
  // others only when `matching` does.
  const figures = useSettled(byFigures.has(sort) ? f.version : -1);
  const rows = useMemo(() => {
    return orderIds(matching, sort, desc, (id) => f.workers.get(id)!);
  }, [matching, sort, desc, figures]);

  // Virtual scrolling inside the table body.
  const body = useRef<HTMLDivElement>(null);
  const [scroll, setScroll] = useState({ top: 0, height: 600 });
  useEffect(() => {
    const el = body.current;
    if (!el) return;
    const measure = () => setScroll({ top: el.scrollTop, height: el.clientHeight });
    measure();
    const ro = new ResizeObserver(measure);
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  const now = useNow();
  const stale = isStale(f);

  const first = Math.max(0, Math.floor(scroll.top / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(rows.length, Math.ceil((scroll.top + scroll.height) / ROW_HEIGHT) + OVERSCAN);
  const visible = rows.slice(first, last).map((id) => f.workers.get(id)!);

  const sortBy = (key: SortKey) => setQuery({ sort: key === "name" ? undefined : key, dir: key === sort && !desc ? "desc" : undefined });
  const ariaSort = (key: SortKey | undefined) => (key === sort ? (desc ? "descending" : "ascending") : undefined);

  return (
    <>
      <PageTitle actions={<LinkBadge />}>Fleet</PageTitle>
      <form
        class="filters"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          setQuery({ q: searchText });
        }}
      >
        <div class="field">
          <label for="fleet-search">Search</label>
          <input id="fleet-search" type="search" placeholder="name, IP, id or label" value={searchText} onInput={(e) => {
            setSearchText(e.currentTarget.value);
            setQuery({ q: e.currentTarget.value });
          }} />
        </div>
        <Select label="Status" value={query.get("status") ?? ""} onValue={(v) => setQuery({ status: v })} options={[["", "Any"], ...(Object.keys(statusName).map(Number) as WorkerStatus[]).filter((st) => st !== WorkerStatus.UNSPECIFIED).map((st): [string, string] => [statusName[st], statusWord[st]])]} />
        <Select label="Online" value={query.get("online") ?? ""} onValue={(v) => setQuery({ online: v })} options={[["", "Any"], ["yes", "Online"], ["no", "Offline"]]} />
        <Select label="Schedulable" value={query.get("schedulable") ?? ""} onValue={(v) => setQuery({ schedulable: v })} options={[["", "Any"], ["yes", "Schedulable"], ["no", "Not schedulable"]]} />
      </form>
      <p class="muted" aria-live="polite">
        {f.state.kind === "connecting" ? "Loading the fleet…" : `${count(rows.length)} of ${plural(f.workers.size, "worker")}`}
      </p>
      {stale && <StaleNote id="fleet-stale" since={f.lastUpdateAt} now={now} />}
      <div class={`vtable${stale ? " stale" : ""}`} role="table" aria-label="Workers" aria-rowcount={rows.length + 1} aria-describedby={stale ? "fleet-stale" : undefined}>
        <div role="rowgroup" class="vhead">
          <div role="row" class="vrow" aria-rowindex={1}>
            {columns.map(([key, label]) => (
              <div role="columnheader" class={`c-${key ?? "labels"}`} aria-sort={ariaSort(key)} key={label}>
                {key ? (
                  <button type="button" class="sort" onClick={() => sortBy(key)}>
                    {label}
                    {key === sort ? (desc ? " ↓" : " ↑") : ""}
                  </button>
                ) : (
                  label
                )}
              </div>
            ))}
          </div>
        </div>
        <div role="rowgroup" class="vbody" ref={body} tabIndex={0} aria-label="Worker rows" onScroll={(e) => setScroll({ top: e.currentTarget.scrollTop, height: e.currentTarget.clientHeight })}>
          <div class="vspacer" ref={css("height", `${rows.length * ROW_HEIGHT}px`)}>
            {visible.map((w, i) => (
              <WorkerRow key={w.id} w={w} index={first + i} now={now} />
            ))}
          </div>
          {rows.length === 0 && f.state.kind !== "connecting" && <p class="empty">No worker matches. Workers appear here when they enroll: see <a href="/enrollment">Enrollment</a>.</p>}
        </div>
      </div>
    </>
  );
}

/** A NOT_READY row's fix: the first command of its hint, the whole hint on hover and to screen readers. */
function FixHint({ w }: { w: Worker }) {
  const command = /`([^`]+)`/.exec(w.notReadyHint)?.[1];
  return (
    <a class="fix" href={`/workers/${encodeURIComponent(w.id)}#fix`} title={w.notReadyHint}>
      <span aria-hidden="true">fix: {command ? <code>{command}</code> : "see the worker"}</span>
      <span class="sr-only">How to fix: {w.notReadyHint}</span>
    </a>
  );
}

function WorkerRow({ w, index, now }: { w: Worker; index: number; now: number }) {
  const st = statusName[w.status];
  const word = statusWord[w.status];
  return (
    <div role="row" class="vrow" aria-rowindex={index + 2} data-worker={w.name} data-status={st} ref={css("transform", `translateY(${index * ROW_HEIGHT}px)`)}>
      <div role="cell" class="c-status">
        <span class={`pill s-${st.toLowerCase()}`}>{word}</span>
        <span class={`dot ${w.online ? "on" : "off"}`} title={w.online ? "online" : "offline"}>
          <span class="sr-only">{w.online ? "online" : "offline"}</span>
        </span>
      </div>
      <div role="cell" class="c-name">
        <a href={`/workers/${encodeURIComponent(w.id)}`}>{w.name || w.id}</a>
        {w.cordoned && <span class="tag">cordoned</span>}
        {w.notReadyHint && <FixHint w={w} />}
      </div>
      <div role="cell" class="c-ip">{w.ipAddress || "—"}</div>
      <div role="cell" class="c-cpu">
        <Meter value={w.cpuUsedPercent} label={`CPU ${w.cpuUsedPercent.toFixed(1)} % of ${plural(w.cpuCores, "core")}`} />
      </div>
      <div role="cell" class="c-memory">
        <Meter value={percent(w.memoryUsedBytes, w.memoryBytes)} label={`${bytes(w.memoryUsedBytes)} of ${bytes(w.memoryBytes)}`} />
      </div>
      <div role="cell" class="c-disk">
        <Meter value={percent(w.storageUsedBytes, w.storageBytes)} label={`${bytes(w.storageUsedBytes)} of ${bytes(w.storageBytes)}`} />
      </div>
      <div role="cell" class="c-heartbeat">{ago(timestampMs(w.lastHeartbeatAt), now)}</div>
      <div role="cell" class="c-labels">
        {Object.entries(w.labels)
          .slice(0, 3)
          .map(([k, v]) => (
            <span class="tag" key={k}>
              {k}={v}
            </span>
          ))}
      </div>
    </div>
  );
}
