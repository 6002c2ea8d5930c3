// The administrators' backups (issue #26): where backups go (the
// destinations, S3-compatible buckets or directories on the control plane's
// host, and a form to add one: a bucket's secret is write-only, sent once
// and cleared from the form), the overview per subscription (stored size,
// last success, scheduled backups failed in a row), and every backup with
// its size (a running one's progress polled every second).
import { useState } from "preact/hooks";
import { backups, Code } from "../api";
import { bytes, dateTime } from "../format";
import { BackupStatus } from "../gen/minispod/v1/backups_pb";
import { Checkbox, ErrorBanner, Field, Notice, PageTitle, Radios, useAction, useLoad } from "../parts/components";
import { BackupPill, backupRunning, Progress, triggerLabel, usePoll } from "../parts/backups";

export function BackupsPage() {
  return (
    <>
      <PageTitle>Backups</PageTitle>
      <Destinations />
      <Overview />
      <AllBackups />
    </>
  );
}

const emptyForm = { name: "", endpoint: "", region: "", bucket: "", prefix: "", accessKeyId: "", directory: "" };
const kinds: [string, string][] = [
  ["bucket", "S3-compatible bucket"],
  ["directory", "Directory on the control plane's host"],
];
const bucketFields = ["name", "endpoint", "region", "bucket", "prefix", "access_key_id", "secret_access_key"];

