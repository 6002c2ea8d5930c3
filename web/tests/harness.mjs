// Browser-test harness for the MiniSpod web console.
//
// Starts real processes (control plane, agents, nginx, Chromium) and cleans
// them up. Everything is plain Node 20 + playwright-core + axe-core.
//
// Environment knobs:
//   MINISPOD_BIN_DIR     directory with minispod-control-plane / minispod-agent
//                        (default: <repo>/target/debug)
//   CHROMIUM_PATH        browser executable (default: /usr/bin/chromium)
//   NGINX_PATH           nginx executable (default: on PATH, else /usr/sbin/nginx)
//   MINISPOD_KEEP_TEMP=1 keep temp dirs (data dirs, logs) even when all passed
//   RUST_LOG             passed through to the control plane and agents
//
// Temp dirs are removed when the process exits, unless it exits non-zero (a
// failed test) or MINISPOD_KEEP_TEMP=1; their paths are printed then.

import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import tls from 'node:tls';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { chromium } from 'playwright-core';

const execFileP = promisify(execFile);

/** Repository root (this file is web/tests/harness.mjs). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The web console's directory. */
export const WEB_DIR = path.join(REPO_ROOT, 'web');
/** Where the Rust binaries are taken from. */
export const BIN_DIR = process.env.MINISPOD_BIN_DIR
  ? path.resolve(process.env.MINISPOD_BIN_DIR)
  : path.join(REPO_ROOT, 'target', 'debug');
/** Browser executable. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
/** Where screenshot() writes. */
export const SCREENSHOT_DIR = path.join(REPO_ROOT, 'target', 'console-screenshots');
/** axe-core's browser bundle. */
export const AXE_PATH = path.join(WEB_DIR, 'node_modules', 'axe-core', 'axe.min.js');

/** Bootstrap administrator of every control plane started here. */
export const ADMIN_EMAIL = 'admin@minispod.test';
/** Its password (16+ characters). */
export const ADMIN_PASSWORD = 'console-test-Passw0rd-2024';

/** Default timeout for process starts. */
export const START_TIMEOUT_MS = 30_000;

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// ---------------------------------------------------------------------------
// Process and temp-dir bookkeeping; everything is killed when Node exits.

/** @type {Set<import('node:child_process').ChildProcess>} */
const liveChildren = new Set();
/** @type {Set<string>} */
const tempDirs = new Set();

function killGroup(child, signal) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal); // spawned detached: its own process group
  } catch {
    try {
      child.kill(signal);
    } catch {
      /* already gone */
    }
  }
}

function cleanupAtExit() {
  for (const child of liveChildren) killGroup(child, 'SIGKILL');
  liveChildren.clear();
  const keep = process.env.MINISPOD_KEEP_TEMP === '1' || (process.exitCode ?? 0) !== 0;
  if (keep) {
    if (tempDirs.size > 0) {
      process.stderr.write(`[harness] kept temp dirs:\n${[...tempDirs].map((d) => `  ${d}\n`).join('')}`);
    }
    return;
  }
  for (const dir of tempDirs) {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  }
}

process.on('exit', cleanupAtExit);
for (const [sig, n] of [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]]) {
  process.once(sig, () => {
    process.exitCode = 128 + n;
    cleanupAtExit();
    process.exit(128 + n);
  });
}

/**
 * A fresh temp dir (0700), removed at exit.
 * @param {string} prefix
 * @returns {string}
 */
export function makeTempDir(prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `minispod-web-${prefix}-`));
  tempDirs.add(dir);
  return dir;
}

/** @param {string} dir */
async function removeTempDir(dir) {
  await fsp.rm(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

/**
 * The environment for children: ours minus MiniSpod settings that would leak
 * into the flags (every flag has an env fallback), plus `extra`.
 * @param {Record<string, string | undefined>} [extra]
 */
function childEnv(extra = {}) {
  /** @type {Record<string, string>} */
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined) continue;
    if (k.startsWith('MINISPOD_') || k === 'DATABASE_URL' || k === 'NOTIFY_SOCKET' || k.startsWith('WATCHDOG_')) {
      continue;
    }
    env[k] = v;
  }
  env.NO_PROXY = env.no_proxy = 'localhost,127.0.0.1,::1';
  env.NO_COLOR = '1'; // plain log files
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

/**
 * Spawns `cmd args` in its own process group with stdout+stderr appended to
 * `logPath`. The returned child has `exited`, a promise of {code, signal}.
 * @param {string} cmd
 * @param {string[]} args
 * @param {{logPath: string, env?: Record<string, string>, cwd?: string}} opts
 * @returns {import('node:child_process').ChildProcess & {exited: Promise<{code: number | null, signal: string | null}>}}
 */
function spawnLogged(cmd, args, { logPath, env, cwd }) {
  const fd = fs.openSync(logPath, 'a');
  let child;
  try {
    child = spawn(cmd, args, {
      stdio: ['ignore', fd, fd],
      detached: true,
      env: env ?? childEnv(),
      cwd: cwd ?? os.tmpdir(),
    });
  } finally {
    fs.closeSync(fd);
  }
  liveChildren.add(child);
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      liveChildren.delete(child);
      resolve({ code, signal });
    });
    child.once('error', (err) => {
      liveChildren.delete(child);
      fs.appendFileSync(logPath, `[harness] spawn ${cmd} failed: ${err.message}\n`);
      resolve({ code: -1, signal: null, error: err });
    });
  });
  // A forgotten child must not keep the test process alive; the exit hook
  // kills it.
  child.unref();
  return Object.assign(child, { exited });
}

/**
 * Sends `signal` to the child's group and waits up to `timeoutMs` for it to
 * exit, then SIGKILLs it.
 * @param {ReturnType<typeof spawnLogged>} child
 */
