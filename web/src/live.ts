// The live fleet: one WatchWorkers stream shared by every page that shows
// workers. It keeps the whole fleet in a Map (snapshot, then changes and
// heartbeat figures),
// tells subscribers at most once per animation frame, and when the stream
// drops (control-plane restart, network) reconnects with capped exponential
// backoff and full jitter, then swaps in the fresh snapshot whole, so
// workers deleted meanwhile disappear too.
//
// The same reconnect loop (followWithBackoff) drives the subscription
// watches: a customer's "My services", one subscription's page.
import { Code, ConnectError } from "@connectrpc/connect";
import { useMemo } from "preact/hooks";
import { subscriptions as subscriptionsApi, workers as api } from "./api";
import { SubscriptionEventType, type Subscription, type SubscriptionEvent } from "./gen/minispod/v1/subscriptions_pb";
import { WorkerEventType, type Worker } from "./gen/minispod/v1/workers_pb";
import { nextBackoff } from "./backoff";
import { NameOrder } from "./order";
import { session } from "./session";
import { useStore } from "./store";

export type LinkState = { kind: "connecting" } | { kind: "live" } | { kind: "reconnecting"; attempt: number; retryAt: number; reason: string };

type Listener = () => void;

/**
 * Runs `connect` (one stream: it calls `live()` once its snapshot is in,
 * and returns or throws when the stream ends) until `signal` aborts,
 * reconnecting with capped exponential backoff and full jitter. An expired
 * access token is refreshed first; PERMISSION_DENIED, NOT_FOUND (a watched
 * subscription that is gone) and UNIMPLEMENTED end the loop (trying again
 * would be refused again).
 */
export async function followWithBackoff(signal: AbortSignal, connect: (live: () => void) => Promise<void>, setState: (s: LinkState) => void) {
  let ceiling = 0;
  let attempt = 0;
  while (!signal.aborted) {
    let reason = "the stream ended";
    let liveSince = 0;
    try {
      await connect(() => {
        liveSince = Date.now();
        setState({ kind: "live" });
      });
    } catch (e) {
      if (signal.aborted) return;
      const err = ConnectError.from(e);
      reason = err.rawMessage || Code[err.code];
      if (err.code === Code.Unauthenticated) {
        // An expired access token ends the stream; a refreshed one resumes
        // it. If the session itself is over, the app shows sign-in.
        if (!(await session.refreshAfterRejection(""))) return;
      } else if (err.code === Code.PermissionDenied || err.code === Code.NotFound || err.code === Code.Unimplemented) {
        setState({ kind: "reconnecting", attempt: 0, retryAt: 0, reason });
        return;
      }
    }
    if (signal.aborted) return;
    // Back off from scratch only after a stream that stayed up a while, so
    // a server that sends a snapshot and drops is not hammered.
    if (liveSince && Date.now() - liveSince > 10_000) {
      ceiling = 0;
      attempt = 0;
    }
    attempt++;
    const next = nextBackoff(ceiling);
    ceiling = next.ceiling;
    setState({ kind: "reconnecting", attempt, retryAt: Date.now() + next.delay, reason });
    await new Promise((r) => setTimeout(r, next.delay));
  }
}

// Giving the browser its turn. Stream events already received are handed
// to the loop below in microtasks, which the browser never interrupts: a
// metrics flush of 10,000 workers arriving in a few large chunks would be
// decoded and applied in one task of a tenth of a second or more, and no
// frame painted meanwhile. The loop therefore yields a task (a
// MessageChannel message: no 4 ms timer clamp) whenever it has worked
// SLICE_MS, so that rendering and input come in between.
const SLICE_MS = 8;
const turns: (() => void)[] = [];
let channel: MessageChannel | undefined;
function nextTask(): Promise<void> {
  if (typeof MessageChannel === "undefined") return new Promise((r) => setTimeout(r, 0));
  if (!channel) {
    channel = new MessageChannel();
    channel.port1.onmessage = () => turns.shift()?.();
  }
  return new Promise((r) => {
    turns.push(r);
    channel!.port2.postMessage(0);
  });
}

/** Calls `flush` once in the next animation frame (a timer in hidden tabs). */
function inNextFrame(flush: () => void): void {
  if (document.hidden) setTimeout(flush, 100);
  else requestAnimationFrame(flush);
}

