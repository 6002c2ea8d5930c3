// Backup benchmark (#26): the throughput of backing up and restoring a
// volume through the whole system, and the control plane's memory while
// it does.
//
//   cargo build --release --locked --bins      (after `npm run build` in web/)
//   node web/bench/backup-memory.mjs [--gib 1] [--directory]
//
// With --directory the destination is a directory on the control plane's
// host instead of moto's bucket: the backup's and the restore's data then
// pass through the control plane (restic's REST protocol on its port).
//
// Starts moto (S3), the stand-in cluster with real volume directories, the
// release control plane and a release minispod-agent on the stand-in's
// node, subscribes a customer to n8n, fills its volume with `--gib` GiB of
// random bytes, then backs it up, downloads it (CreateBackupDownload's
// link, read to its end) and restores it through BackupService, sampling
// the control plane's resident memory (VmRSS) every 100 ms. Prints: bytes,
// seconds and MiB/s of each; the control plane's RSS before and its peak
// during each. A backup's data goes from the agent to the bucket, a
// download's streams through the control plane 64 KiB at a time: its
// memory should not grow with the volume either way.
import crypto from "node:crypto";
import fs from "node:fs";
import https from "node:https";
import path from "node:path";
import { fileURLToPath } from "node:url";

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
process.env.MINISPOD_BIN_DIR ??= path.join(REPO_ROOT, "target/release");
const { ADMIN_EMAIL, ADMIN_PASSWORD, startAgent, startControlPlane, waitFor } = await import("../tests/harness.mjs");
const { grpcurl, s3Request, startKubeStandin, startMoto } = await import("../tests/console/common.mjs");

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? dflt : Number(process.argv[i + 1]);
};
const gib = arg("gib", 1);
const toDirectory = process.argv.includes("--directory");
const BUCKET = "bench-backups";
const NODE = "bench-worker-k3s";
const MiB = 1024 * 1024;

/** VmRSS of `pid`, bytes. */
function rss(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}