async function terminate(child, signal = 'SIGTERM', timeoutMs = 15_000) {
  if (child.exitCode !== null || child.signalCode !== null) return child.exited;
  killGroup(child, signal);
  const timedOut = Symbol('timeout');
  let timer;
  const r = await Promise.race([
    child.exited,
    new Promise((resolve) => {
      timer = setTimeout(() => resolve(timedOut), timeoutMs);
    }),
  ]);
  clearTimeout(timer);
  if (r !== timedOut) {
    killGroup(child, 'SIGKILL'); // leftovers in the group, if any
    return r;
  }
  killGroup(child, 'SIGKILL');
  return child.exited;
}

/** @param {string} file */
function requireExecutable(file, hint) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
  } catch {
    throw new Error(`${file} is missing or not executable${hint ? `: ${hint}` : ''}`);
  }
}

const BUILD_HINT = 'build it with `cargo build --workspace --locked --bins` in the repo root, or set MINISPOD_BIN_DIR';

/** @param {string} name */
export function binPath(name) {
  return path.join(BIN_DIR, name);
}

// ---------------------------------------------------------------------------
// Small utilities.

/** @param {number} ms */
export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Polls `fn` until it returns a truthy value (which is returned), or throws
 * after `timeoutMs` with the last error or `message`.
 * @template T
 * @param {() => T | Promise<T>} fn
 * @param {number} [timeoutMs]
 * @param {{intervalMs?: number, message?: string}} [opts]
 * @returns {Promise<T>}
 */
export async function waitFor(fn, timeoutMs = 30_000, { intervalMs = 100, message } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      lastError = undefined;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() >= deadline) {
      const why = message ?? 'condition not met';
      const err = new Error(
        `waitFor timed out after ${timeoutMs} ms: ${why}${lastError ? ` (last error: ${lastError.message ?? lastError})` : ''}`,
      );
      if (lastError) err.cause = lastError;
      throw err;
    }
    await sleep(intervalMs);
  }
}

/**
 * A TCP port that was free a moment ago on 127.0.0.1.
 * @returns {Promise<number>}
 */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (srv.address());
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Whether 127.0.0.1:port accepts a TCP connection.
 * @param {number} port
 * @returns {Promise<boolean>}
 */
export function portAccepts(port, host = '127.0.0.1') {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const done = (ok) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(2000, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/**
 * Whether a TLS server on 127.0.0.1:port completes a handshake for
 * `localhost` with a certificate chaining to `caPem` (so it is the server
 * with that CA, not some other process on the port).
 * @param {number} port
 * @param {string | Buffer} caPem
 * @returns {Promise<boolean>}
 */
export function tlsAccepts(port, caPem) {
  return new Promise((resolve) => {
    const sock = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: caPem, ALPNProtocols: ['h2'] });
    const done = (ok) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(3000, () => done(false));
    sock.once('secureConnect', () => done(sock.authorized));
    sock.once('error', () => done(false));
  });
}

/**
 * The last `lines` lines of `text`.
 * @param {string} text
 */
export function tail(text, lines = 60) {
  const all = text.split('\n');
  return all.slice(Math.max(0, all.length - lines - 1)).join('\n');
}

function readText(file) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/**
 * Runs `fn`; when it throws, appends the log tails of `sources` (objects with
 * a `log()` method and optional `name`) to the error message. Use it to wrap
 * test bodies:  it('x', withLogs(() => [cp, agent], async () => {...}))
 * @param {() => Array<{log: () => string, name?: string} | undefined | null>} sources
 * @param {(...args: any[]) => Promise<any>} fn
 */
export function withLogs(sources, fn) {
  return async (...args) => {
    try {
      return await fn(...args);
    } catch (e) {
      const parts = [];
      for (const s of sources()) {
        if (!s || typeof s.log !== 'function') continue;
        parts.push(`--- ${s.name ?? 'log'} (tail) ---\n${tail(s.log())}`);
      }
      if (parts.length && e instanceof Error) {
        e.message += `\n${parts.join('\n')}`;
      }
      throw e;
    }
  };
}

