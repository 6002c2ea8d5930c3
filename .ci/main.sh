#!/usr/bin/env bash
# The main job: the control plane on its defaults (SQLite in ./minispod-data,
# TLS from its own CA, port 7443) with a node agent on this machine joining
# it. Ctrl-C stops both (the worker goes INACTIVE as the agent leaves).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${MINISPOD_DATA_DIR:-minispod-data}
port=${MINISPOD_PORT:-7443}

cargo build --release --locked --bin minispod-control-plane --bin minispod-agent
mkdir -p "$data" && chmod 700 "$data"
# A static enrollment token for the local agent, made once.
if [ ! -s "$data/enrollment.token" ]; then
  (umask 077; head -c 32 /dev/urandom | base64 | tr -d '/+=\n' > "$data/enrollment.token")
fi

target/release/minispod-control-plane serve \
  --listen "0.0.0.0:$port" --data-dir "$data" \
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
wait $cp_pid