/**
 * Whether a watch's rows are out of date: it had data and its stream has
 * dropped (reconnecting, or given up) since. Pages show them dimmed with
 * the time of the last update until the fresh snapshot is in.
 */
export function isStale(w: { state: LinkState; lastUpdateAt: number }): boolean {
  return w.lastUpdateAt > 0 && w.state.kind === "reconnecting";
}

class FleetWatch {
  workers = new Map<string, Worker>();
  /** Bumped on every applied change, so views can memoise on it. */
  version = 0;
  /**
   * Bumped when a worker comes, goes or changes other than by its
   * heartbeat figures (a snapshot, an upsert, a delete): a view whose
   * filters and order do not depend on the figures recomputes only then.
   */
  membership = 0;
  /**
   * Every worker's id in name order, kept in step with `workers` (a
   * snapshot sorts once, a change moves one entry), so views filter it in
   * order instead of sorting the whole fleet again.
   */
  byName = new NameOrder((id) => this.workers.get(id));
  /** When the last event (or snapshot) arrived, in ms since the epoch; 0 before any. */
  lastUpdateAt = 0;
  state: LinkState = { kind: "connecting" };
  #listeners = new Set<Listener>();
  #abort: AbortController | undefined;
  #frame = 0;
  #stopTimer: ReturnType<typeof setTimeout> | undefined;

  subscribe(l: Listener): () => void {
    this.#listeners.add(l);
    clearTimeout(this.#stopTimer);
    if (!this.#abort) this.#start();
    return () => {
      this.#listeners.delete(l);
      // Keep the stream a moment so page-to-page navigation reuses it.
      if (this.#listeners.size === 0) this.#stopTimer = setTimeout(() => this.#stop(), 5_000);
    };
  }

  #notify() {
    if (this.#frame) return;
    const flush = () => {
      this.#frame = 0;
      for (const l of this.#listeners) l();
    };
    this.#frame = 1;
    // Hidden tabs get no animation frames; a timer stands in.
    inNextFrame(flush);
  }

  #setState(s: LinkState) {
    // What we hold was current until the stream dropped.
    if (this.state.kind === "live" && s.kind !== "live") this.lastUpdateAt = Date.now();
    this.state = s;
    this.#notify();
  }

  #upsert(w: Worker) {
    this.byName.upsert(this.workers.get(w.id), w);
    this.workers.set(w.id, w);
  }

  #delete(id: string) {
    const old = this.workers.get(id);
    if (!old) return;
    this.byName.remove(old);
    this.workers.delete(id);
  }

  #stop() {
    this.#abort?.abort();
    this.#abort = undefined;
  }

  #start() {
    const abort = new AbortController();
    this.#abort = abort;
    void this.#run(abort.signal);
  }

  async #run(signal: AbortSignal) {
    try {
      await this.#follow(signal);
    } finally {
      // Whatever ended the loop, the next subscriber starts a new one.
      if (this.#abort?.signal === signal) this.#abort = undefined;
    }
  }

  async #follow(signal: AbortSignal) {
    await followWithBackoff(signal, (live) => this.#connect(signal, live), (s) => this.#setState(s));
  }

  /** One connection: the snapshot, then changes until the stream ends. */
  async #connect(signal: AbortSignal, live: () => void) {
    // A snapshot is collected aside and swapped in whole at its end —
    // on every (re)connection, and when the server starts over on the
    // same stream because this client fell behind.
    let fresh: Map<string, Worker> | undefined = new Map();
    // Marks for the console benchmark (web/bench): stream opened, first
    // event, snapshot complete.
    performance.mark("minispod:watch-open");
    let first = true;
    let sliceStart = performance.now();
    for await (const ev of api.watchWorkers({ includeMetrics: true }, { signal })) {
      if (performance.now() - sliceStart > SLICE_MS) {
        await nextTask();
        sliceStart = performance.now();
      }
      const w = ev.worker;
      if (first) {
        performance.mark("minispod:watch-first-event");
        first = false;
      }
      if (ev.type === WorkerEventType.SNAPSHOT && w) {
        fresh ??= new Map();
        fresh.set(w.id, w);
        continue;
      }
      if (ev.type === WorkerEventType.SNAPSHOT_END) {
        performance.mark("minispod:watch-snapshot-end");
        const workers = fresh ?? new Map<string, Worker>();
        this.workers = workers;
        this.byName.reset(workers.values());
        fresh = undefined;
        this.version++;
        this.membership++;
        this.lastUpdateAt = Date.now();
        live();
        continue;
      }
      if (fresh) continue; // changes before the snapshot ends are in it
      this.lastUpdateAt = Date.now();
      if (ev.type === WorkerEventType.UPSERTED && w) {
        this.#upsert(w);
        this.membership++;
      } else if (ev.type === WorkerEventType.DELETED && w) {
        this.#delete(w.id);
        this.membership++;
      } else if (ev.type === WorkerEventType.METRICS && w) {
        // Heartbeat figures only: merged into the worker we have.
        const old = this.workers.get(w.id);
        if (!old) continue;
        // With a linked cluster the event also carries the node's
        // figures; without one they are unset and the old ones stay.
        this.workers.set(w.id, {
          ...old,
          cpuUsedPercent: w.cpuUsedPercent,
          memoryUsedBytes: w.memoryUsedBytes,
          storageUsedBytes: w.storageUsedBytes,
          podCount: w.podCount,
          allocatable: w.allocatable,
          lastHeartbeatAt: w.lastHeartbeatAt,
          allocated: w.allocated ?? old.allocated,
          capacity: w.capacity ?? old.capacity,
          maxPods: w.allocated ? w.maxPods : old.maxPods,
        });
      } else continue;
      this.version++;
      this.#notify();
    }
  }
}