/** Single-quotes a string for bash. */
export function shellQuote(s) {
  return `'${String(s).replace(/'/g, `'\\''`)}'`;
}

// ---------------------------------------------------------------------------
// Control plane.

/**
 * @typedef {object} ControlPlane
 * @property {string} url          https://localhost:<port>
 * @property {number} port
 * @property {string | undefined} consoleUrl   http://<addr> when opts.args has --console-listen <addr>
 * @property {number | undefined} consolePort
 * @property {string} dataDir
 * @property {string} caPath       <dataDir>/pki/ca.crt
 * @property {string} caHash       sha256:<hex>
 * @property {string} logPath
 * @property {string} name
 * @property {string} adminEmail
 * @property {string} adminPassword
 * @property {string | undefined} enrollmentToken  the static token, with opts.enrollmentToken
 * @property {import('node:child_process').ChildProcess} process  the current process
 * @property {() => Promise<{code: number | null, signal: string | null}>} stop     SIGTERM, await exit
 * @property {() => Promise<{code: number | null, signal: string | null}>} kill     SIGKILL, await exit
 * @property {() => Promise<void>} restart   stop, then start on the same port and data dir
 * @property {() => string} log    the log text (all starts)
 */

/**
 * Starts `minispod-control-plane serve` on a free port with a fresh data dir.
 * Flags in `opts.args` replace the harness's defaults of the same name.
 * `enrollmentToken` (true, or a 16+ char string) writes a static enrollment
 * token file and passes --enrollment-token-file; the token is then
 * `cp.enrollmentToken`, for agents that need not go through the console.
 * @param {{args?: string[], env?: Record<string, string | undefined>, port?: number, dataDir?: string, timeoutMs?: number, enrollmentToken?: boolean | string}} [opts]
 * @returns {Promise<ControlPlane>}
 */
export async function startControlPlane(opts = {}) {
  const bin = binPath('minispod-control-plane');
  requireExecutable(bin, BUILD_HINT);
  let port = opts.port ?? (await freePort());
  const dataDir = opts.dataDir ?? makeTempDir('cp');
  fs.mkdirSync(dataDir, { recursive: true });
  const logPath = path.join(dataDir, 'control-plane.log');
  const caPath = path.join(dataDir, 'pki', 'ca.crt');
  const extra = [...(opts.args ?? [])];
  /** @type {string | undefined} */
  let enrollmentToken;
  if (opts.enrollmentToken) {
    enrollmentToken =
      typeof opts.enrollmentToken === 'string' ? opts.enrollmentToken : `static-${randomBytes(16).toString('hex')}`;
    const tokenFile = path.join(dataDir, 'enrollment-token');
    fs.writeFileSync(tokenFile, `${enrollmentToken}\n`, { mode: 0o600 });
    extra.push('--enrollment-token-file', tokenFile);
    // Test agents share the one static token (real installs get one use).
    if (!extra.includes('--enrollment-token-max-uses')) extra.push('--enrollment-token-max-uses', '0');
  }
  const given = new Set(extra.filter((a) => a.startsWith('--')).map((a) => a.split('=')[0]));
  const buildArgs = () => {
    /** @type {Array<[string, string]>} */
    const defaults = [
      ['--listen', `127.0.0.1:${port}`],
      ['--data-dir', dataDir],
      ['--admin-email', ADMIN_EMAIL],
      ['--admin-password', ADMIN_PASSWORD],
      ['--heartbeat-interval', '1s'],
    ];
    const a = ['serve'];
    for (const [flag, value] of defaults) if (!given.has(flag)) a.push(flag, value);
    a.push(...extra);
    return a;
  };
  let args = buildArgs();
  const env = childEnv({ RUST_LOG: process.env.RUST_LOG, ...(opts.env ?? {}) });
  const timeoutMs = opts.timeoutMs ?? START_TIMEOUT_MS;
  // --console-listen ADDR (plain HTTP on loopback), when the caller asks.
  const consoleAddr = (() => {
    const i = extra.findIndex((a) => a === '--console-listen' || a.startsWith('--console-listen='));
    if (i < 0) return undefined;
    return extra[i].includes('=') ? extra[i].slice(extra[i].indexOf('=') + 1) : extra[i + 1];
  })();
  const consolePort = consoleAddr ? Number(consoleAddr.slice(consoleAddr.lastIndexOf(':') + 1)) : undefined;

  let starts = 0;
  /** @type {ReturnType<typeof spawnLogged>} */
  let child;

  const logTextSince = (offset) => readText(logPath).slice(offset);
  // Ready means a TLS handshake verified by this data dir's CA (a bare TCP
  // accept could be another process that took the port); --plaintext: TCP.
  const plaintext = given.has('--plaintext');
  const serving = async () =>
    plaintext ? portAccepts(port) : tlsAccepts(port, readText(caPath));

  /** One attempt; resolves when ready, rejects (child dead) otherwise. */
  async function startOnce() {
    starts += 1;
    fs.appendFileSync(logPath, `[harness] start #${starts} at ${new Date().toISOString()}: ${bin} ${args.join(' ')}\n`);
    const offset = fs.statSync(logPath).size;
    child = spawnLogged(bin, args, { logPath, env });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        const e = new Error(
          `control plane exited during start (code ${child.exitCode}, signal ${child.signalCode})\n${tail(logTextSince(offset))}`,
        );
        e.log = logTextSince(offset);
        throw e;
      }
      if (fs.existsSync(caPath) && (await serving()) && (!consolePort || (await portAccepts(consolePort)))) return;
      if (Date.now() > deadline) {
        await terminate(child, 'SIGKILL');
        throw new Error(
          `control plane not ready on port ${port} after ${timeoutMs} ms\n${tail(logTextSince(offset))}`,
        );
      }
      await sleep(100);
    }
  }

  /**
   * Start, retrying for a few seconds while the port is still taken. With
   * `newPort`, a taken port (another process grabbed it between freePort()
   * and the bind) is replaced by a fresh one instead.
   */
  async function start(retryBindMs, newPort = false) {
    const until = Date.now() + retryBindMs;
    for (let attempt = 1; ; attempt += 1) {
      try {
        await startOnce();
        return;
      } catch (e) {
        const busy = /address already in use|os error 98/i.test(e.log ?? '');
        if (busy && newPort && attempt < 5) {
          port = await freePort();
          args = buildArgs();
          continue;
        }
        if (!busy || Date.now() > until) throw e;
        await sleep(300);
      }
    }
  }

  await start(opts.port ? 5_000 : 0, !opts.port && !given.has('--listen'));
  const { stdout } = await execFileP(bin, ['ca-hash', '--data-dir', dataDir], { env, timeout: 30_000 });
  const caHash = stdout.trim();
  if (!/^sha256:[0-9a-f]{64}$/.test(caHash)) throw new Error(`unexpected ca-hash output: ${JSON.stringify(stdout)}`);

  /** @type {ControlPlane} */
  const cp = {
    url: `https://localhost:${port}`,
    port,
    consoleUrl: consolePort ? `http://${consoleAddr}` : undefined,
    consolePort,
    dataDir,
    caPath,
    caHash,
    logPath,
    name: 'control-plane',
    adminEmail: ADMIN_EMAIL,
    adminPassword: ADMIN_PASSWORD,
    enrollmentToken,
    get process() {
      return child;
    },
    stop: () => terminate(child, 'SIGTERM'),
    kill: () => terminate(child, 'SIGKILL'),
    async restart() {
      await terminate(child, 'SIGTERM');
      await start(10_000);
    },
    log: () => readText(logPath),
  };
  return cp;
}

// ---------------------------------------------------------------------------
// Agents.

