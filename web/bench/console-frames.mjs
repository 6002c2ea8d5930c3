// Console benchmark: frame times of the dashboard and the fleet page while
// a swarm's heartbeat figures stream in (metrics on), at 10,000 workers.
//
//   cargo build --release --locked --bins      (after `npm run build` in web/)
//   node web/bench/console-frames.mjs [--agents 10000] [--seconds 60] [--dist <dir>]
//
// --dist serves the console's files from another build's dist/ (e.g. an
// older commit's, for a before/after figure with the same server): the
// browser gets index.html and /assets/* from there, the API from the
// control plane.
//
// Starts the release control plane (heartbeats and metrics flushes every
// 5 s) and one minispod-swarm process, signs in in Debian's Chromium (CA
// trusted through an NSS db) and, for each view (the dashboard; the fleet
// by name; the fleet by CPU, descending, which sorts again on every
// flush), records for `--seconds`:
// - the gaps between animation frames (requestAnimationFrame), p50 / p99 /
//   max and how many exceeded 50 ms: a gap is the longest the page could
//   not paint or answer input;
// - the long tasks Chromium reports (main-thread tasks over 50 ms): count
//   and longest;
// - the page's main-thread tasks from a Chromium trace ("toplevel"), with
//   their CPU time as well as their wall time: on a machine shared with
//   other work a task's wall time includes the time the thread waited for
//   a core, its CPU time does not (a gap or a long task with little CPU
//   behind it is the machine, not the page);
// - the bytes the WatchWorkers stream delivered meanwhile (from the
//   DevTools network events), which shows the metrics flushes arrived.
// Target (issue 23): every frame under 50 ms.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
process.env.MINISPOD_BIN_DIR ??= path.join(REPO_ROOT, "target/release");
const { ADMIN_EMAIL, ADMIN_PASSWORD, launchBrowser, startControlPlane, waitFor } = await import("../tests/harness.mjs");

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const agents = arg("agents", 10_000);
const seconds = arg("seconds", 60);
const distArg = process.argv.indexOf("--dist");
const dist = distArg > 0 ? path.resolve(process.argv[distArg + 1]) : undefined;
if (dist && !fs.existsSync(path.join(dist, "index.html"))) {
  console.error(`${dist}/index.html not found`);
  process.exit(2);
}
for (const bin of ["minispod-control-plane", "minispod-swarm"]) {
  if (!fs.existsSync(path.join(process.env.MINISPOD_BIN_DIR, bin))) {
    console.error(`${bin} not built: run cargo build --release --locked --bins`);
    process.exit(2);
  }
}

const pct = (xs, p) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};
const fmt = (n) => new Intl.NumberFormat("en-US").format(n);

const cp = await startControlPlane({
  enrollmentToken: true,
  // The swarm's agents all share 127.0.0.1; real ones each have an address of their own.
  args: [
    "--heartbeat-interval", "5s", "--metrics-flush-interval", "5s", "--enroll-burst", "100000", "--enroll-per-second", "100000",
    "--max-connections-per-address", "0", "--max-handshakes-per-address", "1000000",
  ],
});
const children = [];
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

/** Records frame gaps and long tasks in the page for `ms`; returns them. */
async function record(page, ms) {
  return page.evaluate(
    (ms) =>
      new Promise((resolve) => {
        const gaps = [];
        const longTasks = [];
        const obs = new PerformanceObserver((list) => {
          for (const e of list.getEntries()) longTasks.push(e.duration);
        });
        obs.observe({ type: "longtask" });
        const end = performance.now() + ms;
        let last = 0;
        const frame = (t) => {
          if (last) gaps.push(t - last);
          last = t;
          if (t < end) requestAnimationFrame(frame);
          else {
            obs.disconnect();
            resolve({ gaps, longTasks });
          }
        };
        requestAnimationFrame(frame);
      }),
    ms,
  );
}

/** The renderer main thread's tasks in a trace: [{ wall, cpu }] in ms. */
function mainThreadTasks(trace) {
  const events = trace.traceEvents ?? trace;
  const main = new Set(events.filter((e) => e.ph === "M" && e.name === "thread_name" && e.args?.name === "CrRendererMain").map((e) => `${e.pid}/${e.tid}`));
  const tasks = events.filter((e) => e.ph === "X" && /RunTask$/.test(e.name) && main.has(`${e.pid}/${e.tid}`));
  // The busiest renderer is the page's (others may be idle helpers).
  const byThread = new Map();
  for (const t of tasks) byThread.set(`${t.pid}/${t.tid}`, (byThread.get(`${t.pid}/${t.tid}`) ?? 0) + t.dur);
  const busiest = [...byThread.entries()].sort((a, b) => b[1] - a[1])[0]?.[0];
  return tasks.filter((t) => `${t.pid}/${t.tid}` === busiest).map((t) => ({ wall: t.dur / 1000, cpu: (t.tdur ?? t.dur) / 1000 }));
}

