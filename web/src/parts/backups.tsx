// A subscription's backups (issue #26): "Back up now", the list of its
// backups with their status, trigger, size and what each uploaded, the
// progress of one that runs (GetBackup polled every second), a restore into
// the same subscription behind a Confirm, or into a new subscription under
// a name the customer gives, followed the same way (GetRestore), and the
// daily schedule with its retention and weekly restore drill. A complete
// backup's volumes download one by one as tar archives (a one-time link
// asked for on click, CreateBackupDownload) and a restore drill can be
// tried on it (StartRestoreDrill, followed like a restore). The states and
// refusals are the server's: this card shows them.
import { useEffect, useState } from "preact/hooks";
import { backups, Code, problem, type Problem } from "../api";
import { bytes, dateTime, timestampMs } from "../format";
import { BackupStatus, BackupTrigger, RestoreStatus, type Backup, type BackupSchedule, type Restore } from "../gen/minispod/v1/backups_pb";
import { SubscriptionStatus, type Subscription } from "../gen/minispod/v1/subscriptions_pb";
import { Checkbox, Confirm, ErrorBanner, Field, Notice, useAction, useLoad } from "./components";

/** How often a running backup or restore is asked for again, ms. */
export const POLL_MS = 1000;

export const backupStatusWord: Record<BackupStatus, string> = {
  [BackupStatus.UNSPECIFIED]: "Unknown",
  [BackupStatus.PENDING]: "Pending",
  [BackupStatus.RUNNING]: "Running",
  [BackupStatus.COMPLETE]: "Complete",
  [BackupStatus.FAILED]: "Failed",
};

export const restoreStatusWord: Record<RestoreStatus, string> = {
  [RestoreStatus.UNSPECIFIED]: "Unknown",
  [RestoreStatus.PENDING]: "Pending",
  [RestoreStatus.RUNNING]: "Running",
  [RestoreStatus.COMPLETE]: "Complete",
  [RestoreStatus.FAILED]: "Failed",
};

/** The status as a pill class (reusing the subscription pills' colours). */
const pillClass: Record<BackupStatus, string> = {
  [BackupStatus.UNSPECIFIED]: "s-pending",
  [BackupStatus.PENDING]: "s-pending",
  [BackupStatus.RUNNING]: "s-provisioning",
  [BackupStatus.COMPLETE]: "s-running",
  [BackupStatus.FAILED]: "s-failed",
};

export const triggerWord: Record<BackupTrigger, string> = {
  [BackupTrigger.UNSPECIFIED]: "—",
  [BackupTrigger.MANUAL]: "On demand",
  [BackupTrigger.SCHEDULE]: "Schedule",
  [BackupTrigger.BEFORE_UPGRADE]: "Before an upgrade",
  [BackupTrigger.BEFORE_DELETE]: "Before deleting",
};

/** What started a backup, in words, with the version an upgrade waits to move to. */
export function triggerLabel(b: Backup): string {
  if (b.trigger === BackupTrigger.BEFORE_UPGRADE && b.upgradeTo) return `Before the upgrade to ${b.upgradeTo}`;
  return triggerWord[b.trigger];
}

/**
 * Asks for a one-time link to volume `claim` of backup `backupId` and has
 * the browser download it at once (the link works once, for five minutes:
 * it is asked for on click, never ahead).
 */
export async function downloadVolume(backupId: string, claim: string): Promise<void> {
  const res = await backups.createBackupDownload({ backupId, claim });
  const a = document.createElement("a");
  a.href = res.url;
  a.download = res.fileName;
  a.hidden = true;
  document.body.append(a);
  try {
    a.click();
  } finally {
    a.remove();
  }
}

export function BackupPill({ status }: { status: BackupStatus }) {
  return (
    <span class={`pill ${pillClass[status]}`} data-status={BackupStatus[status]}>
      {backupStatusWord[status]}
    </span>
  );
}

export const backupRunning = (b: Backup) => b.status === BackupStatus.PENDING || b.status === BackupStatus.RUNNING;
const restoreRunning = (r: Restore) => r.status === RestoreStatus.PENDING || r.status === RestoreStatus.RUNNING;

