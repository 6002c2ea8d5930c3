#!/usr/bin/env bash
# The main job: the control plane on its defaults (SQLite in ./minispod-data,
# TLS from its own CA, port 7443) with a node agent on this machine joining
# it, and the web console at http://localhost:7080/ (loopback only, no
# certificate to trust). Ctrl-C stops both (the worker goes INACTIVE as the
# agent leaves).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${MINISPOD_DATA_DIR:-minispod-data}
port=${MINISPOD_PORT:-7443}
console_port=${MINISPOD_CONSOLE_PORT:-7080}

# The console is built with Node.js and embedded in the binary.
if command -v npm >/dev/null; then
  (cd web && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
else
  echo "Node.js not found: the control plane is built without its web console (the API works)." >&2
fi
cargo build --release --locked --bin minispod-control-plane --bin minispod-agent
mkdir -p "$data" && chmod 700 "$data"
# A static enrollment token for the local agent and the administrator's
# password, made once and kept in the data dir (mode 0600).
if [ ! -s "$data/enrollment.token" ]; then
  (umask 077; head -c 32 /dev/urandom | base64 | tr -d '/+=\n' > "$data/enrollment.token")
fi
# The password is made with the database, so the file always holds the
# password the administrator was created with (a later change in the
# console is theirs to remember).
if [ ! -e "$data/minispod.db" ] && [ -z "${DATABASE_URL:-}" ]; then
  (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=\n' > "$data/admin.password")
fi
admin_email=${MINISPOD_ADMIN_EMAIL:-admin@minispod.local}
password_line="$(cat "$data/admin.password" 2>/dev/null || echo '(set at first start)')   (kept in $data/admin.password; unchanged if you changed it since)"

if [ -s "$data/admin.password" ]; then
  MINISPOD_ADMIN_PASSWORD=$(cat "$data/admin.password")
  export MINISPOD_ADMIN_PASSWORD
fi
target/release/minispod-control-plane serve \
  --listen "0.0.0.0:$port" --data-dir "$data" \
  --console-listen "127.0.0.1:$console_port" \
  --admin-email "$admin_email" \
  --enrollment-token-file "$data/enrollment.token" &
cp_pid=$!
trap 'kill $agent_pid $cp_pid 2>/dev/null; wait' INT TERM EXIT
agent_pid=
for _ in $(seq 100); do
  [ -s "$data/pki/ca.crt" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

target/release/minispod-agent run \
  --server "https://localhost:$port" \
  --state-dir "$data/agent" \
  --token "$(cat "$data/enrollment.token")" \
  --ca-file "$data/pki/ca.crt" \
  --k3s-config "$data/agent/k3s-config.yaml" &
agent_pid=$!

cat <<INFO

  MiniSpod is running.
    Console:   http://localhost:$console_port/   (this machine only; or https://<host>:$port/ once you trust $data/pki/ca.crt)
    Email:     $admin_email
    Password:  $password_line
    API:       https://localhost:$port   (grpcurl -cacert $data/pki/ca.crt ...)
  Ctrl-C stops the control plane and the agent.

INFO
wait $cp_pid