const results = [];
try {
  const started = Date.now();
  await swarm(agents, 0);
  console.log(`${fmt(agents)} agents enrolled in ${((Date.now() - started) / 1000).toFixed(1)} s`);

  const browser = await launchBrowser(cp.caPath);
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "en-US" });
  if (dist) {
    const types = { ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".html": "text/html" };
    await context.route(`${cp.url}/**`, (route) => {
      const url = new URL(route.request().url());
      if (route.request().method() !== "GET" || url.pathname.startsWith("/minispod.")) return route.continue();
      const file = url.pathname.startsWith("/assets/") ? path.join(dist, url.pathname) : path.join(dist, "index.html");
      if (!fs.existsSync(file)) return route.continue();
      return route.fulfill({ body: fs.readFileSync(file), contentType: types[path.extname(file)] ?? "application/octet-stream" });
    });
  }
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  const watchRequests = new Set();
  let watchBytes = 0;
  cdp.on("Network.requestWillBeSent", (e) => {
    if (e.request.url.endsWith("/WatchWorkers")) watchRequests.add(e.requestId);
  });
  cdp.on("Network.dataReceived", (e) => {
    if (watchRequests.has(e.requestId)) watchBytes += e.dataLength || e.encodedDataLength;
  });

  await page.goto(`${cp.url}/signin`);
  await page.getByLabel("Email").fill(ADMIN_EMAIL);
  await page.getByLabel("Password").fill(ADMIN_PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();
  // Every agent Active before measuring (the dashboard counts live).
  // (Consoles before issue 23 said ACTIVE and 10000.)
  const activeStat = page.locator(".stat").filter({ has: page.locator(".stat-label", { hasText: /^(Active|ACTIVE)$/ }) }).first().locator(".stat-value");
  const allActive = async () => (await activeStat.innerText()).replaceAll(",", "") === String(agents);
  await waitFor(allActive, 180_000, { message: "all agents Active" });
  const fleetShown = () => page.getByText(new RegExp(`^${fmt(agents)} of ${fmt(agents)} workers$|^${agents} of ${agents} workers$`)).waitFor({ timeout: 60_000 });

  const views = [
    { name: "dashboard", path: "/", ready: () => waitFor(allActive, 60_000, { message: "dashboard counts" }) },
    { name: "fleet, by name", path: "/workers", ready: fleetShown },
    { name: "fleet, by CPU descending", path: "/workers?sort=cpu&dir=desc", ready: fleetShown },
  ];
  for (const v of views) {
    await page.goto(`${cp.url}${v.path}`);
    await v.ready();
    // Past the snapshot's own frames: measure the steady state.
    await page.waitForTimeout(3_000);
    const bytesBefore = watchBytes;
    await browser.startTracing(page, { categories: ["toplevel"] });
    const r = await record(page, seconds * 1000);
    const trace = JSON.parse(String(await browser.stopTracing()));
    results.push({ view: v.name, ...r, tasks: mainThreadTasks(trace), bytes: watchBytes - bytesBefore });
  }
  await browser.close();
} finally {
  for (const c of children) c.kill("SIGKILL");
  await cp.kill().catch(() => {});
}

console.log(`\nConsole frame times${dist ? ` (console from ${dist})` : ""} (Chromium, 1280×800, ${fmt(agents)} workers, heartbeats and metrics flushes every 5 s, ${seconds} s per view; control plane and swarm on this machine):`);
for (const r of results) {
  const over = r.gaps.filter((g) => g > 50).length;
  console.log(
    `  ${r.view.padEnd(26)} frames ${String(r.gaps.length).padStart(5)}: gap p50 ${pct(r.gaps, 50).toFixed(1)} ms, p99 ${pct(r.gaps, 99).toFixed(1)} ms, max ${Math.max(...r.gaps).toFixed(1)} ms, ${over} over 50 ms; ` +
      `long tasks ${r.longTasks.length}${r.longTasks.length ? ` (longest ${Math.max(...r.longTasks).toFixed(0)} ms)` : ""}; stream ${(r.bytes / 1024 / 1024).toFixed(1)} MiB`,
  );
  const cpu = r.tasks.map((t) => t.cpu);
  const wall = r.tasks.map((t) => t.wall);
  const longest = r.tasks.reduce((a, t) => (t.wall > (a?.wall ?? -1) ? t : a), undefined);
  console.log(
    `  ${"".padEnd(26)} main-thread tasks ${r.tasks.length}: CPU p99 ${pct(cpu, 99).toFixed(1)} ms, max ${Math.max(...cpu).toFixed(1)} ms, ${cpu.filter((c) => c > 50).length} over 50 ms; ` +
      `wall p99 ${pct(wall, 99).toFixed(1)} ms, max ${longest ? `${longest.wall.toFixed(1)} ms (of which CPU ${longest.cpu.toFixed(1)} ms)` : "—"}`,
  );
}
