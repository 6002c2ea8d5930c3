// Subscriptions: the subscribe form on a catalog entry's page, a
// customer's "My services" (live from WatchSubscriptions) and the
// administrators' list of every subscription (filters and pages in the
// URL, suspend with a reason, resume).
import { useEffect, useMemo, useState } from "preact/hooks";
import { catalog, Code, subscriptions } from "../api";
import { Confirm, ErrorBanner, Field, LiveBadge, Notice, PageTitle, Select, TextArea, useAction, useLoad } from "../components";
import { dateTime, plural, subscriptionStatusFromName, subscriptionStatusName, subscriptionStatusWord, timestampMs } from "../format";
import type { Service } from "../gen/minispod/v1/catalog_pb";
import { SubscriptionStatus, type Subscription } from "../gen/minispod/v1/subscriptions_pb";
import { SubscriptionWatch } from "../live";
import { navigate, setQuery, useLocation } from "../router";
import { session } from "../session";
import { checkFields, initialValue, NAME_MAX, NAME_PATTERN, VariableInput } from "../variables";

/** A live SubscriptionWatch for as long as the calling page is shown. */
export function useSubscriptionWatch(all: boolean, id?: string): SubscriptionWatch {
  const watch = useMemo(() => new SubscriptionWatch({ all, id }), [all, id]);
  const [, force] = useState(0);
  useEffect(() => {
    const unsubscribe = watch.subscribe(() => force((n) => n + 1));
    force((n) => n + 1);
    return unsubscribe;
  }, [watch]);
  return watch;
}

/** A subscription's status as a coloured pill (the word is the content). */
export function StatusPill({ status }: { status: SubscriptionStatus }) {
  const name = subscriptionStatusName[status];
  return <span class={`pill s-${name.toLowerCase()}`}>{subscriptionStatusWord[status]}</span>;
}

/** The workers a subscription's pods run on: links for administrators. */
export function Workers({ s }: { s: Subscription }) {
  const seen = new Map<string, { id: string; name: string }>();
  for (const c of s.components) {
    for (const p of c.pods) {
      const name = p.workerName || p.nodeName;
      if (name) seen.set(p.workerId || name, { id: p.workerId, name });
    }
  }
  if (seen.size === 0) return <span class="muted">—</span>;
  return (
    <>
      {[...seen.values()].map((w, i) => (
        <span key={w.id || w.name}>
          {i > 0 && ", "}
          {session.isAdmin && w.id ? <a href={`/workers/${encodeURIComponent(w.id)}`}>{w.name}</a> : w.name}
        </span>
      ))}
    </>
  );
}

/** The subscription's address as an outside link, or a dash. */
export function UrlLink({ url }: { url: string }) {
  if (!url) return <span class="muted">—</span>;
  return (
    <a href={url} target="_blank" rel="noopener noreferrer" class="url">
      {url.replace(/^https?:\/\//, "")}
    </a>
  );
}

/** The subscribe form of a deployable catalog entry. */
export function SubscribeForm({ service }: { service: Service }) {
  const vars = service.template?.variables ?? [];
  const [name, setName] = useState("");
  const [values, setValues] = useState<Record<string, string>>(() => Object.fromEntries(vars.map((v) => [v.name, initialValue(v)])));
  const [local, setLocal] = useState<Record<string, string>>({});
  // The server's own admission checks, read-only: while they refuse (no
  // cluster, no room, the customer's limits), the form says why in the
  // caller's words and Subscribe stays disabled. Looked at again after a
  // refused Subscribe.
  const check = useLoad(() => subscriptions.checkSubscription({ serviceId: service.id }), [service.id]);
  const blocked = check.data && !check.data.allowed ? check.data : undefined;
  const create = useAction(async () => {
    // Empty values are left out, so the server applies the defaults.
    const variables = Object.fromEntries(Object.entries(values).filter(([, v]) => v !== ""));
    try {
      const res = await subscriptions.createSubscription({ serviceId: service.id, name, variables });
      navigate(`/subscriptions/${encodeURIComponent(res.subscription!.id)}`);
    } catch (e) {
      check.reload();
      throw e;
    }
  });
  const p = create.problem;
  const server = { ...(p?.fields ?? {}) };
  // A name already taken is the name field's problem.
  if (p?.code === Code.AlreadyExists && !server.name) server.name = p.message;
  const errors = { ...server, ...local };
  // A refusal the check now shows is not said twice.
  const banner = p && p.code === Code.AlreadyExists ? undefined : blocked && p && p.code !== Code.InvalidArgument ? undefined : p;
  const shown = ["name", ...vars.map((v) => `variables.${v.name}`)];
  return (
    <section class="card" aria-labelledby="subscribe-h">
      <h2 id="subscribe-h">Subscribe</h2>
      <form
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          create.clear();
          const found = checkFields(e.currentTarget);
          setLocal(found);
          if (Object.keys(found).length === 0) void create.act();
        }}
      >
        <ErrorBanner problem={banner} shownFields={shown} />
        {Object.keys(local).length > 0 && (
          <div class="banner error" role="alert">
            <p>Some values need a change: see the marked fields.</p>
          </div>
        )}
        <p class="muted">
          Fields marked <span aria-hidden="true">*</span>
          <span class="sr-only">with a star</span> are required. {service.name} costs the price above each month.
        </p>
        <Field
          label="Name"
          value={name}
          onValue={setName}
          error={errors.name}
          hint={`Lower-case letters, digits and dashes, starting with a letter, 1 to ${NAME_MAX}; part of its address.`}
          required
          pattern={NAME_PATTERN}
          maxLength={NAME_MAX}
          autoComplete="off"
          data-field="name"
        />
        {vars.map((v) => (
          <VariableInput
            key={v.name}
            variable={v}
            field={`variables.${v.name}`}
            value={values[v.name] ?? ""}
            onValue={(x) => setValues({ ...values, [v.name]: x })}
            error={errors[`variables.${v.name}`]}
          />
        ))}
        {blocked && (
          <p id="subscribe-blocked" class="banner warn" role="status">
            {blocked.message}
          </p>
        )}
        <button class="primary" type="submit" disabled={create.busy || !!blocked} aria-describedby={blocked ? "subscribe-blocked" : undefined}>
          {create.busy ? "Subscribing…" : `Subscribe to ${service.name}`}
        </button>
      </form>
    </section>
  );
}

