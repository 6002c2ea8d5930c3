// Formatting of the API's values for people.
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { SubscriptionStatus } from "./gen/minispod/v1/subscriptions_pb";
import { WorkerStatus } from "./gen/minispod/v1/workers_pb";

export function timestampMs(t: Timestamp | undefined): number | undefined {
  if (!t || (t.seconds === 0n && t.nanos === 0)) return undefined;
  return Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6);
}

export function dateTime(t: Timestamp | undefined): string {
  const ms = timestampMs(t);
  return ms === undefined ? "—" : new Date(ms).toLocaleString();
}

/** "3 s ago", "5 min ago", "2 h ago", "4 d ago" relative to `now`. */
export function ago(ms: number | undefined, now: number): string {
  if (ms === undefined) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** "in 6 d", "in 3 h", "expired" */
export function until(ms: number | undefined, now: number): string {
  if (ms === undefined) return "—";
  const s = Math.round((ms - now) / 1000);
  if (s <= 0) return "expired";
  if (s < 3600) return `in ${Math.ceil(s / 60)} min`;
  if (s < 86400) return `in ${Math.floor(s / 3600)} h`;
  return `in ${Math.floor(s / 86400)} d`;
}

export function bytes(n: bigint | number): string {
  let v = Number(n);
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 10 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

export function percent(used: bigint | number, total: bigint | number): number {
  const t = Number(total);
  return t > 0 ? Math.min(100, (Number(used) / t) * 100) : 0;
}

export function money(cents: bigint | number): string {
  return (Number(cents) / 100).toLocaleString(undefined, { style: "currency", currency: "USD" });
}

export const statusName: Record<WorkerStatus, string> = {
  [WorkerStatus.UNSPECIFIED]: "UNKNOWN",
  [WorkerStatus.PENDING]: "PENDING",
  [WorkerStatus.ACTIVE]: "ACTIVE",
  [WorkerStatus.INACTIVE]: "INACTIVE",
  [WorkerStatus.MAINTENANCE]: "MAINTENANCE",
  [WorkerStatus.NOT_READY]: "NOT_READY",
};

export function statusFromName(name: string | null): WorkerStatus | undefined {
  const entry = Object.entries(statusName).find(([, v]) => v === name);
  return entry ? (Number(entry[0]) as WorkerStatus) : undefined;
}

export const subscriptionStatusName: Record<SubscriptionStatus, string> = {
  [SubscriptionStatus.UNSPECIFIED]: "UNKNOWN",
  [SubscriptionStatus.PENDING]: "PENDING",
  [SubscriptionStatus.PROVISIONING]: "PROVISIONING",
  [SubscriptionStatus.RUNNING]: "RUNNING",
  [SubscriptionStatus.DEGRADED]: "DEGRADED",
  [SubscriptionStatus.SUSPENDED]: "SUSPENDED",
  [SubscriptionStatus.DELETING]: "DELETING",
  [SubscriptionStatus.FAILED]: "FAILED",
  [SubscriptionStatus.UPGRADING]: "UPGRADING",
};

export function subscriptionStatusFromName(name: string | null): SubscriptionStatus | undefined {
  const entry = Object.entries(subscriptionStatusName).find(([, v]) => v === name && v !== "UNKNOWN");
  return entry ? (Number(entry[0]) as SubscriptionStatus) : undefined;
}

/** A worker's status in words for people ("Not ready"); `statusName` stays the wire name (URLs, data attributes). */
export const statusWord: Record<WorkerStatus, string> = {
  [WorkerStatus.UNSPECIFIED]: "Unknown",
  [WorkerStatus.PENDING]: "Pending",
  [WorkerStatus.ACTIVE]: "Active",
  [WorkerStatus.INACTIVE]: "Inactive",
  [WorkerStatus.MAINTENANCE]: "Maintenance",
  [WorkerStatus.NOT_READY]: "Not ready",
};

/** A subscription's status in words for people ("Running"); `subscriptionStatusName` stays the wire name. */
export const subscriptionStatusWord: Record<SubscriptionStatus, string> = {
  [SubscriptionStatus.UNSPECIFIED]: "Unknown",
  [SubscriptionStatus.PENDING]: "Pending",
  [SubscriptionStatus.PROVISIONING]: "Provisioning",
  [SubscriptionStatus.RUNNING]: "Running",
  [SubscriptionStatus.DEGRADED]: "Degraded",
  [SubscriptionStatus.SUSPENDED]: "Suspended",
  [SubscriptionStatus.DELETING]: "Deleting",
  [SubscriptionStatus.FAILED]: "Failed",
  [SubscriptionStatus.UPGRADING]: "Upgrading",
};

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

/** A count with the reader's thousands separators: "10,000". */
export function count(n: bigint | number): string {
  return integer.format(n);
}

/** A count and its noun, singular or plural: "1 user", "2 users", "10,000 workers". */
export function plural(n: bigint | number, one: string, many = `${one}s`): string {
  return `${count(n)} ${Number(n) === 1 ? one : many}`;
}