/**
 * @typedef {object} Agent
 * @property {import('node:child_process').ChildProcess} process
 * @property {string} stateDir
 * @property {string} machineId    the --machine-id passed ('' when none)
 * @property {string | undefined} hostname  the host name it reports, when set
 * @property {string} logPath
 * @property {string} name
 * @property {string[]} argv       what was spawned
 * @property {Promise<{code: number | null, signal: string | null}>} exited
 * @property {() => string} log
 * @property {() => Promise<{code: number | null, signal: string | null}>} stop    SIGTERM, await exit
 * @property {() => Promise<{code: number | null, signal: string | null}>} kill9   SIGKILL, await exit
 */

function randomMachineId() {
  return randomBytes(16).toString('hex');
}

/**
 * Wraps argv so that the process sees host name `hostname` (a private UTS
 * namespace; needs root). The agent has no flag for its name: it reports the
 * machine's host name.
 * @param {string | undefined} hostname
 * @param {string} cmd
 * @param {string[]} args
 * @returns {[string, string[]]}
 */
function withHostname(hostname, cmd, args) {
  if (!hostname) return [cmd, args];
  if (process.getuid?.() !== 0) {
    throw new Error('startAgent({name}) sets the host name in a private UTS namespace (unshare --uts), which needs root');
  }
  if (!/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/.test(hostname)) throw new Error(`invalid host name ${JSON.stringify(hostname)}`);
  return ['unshare', ['--uts', 'sh', '-c', 'hostname "$0" && exec "$@"', hostname, cmd, ...args]];
}

/**
 * @param {string} base
 * @param {string[]} argv
 * @param {{hostname?: string, stateDir: string, machineId: string, env?: Record<string, string | undefined>}} o
 * @returns {Agent}
 */
function spawnAgent(base, argv, o) {
  const logPath = path.join(base, 'agent.log');
  const [cmd, args] = withHostname(o.hostname, argv[0], argv.slice(1));
  fs.appendFileSync(logPath, `[harness] ${new Date().toISOString()}: ${[cmd, ...args].map(shellQuote).join(' ')}\n`);
  const child = spawnLogged(cmd, args, {
    logPath,
    env: childEnv({ RUST_LOG: process.env.RUST_LOG, ...(o.env ?? {}) }),
  });
  return {
    process: child,
    stateDir: o.stateDir,
    machineId: o.machineId,
    hostname: o.hostname,
    logPath,
    name: `agent ${o.hostname ?? o.machineId}`,
    argv: [cmd, ...args],
    exited: child.exited,
    log: () => readText(logPath),
    stop: () => terminate(child, 'SIGTERM'),
    kill9: () => terminate(child, 'SIGKILL'),
  };
}

/**
 * Starts `minispod-agent run` against `cp` with a fresh state dir, trusting
 * the CA by file. Each agent gets its own random --machine-id (else all
 * agents on this host would be one worker); pass `machineId` to choose it.
 * `name` sets the host name the agent reports (via unshare --uts; root).
 * `stateDir` reuses a state dir (an agent that has enrolled needs no token).
 * `caHash: true` pins by --ca-hash instead of --ca-file.
 * @param {ControlPlane | {url: string, caPath: string, caHash?: string}} cp
 * @param {{token?: string, name?: string, machineId?: string, stateDir?: string, caHash?: boolean, args?: string[], env?: Record<string, string | undefined>}} [opts]
 * @returns {Agent}
 */
export function startAgent(cp, opts = {}) {
  const bin = binPath('minispod-agent');
  requireExecutable(bin, BUILD_HINT);
  let base;
  let stateDir;
  if (opts.stateDir) {
    stateDir = opts.stateDir;
    base = path.dirname(stateDir);
  } else {
    base = makeTempDir('agent');
    stateDir = path.join(base, 'state');
    fs.mkdirSync(stateDir, { mode: 0o700 });
  }
  const machineId = opts.machineId ?? randomMachineId();
  const argv = [bin, 'run', '--server', cp.url, '--state-dir', stateDir];
  if (opts.token !== undefined) argv.push('--token', opts.token);
  if (opts.caHash) argv.push('--ca-hash', /** @type {string} */ (cp.caHash));
  else argv.push('--ca-file', cp.caPath);
  argv.push('--k3s-config', path.join(stateDir, 'k3s-config.yaml'));
  if (machineId) argv.push('--machine-id', machineId);
  argv.push(...(opts.args ?? []));
  return spawnAgent(base, argv, { hostname: opts.name, stateDir, machineId, env: opts.env });
}

const STATE_DIR_RE = /--state-dir(?:=|\s+)(?:'[^']*'|"(?:[^"\\]|\\.)*"|[^\s;&|]+)/;

/**
 * Runs a join command as copied from the console (`minispod-agent run
 * --server ... --state-dir /var/lib/minispod-agent --token '...' --ca-hash
 * '...'`) through `bash -c`, with the built binary in place of
 * `minispod-agent` (a leading `sudo` is dropped), a fresh temp --state-dir,
 * and, unless the command sets them, --k3s-config in the state dir and a
 * random --machine-id (pass machineId: false to leave it out).
 * @param {string} commandLine
 * @param {{name?: string, machineId?: string | false, env?: Record<string, string | undefined>}} [opts]
 * @returns {Agent & {command: string}}
 */