export const fleet = new FleetWatch();

/**
 * A live set of subscriptions from one WatchSubscriptions stream (the
 * caller's, every one with `all`, or a single one with `id`): snapshot
 * swapped in whole at its end, then upserts and deletes; the status changes
 * seen meanwhile are kept too (newest first), for a page's event list.
 * Each page makes its own and stops it when it goes.
 */
export class SubscriptionWatch {
  items = new Map<string, Subscription>();
  /** Status changes received live, newest first (at most 50). */
  events: SubscriptionEvent[] = [];
  /** Bumped on every applied change, so views can memoise on it. */
  version = 0;
  /** Whether a snapshot has arrived yet. */
  loaded = false;
  state: LinkState = { kind: "connecting" };
  #listeners = new Set<Listener>();
  #abort: AbortController | undefined;
  #frame = false;
  readonly #request: { all?: boolean; id?: string };

  constructor(request: { all?: boolean; id?: string }) {
    this.#request = request;
  }

  subscribe(l: Listener): () => void {
    this.#listeners.add(l);
    if (!this.#abort) {
      const abort = new AbortController();
      this.#abort = abort;
      void followWithBackoff(abort.signal, (live) => this.#connect(abort.signal, live), (s) => {
        this.state = s;
        this.#notify();
      });
    }
    return () => {
      this.#listeners.delete(l);
      if (this.#listeners.size === 0) {
        this.#abort?.abort();
        this.#abort = undefined;
      }
    };
  }

  /** Puts a copy an action just returned in place (the stream confirms it later). */
  put(s: Subscription) {
    this.items.set(s.id, s);
    this.version++;
    this.#notify();
  }

  #notify() {
    if (this.#frame) return;
    this.#frame = true;
    inNextFrame(() => {
      this.#frame = false;
      for (const l of this.#listeners) l();
    });
  }

  async #connect(signal: AbortSignal, live: () => void) {
    let fresh: Map<string, Subscription> | undefined = new Map();
    for await (const ev of subscriptionsApi.watchSubscriptions(this.#request, { signal })) {
      const s = ev.subscription;
      if (ev.type === SubscriptionEventType.SNAPSHOT && s) {
        fresh ??= new Map();
        fresh.set(s.id, s);
        continue;
      }
      if (ev.type === SubscriptionEventType.SNAPSHOT_END) {
        this.items = fresh ?? new Map();
        fresh = undefined;
        this.loaded = true;
        this.version++;
        live();
        continue;
      }
      if (fresh) continue; // changes before the snapshot ends are in it
      if (ev.type === SubscriptionEventType.UPSERTED && s) this.items.set(s.id, s);
      else if (ev.type === SubscriptionEventType.DELETED && s) this.items.delete(s.id);
      else continue;
      if (ev.event) this.events = [ev.event, ...this.events].slice(0, 50);
      this.version++;
      this.#notify();
    }
  }
}

/** A live SubscriptionWatch for as long as the calling page is shown. */
export function useSubscriptionWatch(all: boolean, id?: string): SubscriptionWatch {
  return useStore(useMemo(() => new SubscriptionWatch({ all, id }), [all, id]));
}
