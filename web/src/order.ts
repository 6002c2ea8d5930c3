// The fleet's orders, fast enough for 10,000 workers on every metrics
// flush: the name order kept in step with the changes (a snapshot sorts
// once, a change moves one entry) and every other order as numbers.
import { percent, statusWord, timestampMs } from "./format";
import type { WorkerStatus, Worker } from "./gen/minispod/v1/workers_pb";

/** The console's name order: Intl's, as localeCompare, but compiled once. */
export const byName = new Intl.Collator().compare;

/** Orders workers by name, then id (names need not be unique). */
export function compareWorkers(a: Worker, b: Worker): number {
  return byName(a.name, b.name) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/**
 * Worker ids in name order over a map of workers that the caller changes
 * through it: `upsert` before the map holds the new copy, `remove` while
 * it still holds the old one.
 */
export class NameOrder {
  ids: string[] = [];
  readonly #get: (id: string) => Worker | undefined;

  constructor(get: (id: string) => Worker | undefined) {
    this.#get = get;
  }

  /** Sorts `workers` whole (a snapshot). */
  reset(workers: Iterable<Worker>) {
    this.ids = [...workers].sort(compareWorkers).map((w) => w.id);
  }

  /** Where `w` sits, or would sit (binary search). */
  #position(w: Worker): number {
    let lo = 0;
    let hi = this.ids.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const other = this.#get(this.ids[mid]!);
      if (other && compareWorkers(other, w) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Takes `old` (the copy the map still holds) out. */
  remove(old: Worker) {
    const at = this.#position(old);
    if (this.ids[at] === old.id) this.ids.splice(at, 1);
    else {
      // Not where its name says: a scan rather than losing it.
      const i = this.ids.indexOf(old.id);
      if (i >= 0) this.ids.splice(i, 1);
    }
  }

  /** Puts `w` in place of `old` (the map's copy, if any): moves only when the name changed. */
  upsert(old: Worker | undefined, w: Worker) {
    if (old && old.name === w.name) return;
    if (old) this.remove(old);
    this.ids.splice(this.#position(w), 0, w.id);
  }
}

export type SortKey = "name" | "status" | "ip" | "cpu" | "memory" | "disk" | "heartbeat";
export const sortKeys: SortKey[] = ["name", "status", "ip", "cpu", "memory", "disk", "heartbeat"];
/** The orders that heartbeat figures change: they sort again on every metrics flush. */
export const byFigures = new Set<SortKey>(["cpu", "memory", "disk", "heartbeat"]);

// Statuses in the alphabetical order of their words.
const statusRank = new Map(
  (Object.keys(statusWord).map(Number) as WorkerStatus[]).sort((a, b) => byName(statusWord[a], statusWord[b])).map((st, i) => [st, i]),
);

/** An IPv4 address as one number ("" first); anything else is NaN. */
function ipv4(ip: string): number {
  if (!ip) return -1;
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  return m ? ((Number(m[1]) * 256 + Number(m[2])) * 256 + Number(m[3])) * 256 + Number(m[4]) : NaN;
}
const byNumbers = new Intl.Collator(undefined, { numeric: true }).compare;

/**
 * Each order but the name's as one number per worker, smaller first
 * (ties keep the name order). Numbers sort fast: the whole fleet in a few
 * milliseconds, where comparing strings took a frame's budget many times over.
 */
export function sortKey(sort: Exclude<SortKey, "name">, ws: Worker[]): Float64Array {
  const k = new Float64Array(ws.length);
  switch (sort) {
    case "status":
      ws.forEach((w, i) => (k[i] = statusRank.get(w.status) ?? 0));
      break;
    case "ip": {
      // IPv4 by value, then anything else (IPv6) in numeric collation.
      const other = [...new Set(ws.map((w) => w.ipAddress).filter((ip) => Number.isNaN(ipv4(ip))))].sort(byNumbers);
      const rank = new Map(other.map((ip, i) => [ip, 2 ** 32 + i]));
      ws.forEach((w, i) => (k[i] = rank.get(w.ipAddress) ?? ipv4(w.ipAddress)));
      break;
    }
    case "cpu":
      ws.forEach((w, i) => (k[i] = w.cpuUsedPercent));
      break;
    case "memory":
      ws.forEach((w, i) => (k[i] = percent(w.memoryUsedBytes, w.memoryBytes)));
      break;
    case "disk":
      ws.forEach((w, i) => (k[i] = percent(w.storageUsedBytes, w.storageBytes)));
      break;
    case "heartbeat":
      ws.forEach((w, i) => (k[i] = -(timestampMs(w.lastHeartbeatAt) ?? 0)));
      break;
  }
  return k;
}

/**
 * `ids` (in name order) in the order `sort` says, descending with `desc`;
 * ties stay in name order. Each key is scaled to 32 bits and packed with
 * its index into one double (key × 2^bits + index), so a plain numeric
 * sort of a Float64Array (native, no comparator calls) puts them in order,
 * ties by index: several times faster than a comparator over 10,000. Keys
 * closer than a 2^32th of their range compare equal (then by name).
 */
export function orderIds(ids: string[], sort: SortKey, desc: boolean, get: (id: string) => Worker): string[] {
  if (sort === "name") return desc ? [...ids].reverse() : ids;
  const n = ids.length;
  const k = sortKey(sort, ids.map(get));
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = k[i]!;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const top = 2 ** 32 - 1;
  const scale = max > min ? top / (max - min) : 0;
  const shift = 2 ** Math.max(1, Math.ceil(Math.log2(n + 1)));
  const packed = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const v = k[i]!;
    const q = Number.isNaN(v) ? top : Math.floor((v - min) * scale);
    packed[i] = (desc ? top - q : q) * shift + i;
  }
  packed.sort();
  const out = new Array<string>(n);
  for (let j = 0; j < n; j++) {
    const v = packed[j]!;
    out[j] = ids[v - Math.floor(v / shift) * shift]!;
  }
  return out;
}

/**
 * When a view ordered by a figure sorts again. A metrics flush brings every
 * worker's figures over several frames (the stream yields every few
 * milliseconds); sorting 10,000 rows in each of those frames, on top of
 * the stream's own work, made frames of 51–67 ms on a busy machine. So the
 * order follows the figures once they have been still for `quiet` ms (the
 * flush is over: one sort, in a frame of its own), or `max` ms after they
 * first changed when they never rest. Meanwhile the rows keep their places
 * and show the new figures. A new filter or order sorts at once.
 */
export class Settle {
  #first = -1;
  #last = -1;
  constructor(
    readonly quiet = 250,
    readonly max = 1_500,
  ) {}

  /** The figures changed at `now` (ms): how long until the view should sort again. */
  changed(now: number): number {
    if (this.#first < 0) this.#first = now;
    this.#last = now;
    return Math.max(0, Math.min(this.#last + this.quiet, this.#first + this.max) - now);
  }

  /** The view sorted again: the next change starts a new wait. */
  done() {
    this.#first = -1;
    this.#last = -1;
  }
}