export function startAgentFromCommand(commandLine, opts = {}) {
  const bin = binPath('minispod-agent');
  requireExecutable(bin, BUILD_HINT);
  const base = makeTempDir('agent');
  const stateDir = path.join(base, 'state');
  fs.mkdirSync(stateDir, { mode: 0o700 });

  let cmd = commandLine.trim();
  const head = /^(?:sudo\s+(?:-\S+\s+)*)?minispod-agent\s+(run|join)\b/.exec(cmd);
  if (!head) {
    throw new Error(`join command must start with "minispod-agent run|join": ${JSON.stringify(commandLine)}`);
  }
  const hasFlag = (flag) => new RegExp(`(^|\\s)${flag}(=|\\s)`).test(cmd);
  const inserted = [];
  if (STATE_DIR_RE.test(cmd)) cmd = cmd.replace(STATE_DIR_RE, `--state-dir ${shellQuote(stateDir)}`);
  else inserted.push('--state-dir', shellQuote(stateDir));
  if (!hasFlag('--k3s-config')) inserted.push('--k3s-config', shellQuote(path.join(stateDir, 'k3s-config.yaml')));
  let machineId = '';
  if (opts.machineId !== false && !hasFlag('--machine-id')) {
    machineId = opts.machineId ?? randomMachineId();
    inserted.push('--machine-id', shellQuote(machineId));
  }
  const rest = cmd.slice(head[0].length);
  cmd = [shellQuote(bin), head[1], ...inserted].join(' ') + rest;
  const agent = spawnAgent(base, ['bash', '-c', cmd], { hostname: opts.name, stateDir, machineId, env: opts.env });
  return Object.assign(agent, { command: cmd });
}

// ---------------------------------------------------------------------------
// Browser.

/**
 * @typedef {import('playwright-core').Browser & {home: string, caPaths: string[]}} TrustingBrowser
 */

async function runTool(cmd, args, hint) {
  try {
    return await execFileP(cmd, args, { timeout: 60_000 });
  } catch (e) {
    if (e.code === 'ENOENT') throw new Error(`${cmd} not found${hint ? `: ${hint}` : ''}`);
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr || e.message}`);
  }
}

/**
 * Launches headless Chromium that trusts the given CA certificate(s) the way
 * a user would: imported into the NSS database of a fresh temp HOME
 * (~/.pki/nssdb). With no CA (undefined, null or []), the browser trusts
 * only the public roots, so a MiniSpod URL fails with
 * net::ERR_CERT_AUTHORITY_INVALID. close() also removes the temp HOME.
 * @param {string | string[] | null} [caPaths]
 * @param {{args?: string[], env?: Record<string, string>}} [opts]
 * @returns {Promise<TrustingBrowser>}
 */
export async function launchBrowser(caPaths, opts = {}) {
  const cas = caPaths == null ? [] : Array.isArray(caPaths) ? caPaths : [caPaths];
  requireExecutable(CHROMIUM_PATH, 'install Debian\'s chromium or set CHROMIUM_PATH');
  const home = makeTempDir('browser-home');
  const db = path.join(home, '.pki', 'nssdb');
  fs.mkdirSync(db, { recursive: true, mode: 0o700 });
  const certutilHint = 'install libnss3-tools';
  await runTool('certutil', ['-d', `sql:${db}`, '-N', '--empty-password'], certutilHint);
  for (const [i, ca] of cas.entries()) {
    if (!fs.existsSync(ca)) throw new Error(`CA certificate ${ca} does not exist`);
    await runTool('certutil', ['-d', `sql:${db}`, '-A', '-t', 'C,,', '-n', `minispod-ca-${i}`, '-i', ca], certutilHint);
  }
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    env: { ...process.env, HOME: home, ...(opts.env ?? {}) },
    args: [...CHROMIUM_ARGS, ...(opts.args ?? [])],
    timeout: START_TIMEOUT_MS * 2,
  });
  const close = browser.close.bind(browser);
  return Object.assign(browser, {
    home,
    caPaths: cas,
    /** Closes the browser and removes its temp HOME. */
    async close(options) {
      try {
        await close(options);
      } finally {
        await removeTempDir(home);
      }
    },
  });
}

/**
 * A page in a fresh context: 1280×800 desktop, or 390×844 touch phone.
 * Extra context options (e.g. bypassCSP, locale) pass through. Close it with
 * `await page.context().close()` (closing the browser also does).
 * @param {import('playwright-core').Browser} browser
 * @param {{phone?: boolean} & import('playwright-core').BrowserContextOptions} [opts]
 * @returns {Promise<import('playwright-core').Page>}
 */
export async function newPage(browser, opts = {}) {
  const { phone, ...contextOptions } = opts;
  const device = phone
    ? { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true }
    : { viewport: { width: 1280, height: 800 } };
  const context = await browser.newContext({ ...device, ...contextOptions });
  context.setDefaultTimeout(30_000);
  context.setDefaultNavigationTimeout(30_000);
  return context.newPage();
}

// ---------------------------------------------------------------------------
// Accessibility.

/** @type {string | undefined} */
let axeSource;

/**
 * @typedef {object} AxeViolation
 * @property {string} id
 * @property {string | null} impact
 * @property {string} help
 * @property {string} helpUrl
 * @property {Array<{target: unknown[], html: string, failureSummary?: string}>} nodes
 */

/**
 * Runs axe-core on the page and returns its 'serious' and 'critical'
 * violations. axe is evaluated over CDP (page.evaluate), which the page's
 * Content-Security-Policy (script-src 'self') does not govern; addScriptTag
 * would inject an inline <script> that CSP blocks.
 * @param {import('playwright-core').Page} page
 * @param {string} [label]
 * @param {{axeOptions?: object, impacts?: string[]}} [opts]
 * @returns {Promise<AxeViolation[]>}
 */
export async function checkAccessibility(page, label = page.url(), opts = {}) {
  const impacts = opts.impacts ?? ['serious', 'critical'];
  const loaded = await page.evaluate(() => typeof (/** @type {any} */ (window).axe) === 'object');
  if (!loaded) {
    axeSource ??= fs.readFileSync(AXE_PATH, 'utf8');
    await page.evaluate(axeSource);
    const ok = await page.evaluate(() => typeof (/** @type {any} */ (window).axe?.run) === 'function');
    if (!ok) throw new Error(`${label}: axe-core did not load into the page`);
  }
  const violations = await page.evaluate(async (axeOptions) => {
    const axe = /** @type {any} */ (window).axe;
    const r = await axe.run(document, axeOptions);
    return r.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      helpUrl: v.helpUrl,
      nodes: v.nodes.map((n) => ({ target: n.target, html: n.html, failureSummary: n.failureSummary })),
    }));
  }, opts.axeOptions ?? {});
  return violations.filter((v) => impacts.includes(v.impact ?? ''));
}

/**
 * Formats violations for an error message.
 * @param {AxeViolation[]} violations
 */
export function formatViolations(violations) {
  return violations
    .map((v) => {
      const targets = v.nodes.map((n) => `      ${JSON.stringify(n.target)}  ${n.html.slice(0, 120)}`).join('\n');
      return `  - ${v.id} (${v.impact}): ${v.help}\n    ${v.helpUrl}\n${targets}`;
    })
    .join('\n');
}

/**
 * Throws if axe finds serious or critical violations.
 * @param {import('playwright-core').Page} page
 * @param {string} [label]
 * @param {{axeOptions?: object, impacts?: string[]}} [opts]
 */
export async function assertAccessible(page, label = page.url(), opts = {}) {
  const violations = await checkAccessibility(page, label, opts);
  if (violations.length > 0) {
    throw new Error(`${label}: ${violations.length} accessibility violation(s):\n${formatViolations(violations)}`);
  }
}

// ---------------------------------------------------------------------------
// Screenshots.

/**
 * Saves a full-page screenshot to <repo>/target/console-screenshots/<name>.png.
 * @param {import('playwright-core').Page} page
 * @param {string} name
 * @returns {Promise<string>} the file written
 */
export async function screenshot(page, name) {
  fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const file = path.join(SCREENSHOT_DIR, `${name.replace(/[^A-Za-z0-9._-]+/g, '-')}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

// ---------------------------------------------------------------------------
// "Public" TLS for nginx: a throwaway CA and a localhost certificate.

/**
 * @typedef {{caPath: string, certPath: string, keyPath: string, dir: string}} PublicTestCa
 */

/** @type {Promise<PublicTestCa> | undefined} */
let publicCaPromise;

/**
 * A throwaway "public" CA and a certificate for localhost / 127.0.0.1 / ::1
 * signed by it, made once per process with the openssl CLI. nginx serves the
 * certificate; pass caPath to launchBrowser (with the control plane's CA).
 * @returns {Promise<PublicTestCa>}
 */
export function publicTestCa() {
  publicCaPromise ??= (async () => {
    const dir = makeTempDir('public-ca');
    const f = (n) => path.join(dir, n);
    const hint = 'install the openssl package';
    const days = '30';
    await runTool('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', f('ca.key'), '-out', f('ca.crt'), '-days', days,
      '-subj', '/O=MiniSpod tests/CN=MiniSpod test public CA',
      '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    ], hint);
    await runTool('openssl', [
      'req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', f('localhost.key'), '-out', f('localhost.csr'), '-subj', '/CN=localhost',
    ], hint);
    fs.writeFileSync(
      f('localhost.ext'),
      [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature',
        'extendedKeyUsage=serverAuth',
        'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1',
        '',
      ].join('\n'),
    );
    await runTool('openssl', [
      'x509', '-req', '-in', f('localhost.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'),
      '-CAcreateserial', '-days', days, '-sha256', '-extfile', f('localhost.ext'), '-out', f('localhost.crt'),
    ], hint);
    return { dir, caPath: f('ca.crt'), certPath: f('localhost.crt'), keyPath: f('localhost.key') };
  })();
  publicCaPromise.catch(() => {
    publicCaPromise = undefined;
  });
  return publicCaPromise;
}

// ---------------------------------------------------------------------------
// nginx in front of the control plane, from systemd/nginx-minispod.conf.

/** Path of the example nginx configuration. */
export const NGINX_EXAMPLE_CONF = path.join(REPO_ROOT, 'systemd', 'nginx-minispod.conf');

/**
 * The nginx executable: $NGINX_PATH, else `nginx` on PATH, else
 * /usr/sbin/nginx (not on a non-root PATH on Debian).
 */
export function nginxPath() {
  if (process.env.NGINX_PATH) return process.env.NGINX_PATH;
  const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), '/usr/sbin', '/usr/local/sbin'];
  for (const d of dirs) {
    const f = path.join(d, 'nginx');
    try {
      fs.accessSync(f, fs.constants.X_OK);
      return f;
    } catch {
      /* next */
    }
  }
  return 'nginx';
}