/** "1 h 5 min", "3 min 20 s", "12 s"; "unknown" for -1. */
export function duration(seconds: bigint | number): string {
  const s = Number(seconds);
  if (s < 0) return "unknown";
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** Bytes done of total as a bar and in words, with the rate and time left when known. */
export function Progress({ label, done, total, rate, remaining }: { label: string; done: bigint; total: bigint; rate?: bigint; remaining?: bigint }) {
  const counted = total > 0n;
  return (
    <div class="backup-progress" data-progress>
      {/* Without a total the bar is indeterminate (no value). */}
      <progress aria-label={label} max={counted ? Number(total) : undefined} value={counted ? Number(done) : undefined} />
      <span data-progress-text>
        {counted ? `${bytes(done)} of ${bytes(total)}` : `${bytes(done)} (counting the size…)`}
        {rate !== undefined && rate > 0n && ` · ${bytes(rate)}/s`}
        {remaining !== undefined && ` · time left: ${duration(remaining)}`}
      </span>
    </div>
  );
}

/**
 * Calls `tick` every POLL_MS while `on`, one call at a time (the next is
 * timed from the end of the last); answers the last call's problem, if it
 * failed.
 */
export function usePoll(on: boolean, tick: (signal: AbortSignal) => Promise<void>, deps: unknown[]): Problem | undefined {
  const [err, setErr] = useState<Problem>();
  useEffect(() => {
    if (!on) return;
    const abort = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      try {
        await tick(abort.signal);
        if (!abort.signal.aborted) setErr(undefined);
      } catch (e) {
        if (!abort.signal.aborted) setErr(problem(e));
      }
      if (!abort.signal.aborted) timer = setTimeout(() => void run(), POLL_MS);
    };
    timer = setTimeout(() => void run(), POLL_MS);
    return () => {
      abort.abort();
      clearTimeout(timer);
    };
  }, [on, ...deps]);
  return err;
}

type Asking = { kind: "same" | "new"; backup: Backup };