function newestFirst(a: Subscription, b: Subscription): number {
  return (timestampMs(b.createdAt) ?? 0) - (timestampMs(a.createdAt) ?? 0) || a.name.localeCompare(b.name);
}

/** The caller's subscriptions, live. */
export function MyServicesPage() {
  const watch = useSubscriptionWatch(false);
  const rows = useMemo(() => [...watch.items.values()].sort(newestFirst), [watch.version]);
  return (
    <>
      <PageTitle actions={<LiveBadge state={watch.state} />}>My services</PageTitle>
      <p class="muted" aria-live="polite">
        {watch.loaded ? plural(rows.length, "service") : "Loading your services…"}
      </p>
      <div class="table-wrap stack">
        <table>
          <caption class="sr-only">Your subscriptions</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Service</th>
              <th scope="col">Status</th>
              <th scope="col">Address</th>
              <th scope="col">Created</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((s) => (
              <tr key={s.id} data-subscription={s.name} data-status={subscriptionStatusName[s.status]}>
                <td class="stack-title">
                  <a href={`/subscriptions/${encodeURIComponent(s.id)}`}>{s.name}</a>
                </td>
                <td data-label="Service">{s.serviceName || s.serviceSlug}</td>
                <td data-label="Status">
                  <StatusPill status={s.status} />
                  {s.statusReason && <div class="row-result">{s.statusReason}</div>}
                </td>
                <td data-label="Address">
                  <UrlLink url={s.url} />
                </td>
                <td data-label="Created">{dateTime(s.createdAt)}</td>
              </tr>
            ))}
            {watch.loaded && rows.length === 0 && (
              <tr>
                <td colSpan={5} class="muted">
                  You have no services yet. <a href="/catalog">Browse the catalog</a> to subscribe to one.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
    </>
  );
}

const PAGE = 25;

/** Every subscription (administrators): filters, pages, suspend and resume. */
export function SubscriptionsAdminPage() {
  const { query } = useLocation();
  const search = query.get("q") ?? "";
  const statusParam = query.get("status") ?? "";
  const service = query.get("service") ?? "";
  const page = query.get("page") ?? "";
  const status = subscriptionStatusFromName(statusParam) ?? SubscriptionStatus.UNSPECIFIED;
  const [searchText, setSearchText] = useState(search);
  // Page tokens of the pages before this one; a new filter starts over.
  const [tokens, setTokens] = useState<string[]>([]);
  useEffect(() => {
    if (!page) setTokens([]);
  }, [search, statusParam, service, page]);
  const services = useLoad(async () => (await catalog.listAllServices({ pageSize: 500 })).services, []);
  const list = useLoad(() => subscriptions.listSubscriptions({ all: true, pageSize: PAGE, pageToken: page, search, status, serviceId: service }), [search, statusParam, service, page]);
  const [notice, setNotice] = useState("");
  const [suspending, setSuspending] = useState<Subscription>();
  const [reason, setReason] = useState("");
  const replace = (s: Subscription | undefined) => {
    if (!s || !list.data) return;
    list.setData({ ...list.data, subscriptions: list.data.subscriptions.map((x) => (x.id === s.id ? s : x)) });
  };
  const suspend = useAction(async (s: Subscription, why: string) => {
    setNotice("");
    replace((await subscriptions.suspendSubscription({ id: s.id, reason: why })).subscription);
    setSuspending(undefined);
    setNotice(`Suspended ${s.name} of ${s.userEmail}.`);
  });
  const resume = useAction(async (s: Subscription) => {
    setNotice("");
    replace((await subscriptions.resumeSubscription({ id: s.id })).subscription);
    setNotice(`Resumed ${s.name} of ${s.userEmail}.`);
  });
  const rows = list.data?.subscriptions ?? [];
  return (
    <>
      <PageTitle>Subscriptions</PageTitle>
      <form
        class="filters"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          setTokens([]);
          setQuery({ q: searchText, page: undefined });
        }}
      >
        <div class="field">
          <label for="subs-search">Search</label>
          <input id="subs-search" type="search" placeholder="name or owner's email" value={searchText} onInput={(e) => setSearchText(e.currentTarget.value)} />
        </div>
        <Select
          label="Status"
          value={statusParam}
          onValue={(v) => setQuery({ status: v, page: undefined })}
          options={[["", "Any"], ...(Object.keys(subscriptionStatusName).map(Number) as SubscriptionStatus[]).filter((st) => st !== SubscriptionStatus.UNSPECIFIED).map((st): [string, string] => [subscriptionStatusName[st], subscriptionStatusWord[st]])]}
        />
        <Select label="Service" value={service} onValue={(v) => setQuery({ service: v, page: undefined })} options={[["", "Any"], ...(services.data ?? []).map((s): [string, string] => [s.id, s.name])]} />
        <button type="submit">Search</button>
      </form>
      <ErrorBanner problem={list.problem ?? resume.problem ?? (suspending ? undefined : suspend.problem)} />
      {notice && <Notice>{notice}</Notice>}
      <div class="table-wrap stack">
        <table>
          <caption class="sr-only">Subscriptions</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Owner</th>
              <th scope="col">Service</th>
              <th scope="col">Status</th>
              <th scope="col">Workers</th>
              <th scope="col">Created</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((s) => (
              <tr key={s.id} data-subscription={s.name} data-owner={s.userEmail} data-status={subscriptionStatusName[s.status]}>
                <td class="stack-title">
                  <a href={`/subscriptions/${encodeURIComponent(s.id)}`}>{s.name}</a>
                </td>
                <td data-label="Owner">{s.userEmail}</td>
                <td data-label="Service">{s.serviceName || s.serviceSlug}</td>
                <td data-label="Status">
                  <StatusPill status={s.status} />
                  {s.statusReason && <div class="row-result">{s.statusReason}</div>}
                </td>
                <td data-label="Workers">
                  <Workers s={s} />
                </td>
                <td data-label="Created">{dateTime(s.createdAt)}</td>
                <td class="row-actions">
                  {s.status === SubscriptionStatus.SUSPENDED ? (
                    <button type="button" class="small" aria-label={`Resume ${s.name} of ${s.userEmail}`} disabled={resume.busy} onClick={() => void resume.act(s)}>
                      Resume
                    </button>
                  ) : (
                    <button
                      type="button"
                      class="small danger"
                      aria-label={`Suspend ${s.name} of ${s.userEmail}`}
                      disabled={s.status === SubscriptionStatus.DELETING}
                      onClick={() => {
                        suspend.clear();
                        setReason("");
                        setSuspending(s);
                      }}
                    >
                      Suspend
                    </button>
                  )}
                </td>
              </tr>
            ))}
            {list.data && rows.length === 0 && (
              <tr>
                <td colSpan={7} class="muted">
                  No subscription matches.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      <nav class="pager" aria-label="Pages">
        <span>{list.data ? plural(list.data.totalSize, "subscription") : ""}</span>
        <button
          type="button"
          disabled={!page}
          onClick={() => {
            const prev = tokens.slice(0, -1);
            setTokens(prev);
            setQuery({ page: prev[prev.length - 1] });
          }}
        >
          Previous page
        </button>
        <button
          type="button"
          disabled={!list.data?.nextPageToken}
          onClick={() => {
            setTokens([...tokens, list.data!.nextPageToken]);
            setQuery({ page: list.data!.nextPageToken });
          }}
        >
          Next page
        </button>
      </nav>
      <SuspendDialog
        subscription={suspending}
        reason={reason}
        onReason={setReason}
        busy={suspend.busy}
        problem={suspend.problem}
        onCancel={() => setSuspending(undefined)}
        onConfirm={() => suspending && void suspend.act(suspending, reason)}
      />
    </>
  );
}

/** Asks for the reason of a suspension (shown to the customer). */
export function SuspendDialog({ subscription: s, reason, onReason, busy, problem, onCancel, onConfirm }: { subscription: Subscription | undefined; reason: string; onReason: (v: string) => void; busy: boolean; problem: ReturnType<typeof useAction>["problem"]; onCancel: () => void; onConfirm: () => void }) {
  return (
    <Confirm open={!!s} title={`Suspend ${s?.name ?? ""}?`} confirmLabel="Suspend" danger confirmDisabled={busy} onCancel={onCancel} onConfirm={onConfirm}>
      <p>
        Its workloads stop; its data stays. {s?.userEmail} sees the reason. Resume starts it again.
      </p>
      <ErrorBanner problem={problem} shownFields={["reason"]} />
      <TextArea label="Reason" value={reason} onValue={onReason} rows={3} error={problem?.fields.reason} hint="Shown to the customer; at most 500 characters." />
    </Confirm>
  );
}