/** @returns {Promise<[number, number, number]>} */
async function nginxVersion() {
  const { stderr, stdout } = await runTool(nginxPath(), ['-v'], 'install nginx (e.g. nginx-light) or set NGINX_PATH');
  const m = /nginx\/(\d+)\.(\d+)\.(\d+)/.exec(stderr + stdout);
  if (!m) throw new Error(`cannot parse nginx -v output: ${stderr}${stdout}`);
  return [Number(m[1]), Number(m[2]), Number(m[3])];
}

/**
 * Removes top-level `stream { ... }` blocks (they belong outside `http` and
 * need the dynamic stream module; agents in tests connect directly).
 * @param {string} text
 */
function dropStreamBlocks(text) {
  let out = '';
  let i = 0;
  let depth = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '#') {
      const end = text.indexOf('\n', i);
      const stop = end < 0 ? text.length : end;
      out += text.slice(i, stop);
      i = stop;
      continue;
    }
    if (c === '"' || c === "'") {
      let j = i + 1;
      while (j < text.length && text[j] !== c) j += text[j] === '\\' ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    if (depth === 0 && /^stream\s*\{/.test(text.slice(i)) && (i === 0 || /[\s;}]/.test(text[i - 1]))) {
      let j = text.indexOf('{', i) + 1;
      let d = 1;
      while (j < text.length && d > 0) {
        if (text[j] === '#') {
          const end = text.indexOf('\n', j);
          j = end < 0 ? text.length : end;
          continue;
        }
        if (text[j] === '{') d += 1;
        else if (text[j] === '}') d -= 1;
        j += 1;
      }
      out += '# (stream block removed by the test harness)';
      i = j;
      continue;
    }
    if (c === '{') depth += 1;
    if (c === '}') depth -= 1;
    out += c;
    i += 1;
  }
  return out;
}

