#!/usr/bin/env bash
# Installs the MiniSpod node agent on this worker: binary, hardened unit,
# /etc/minispod/agent.env with the server and CA pin, the token in
# /var/lib/minispod-agent/enroll.token (0600; the agent deletes it once it
# has enrolled), enabled and started; the agent then enrolls and runs its
# K3s join hook. TOKEN is an
# enrollment token for this machine, e.g. the single-use one in the join
# command install-control-plane.sh prints.
#
# Idempotent: a second run with the same options changes nothing.
#
#   install-agent.sh --server URL --token TOKEN --ca-hash sha256:HEX
#                    [--k3s-join-command CMD] [--root DIR] [--binary PATH]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=install-common.sh
. "$here/install-common.sh"

root="" binary="" server="" token="" ca_hash="" join_cmd="systemctl enable --now k3s-agent"
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=${2%/}; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    --server) server=$2; shift 2 ;;
    --token) token=$2; shift 2 ;;
    --ca-hash) ca_hash=$2; shift 2 ;;
    --k3s-join-command) join_cmd=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done
[ -n "$server" ] || die "--server is required"
case "$ca_hash" in sha256:????????????????????????????????????????????????????????????????) ;; *) die "--ca-hash must be sha256:<64 hex digits>" ;; esac
[ -n "$token" ] || die "--token is required"
bin=$(find_binary minispod-agent "$binary")
R=$root

say "MiniSpod agent -> ${R:-/}"
install_file "$bin" "$R/usr/bin/minispod-agent" 755
install_file "$here/minispod-agent.service" "$R/etc/systemd/system/minispod-agent.service" 644
ensure_dir "$R/etc/minispod" 755
ensure_dir "$R/var/lib/minispod-agent" 700
# Not in agent.env: the agent deletes the file once the token is spent (it
# cannot edit the environment file, which its unit keeps read-only).
if [ ! -e "$R/var/lib/minispod-agent/credentials.json" ]; then
  write_file "$R/var/lib/minispod-agent/enroll.token" 600 <<<"$token"
fi
write_file "$R/etc/minispod/agent.env" 600 <<EOF2
# Environment of minispod-agent.service (written by install-agent.sh).
# The token file and CA pin are used only until the agent has enrolled; the
# token (single-use, from install-control-plane.sh) admits nothing after,
# and the agent deletes its file.
MINISPOD_SERVER=$server
MINISPOD_TOKEN_FILE=/var/lib/minispod-agent/enroll.token
MINISPOD_CA_HASH=$ca_hash
MINISPOD_STATE_DIR=/var/lib/minispod-agent
MINISPOD_K3S_JOIN_COMMAND=$join_cmd
EOF2
enable_unit "$R" minispod-agent.service
say "Agent installed; it enrolls with $server and joins K3s (journalctl -u minispod-agent)."
