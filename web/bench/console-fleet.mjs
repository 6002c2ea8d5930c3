// Console benchmark: the fleet page over a swarm of simulated agents.
//
//   cargo build --release --locked --bins      (after `npm run build` in web/)
//   node web/bench/console-fleet.mjs [--agents 10000] [--killed 100]
//
// Starts the release control plane and two minispod-swarm processes (all
// agents but the last `killed` in one, those in the other), signs in in
// Debian's Chromium (CA trusted through an NSS db), then prints:
// - snapshot: time from navigation to /workers until the table says
//   "<agents> of <agents> workers" with its rows rendered (this includes
//   the session restore from the cookie and the whole WatchWorkers snapshot);
// - the page's JS heap (after a GC) with the whole fleet loaded;
// - kill → INACTIVE: the second swarm is killed with SIGKILL while the page
//   shows its workers (a search filter plus a tall window puts all of them
//   on screen); a MutationObserver stamps the moment each row's status turns
//   INACTIVE; the delays from the kill give p50 / p99.
// Targets (issue 11): snapshot < 1.5 s, p99 row update < 500 ms, heap < 100 MB.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

// The release binaries, unless MINISPOD_BIN_DIR says otherwise (set before
// the harness reads it).
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
process.env.MINISPOD_BIN_DIR ??= path.join(REPO_ROOT, "target/release");
const { ADMIN_EMAIL, ADMIN_PASSWORD, launchBrowser, startControlPlane, waitFor } = await import("../tests/harness.mjs");

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const agents = arg("agents", 10_000);
const killed = arg("killed", 100);
if (killed !== 100 || agents % 100 !== 0 || agents <= killed) {
  // The victims are found with one search prefix (swarm-099 for 9900..9999).
  console.error("--killed must be 100 and --agents a multiple of 100 above it");
  process.exit(2);
}
for (const bin of ["minispod-control-plane", "minispod-swarm"]) {
  if (!fs.existsSync(path.join(process.env.MINISPOD_BIN_DIR, bin))) {
    console.error(`${bin} not built: run cargo build --release --locked --bins`);
    process.exit(2);
  }
}

const fmt = (n) => new Intl.NumberFormat("en-US").format(n);
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};

const cp = await startControlPlane({
  enrollmentToken: true,
  // The swarm's agents all share 127.0.0.1; real ones each have an address of their own.
  args: [
    "--heartbeat-interval", "5s", "--enroll-burst", "100000", "--enroll-per-second", "100000",
    "--max-connections-per-address", "0", "--max-handshakes-per-address", "1000000",
  ],
});
const children = [];
const cleanup = async () => {
  for (const c of children) c.kill("SIGKILL");
  await cp.kill().catch(() => {});
};
process.on("exit", () => children.forEach((c) => c.kill("SIGKILL")));

function swarm(count, first) {
  const state = path.join(cp.dataDir, `swarm-${first}`);
  const child = spawn(path.join(process.env.MINISPOD_BIN_DIR, "minispod-swarm"), ["run", "--server", cp.url, "--token", cp.enrollmentToken, "--ca-hash", cp.caHash, "--agents", String(count), "--first-index", String(first), "--state-dir", state], { stdio: ["ignore", "pipe", "inherit"] });
  children.push(child);
  return new Promise((resolve, reject) => {
    child.stdout.on("data", (d) => {
      if (/agents enrolled/.test(String(d))) resolve(child);
    });
    child.on("exit", (code) => reject(new Error(`swarm exited with ${code}`)));
  });
}

