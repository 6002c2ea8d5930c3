// The live fleet: one WatchWorkers stream shared by every page that shows
// workers. It keeps the whole fleet in a Map (snapshot, then changes and
// heartbeat figures),
// tells subscribers at most once per animation frame, and when the stream
// drops (control-plane restart, network) reconnects with capped exponential
// backoff and full jitter, then swaps in the fresh snapshot whole, so
// workers deleted meanwhile disappear too.
import { Code, ConnectError } from "@connectrpc/connect";
import { workers as api } from "./api";
import { WorkerEventType, type Worker } from "./gen/minispod/v1/workers_pb";
import { nextBackoff } from "./backoff";
import { session } from "./session";

export type LinkState = { kind: "connecting" } | { kind: "live" } | { kind: "reconnecting"; attempt: number; retryAt: number; reason: string };

type Listener = () => void;

class FleetWatch {
  workers = new Map<string, Worker>();
  /** Bumped on every applied change, so views can memoise on it. */
  version = 0;
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
    // Hidden tabs get no animation frames; fall back to a timer.
    this.#frame = document.hidden ? (setTimeout(flush, 100) as unknown as number) : requestAnimationFrame(flush);
  }

  #setState(s: LinkState) {
    this.state = s;
    this.#notify();
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
    let ceiling = 0;
    let attempt = 0;
    while (!signal.aborted) {
      let reason = "the stream ended";
      let liveSince = 0;
      try {
        // A snapshot is collected aside and swapped in whole at its end —
        // on every (re)connection, and when the server starts over on the
        // same stream because this client fell behind.
        let fresh: Map<string, Worker> | undefined = new Map();
        // Marks for the console benchmark (web/bench): stream opened, first
        // event, snapshot complete.
        performance.mark("minispod:watch-open");
        let first = true;
        for await (const ev of api.watchWorkers({ includeMetrics: true }, { signal })) {
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
            this.workers = fresh ?? new Map();
            fresh = undefined;
            this.version++;
            liveSince = Date.now();
            this.#setState({ kind: "live" });
            continue;
          }
          if (fresh) continue; // changes before the snapshot ends are in it
          if (ev.type === WorkerEventType.UPSERTED && w) this.workers.set(w.id, w);
          else if (ev.type === WorkerEventType.DELETED && w) this.workers.delete(w.id);
          else if (ev.type === WorkerEventType.METRICS && w) {
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
      } catch (e) {
        if (signal.aborted) return;
        const err = ConnectError.from(e);
        reason = err.rawMessage || Code[err.code];
        if (err.code === Code.Unauthenticated) {
          // An expired access token ends the stream; a refreshed one resumes
          // it. If the session itself is over, the app shows sign-in.
          if (!(await session.refreshAfterRejection(""))) return;
        } else if (err.code === Code.PermissionDenied) {
          this.#setState({ kind: "reconnecting", attempt: 0, retryAt: 0, reason });
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
      this.#setState({ kind: "reconnecting", attempt, retryAt: Date.now() + next.delay, reason });
      await new Promise((r) => setTimeout(r, next.delay));
    }
  }
}

export const fleet = new FleetWatch();
