// The administrators' start page: users, catalog, subscriptions and fleet
// figures, the fleet counts live from the shared WatchWorkers stream.
import { useMemo } from "preact/hooks";
import { catalog, subscriptions, users, workers, type Problem } from "../api";
import { ErrorBanner, PageTitle, Stat, StaleNote, useLoad, useNow } from "../parts/components";
import { bytes, count, money, plural, statusWord } from "../format";
import { SubscriptionStatus, type GetSubscriptionStatsResponse } from "../gen/minispod/v1/subscriptions_pb";
import { ClusterLinkState, WorkerStatus } from "../gen/minispod/v1/workers_pb";
import { fleet, isStale } from "../live";
import { FleetHistory } from "../parts/chart";
import { ClusterCard } from "../parts/cluster";
import { LinkBadge } from "../parts/fleet";
import { useStore } from "../store";



const clusterName: Record<ClusterLinkState, string> = {
  [ClusterLinkState.UNSPECIFIED]: "—",
  [ClusterLinkState.UNLINKED]: "not linked",
  [ClusterLinkState.CONNECTING]: "connecting",
  [ClusterLinkState.CONNECTED]: "connected",
  [ClusterLinkState.LOST]: "unreachable",
};

export function DashboardPage() {
  const f = useStore(fleet);
  const stats = useLoad(
    async () => {
      const [u, c, w] = await Promise.all([users.getUserStats({ recentDays: 7 }), catalog.getCatalogStats({}), workers.getWorkerStats({})]);
      return { u, c, w };
    },
    [],
  );
  // Apart from the others, so that its failure leaves the rest standing.
  const subs = useLoad(() => subscriptions.getSubscriptionStats({}), []);
  const live = useMemo(() => {
    const counts = new Map<WorkerStatus, number>();
    let online = 0;
    let schedulable = 0;
    for (const w of f.workers.values()) {
      counts.set(w.status, (counts.get(w.status) ?? 0) + 1);
      if (w.online) online++;
      if (w.schedulable) schedulable++;
    }
    return { counts, online, schedulable, total: f.workers.size };
    // Heartbeat figures change none of these counts.
  }, [f.membership]);
  const stale = isStale(f);
  const d = stats.data;
  return (
    <>
      <PageTitle actions={<LinkBadge />}>Dashboard</PageTitle>
      <ErrorBanner problem={stats.problem} />
      <section aria-labelledby="fleet-h">
        <h2 id="fleet-h">
          <a href="/workers">Fleet</a>
        </h2>
        {stale && <FleetStale />}
        <div class={`stats${stale ? " stale" : ""}`} aria-describedby={stale ? "dashboard-fleet-stale" : undefined}>
          <Stat label="Workers" value={f.state.kind === "connecting" ? "…" : live.total} />
          <Stat label="Online" value={live.online} />
          <Stat label="Schedulable" value={live.schedulable} />
          {[WorkerStatus.ACTIVE, WorkerStatus.NOT_READY, WorkerStatus.INACTIVE, WorkerStatus.MAINTENANCE, WorkerStatus.PENDING].map((st) => (
            <Stat key={st} label={statusWord[st]} value={live.counts.get(st) ?? 0} />
          ))}
        </div>
        {d && (
          <div class="stats">
            <Stat label="CPU in use" value={`${d.w.cpuUtilizationPercent.toFixed(1)} %`} sub={`of ${plural(Math.round(Number(d.w.capacity?.cpuMillicores ?? 0n) / 1000), "core")}`} />
            <Stat label="Memory in use" value={`${d.w.memoryUtilizationPercent.toFixed(1)} %`} sub={`of ${bytes(d.w.capacity?.memoryBytes ?? 0n)}`} />
            <Stat label="Storage in use" value={`${d.w.storageUtilizationPercent.toFixed(1)} %`} sub={`of ${bytes(d.w.capacity?.storageBytes ?? 0n)}`} />
          </div>
        )}
        {d && d.w.clusterLink !== ClusterLinkState.UNLINKED && d.w.clusterLink !== ClusterLinkState.UNSPECIFIED && (
          <div class="stats">
            <Stat label="Cluster" value={clusterName[d.w.clusterLink]} />
            <Stat label="CPU requested" value={`${(Number(d.w.allocated?.cpuMillicores ?? 0n) / 1000).toFixed(1)}`} sub={`of ${(Number(d.w.onlineAllocatable?.cpuMillicores ?? 0n) / 1000).toFixed(1)} allocatable`} />
            <Stat label="Memory requested" value={bytes(d.w.allocated?.memoryBytes ?? 0n)} sub={`of ${bytes(d.w.onlineAllocatable?.memoryBytes ?? 0n)} allocatable`} />
            <Stat label="Pods" value={Number(d.w.allocated?.pods ?? 0n)} sub={`${count(d.w.headroom?.pods ?? 0n)} more fit`} />
          </div>
        )}
      </section>
      <ClusterCard />
      <FleetHistory />
      <SubscriptionsTile stats={subs.data} problem={subs.problem} />
      {d && (
        <section aria-labelledby="users-h">
          <h2 id="users-h">
            <a href="/users">Users</a>
          </h2>
          <div class="stats">
            <Stat label="Accounts" value={d.u.total} />
            <Stat label="Active" value={d.u.active} />
            <Stat label="Administrators" value={d.u.administrators} />
            <Stat label={`New in ${d.u.recentDays} days`} value={d.u.recentSignups} />
          </div>
        </section>
      )}
      {d && (
        <section aria-labelledby="catalog-h">
          <h2 id="catalog-h">
            <a href="/catalog">Catalog</a>
          </h2>
          <div class="stats">
            <Stat label="Services" value={d.c.total} />
            <Stat label="Active" value={d.c.active} />
            <Stat label="Inactive" value={d.c.inactive} />
            <Stat label="Average price" value={money(d.c.averageMonthlyPriceCents)} sub="per month" />
          </div>
        </section>
      )}
    </>
  );
}

/** The live fleet counts' "last update … ago" while the stream reconnects (its own component: it ticks every second). */
function FleetStale() {
  return <StaleNote id="dashboard-fleet-stale" since={fleet.lastUpdateAt} now={useNow()} />;
}

function SubscriptionsTile({ stats, problem }: { stats: GetSubscriptionStatsResponse | undefined; problem: Problem | undefined }) {
  if (!stats && !problem) return null;
  const count = (st: SubscriptionStatus) => stats?.byStatus.find((c) => c.status === st)?.count ?? 0n;
  return (
    <section aria-labelledby="subs-h">
      <h2 id="subs-h">
        <a href="/subscriptions">Subscriptions</a>
      </h2>
      <ErrorBanner problem={problem} />
      {stats && (
        <div class="stats">
          <Stat label="Subscriptions" value={stats.total} />
          <Stat label="Running" value={count(SubscriptionStatus.RUNNING)} />
          <Stat label="Degraded or failed" value={count(SubscriptionStatus.DEGRADED) + count(SubscriptionStatus.FAILED)} />
          <Stat label="Suspended" value={count(SubscriptionStatus.SUSPENDED)} />
          <Stat label="Monthly revenue" value={money(stats.monthlyRevenueCents)} sub="suspended ones not counted" />
        </div>
      )}
    </section>
  );
}