const moto = await startMoto();
const dir = fs.mkdtempSync("/tmp/minispod-bench-kube-");
const kube = await startKubeStandin(dir, { storageRoot: path.join(dir, "nodes") });
const root = path.join(dir, "nodes", NODE);
fs.mkdirSync(root, { recursive: true });
const cp = await startControlPlane({
  enrollmentToken: true,
  args: ["--kubeconfig", kube.kubeconfig, "--offline-taint-after-start", "0s", "--apps-domain", "apps.minispod.test"],
});
const agent = startAgent(cp, { token: cp.enrollmentToken, name: "bench-worker", args: ["--volumes-dir", root] });
try {
  if ((await s3Request(moto.port, "PUT", `/${BUCKET}`)) !== 200) throw new Error("create the bucket");
  const admin = (await grpcurl(cp, "minispod.v1.AuthService/Login", { email: ADMIN_EMAIL, password: ADMIN_PASSWORD })).accessToken;
  const worker = await waitFor(async () => (await grpcurl(cp, "minispod.v1.WorkerService/ListWorkers", {}, admin)).workers?.find((w) => w.name === "bench-worker"), 30_000, { message: "the agent enrolled" });
  await kube.createNode(NODE, worker.id);
  const destination = toDirectory
    ? { name: "local", directory: path.join(dir, "backups") }
    : { name: "moto", endpoint: moto.endpoint, region: "us-east-1", bucket: BUCKET, prefix: "bench", accessKeyId: "minispod-test", secretAccessKey: "minispod-test-secret" };
  await grpcurl(cp, "minispod.v1.BackupService/CreateBackupDestination", destination, admin);
  console.log(`destination: ${toDirectory ? "a directory on the control plane's host" : "moto (S3)"}`);
  const customer = (await grpcurl(cp, "minispod.v1.AuthService/Register", { email: "bench@example.test", password: "bench-password-123", name: "Bench" })).accessToken;
  const sub = (await grpcurl(cp, "minispod.v1.SubscriptionService/CreateSubscription", { serviceId: "n8n", name: "bench" }, customer)).subscription;
  const running = async () => (await grpcurl(cp, "minispod.v1.SubscriptionService/GetSubscription", { id: sub.id }, customer)).subscription.status === "SUBSCRIPTION_STATUS_RUNNING";
  await waitFor(running, 60_000, { message: "the subscription RUNNING" });
  const volume = path.join(root, fs.readdirSync(root).find((n) => n.endsWith("_bench-n8n-data")));
  const chunk = 64 * MiB;
  const fd = fs.openSync(path.join(volume, "data.bin"), "w");
  for (let done = 0; done < gib * 1024 * MiB; done += chunk) fs.writeSync(fd, crypto.randomBytes(chunk));
  fs.closeSync(fd);

  const pid = cp.process.pid;
  /** Runs `work` while sampling the control plane's RSS every 100 ms:
   * its result, the RSS before (the max of a second's samples) and the peak. */
  async function sampled(work) {
    let before = 0;
    for (let i = 0; i < 10; i++) {
      before = Math.max(before, rss(pid));
      await new Promise((r) => setTimeout(r, 100));
    }
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, rss(pid))), 100);
    try {
      return { result: await work(), before, peak };
    } finally {
      clearInterval(sampler);
    }
  }
  const printRss = ({ before, peak }) =>
    console.log(`  control plane RSS: ${(before / MiB).toFixed(1)} MiB before, ${(peak / MiB).toFixed(1)} MiB at most during it (+${((peak - before) / MiB).toFixed(1)} MiB)`);
  /** Runs `start`, polls `get` until it ends, sampling RSS; the figures. */
  async function measure(what, start, get) {
    const run = await sampled(async () => {
      const t0 = Date.now();
      const id = await start();
      let last;
      let copyStart = 0;
      await waitFor(async () => {
        last = await get(id);
        if (!copyStart && /RUNNING$/.test(last.status)) copyStart = Date.now();
        return /COMPLETE$|FAILED$/.test(last.status);
      }, 3_600_000, { intervalMs: 250, message: `${what} to end` });
      return { last, t0, copyStart, t1: Date.now() };
    });
    const { last, t0, copyStart, t1 } = run.result;
    if (!/COMPLETE$/.test(last.status)) throw new Error(`${what} failed: ${last.reason}`);
    const bytes = Number(last.bytesTotal);
    const secs = (t1 - (copyStart || t0)) / 1000;
    console.log(`${what}: ${(bytes / MiB).toFixed(0)} MiB in ${secs.toFixed(1)} s of copying (${((t1 - t0) / 1000).toFixed(1)} s from the call, pods stopped and started included): ${(bytes / MiB / secs).toFixed(1)} MiB/s`);
    printRss(run);
  }
  await measure(
    "backup",
    async () => (await grpcurl(cp, "minispod.v1.BackupService/CreateBackup", { subscriptionId: sub.id }, customer)).backup.id,
    async (id) => (await grpcurl(cp, "minispod.v1.BackupService/GetBackup", { id }, customer)).backup,
  );
  await waitFor(running, 60_000, { message: "RUNNING after the backup" });
  const backupId = (await grpcurl(cp, "minispod.v1.BackupService/ListBackups", { subscriptionId: sub.id }, customer)).backups[0].id;
  {
    // The download: the archive read to its end (and thrown away).
    const run = await sampled(async () => {
      const t0 = Date.now();
      const claim = (await grpcurl(cp, "minispod.v1.BackupService/GetBackup", { id: backupId }, customer)).backup.volumes[0].claim;
      const link = await grpcurl(cp, "minispod.v1.BackupService/CreateBackupDownload", { backupId, claim }, customer);
      const bytes = await new Promise((resolve, reject) => {
        const req = https.get(`${cp.url}${link.url}`, { ca: fs.readFileSync(cp.caPath) }, (res) => {
          if (res.statusCode !== 200) return reject(new Error(`download: HTTP ${res.statusCode}`));
          let n = 0;
          res.on("data", (b) => (n += b.length));
          res.on("end", () => resolve(n));
          res.on("error", reject);
        });
        req.on("error", reject);
      });
      return { bytes, secs: (Date.now() - t0) / 1000 };
    });
    const { bytes, secs } = run.result;
    if (bytes < gib * 1024 * MiB) throw new Error(`downloaded ${bytes} bytes`);
    console.log(`download: ${(bytes / MiB).toFixed(0)} MiB of tar in ${secs.toFixed(1)} s from the call: ${(bytes / MiB / secs).toFixed(1)} MiB/s`);
    printRss(run);
  }
  fs.writeFileSync(path.join(volume, "data.bin"), "lost");
  await measure(
    "restore",
    async () => (await grpcurl(cp, "minispod.v1.BackupService/RestoreBackup", { backupId }, customer)).restore.id,
    async (id) => (await grpcurl(cp, "minispod.v1.BackupService/GetRestore", { id }, customer)).restore,
  );
  const size = fs.statSync(path.join(volume, "data.bin")).size;
  if (size !== gib * 1024 * MiB) throw new Error(`restored ${size} bytes`);
} finally {
  await agent.stop?.();
  await cp.stop();
  kube.stop();
  moto.stop();
  fs.rmSync(dir, { recursive: true, force: true });
}