/**
 * Rewrites the example configuration for a test run. Only known values are
 * substituted; location blocks are kept as they are.
 * @param {string} text
 * @param {{ports: Map<string, number>, cpPort: number, consolePort?: number, pkiDir: string, certPath: string, keyPath: string, legacyHttp2: boolean}} o
 */
export function rewriteNginxConf(text, o) {
  let t = dropStreamBlocks(text);
  // Directives only outside comments: work line by line, leaving comments.
  const lines = t.split('\n').map((line) => {
    const hash = line.indexOf('#');
    const code = hash >= 0 ? line.slice(0, hash) : line;
    const comment = hash >= 0 ? line.slice(hash) : '';
    let c = code;
    c = c.replace(/^(\s*)listen\s+([^;]+);/, (_all, indent, params) => {
      const [addr, ...flags] = params.trim().split(/\s+/);
      if (addr.startsWith('[') || addr.startsWith('unix:')) return `${indent}# (listen ${params.trim()} dropped by the test harness)`;
      const portStr = addr.includes(':') ? addr.slice(addr.lastIndexOf(':') + 1) : addr;
      if (!/^\d+$/.test(portStr)) return `${indent}listen ${params.trim()};`;
      if (!o.ports.has(portStr)) throw new Error(`internal: no port mapped for ${portStr}`);
      const f = [...flags];
      if (o.legacyHttp2 && f.includes('ssl') && !f.includes('http2')) f.push('http2');
      return `${indent}listen 127.0.0.1:${o.ports.get(portStr)}${f.length ? ` ${f.join(' ')}` : ''};`;
    });
    if (o.legacyHttp2) c = c.replace(/^(\s*)http2\s+(on|off)\s*;/, '$1# (http2 $2; moved into listen: nginx < 1.25.1)');
    c = c.replace(/^(\s*)server_name\s+[^;]+;/, '$1server_name localhost;');
    c = c.replace(/^(\s*)ssl_certificate\s+[^;]+;/, `$1ssl_certificate ${o.certPath};`);
    c = c.replace(/^(\s*)ssl_certificate_key\s+[^;]+;/, `$1ssl_certificate_key ${o.keyPath};`);
    c = c.replace(/\b(?:127\.0\.0\.1|localhost|\[::1\]):7443\b/g, `127.0.0.1:${o.cpPort}`);
    if (o.consolePort) c = c.replace(/\b(?:127\.0\.0\.1|localhost|\[::1\]):7080\b/g, `127.0.0.1:${o.consolePort}`);
    c = c.replace(/\/var\/lib\/minispod\/pki\//g, `${o.pkiDir}/`);
    // The install script publishes the CA for nginx as /etc/ssl/minispod/ca.crt.
    c = c.replace(/\/etc\/ssl\/minispod\//g, `${o.pkiDir}/`);
    return c + comment;
  });
  return lines.join('\n');
}

/**
 * @typedef {object} Nginx
 * @property {string} url       https://localhost:<port>
 * @property {number} port
 * @property {string} caPath    the public test CA (trust it in the browser)
 * @property {string} dir       nginx prefix dir (nginx.conf, logs, temp)
 * @property {string} confPath
 * @property {string} name
 * @property {() => string} log          error log
 * @property {() => string} accessLog
 * @property {() => Promise<{code: number | null, signal: string | null}>} stop
 */

/**
 * Runs nginx in front of `cp` with a configuration generated from
 * systemd/nginx-minispod.conf (or opts.confPath): listen ports mapped to
 * free ones on 127.0.0.1, server_name localhost, the public test CA's
 * localhost certificate, upstream 127.0.0.1:7443 → the control plane's port,
 * /var/lib/minispod/pki/ → the control plane's pki dir, and 127.0.0.1:7080 →
 * the control plane's --console-listen port (if the config uses it). On nginx < 1.25.1
 * (Debian 12 ships 1.22), `http2 on;` becomes the `http2` listen flag.
 * @param {ControlPlane | {port: number, dataDir: string, consolePort?: number}} cp
 * @param {{confPath?: string, timeoutMs?: number}} [opts]
 * @returns {Promise<Nginx>}
 */
export async function startNginx(cp, opts = {}) {
  const [maj, min, patch] = await nginxVersion();
  const legacyHttp2 = maj * 1_000_000 + min * 1000 + patch < 1_025_001;
  const tls = await publicTestCa();
  const confSrc = opts.confPath ?? NGINX_EXAMPLE_CONF;
  const source = fs.readFileSync(confSrc, 'utf8');

  if (/^[^#\n]*:7080\b/m.test(source) && !cp.consolePort) {
    throw new Error(`${confSrc} proxies to the console listener (:7080): start the control plane with args ['--console-listen', '127.0.0.1:<port>']`);
  }
  /** Original listen port → free port, fresh for each attempt. */
  const mapPorts = async () => {
    const ports = new Map();
    for (const m of source.matchAll(/^[^#\n]*\blisten\s+([^;\s]+)/gm)) {
      const addr = m[1];
      if (addr.startsWith('[') || addr.startsWith('unix:')) continue;
      const p = addr.includes(':') ? addr.slice(addr.lastIndexOf(':') + 1) : addr;
      if (/^\d+$/.test(p) && !ports.has(p)) ports.set(p, await freePort());
    }
    if (!ports.has('443')) throw new Error(`${confSrc} has no "listen 443" to map`);
    return ports;
  };

  const dir = makeTempDir('nginx');
  for (const d of ['tmp/body', 'tmp/proxy', 'tmp/fastcgi', 'tmp/uwsgi', 'tmp/scgi', 'html', 'logs']) {
    fs.mkdirSync(path.join(dir, d), { recursive: true });
  }
  const f = (n) => path.join(dir, n);
  const confPath = f('nginx.conf');
  const errorLog = f('logs/error.log');
  const logPath = f('logs/nginx.out');
  const baseArgs = ['-p', dir, '-c', confPath, '-e', errorLog];
  const mime = fs.existsSync('/etc/nginx/mime.types') ? '    include /etc/nginx/mime.types;\n' : '';
  const timeoutMs = opts.timeoutMs ?? START_TIMEOUT_MS;

  /** @type {number} */
  let port;
  /** @type {ReturnType<typeof spawnLogged>} */
  let child;
  for (let attempt = 1; ; attempt += 1) {
    const ports = await mapPorts();
    port = ports.get('443');
    const body = rewriteNginxConf(source, {
      ports,
      cpPort: cp.port,
      consolePort: cp.consolePort,
      pkiDir: path.join(cp.dataDir, 'pki'),
      certPath: tls.certPath,
      keyPath: tls.keyPath,
      legacyHttp2,
    });
    const conf = `# Generated by web/tests/harness.mjs from ${confSrc}
${process.getuid?.() === 0 ? 'user root;\n' : ''}worker_processes 1;
daemon off;
master_process on;
pid ${f('nginx.pid')};
error_log ${errorLog} info;

events {
    worker_connections 256;
}

http {
${mime}    default_type application/octet-stream;
    access_log ${f('logs/access.log')};
    client_body_temp_path ${f('tmp/body')};
    proxy_temp_path ${f('tmp/proxy')};
    fastcgi_temp_path ${f('tmp/fastcgi')};
    uwsgi_temp_path ${f('tmp/uwsgi')};
    scgi_temp_path ${f('tmp/scgi')};

# ---- ${path.basename(confSrc)} ----
${body}
}
`;
    fs.writeFileSync(confPath, conf);
    try {
      await execFileP(nginxPath(), ['-t', '-q', ...baseArgs], { timeout: 30_000 });
    } catch (e) {
      if (e.code === 'ENOENT') throw new Error(`${nginxPath()} not found: install nginx (e.g. nginx-light) or set NGINX_PATH`);
      throw new Error(`generated nginx config ${confPath} is invalid:\n${e.stderr || e.message}\n--- config ---\n${conf}`);
    }
    const errorLogStart = readText(errorLog).length;
    child = spawnLogged(nginxPath(), baseArgs, { logPath, cwd: dir });
    const deadline = Date.now() + timeoutMs;
    let started = true;
    while (!(await portAccepts(port))) {
      if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
        await terminate(child, 'SIGKILL');
        started = false;
        break;
      }
      await sleep(100);
    }
    if (started) break;
    const why = readText(errorLog).slice(errorLogStart);
    // Another process took a port between freePort() and nginx's bind: retry.
    if (/Address already in use/.test(why) && attempt < 5) continue;
    throw new Error(`nginx did not start on port ${port}:\n${tail(readText(logPath) + why)}`);
  }
  return {
    url: `https://localhost:${port}`,
    port,
    caPath: tls.caPath,
    dir,
    confPath,
    name: 'nginx',
    process: child,
    log: () => readText(logPath) + readText(errorLog),
    accessLog: () => readText(f('logs/access.log')),
    stop: () => terminate(child, 'SIGTERM'),
  };
}

/**
 * @typedef {object} SmtpSink
 * @property {number} port
 * @property {string} url          --smtp-url for it (plain SMTP on loopback)
 * @property {() => Array<{to: string[], subject: string, text: string, html: string}>} mails  every mail received, oldest first
 * @property {(to: string, n?: number, timeoutMs?: number) => Promise<Array<{to: string[], subject: string, text: string, html: string}>>} waitForMail
 * @property {() => Promise<unknown>} stop
 */

/**
 * Starts a real SMTP server (aiosmtpd, testkit/smtp_sink.py)
 * that keeps every mail as JSON. Python comes from MINISPOD_TEST_PYTHON or
 * the test command's venv (.ci/.venv).
 * @returns {Promise<SmtpSink>}
 */
export async function startSmtpSink() {
  const python = process.env.MINISPOD_TEST_PYTHON || path.join(REPO_ROOT, '.ci', '.venv', 'bin', 'python');
  requireExecutable(python, 'the mail tests need aiosmtpd: run the README\'s test command, or set MINISPOD_TEST_PYTHON');
  const dir = makeTempDir('smtp');
  const mailDir = path.join(dir, 'mail');
  fs.mkdirSync(mailDir);
  const port = await freePort();
  const logPath = path.join(dir, 'smtp.log');
  const script = path.join(REPO_ROOT, 'testkit', 'smtp_sink.py');
  const child = spawnLogged(python, [script, '--port', String(port), '--dir', mailDir], { logPath });
  await waitFor(() => portAccepts(port), 15_000, { message: `SMTP server on ${port}; log: ${readText(logPath)}` });
  const mails = () =>
    fs
      .readdirSync(mailDir)
      .filter((n) => n.endsWith('.json'))
      .sort()
      .map((n) => JSON.parse(fs.readFileSync(path.join(mailDir, n), 'utf8')));
  return {
    port,
    url: `smtp://127.0.0.1:${port}?tls=none`,
    mails,
    async waitForMail(to, n = 1, timeoutMs = 30_000) {
      const mine = () => mails().filter((m) => m.to.some((t) => t.toLowerCase() === to.toLowerCase()));
      await waitFor(() => mine().length >= n, timeoutMs, { message: `${n} mail(s) to ${to}; got ${JSON.stringify(mails().map((m) => [m.to, m.subject]))}` });
      return mine();
    },
    stop: () => terminate(child),
  };
}
