// One subscription: its status and the cluster's reason, address, the
// post-install notes, components and their pods, its own domains, status
// events, a logs panel (StreamSubscriptionLogs), the variables editor,
// restart and delete
// (the name typed to confirm, optionally backed up first); suspend and
// resume for administrators.
// Live from a WatchSubscriptions stream of this one subscription; the page
// still renders, marked as gone, once it has been deleted.
import { create } from "@bufbuild/protobuf";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { catalog, Code, problem, subscriptions, type Problem } from "../api";
import { nextBackoff } from "../backoff";
import { Checkbox, Confirm, ErrorBanner, Field, LiveBadge, Notice, PageTitle, Select, useAction, useLoad } from "../parts/components";
import { dateTime, money, subscriptionStatusWord, timestampMs } from "../format";
import { TemplateVariableSchema, VariableType, type TemplateVariable } from "../gen/minispod/v1/catalog_pb";
import { SubscriptionStatus, type Subscription, type SubscriptionEvent } from "../gen/minispod/v1/subscriptions_pb";
import { useSubscriptionWatch } from "../live";
import { BackupsCard } from "../parts/backups";
import { SubscriptionHistory } from "../parts/chart";
import { DomainsCard } from "../parts/domains";
import { StatusPill, SuspendDialog, UrlLink } from "../parts/subscription";
import { UpgradeCard } from "../parts/upgrade";
import { AutoUpdateCard } from "../parts/autoupdate";
import { checkFields, VariableInput } from "../parts/variables";
import { navigate } from "../router";
import { session } from "../session";

/** The freshest of two copies, by updated_at. */
function pick(a: Subscription | undefined, b: Subscription | undefined): Subscription | undefined {
  if (!a) return b;
  if (!b) return a;
  return (timestampMs(a.updatedAt) ?? 0) >= (timestampMs(b.updatedAt) ?? 0) ? a : b;
}

const eventKey = (e: SubscriptionEvent) => `${e.status}/${e.at?.seconds ?? 0n}/${e.at?.nanos ?? 0}`;

