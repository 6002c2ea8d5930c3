// A subscription's version (issue #25): "update available" with the notes,
// an Upgrade button that asks UpgradeSubscription for a dry run and shows
// what changes in the Confirm dialog before upgrading, the UPGRADING
// progress, and the reason of an upgrade that was rolled back. Past a
// one-way version with no fresh backup (plan.backup_first, #26) the Confirm
// says a backup is taken first, and the card says the upgrade waits for it.
import { useState } from "preact/hooks";
import { backups, subscriptions } from "../api";
import { usePoll } from "./backups";
import { BackupStatus, type Backup } from "../gen/minispod/v1/backups_pb";
import { Confirm, ErrorBanner, useAction } from "./components";
import { dateTime } from "../format";
import { SubscriptionStatus, type Subscription, type UpgradePlan } from "../gen/minispod/v1/subscriptions_pb";

export function UpgradeCard({ s, onUpgraded, onBackupStarted }: { s: Subscription; onUpgraded: (s: Subscription) => void; onBackupStarted?: () => void }) {
  const [plan, setPlan] = useState<UpgradePlan>();
  // The upgrade that waits for its backup (the response's backup_id).
  const [waiting, setWaiting] = useState<{ from: string; to: string; backupId: string; backup?: Backup }>();
  const ask = useAction(async () => {
    setPlan((await subscriptions.upgradeSubscription({ id: s.id, version: s.latestVersion, dryRun: true })).plan);
  });
  const go = useAction(async () => {
    const res = await subscriptions.upgradeSubscription({ id: s.id, version: plan?.toVersion ?? s.latestVersion });
    setPlan(undefined);
    if (res.backupId) {
      setWaiting({ from: res.plan?.fromVersion ?? s.version, to: res.plan?.toVersion ?? s.latestVersion, backupId: res.backupId });
      onBackupStarted?.();
      return;
    }
    if (res.subscription) onUpgraded(res.subscription);
  });
  const upgrading = s.status === SubscriptionStatus.UPGRADING;
  if (!s.latestVersion && !upgrading && !s.upgradeFailure && !s.versionWithdrawn) return null;
  const busy = s.status === SubscriptionStatus.SUSPENDED || s.status === SubscriptionStatus.DELETING;
  // Until the upgrade starts (or the version moves on), or the backup fails.
  const stayed = !!waiting && !upgrading && s.version === waiting.from;
  const failed = stayed && waiting?.backup?.status === BackupStatus.FAILED;
  const backingUp = stayed && !failed;
  // The backup, asked for every second while the upgrade waits for it.
  const polled = usePoll(
    backingUp,
    async (signal) => {
      if (!waiting) return;
      const b = (await backups.getBackup({ id: waiting.backupId }, { signal })).backup;
      if (b && !signal.aborted) setWaiting((w) => (w && w.backupId === b.id ? { ...w, backup: b } : w));
    },
    [waiting?.backupId],
  );
  return (
    <section class="card" aria-labelledby="upgrade-h" data-upgrade>
      <h2 id="upgrade-h">Version {s.version || "—"}</h2>
      {upgrading && (
        <p class="banner warn" role="status" data-upgrading>
          <strong>Upgrading from {s.upgradingFrom || "an unversioned template"} to {s.version}.</strong> {s.statusReason}
          {s.upgradeDeadline && <> If it is not ready by {dateTime(s.upgradeDeadline)}, the previous version comes back by itself.</>}
        </p>
      )}
      {!upgrading && s.upgradeFailure && (
        <p class="banner error" role="status" data-rolled-back>
          <strong>The last upgrade was rolled back:</strong> {s.upgradeFailure}
        </p>
      )}
      {backingUp && waiting && (
        <p class="banner warn" role="status" data-backing-up>
          <strong>Backing up version {waiting.from || "(unversioned)"} first.</strong> The upgrade to {waiting.to} starts once the backup completes; if the backup fails, {s.name} stays on{" "}
          {waiting.from || "its version"}. Its progress is under Backups.
          {polled && <> (Could not refresh: {polled.message})</>}
        </p>
      )}
      {failed && waiting && (
        <p class="banner error" role="status" data-backup-failed>
          <strong>The backup before the upgrade to {waiting.to} failed, so the upgrade was not done:</strong> {waiting.backup?.reason || "no reason given."}
        </p>
      )}
      {s.versionWithdrawn && !upgrading && <p class="banner warn">Version {s.version} was withdrawn: please move to a newer version.</p>}
      {s.latestVersion && !upgrading && (
        <div data-update-available>
          <p>
            <strong>Update available: {s.latestVersion}</strong>
          </p>
          {s.latestNotes && <div class="notes">{s.latestNotes}</div>}
          <ErrorBanner problem={ask.problem} />
          <div class="actions">
            <button type="button" class="primary" disabled={busy || ask.busy || backingUp} onClick={() => void ask.act()}>
              Upgrade to {s.latestVersion}
            </button>
          </div>
        </div>
      )}
      <Confirm open={!!plan} title={`Upgrade ${s.name} to ${plan?.toVersion ?? ""}?`} confirmLabel="Upgrade" confirmDisabled={go.busy} onCancel={() => setPlan(undefined)} onConfirm={() => void go.act()}>
        {plan && (
          <div data-plan>
            <p>
              From {plan.fromVersion || "an unversioned template"} to {plan.toVersion}. If the new version is not ready in time, the previous one comes back by itself.
            </p>
            {plan.backupFirst && (
              <p class="banner warn" data-backup-first>
                A backup of version {plan.fromVersion || "(unversioned)"} is taken first; the upgrade starts once it completes.
              </p>
            )}
            {plan.imageChanges.length > 0 && (
              <ul>
                {plan.imageChanges.map((c) => (
                  <li key={c.component}>
                    {c.component}: <code>{c.fromImage || "(new)"}</code> → <code>{c.toImage || "(removed)"}</code>
                  </li>
                ))}
              </ul>
            )}
            {plan.variablesAdded.length > 0 && (
              <p>
                New settings: {plan.variablesAdded.map((v) => `${v.label || v.name} = ${v.defaultValue || "(empty)"}`).join(", ")}
              </p>
            )}
            {plan.variablesRemoved.length > 0 && <p>Settings no longer used: {plan.variablesRemoved.join(", ")}</p>}
            {plan.notes
              .filter((n) => n.notes)
              .map((n) => (
                <div key={n.version}>
                  <h3>{n.version}</h3>
                  <div class="notes">{n.notes}</div>
                </div>
              ))}
            <ErrorBanner problem={go.problem} />
          </div>
        )}
      </Confirm>
    </section>
  );
}
