// Subscriptions: a customer's "My services" (live from WatchSubscriptions) and the
// administrators' list of every subscription (filters and pages in the
// URL, suspend with a reason, resume).
import { useMemo, useState } from "preact/hooks";
import { catalog, subscriptions } from "../api";
import { ErrorBanner, LiveBadge, Notice, PageTitle, Select, useAction, useLoad } from "../parts/components";
import { dateTime, plural, subscriptionStatusFromName, subscriptionStatusName, subscriptionStatusWord, timestampMs } from "../format";
import { SubscriptionStatus, type Subscription } from "../gen/minispod/v1/subscriptions_pb";
import { useSubscriptionWatch } from "../live";
import { Pager, usePages } from "../parts/pager";
import { StatusPill, SuspendDialog, UrlLink, Workers } from "../parts/subscription";
import { setQuery, useLocation } from "../router";






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
  const pages = usePages([search, statusParam, service]);
  const page = pages.page;
  const status = subscriptionStatusFromName(statusParam) ?? SubscriptionStatus.UNSPECIFIED;
  const [searchText, setSearchText] = useState(search);
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
          pages.startOver();
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
      <Pager pages={pages} summary={list.data ? plural(list.data.totalSize, "subscription") : ""} next={list.data?.nextPageToken} />
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