function Destinations() {
  const loaded = useLoad((signal) => backups.listBackupDestinations({}, { signal }), []);
  const list = loaded.data?.destinations ?? [];
  const [form, setForm] = useState(emptyForm);
  const [kind, setKind] = useState("bucket");
  const [secret, setSecret] = useState("");
  const [makeDefault, setMakeDefault] = useState(false);
  const [done, setDone] = useState("");
  // An empty directory would be sent as a bucket's request (the server
  // tells the kinds apart by it), whose error names the endpoint: said here.
  const [noDirectory, setNoDirectory] = useState("");
  const add = useAction(async () => {
    setDone("");
    setNoDirectory("");
    if (kind === "directory" && !form.directory.trim()) {
      setNoDirectory("is required: an absolute path on the control plane's host");
      return;
    }
    // The secret leaves the form with this call, whatever its answer.
    const secretAccessKey = secret;
    setSecret("");
    // Only the chosen kind's fields are sent.
    const { name, directory, ...bucket } = form;
    const d = (await backups.createBackupDestination(kind === "directory" ? { name, directory, makeDefault } : { name, ...bucket, secretAccessKey, makeDefault })).destination;
    setForm(emptyForm);
    setMakeDefault(false);
    loaded.reload();
    setDone(`Added ${d?.name ?? form.name}${d?.isDefault ? ": new backups go there" : ""}.`);
  });
  const set = (k: keyof typeof emptyForm) => (v: string) => setForm({ ...form, [k]: v });
  const f = add.problem?.fields ?? {};
  return (
    <section class="card" aria-labelledby="destinations-h" data-destinations>
      <h2 id="destinations-h">Destinations</h2>
      <p class="muted">S3-compatible buckets, or directories on the control plane's host, that backups go to. Each customer gets a repository of their own under the prefix or the directory, encrypted with a password of its own.</p>
      <ErrorBanner problem={loaded.problem} />
      {loaded.data && list.length === 0 ? (
        <p class="muted">No destination yet: nobody can back up until one is added.</p>
      ) : (
        <div class="table-wrap">
          <table>
            <caption class="sr-only">Backup destinations, oldest first</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Endpoint or directory</th>
                <th scope="col">Region</th>
                <th scope="col">Bucket</th>
                <th scope="col">Prefix</th>
                <th scope="col">Default</th>
                <th scope="col">Added</th>
              </tr>
            </thead>
            <tbody>
              {list.map((d) => (
                <tr key={d.id} data-destination={d.name}>
                  <td>{d.name}</td>
                  <td>
                    <code>{d.directory || d.endpoint}</code>
                  </td>
                  <td>{d.region || "—"}</td>
                  <td>{d.bucket || "—"}</td>
                  <td>{d.prefix || "—"}</td>
                  <td data-default>{d.isDefault ? "Default" : "—"}</td>
                  <td>{dateTime(d.createdAt)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <form
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          void add.act();
        }}
      >
        <h3>Add a destination</h3>
        <ErrorBanner problem={add.problem} shownFields={kind === "directory" ? ["name", "directory"] : bucketFields} />
        {done && <Notice>{done}</Notice>}
        <Radios legend="Where to" value={kind} onValue={setKind} options={kinds} />
        {kind === "directory" ? (
          <div class="split">
            <Field label="Name" value={form.name} onValue={set("name")} error={f.name} autoComplete="off" placeholder="local" />
            <Field
              label="Directory"
              value={form.directory}
              onValue={set("directory")}
              error={f.directory ?? (noDirectory || undefined)}
              autoComplete="off"
              placeholder="/var/lib/minispod/backups"
              hint="An absolute path on the control plane's host, created if missing. With several replicas, a shared filesystem mounted at the same path on each."
            />
          </div>
        ) : (
          <>
            <div class="split">
              <Field label="Name" value={form.name} onValue={set("name")} error={f.name} autoComplete="off" placeholder="offsite" />
              <Field label="Endpoint" value={form.endpoint} onValue={set("endpoint")} error={f.endpoint} autoComplete="off" placeholder="https://s3.eu-central-1.amazonaws.com" hint="https://, or http:// for a loopback or private address." />
            </div>
            <div class="split">
              <Field label="Region" value={form.region} onValue={set("region")} error={f.region} autoComplete="off" placeholder="eu-central-1" />
              <Field label="Bucket" value={form.bucket} onValue={set("bucket")} error={f.bucket} autoComplete="off" />
              <Field label="Prefix" value={form.prefix} onValue={set("prefix")} error={f.prefix} autoComplete="off" hint="May be empty." />
            </div>
            <div class="split">
              <Field label="Access key id" value={form.accessKeyId} onValue={set("accessKeyId")} error={f.access_key_id} autoComplete="off" />
              <Field label="Secret access key" type="password" value={secret} onValue={setSecret} error={f.secret_access_key} autoComplete="new-password" hint="Kept sealed; never shown again." />
            </div>
          </>
        )}
        <Checkbox label={list.length === 0 ? "Make it the default (the first one always is)" : "Make it the default"} checked={makeDefault || (!!loaded.data && list.length === 0)} onChecked={setMakeDefault} />
        <button type="submit" class="primary" disabled={add.busy}>
          Add destination
        </button>
      </form>
    </section>
  );
}

function Overview() {
  const loaded = useLoad((signal) => backups.listBackupOverview({}, { signal }), []);
  const rows = loaded.data?.subscriptions ?? [];
  return (
    <section class="card" aria-labelledby="backup-overview-h" data-overview>
      <h2 id="backup-overview-h">By subscription</h2>
      {loaded.problem?.code === Code.Unimplemented ? <p class="muted">The overview is not available on this control plane yet.</p> : <ErrorBanner problem={loaded.problem} />}
      {loaded.data && rows.length === 0 && <p class="muted">No subscription has a backup or a schedule yet.</p>}
      {rows.length > 0 && (
        <div class="table-wrap">
          <table>
            <caption class="sr-only">Backups per subscription</caption>
            <thead>
              <tr>
                <th scope="col">Subscription</th>
                <th scope="col">Complete backups</th>
                <th scope="col">Stored</th>
                <th scope="col">Last success</th>
                <th scope="col">Last backup</th>
                <th scope="col">Daily</th>
                <th scope="col">Failed in a row</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r) => (
                <tr key={r.subscriptionId} data-overview-row={r.subscriptionName}>
                  <td>
                    <a href={`/subscriptions/${encodeURIComponent(r.subscriptionId)}`}>{r.subscriptionName}</a>
                  </td>
                  <td>{r.complete}</td>
                  <td>{bytes(r.bytesStored)}</td>
                  <td>{r.lastSuccessAt ? dateTime(r.lastSuccessAt) : "never"}</td>
                  <td>{r.lastStatus === BackupStatus.UNSPECIFIED ? "—" : <BackupPill status={r.lastStatus} />}</td>
                  <td>{r.scheduled ? "Scheduled" : "—"}</td>
                  <td class={r.failuresInARow >= 2 ? "error" : undefined}>{r.failuresInARow}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

function AllBackups() {
  const loaded = useLoad((signal) => backups.listBackups({}, { signal }), []);
  const list = loaded.data?.backups ?? [];
  // The running ones, each asked for again every second until it ends.
  const running = list.filter(backupRunning).map((b) => b.id);
  const polled = usePoll(
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
  return (
    <section class="card" aria-labelledby="all-backups-h" data-all-backups>
      <div class="page-head">
        <h2 id="all-backups-h">All backups</h2>
        <div class="actions">
          <button type="button" onClick={() => loaded.reload()}>
            Refresh
          </button>
        </div>
      </div>
      <ErrorBanner problem={loaded.problem ?? polled} />
      {loaded.data && list.length === 0 ? (
        <p class="muted">No backup yet.</p>
      ) : (
        <div class="table-wrap">
          <table>
            <caption class="sr-only">Every backup, newest first (at most 500)</caption>
            <thead>
              <tr>
                <th scope="col">Subscription</th>
                <th scope="col">Taken</th>
                <th scope="col">Status</th>
                <th scope="col">Trigger</th>
                <th scope="col">Size</th>
                <th scope="col">Uploaded</th>
                <th scope="col">Details</th>
              </tr>
            </thead>
            <tbody>
              {list.map((b) => (
                <tr key={b.id} data-backup={b.id}>
                  <td>
                    <a href={`/subscriptions/${encodeURIComponent(b.subscriptionId)}`}>{b.subscriptionName}</a>
                  </td>
                  <td>{dateTime(b.createdAt)}</td>
                  <td>
                    <BackupPill status={b.status} />
                  </td>
                  <td>{triggerLabel(b)}</td>
                  <td data-size>{b.bytesTotal > 0n ? bytes(b.bytesTotal) : "—"}</td>
                  <td data-added>{b.status === BackupStatus.COMPLETE ? bytes(b.bytesAdded) : "—"}</td>
                  <td>
                    {backupRunning(b) ? (
                      <Progress label={`Backup of ${b.subscriptionName}`} done={b.bytesDone} total={b.bytesTotal} rate={b.bytesPerSecond} remaining={b.secondsRemaining} />
                    ) : b.status === BackupStatus.FAILED ? (
                      <span class="error">{b.reason}</span>
                    ) : (
                      b.reason || "—"
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