export function BackupsCard({ s }: { s: Subscription }) {
  const loaded = useLoad((signal) => backups.listBackups({ subscriptionId: s.id }, { signal }), [s.id]);
  const list = loaded.data?.backups ?? [];
  const running = list.filter(backupRunning).map((b) => b.id);
  const [done, setDone] = useState("");
  const [asking, setAsking] = useState<Asking>();
  const [newName, setNewName] = useState("");
  const [restore, setRestore] = useState<Restore>();
  const [restoreName, setRestoreName] = useState("");
  const [downloading, setDownloading] = useState("");

  // The running backups, each asked for again every second until it ends.
  const backupPoll = usePoll(
    running.length > 0,
    async (signal) => {
      for (const id of running) {
        const b = (await backups.getBackup({ id }, { signal })).backup;
        if (!b || signal.aborted) continue;
        loaded.setData((d) => (d ? { ...d, backups: d.backups.map((x) => (x.id === b.id ? b : x)) } : d));
      }
    },
    [running.join(",")],
  );
  const restorePoll = usePoll(
    !!restore && restoreRunning(restore),
    async (signal) => {
      if (!restore) return;
      const r = (await backups.getRestore({ id: restore.id }, { signal })).restore;
      if (r && !signal.aborted) setRestore(r);
    },
    [restore?.id],
  );

  const create = useAction(async () => {
    setDone("");
    const b = (await backups.createBackup({ subscriptionId: s.id })).backup;
    if (b) loaded.setData((d) => (d ? { ...d, backups: [b, ...d.backups.filter((x) => x.id !== b.id)] } : d));
    setDone("Backup started: the subscription's pods stop while its volumes are copied, then start again.");
  });
  const restoreAct = useAction(async () => {
    if (!asking) return;
    setDone("");
    const name = asking.kind === "new" ? newName.trim() : "";
    const r = (await backups.restoreBackup({ backupId: asking.backup.id, newSubscriptionName: name })).restore;
    setRestore(r);
    setRestoreName(name);
    setAsking(undefined);
  });

  const download = useAction(async (b: Backup, claim: string) => {
    setDone("");
    setDownloading(`${b.id}/${claim}`);
    try {
      await downloadVolume(b.id, claim);
    } finally {
      setDownloading("");
    }
    setDone(`Downloading ${claim} of the backup of ${dateTime(b.createdAt)} as a tar archive.`);
  });
  const drill = useAction(async (b: Backup) => {
    setDone("");
    const r = (await backups.startRestoreDrill({ backupId: b.id })).restore;
    setRestore(r);
    setRestoreName("");
  });

  const busyRestore = !!restore && restoreRunning(restore);
  const closed = s.status === SubscriptionStatus.DELETING;
  return (
    <section aria-labelledby="backups-h" class="card" data-backups>
      <h2 id="backups-h">Backups</h2>
      <p class="muted">A backup copies every volume of {s.name}, encrypted, to the installation's backup storage; its pods stop for the copy and start again.</p>
      <ErrorBanner problem={loaded.problem ?? backupPoll} />
      <ErrorBanner problem={create.problem} />
      <ErrorBanner problem={download.problem} />
      <ErrorBanner problem={drill.problem} />
      {done && <Notice>{done}</Notice>}
      <div class="actions">
        <button type="button" class="primary" disabled={create.busy || closed || running.length > 0 || busyRestore} onClick={() => void create.act()}>
          Back up now
        </button>
      </div>
      {restore && (restore.drill ? <DrillPanel restore={restore} taken={list.find((b) => b.id === restore.backupId)} problem={restorePoll} /> : <RestorePanel restore={restore} here={s.id} newName={restoreName} problem={restorePoll} />)}
      {loaded.data && list.length === 0 ? (
        <p class="muted">No backup yet.</p>
      ) : (
        <div class="table-wrap stack">
          <table>
            <caption class="sr-only">Backups of {s.name}, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Taken</th>
                <th scope="col">Status</th>
                <th scope="col">Trigger</th>
                <th scope="col">Size</th>
                <th scope="col">Uploaded</th>
                <th scope="col">Version</th>
                <th scope="col">Details</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((b) => (
                <tr key={b.id} data-backup={b.id}>
                  <td class="stack-title">{dateTime(b.createdAt)}</td>
                  <td data-label="Status">
                    <BackupPill status={b.status} />
                  </td>
                  <td data-label="Trigger" data-trigger>
                    {triggerLabel(b)}
                  </td>
                  <td data-label="Size" data-size>
                    {b.bytesTotal > 0n ? bytes(b.bytesTotal) : "—"}
                  </td>
                  <td data-label="Uploaded" data-added>
                    {b.status === BackupStatus.COMPLETE ? bytes(b.bytesAdded) : "—"}
                  </td>
                  <td data-label="Version">{b.serviceVersion || "—"}</td>
                  <td data-label="Details" data-reason>
                    {backupRunning(b) ? (
                      <>
                        {b.reason && <div>{b.reason}</div>}
                        <Progress label={`Backup of ${b.subscriptionName || s.name}`} done={b.bytesDone} total={b.bytesTotal} rate={b.bytesPerSecond} remaining={b.secondsRemaining} />
                      </>
                    ) : b.status === BackupStatus.FAILED ? (
                      <span class="error">{b.reason || "Failed, with no reason given."}</span>
                    ) : b.finishedAt ? (
                      <span class="muted">Finished {dateTime(b.finishedAt)}</span>
                    ) : (
                      b.reason || "—"
                    )}
                  </td>
                  <td>
                    {b.status === BackupStatus.COMPLETE && (
                      <div class="row-actions">
                        <button
                          type="button"
                          disabled={busyRestore || running.length > 0}
                          onClick={() => {
                            restoreAct.clear();
                            setAsking({ kind: "same", backup: b });
                          }}
                        >
                          Restore
                        </button>
                        <button
                          type="button"
                          disabled={busyRestore}
                          onClick={() => {
                            restoreAct.clear();
                            setNewName("");
                            setAsking({ kind: "new", backup: b });
                          }}
                        >
                          Restore as a new subscription…
                        </button>
                        <button type="button" disabled={busyRestore || drill.busy} onClick={() => void drill.act(b)}>
                          Try a restore drill
                        </button>
                        {b.volumes.map((v) => (
                          <button key={v.claim} type="button" data-download={v.claim} disabled={downloading !== ""} onClick={() => void download.act(b, v.claim)}>
                            {downloading === `${b.id}/${v.claim}` ? `Preparing ${v.claim}…` : `Download ${v.claim}`}
                          </button>
                        ))}
                      </div>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <ScheduleForm subscriptionId={s.id} />
      <Confirm
        open={asking?.kind === "same"}
        title={`Restore ${s.name} from the backup of ${dateTime(asking?.backup.createdAt)}?`}
        confirmLabel="Restore"
        danger
        confirmDisabled={restoreAct.busy}
        onCancel={() => setAsking(undefined)}
        onConfirm={() => void restoreAct.act()}
      >
        <p>Its pods stop, its volumes' files are replaced by this backup's, then it starts again. What was written since the backup is lost.</p>
        <ErrorBanner problem={restoreAct.problem} />
      </Confirm>
      <Confirm
        open={asking?.kind === "new"}
        title={`Restore the backup of ${dateTime(asking?.backup.createdAt)} as a new subscription?`}
        confirmLabel="Restore as new"
        confirmDisabled={restoreAct.busy || !newName.trim()}
        onCancel={() => setAsking(undefined)}
        onConfirm={() => void restoreAct.act()}
      >
        <p>
          A new subscription is made from this backup (its version, settings and secrets) and its volumes get the backup's files. {s.name} is left as it is. The new one is billed like any other.
        </p>
        <ErrorBanner problem={restoreAct.problem} shownFields={["new_subscription_name"]} />
        <Field label="Name of the new subscription" value={newName} onValue={setNewName} error={restoreAct.problem?.fields.new_subscription_name} autoComplete="off" />
      </Confirm>
    </section>
  );
}

/** A restore under way or ended: its status, progress, reason. */
function RestorePanel({ restore: r, here, newName, problem: p }: { restore: Restore; here: string; newName: string; problem: Problem | undefined }) {
  // Where it went is the server's answer, not what was asked.
  const elsewhere = r.subscriptionId !== here;
  const target = elsewhere ? `the new subscription ${newName}` : "this subscription";
  return (
    <div class={`banner ${r.status === RestoreStatus.FAILED ? "error" : r.status === RestoreStatus.COMPLETE ? "ok" : "warn"}`} role="status" data-restore={RestoreStatus[r.status]}>
      <p>
        <strong>
          Restore into {target}: {restoreStatusWord[r.status]}.
        </strong>{" "}
        {r.status === RestoreStatus.COMPLETE
          ? `Every volume holds the backup's files; it was started again${r.finishedAt ? ` at ${dateTime(r.finishedAt)}` : ""}.`
          : r.status === RestoreStatus.FAILED
            ? `${r.reason || "No reason given."} A volume whose restore failed keeps its files as they were.`
            : r.reason}
      </p>
      {restoreRunning(r) && <Progress label={`Restore into ${target}`} done={r.bytesDone} total={r.bytesTotal} />}
      {elsewhere && r.subscriptionId && (
        <p>
          <a href={`/subscriptions/${encodeURIComponent(r.subscriptionId)}`}>Open {newName}</a>
        </p>
      )}
      {p && <p>Could not refresh: {p.message}</p>}
    </div>
  );
}

/** A restore drill under way or ended: its status, progress and what it found. */
function DrillPanel({ restore: r, taken, problem: p }: { restore: Restore; taken: Backup | undefined; problem: Problem | undefined }) {
  const of = taken ? ` of the backup of ${dateTime(taken.createdAt)}` : "";
  return (
    <div class={`banner ${r.status === RestoreStatus.FAILED ? "error" : r.status === RestoreStatus.COMPLETE ? "ok" : "warn"}`} role="status" data-restore={RestoreStatus[r.status]} data-drill>
      <p>
        <strong>
          Restore drill{of}: {restoreStatusWord[r.status]}.
        </strong>{" "}
        {r.status === RestoreStatus.COMPLETE
          ? r.reason || "The backup restored into a scratch copy and the app became ready."
          : r.status === RestoreStatus.FAILED
            ? r.reason || "No reason given."
            : `${r.reason || "Restoring into a scratch copy."} The copy is checked, waited for until the app is ready, then deleted; this subscription is left as it is.`}
      </p>
      {restoreRunning(r) && <Progress label="Restore drill" done={r.bytesDone} total={r.bytesTotal} />}
      {p && <p>Could not refresh: {p.message}</p>}
    </div>
  );
}

const pad = (n: number) => String(n).padStart(2, "0");

/** The daily backup: on or off, its UTC time, how many to keep, and the
 * weekly restore drill that goes with it. */
function ScheduleForm({ subscriptionId }: { subscriptionId: string }) {
  const loaded = useLoad((signal) => backups.getBackupSchedule({ subscriptionId }, { signal }), [subscriptionId]);
  const [enabled, setEnabled] = useState(false);
  const [time, setTime] = useState("03:00");
  const [daily, setDaily] = useState("7");
  const [weekly, setWeekly] = useState("4");
  const [drill, setDrill] = useState(false);
  const [shown, setShown] = useState<BackupSchedule>();
  const [saved, setSaved] = useState("");
  const fill = (sc: BackupSchedule | undefined) => {
    setShown(sc);
    if (!sc || !sc.enabled) return;
    setEnabled(true);
    setTime(`${pad(sc.hour)}:${pad(sc.minute)}`);
    setDaily(String(sc.keepDaily));
    setWeekly(String(sc.keepWeekly));
    setDrill(sc.weeklyDrill);
  };
  useEffect(() => fill(loaded.data?.schedule), [loaded.data]);
  const save = useAction(async () => {
    setSaved("");
    const m = /^(\d{1,2}):(\d{2})$/.exec(time.trim());
    const res = await backups.setBackupSchedule({
      schedule: {
        subscriptionId,
        enabled,
        // An unreadable time goes as -1: the server's refusal names the field.
        hour: m ? Number(m[1]) : -1,
        minute: m ? Number(m[2]) : -1,
        keepDaily: Math.round(Number(daily)) || 0,
        keepWeekly: Math.round(Number(weekly)) || 0,
        weeklyDrill: drill,
      },
    });
    fill(res.schedule);
    if (res.schedule && !res.schedule.enabled) {
      setEnabled(false);
      setDrill(false);
    }
    setSaved(enabled ? "Schedule saved." : "Daily backups stopped.");
  });
  if (loaded.problem?.code === Code.Unimplemented) {
    return (
      <div data-schedule>
        <h3>Daily backup</h3>
        <p class="muted">Schedules are not available on this control plane yet.</p>
      </div>
    );
  }
  const f = save.problem?.fields ?? {};
  const next = timestampMs(shown?.nextAt);
  return (
    <form
      data-schedule
      noValidate
      onSubmit={(e) => {
        e.preventDefault();
        void save.act();
      }}
    >
      <h3>Daily backup</h3>
      <ErrorBanner problem={loaded.problem} />
      {shown?.enabled && (
        <p data-next>
          Next backup: {next === undefined ? "—" : `${new Date(next).toISOString().slice(0, 16).replace("T", " ")} UTC (${dateTime(shown.nextAt)} your time)`}.
        </p>
      )}
      {shown && shown.failuresInARow > 0 && (
        <p class="banner warn" data-failures>
          The last {shown.failuresInARow === 1 ? "scheduled backup" : `${shown.failuresInARow} scheduled backups`} failed.
        </p>
      )}
      <ErrorBanner problem={save.problem} shownFields={["schedule.hour", "schedule.minute", "schedule.keep_daily", "schedule.keep_weekly"]} />
      {saved && <Notice>{saved}</Notice>}
      <Checkbox label="Back up every day" checked={enabled} onChecked={setEnabled} />
      <div class="split">
        <Field label="At (UTC)" type="time" value={time} onValue={setTime} error={f["schedule.hour"] ?? f["schedule.minute"]} />
        <Field label="Keep daily" type="number" min={0} value={daily} onValue={setDaily} error={f["schedule.keep_daily"]} hint="The newest scheduled backup of each of the last N days." />
        <Field label="Keep weekly" type="number" min={0} value={weekly} onValue={setWeekly} error={f["schedule.keep_weekly"]} hint="The newest of each of the last N weeks." />
      </div>
      <p class="muted">Older scheduled backups are removed; backups taken on demand are kept.</p>
      {enabled && (
        <>
          <Checkbox label="Try a restore of the newest backup weekly" checked={drill} onChecked={setDrill} />
          <p class="muted">A weekly drill restores the newest complete backup into a scratch copy, checks it and that the app starts, then deletes the copy; a failed drill is told to the administrators.</p>
        </>
      )}
      {shown?.enabled && shown.weeklyDrill && (
        <p data-last-drill>Last weekly drill: {shown.lastDrillAt ? dateTime(shown.lastDrillAt) : "not yet"}.</p>
      )}
      <button type="submit" class="primary" disabled={save.busy || !loaded.data}>
        Save schedule
      </button>
    </form>
  );
}
