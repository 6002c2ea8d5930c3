// Pieces of a subscription shown on several pages: its status pill, the
// workers its pods run on, its address, the suspend dialog.
import type { Problem } from "../api";
import { Confirm, ErrorBanner, TextArea } from "./components";
import { subscriptionStatusName, subscriptionStatusWord } from "../format";
import type { SubscriptionStatus, Subscription } from "../gen/minispod/v1/subscriptions_pb";
import { session } from "../session";

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

/** Asks for the reason of a suspension (shown to the customer). */
export function SuspendDialog({ subscription: s, reason, onReason, busy, problem, onCancel, onConfirm }: { subscription: Subscription | undefined; reason: string; onReason: (v: string) => void; busy: boolean; problem: Problem | undefined; onCancel: () => void; onConfirm: () => void }) {
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