try {
  const started = Date.now();
  const [, victims] = await Promise.all([swarm(agents - killed, 0), swarm(killed, agents - killed)]);
  console.log(`${agents} agents enrolled in ${((Date.now() - started) / 1000).toFixed(1)} s`);

  const browser = await launchBrowser(cp.caPath);
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "en-US" });
  const page = await context.newPage();
  await page.goto(`${cp.url}/signin`);
  await page.getByLabel("Email").fill(ADMIN_EMAIL);
  await page.getByLabel("Password").fill(ADMIN_PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();
  // Every agent Active before measuring (the dashboard counts live).
  const activeStat = page.locator(".stat").filter({ has: page.locator(".stat-label", { hasText: /^Active$/ }) }).first().locator(".stat-value");
  await waitFor(async () => (await activeStat.innerText()) === fmt(agents), 120_000, { message: "all agents Active" });

  const snapshots = [];
  for (let round = 0; round < 3; round++) {
    await page.goto(`${cp.url}/workers`);
    await page.waitForFunction((n) => document.body.innerText.includes(`${n} of ${n} workers`) && document.querySelectorAll('[role="row"][data-worker]').length > 5, fmt(agents), { timeout: 60_000, polling: "raf" });
    snapshots.push(
      await page.evaluate(() => {
        const at = (name) => performance.getEntriesByName(name).at(-1)?.startTime ?? NaN;
        return { rendered: performance.now(), open: at("minispod:watch-open"), first: at("minispod:watch-first-event"), end: at("minispod:watch-snapshot-end") };
      }),
    );
  }
  const cdp = await context.newCDPSession(page);
  await cdp.send("HeapProfiler.collectGarbage");
  await cdp.send("Performance.enable");
  const metrics = (await cdp.send("Performance.getMetrics")).metrics;
  const heap = metrics.find((m) => m.name === "JSHeapUsedSize").value / 1024 / 1024;

  // Show exactly the victims, all rendered at once.
  const prefix = `swarm-${String(agents - killed).padStart(5, "0").slice(0, 3)}`;
  await page.setViewportSize({ width: 1280, height: 300 + 44 * (killed + 20) });
  await page.goto(`${cp.url}/workers?q=${prefix}`);
  await page.waitForFunction((n) => document.querySelectorAll('[role="row"][data-status="ACTIVE"]').length >= n, killed, { timeout: 60_000 });
  const shown = await page.locator('[role="row"][data-worker]').count();
  await page.evaluate(() => {
    window.__inactiveAt = {};
    const stamp = (el) => {
      if (el.dataset && el.dataset.status === "INACTIVE" && !(el.dataset.worker in window.__inactiveAt)) window.__inactiveAt[el.dataset.worker] = performance.timeOrigin + performance.now();
    };
    new MutationObserver((records) => {
      for (const r of records) {
        stamp(r.target);
        for (const n of r.addedNodes) if (n.nodeType === 1) stamp(n);
      }
    }).observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ["data-status"] });
  });
  const killedAt = Date.now();
  victims.kill("SIGKILL");
  await waitFor(async () => (await page.evaluate(() => Object.keys(window.__inactiveAt).length)) >= Math.min(killed, shown), 30_000, { message: "rows INACTIVE" });
  const stamps = await page.evaluate(() => window.__inactiveAt);
  const delays = Object.values(stamps).map((t) => t - killedAt);

  console.log("\nConsole fleet page (Chromium, 1280×800, control plane and swarm on this machine):");
  console.log(`  workers:                    ${agents}`);
  console.log(`  snapshot rendered:          ${snapshots.map((s) => `${s.rendered.toFixed(0)} ms`).join(", ")} (navigation to "${fmt(agents)} of ${fmt(agents)} workers" with rows)`);
  for (const s of snapshots) console.log(`    watch opened at ${s.open.toFixed(0)} ms, first event ${s.first.toFixed(0)} ms, snapshot end ${s.end.toFixed(0)} ms, rendered ${s.rendered.toFixed(0)} ms`);
  console.log(`  JS heap after GC:           ${heap.toFixed(1)} MB`);
  console.log(`  kill -9 of ${killed} → INACTIVE: p50 ${pct(delays, 50).toFixed(0)} ms, p99 ${pct(delays, 99).toFixed(0)} ms, max ${Math.max(...delays).toFixed(0)} ms (${delays.length} rows seen)`);
  await browser.close();
} finally {
  await cleanup();
}