export function SubscriptionPage({ id }: { id: string }) {
  const loaded = useLoad((signal) => subscriptions.getSubscription({ id }, { signal }), [id]);
  const watch = useSubscriptionWatch(session.isAdmin, id);
  const [local, setLocal] = useState<Subscription>();
  const streamed = watch.items.get(id);
  const s = pick(streamed, pick(local, loaded.data?.subscription));
  // Deleted while shown: the snapshot or a DELETED event no longer has it.
  const gone = watch.loaded && !streamed && !!s;
  const service = useLoad(async () => (s ? (await catalog.getService({ lookup: { case: "id", value: s.serviceId } })).service : undefined), [s?.serviceId]);
  const events = useMemo(() => {
    const all = new Map<string, SubscriptionEvent>();
    for (const e of [...watch.events, ...(loaded.data?.events ?? [])]) all.set(eventKey(e), e);
    return [...all.values()].sort((a, b) => (timestampMs(b.at) ?? 0) - (timestampMs(a.at) ?? 0));
  }, [watch.version, loaded.data]);

  const [done, setDone] = useState("");
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [typed, setTyped] = useState("");
  const [backupFirst, setBackupFirst] = useState(false);
  // Bumped to load the Backups card again (a backup the server started).
  const [backupsKey, setBackupsKey] = useState(0);
  const [suspending, setSuspending] = useState(false);
  const [reason, setReason] = useState("");
  const action = useAction(async (what: string, run: () => Promise<Subscription | undefined>) => {
    setDone("");
    const updated = await run();
    if (updated) {
      setLocal(updated);
      watch.put(updated);
    }
    setDone(what);
  });
  const suspend = useAction(async () => {
    setDone("");
    const updated = (await subscriptions.suspendSubscription({ id, reason })).subscription;
    if (updated) {
      setLocal(updated);
      watch.put(updated);
    }
    setSuspending(false);
    setDone("Suspended.");
  });
  const del = useAction(async () => {
    setDone("");
    const res = await subscriptions.deleteSubscription({ id, backupFirst });
    setConfirmDelete(false);
    if (res.backupId) {
      // It stays (and listed) until its backup completes; if that fails it stays.
      setBackupsKey((k) => k + 1);
      setDone("Backing up; the subscription is deleted once the backup completes. If the backup fails, it stays.");
      return;
    }
    navigate(session.isAdmin && s?.userId !== session.user?.id ? "/subscriptions" : "/my-services");
  });

  if (!s) {
    if (loaded.problem) {
      return (
        <>
          <PageTitle>Subscription</PageTitle>
          <ErrorBanner problem={loaded.problem} />
          <p>
            <a href="/my-services">Back to my services</a>
          </p>
        </>
      );
    }
    return <p class="loading">Loading…</p>;
  }
  const st = s.status;
  const mine = s.userId === session.user?.id;
  const facts: [string, preact.ComponentChildren][] = [
    ["Status", <StatusPill status={st} />],
    ["Reason", s.statusReason || "—"],
    ["Address", s.url ? <>{s.public ? <UrlLink url={s.url} /> : s.url.replace(/^https?:\/\//, "")} {s.public ? "" : <span class="muted">(closed: only its owner)</span>}</> : <UrlLink url={s.url} />],
    ["Service", <a href={`/catalog/${encodeURIComponent(s.serviceSlug)}`}>{s.serviceName || s.serviceSlug}</a>],
    ["Version", s.version || "—"],
    ...(session.isAdmin ? ([["Owner", s.userEmail]] as [string, string][]) : []),
    // Administrators only: the server sends customers no namespace.
    ...(session.isAdmin ? ([["Namespace", s.namespace || "—"]] as [string, string][]) : []),
    ["Price", `${money(s.monthlyPriceCents)} per month`],
    ["Created", dateTime(s.createdAt)],
    ["Status since", dateTime(s.statusChangedAt)],
  ];
  return (
    <>
      <p class="crumbs">
        <a href={mine || !session.isAdmin ? "/my-services" : "/subscriptions"}>{mine || !session.isAdmin ? "My services" : "Subscriptions"}</a> /
      </p>
      <PageTitle
        actions={
          <>
            <LiveBadge state={watch.state} />
            {session.isAdmin &&
              (st === SubscriptionStatus.SUSPENDED ? (
                <button type="button" disabled={action.busy || gone} onClick={() => void action.act("Resumed.", async () => (await subscriptions.resumeSubscription({ id })).subscription)}>
                  Resume
                </button>
              ) : (
                <button
                  type="button"
                  disabled={gone || st === SubscriptionStatus.DELETING}
                  onClick={() => {
                    suspend.clear();
                    setReason("");
                    setSuspending(true);
                  }}
                >
                  Suspend
                </button>
              ))}
            <button type="button" disabled={action.busy || gone || st === SubscriptionStatus.DELETING || st === SubscriptionStatus.SUSPENDED} onClick={() => void action.act("Restarting every component.", async () => (await subscriptions.restartSubscription({ id })).subscription)}>
              Restart
            </button>
            <button
              type="button"
              class="danger"
              disabled={gone || st === SubscriptionStatus.DELETING}
              onClick={() => {
                del.clear();
                setTyped("");
                setBackupFirst(false);
                setConfirmDelete(true);
              }}
            >
              Delete
            </button>
          </>
        }
      >
        {s.name}
      </PageTitle>
      <ErrorBanner problem={action.problem ?? (confirmDelete ? undefined : del.problem)} />
      {done && <Notice>{done}</Notice>}
      {gone && <p class="banner warn">This subscription has been deleted. What you see is how it last was.</p>}
      {!gone && s.statusReason && (st === SubscriptionStatus.FAILED || st === SubscriptionStatus.DEGRADED || st === SubscriptionStatus.SUSPENDED) && (
        <p class={`banner ${st === SubscriptionStatus.SUSPENDED ? "warn" : "error"}`} role="status">
          <strong>{subscriptionStatusWord[st]}:</strong> {s.statusReason}
        </p>
      )}
      {s.url && !gone && st !== SubscriptionStatus.DELETING && (
        <AccessCard
          s={s}
          mine={mine}
          ownerUrl={loaded.data?.subscription?.public === false ? loaded.data.ownerUrl : ""}
          onChanged={(u, what) => {
            setLocal(u);
            watch.put(u);
            // A closed subscription has a new owner's link: fetch it.
            loaded.reload();
            setDone(what);
          }}
        />
      )}
      {!gone && (
        <UpgradeCard
          s={s}
          onUpgraded={(u) => {
            setLocal(u);
            watch.put(u);
            setDone(`Upgrading to ${u.version}.`);
          }}
          onBackupStarted={() => setBackupsKey((k) => k + 1)}
        />
      )}
      {!gone && st !== SubscriptionStatus.DELETING && (
        <AutoUpdateCard
          s={s}
          onSaved={(u) => {
            setLocal(u);
            watch.put(u);
          }}
        />
      )}
      <div class="split">
        <section aria-labelledby="sub-facts-h" class="card">
          <h2 id="sub-facts-h">Overview</h2>
          <dl class="facts">
            {facts.map(([k, v]) => (
              <div key={k}>
                <dt>{k}</dt>
                <dd>{v}</dd>
              </div>
            ))}
          </dl>
        </section>
        <section aria-labelledby="notes-h" class="card">
          <h2 id="notes-h">Notes</h2>
          {s.notes ? <div class="notes">{s.notes}</div> : <p class="muted">This service has no notes.</p>}
        </section>
      </div>
      <Components s={s} />
      {s.url && !gone && st !== SubscriptionStatus.DELETING && <DomainsCard subscriptionId={s.id} />}
      {!gone && <BackupsCard key={backupsKey} s={s} />}
      {!gone && <SubscriptionHistory subscriptionId={s.id} />}
      <LogsPanel s={s} />
      <div class="split">
        <VariablesEditor s={s} templateVariables={service.data?.template?.variables} onSaved={(u) => {
          setLocal(u);
          watch.put(u);
          setDone("Saved the variables; the change rolls out.");
        }} />
        <Events events={events} />
      </div>
      <Confirm
        open={confirmDelete}
        title={`Delete ${s.name}?`}
        confirmLabel="Delete"
        danger
        confirmDisabled={typed !== s.name || del.busy}
        onCancel={() => setConfirmDelete(false)}
        onConfirm={() => void del.act()}
      >
        <p>
          Its workloads are removed from the cluster; its volumes are kept for a while, then they go too. This cannot be undone.
        </p>
        <ErrorBanner problem={del.problem} />
        <Checkbox label="Back it up first" checked={backupFirst} onChecked={setBackupFirst} />
        {backupFirst && <p class="muted">A backup of its volumes is taken first; it is deleted once the backup completes, and stays as it is if the backup fails. The backup is kept after it is gone.</p>}
        <Field label={`Type ${s.name} to confirm`} value={typed} onValue={setTyped} autoComplete="off" />
      </Confirm>
      <SuspendDialog subscription={suspending ? s : undefined} reason={reason} onReason={setReason} busy={suspend.busy} problem={suspend.problem} onCancel={() => setSuspending(false)} onConfirm={() => void suspend.act()} />
    </>
  );
}

function Components({ s }: { s: Subscription }) {
  return (
    <section aria-labelledby="components-h">
      <h2 id="components-h">Components</h2>
      <div class="table-wrap">
        <table>
          <caption class="sr-only">Components and their pods</caption>
          <thead>
            <tr>
              <th scope="col">Component</th>
              <th scope="col">Pod</th>
              <th scope="col">Phase</th>
              <th scope="col">Ready</th>
              <th scope="col">Restarts</th>
              {session.isAdmin && <th scope="col">Worker</th>}
              <th scope="col">Reason</th>
            </tr>
          </thead>
          <tbody>
            {s.components.flatMap((c) =>
              c.pods.length === 0
                ? [
                    <tr key={c.name} data-component={c.name}>
                      <td>{c.name}</td>
                      <td colSpan={session.isAdmin ? 6 : 5} class="muted">
                        No pod yet.
                      </td>
                    </tr>,
                  ]
                : c.pods.map((p) => (
                    <tr key={`${c.name}/${p.name}`} data-component={c.name} data-pod={p.name}>
                      <td>{c.name}</td>
                      <td>
                        <code>{p.name}</code>
                      </td>
                      <td>{p.phase || "—"}</td>
                      <td>{p.ready ? "yes" : "no"}</td>
                      <td>{p.restarts}</td>
                      {session.isAdmin && <td>{p.workerId ? <a href={`/workers/${encodeURIComponent(p.workerId)}`}>{p.workerName || p.nodeName}</a> : p.workerName || p.nodeName || "—"}</td>}
                      <td>{p.reason || "—"}</td>
                    </tr>
                  )),
            )}
            {s.components.length === 0 && (
              <tr>
                <td colSpan={7} class="muted">
                  The cluster has reported no component yet.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
    </section>
  );
}

function Events({ events }: { events: SubscriptionEvent[] }) {
  return (
    <section aria-labelledby="events-h" class="card">
      <h2 id="events-h">Events</h2>
      {events.length === 0 ? (
        <p class="muted">No status change yet.</p>
      ) : (
        <ol class="events">
          {events.map((e) => (
            <li key={eventKey(e)}>
              <StatusPill status={e.status} /> <time>{dateTime(e.at)}</time>
              {e.reason && <div class="event-reason">{e.reason}</div>}
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}

const count = (n: number) => `${n} ${n === 1 ? "line" : "lines"}.`;

/** The most log lines kept (and rendered); older ones are dropped. */
export const MAX_LOG_LINES = 1000;

type LogLine = { n: number; text: string; marker?: boolean };
type LogState = { kind: "streaming" | "ended" } | { kind: "error"; problem: Problem };

function LogsPanel({ s }: { s: Subscription }) {
  const [component, setComponent] = useState("");
  const [tail, setTail] = useState("100");
  // The tail typed applies on Reload, not at every keystroke.
  const [appliedTail, setAppliedTail] = useState("100");
  const [follow, setFollow] = useState(true);
  const [run, setRun] = useState(0);
  const [lines, setLines] = useState<LogLine[]>([]);
  const [dropped, setDropped] = useState(false);
  const [state, setState] = useState<LogState>({ kind: "streaming" });
  const box = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  const tailLines = Math.min(10_000, Math.max(1, Math.round(Number(appliedTail)) || 100));

  useEffect(() => {
    const abort = new AbortController();
    const signal = abort.signal;
    let buffer: LogLine[] = [];
    let n = 0;
    let frame = false;
    let lastPod = "";
    let lastLineAt = 0;
    const push = (text: string, marker = false) => {
      buffer.push({ n: n++, text, marker });
      if (buffer.length > MAX_LOG_LINES) {
        buffer = buffer.slice(buffer.length - MAX_LOG_LINES);
        setDropped(true);
      }
      // One render per frame, however fast the lines come.
      if (!frame) {
        frame = true;
        const flush = () => {
          frame = false;
          if (!signal.aborted) setLines(buffer.slice());
        };
        // Hidden tabs get no animation frames; a timer stands in.
        if (document.hidden) setTimeout(flush, 100);
        else requestAnimationFrame(flush);
      }
    };
    setLines([]);
    setDropped(false);
    (async () => {
      let ceiling = 0;
      let again = false;
      while (!signal.aborted) {
        setState({ kind: "streaming" });
        try {
          // After a follow stream ends (its pod restarted), go on from the
          // last line seen rather than repeating the tail.
          const since = again && lastLineAt ? BigInt(Math.max(1, Math.ceil((Date.now() - lastLineAt) / 1000))) : 0n;
          for await (const res of subscriptions.streamSubscriptionLogs({ id: s.id, component, tailLines: again && lastLineAt ? 10_000 : tailLines, follow, sinceSeconds: since }, { signal })) {
            if (res.pod && res.pod !== lastPod) {
              lastPod = res.pod;
              push(`==> pod ${res.pod} <==`, true);
            }
            for (const line of res.lines) push(line);
            if (res.lines.length) lastLineAt = Date.now();
            ceiling = 0;
          }
          if (!follow) {
            setState({ kind: "ended" });
            return;
          }
          push("— the log stream ended; reconnecting —", true);
        } catch (e) {
          if (signal.aborted) return;
          const p = problem(e);
          if (p.code === Code.Unauthenticated && (await session.refreshAfterRejection(""))) continue;
          setState({ kind: "error", problem: p });
          // No pod runs yet, or the cluster is away: try again while following.
          if (!follow || (p.code !== Code.FailedPrecondition && p.code !== Code.Unavailable)) return;
        }
        again = true;
        const next = nextBackoff(ceiling, 1_000, 15_000);
        ceiling = next.ceiling;
        await new Promise((r) => setTimeout(r, next.delay));
      }
    })();
    return () => abort.abort();
  }, [s.id, component, tailLines, follow, run]);

  // Keep the newest line in view, unless the reader scrolled up.
  useEffect(() => {
    const el = box.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [lines]);

  const components = s.components.map((c) => c.name);
  return (
    <section aria-labelledby="logs-h" class="card logs">
      <h2 id="logs-h">Logs</h2>
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          setAppliedTail(tail);
          setRun((r) => r + 1);
        }}
      >
        <Select label="Component" value={component} onValue={setComponent} options={[["", "The exposed one"], ...components.map((c): [string, string] => [c, c])]} />
        <Field label="Last lines" type="number" min="1" max="10000" step="1" value={tail} onValue={setTail} />
        <Checkbox label="Follow" checked={follow} onChecked={setFollow} />
        <button type="submit">Reload</button>
      </form>
      <p class="muted" aria-live="polite">
        {state.kind === "streaming" ? (follow ? "Following…" : "Loading…") : state.kind === "ended" ? count(lines.filter((l) => !l.marker).length) : ""}
        {dropped && ` Only the last ${MAX_LOG_LINES} lines are kept.`}
      </p>
      {state.kind === "error" && (
        <p class={`banner ${state.problem.code === Code.FailedPrecondition ? "warn" : "error"}`} role="status">
          {state.problem.message}
          {follow && (state.problem.code === Code.FailedPrecondition || state.problem.code === Code.Unavailable) ? " Trying again…" : ""}
        </p>
      )}
      <div
        class="log"
        ref={box}
        role="log"
        aria-label="Log lines"
        tabIndex={0}
        onScroll={(e) => {
          const el = e.currentTarget;
          stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
        }}
      >
        {lines.map((l) => (
          <div key={l.n} class={l.marker ? "log-line marker" : "log-line"}>
            {l.text}
          </div>
        ))}
        {lines.length === 0 && <div class="muted">No lines yet.</div>}
      </div>
    </section>
  );
}

/** The subscription's variables, as the current template describes them. */
function VariablesEditor({ s, templateVariables, onSaved }: { s: Subscription; templateVariables: TemplateVariable[] | undefined; onSaved: (s: Subscription) => void }) {
  // The subscription's own names; the catalog's template (which may have
  // changed since) only lends labels, types and help.
  const vars = useMemo(() => {
    const order = templateVariables?.map((v) => v.name) ?? [];
    const rank = (name: string) => (order.indexOf(name) + 1 || order.length + 1);
    return Object.keys(s.variables)
      .sort((a, b) => rank(a) - rank(b) || a.localeCompare(b))
      .map((name) => templateVariables?.find((v) => v.name === name) ?? create(TemplateVariableSchema, { name, label: name, type: VariableType.STRING }));
  }, [s.variables, templateVariables]);
  const initial = () => Object.fromEntries(Object.entries(s.variables));
  const [values, setValues] = useState<Record<string, string>>(initial);
  const [editing, setEditing] = useState(false);
  const [local, setLocal] = useState<Record<string, string>>({});
  useEffect(() => {
    if (!editing) setValues(initial());
  }, [s.updatedAt?.seconds, s.updatedAt?.nanos, editing]);
  const save = useAction(async () => {
    const changed: Record<string, string> = {};
    for (const v of vars) {
      const value = values[v.name] ?? "";
      // A blank SECRET keeps its value (the server never sends it back).
      if (v.type === VariableType.SECRET ? value !== "" : value !== (s.variables[v.name] ?? "")) changed[v.name] = value;
    }
    if (Object.keys(changed).length === 0) {
      setEditing(false);
      return;
    }
    const res = await subscriptions.updateSubscription({ id: s.id, variables: changed });
    setEditing(false);
    if (res.subscription) onSaved(res.subscription);
  });
  const errors = { ...(save.problem?.fields ?? {}), ...local };
  if (vars.length === 0) {
    return (
      <section aria-labelledby="vars-h" class="card">
        <h2 id="vars-h">Variables</h2>
        <p class="muted">This service has no variables to set.</p>
      </section>
    );
  }
  return (
    <section aria-labelledby="vars-h" class="card">
      <h2 id="vars-h">Variables</h2>
      <form
        noValidate
        onInput={() => setEditing(true)}
        onChange={() => setEditing(true)}
        onSubmit={(e) => {
          e.preventDefault();
          save.clear();
          const found = checkFields(e.currentTarget);
          setLocal(found);
          if (Object.keys(found).length === 0) void save.act();
        }}
      >
        <ErrorBanner problem={save.problem} shownFields={vars.map((v) => `variables.${v.name}`)} />
        {vars.map((v) => (
          <VariableInput
            key={v.name}
            variable={v}
            field={`variables.${v.name}`}
            value={values[v.name] ?? ""}
            onValue={(x) => setValues({ ...values, [v.name]: x })}
            error={errors[`variables.${v.name}`]}
            keepSecret={v.type === VariableType.SECRET}
          />
        ))}
        <div class="actions">
          <button class="primary" type="submit" disabled={save.busy}>
            Save variables
          </button>
          {editing && (
            <button
              type="button"
              onClick={() => {
                setLocal({});
                save.clear();
                setEditing(false);
              }}
            >
              Discard changes
            </button>
          )}
        </div>
      </form>
    </section>
  );
}

/** Who can open the subscription's address: closed to all but its owner
 * (the owner's link lets their browser through) until the owner opens it
 * to everyone (SetSubscriptionAccess), and closed again on demand. */
function AccessCard({ s, mine, ownerUrl, onChanged }: { s: Subscription; mine: boolean; ownerUrl: string; onChanged: (u: Subscription, what: string) => void }) {
  const [asking, setAsking] = useState(false);
  const change = useAction(async () => {
    const updated = (await subscriptions.setSubscriptionAccess({ id: s.id, public: !s.public })).subscription;
    setAsking(false);
    if (updated) {
      onChanged(updated, updated.public ? `${s.name} is open to everyone.` : `${s.name} is closed to all but its owner; the owner's link is new.`);
    }
  });
  const app = s.serviceName || s.serviceSlug;
  return (
    <section aria-labelledby="access-h" class="card">
      <h2 id="access-h">Who can open it</h2>
      {s.public ? (
        <p>Open to everyone who has its address.</p>
      ) : mine ? (
        <>
          <p>
            Only you, for now: {app} lets its first visitor create its administrator, so its address answers nobody but your browser until you open it to everyone. Open it with your link, set it up,
            then open it to everyone.
          </p>
          <p>
            {ownerUrl ? (
              <a class="button primary" href={ownerUrl} target="_blank" rel="noopener noreferrer">
                Open {s.name} as its owner
              </a>
            ) : (
              <span class="muted">Loading your link…</span>
            )}
          </p>
          <p class="muted">Keep the link to yourself: it lets any browser in until you open or close {s.name} again.</p>
        </>
      ) : (
        <p>Closed: only its owner can open it until they open it to everyone.</p>
      )}
      <ErrorBanner problem={asking ? undefined : change.problem} />
      <button
        type="button"
        onClick={() => {
          change.clear();
          setAsking(true);
        }}
      >
        {s.public ? "Close to all but the owner" : "Open to everyone"}
      </button>
      <Confirm
        open={asking}
        title={s.public ? `Close ${s.name} to all but its owner?` : `Open ${s.name} to everyone?`}
        confirmLabel={s.public ? "Close it" : "Open to everyone"}
        confirmDisabled={change.busy}
        onCancel={() => setAsking(false)}
        onConfirm={() => void change.act()}
      >
        {s.public ? (
          <p>Its address will answer only its owner's browser, through a new link shown to the owner. Its pod restarts once.</p>
        ) : (
          <p>Anyone who finds its address reaches {app}. Set up its administrator account first. Its pod restarts once.</p>
        )}
        <ErrorBanner problem={change.problem} />
      </Confirm>
    </section>
  );
}
