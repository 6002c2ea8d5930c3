#!/usr/bin/env bash
# Packaging tests: the Debian packages build and unpack with the expected
# files and modes, the packaged binaries run, and the install path works as
# an operator walks it: dpkg installs each package into a scratch root (its
# files, conffiles and maintainer scripts, chrootless with DPKG_ROOT, so
# nothing touches this machine's users or units), the install scripts run
# there twice with no file changed on the second run, the control plane
# starts from that root's configuration, and an agent installed with
# exactly the printed join command enrolls and comes online against the
# printed name. That last part runs in its own network and mount namespace
# (unshare): the printed name resolves to 127.0.0.1 through a private
# /etc/hosts, and the printed port is free.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

if ! command -v cargo-deb >/dev/null; then
  cargo install cargo-deb --locked --version 3.8.0
fi
cargo deb -p minispod-control-plane --locked >/dev/null
cargo deb -p minispod-agent --locked >/dev/null

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

expect_mode() { # ROOT PATH MODE
  [ -e "$1/$2" ] || fail "$2 missing from the package"
  local m
  m=$(stat -c %a "$1/$2")
  [ "$m" = "$3" ] || fail "$2 has mode $m, expected $3"
}

cp_deb=target/debian/minispod-control-plane_*_amd64.deb
agent_deb=target/debian/minispod-agent_*_amd64.deb
dpkg-deb -x $cp_deb "$scratch/pkg"
dpkg-deb -x $agent_deb "$scratch/pkg"
expect_mode "$scratch/pkg" usr/bin/minispod-control-plane 755
expect_mode "$scratch/pkg" usr/bin/minispod-agent 755
expect_mode "$scratch/pkg" usr/lib/systemd/system/minispod-control-plane.service 644
expect_mode "$scratch/pkg" usr/lib/systemd/system/minispod-agent.service 644
expect_mode "$scratch/pkg" etc/minispod/control-plane.toml 640
expect_mode "$scratch/pkg" etc/minispod/agent.env 600
expect_mode "$scratch/pkg" usr/share/minispod/install-control-plane.sh 755
expect_mode "$scratch/pkg" usr/share/minispod/install-agent.sh 755
dpkg-deb -f $cp_deb Depends | grep -q adduser || fail "the control plane package must depend on adduser"
dpkg-deb -I $cp_deb conffiles | grep -q /etc/minispod/control-plane.toml || fail "control-plane.toml is not a conffile"
dpkg-deb -e $cp_deb "$scratch/cp-control"
grep -q 'adduser --system' "$scratch/cp-control/postinst" || fail "postinst does not create the user"
grep -q 'deb-systemd-helper' "$scratch/cp-control/postinst" || fail "postinst does not enable the unit"
"$scratch/pkg/usr/bin/minispod-control-plane" --version | grep -q minispod-control-plane || fail "packaged control plane does not run"
"$scratch/pkg/usr/bin/minispod-agent" --version | grep -q minispod-agent || fail "packaged agent does not run"
echo "packages: files, modes, maintainer scripts and binaries as expected"

snapshot() {
  # The database is state, not an installed file: each run of the control
  # plane's script stores the fresh single-use token it prints there.
  (cd "$1" && find . -path ./var/lib/minispod/minispod.db\* -prune -o -printf '%p %m %l\n' | sort \
    && find . -path ./var/lib/minispod/minispod.db\* -prune -o -type f -exec sha256sum {} + | sort)
}
# new_root DIR: an empty machine as far as dpkg and the user database go.
new_root() {
  mkdir -p "$1/etc" "$1/var/lib/dpkg/info" "$1/var/lib/dpkg/updates" "$1/var/lib/dpkg/triggers"
  touch "$1/var/lib/dpkg/status" "$1/var/lib/dpkg/available"
  echo 'root:x:0:0:root:/root:/bin/sh' > "$1/etc/passwd"
  echo 'root:x:0:' > "$1/etc/group"
  echo 'root:*:19000:0:99999:7:::' > "$1/etc/shadow"
  echo 'root:*::' > "$1/etc/gshadow"
  chmod 640 "$1/etc/shadow" "$1/etc/gshadow"
}
# dpkg_install ROOT DEB: dpkg -i into ROOT; maintainer scripts run with
# DPKG_ROOT=ROOT (dependencies are this machine's, not the root's).
dpkg_install() {
  dpkg --root="$1" --force-script-chrootless --force-depends --log=/dev/null -i "$2" > "$scratch/dpkg.log" 2>&1 \
    || fail "dpkg -i $2 into $1: $(cat "$scratch/dpkg.log")"
}

# The control plane: dpkg leaves the packaged control-plane.toml (tls-san
# and enrollment-token-file commented out), then the install script runs.
cp_root="$scratch/root-control-plane"
new_root "$cp_root"
dpkg_install "$cp_root" $cp_deb
grep -q '^minispod:' "$cp_root/etc/passwd" || fail "postinst did not add the minispod user to the root"
[ "$(stat -c %a "$cp_root/var/lib/minispod")" = 700 ] || fail "postinst did not make /var/lib/minispod 0700"
grep -q '^# tls-san' "$cp_root/etc/minispod/control-plane.toml" || fail "the packaged control-plane.toml changed: update this test"
[ -L "$cp_root/etc/systemd/system/multi-user.target.wants/minispod-control-plane.service" ] \
  || fail "the package did not enable its unit"
agent_root="$scratch/root-agent"
new_root "$agent_root"
dpkg_install "$agent_root" $agent_deb
[ "$(stat -c %a "$agent_root/var/lib/minispod-agent")" = 700 ] || fail "agent postinst did not make its state dir"
echo "packages: dpkg installs both into roots, maintainer scripts included"

# Install scripts from the installed packages, twice each.
for script in control-plane agent; do
  if [ $script = control-plane ]; then
    root=$cp_root
    args=(--root "$root" --binary "$root/usr/bin/minispod-control-plane" --name cp.example.org)
  else
    # A root of its own: the end-to-end run below installs into $agent_root.
    root="$scratch/root-agent-twice"
    mkdir -p "$root"
    args=(--root "$root" --binary "$agent_root/usr/bin/minispod-agent" --server https://cp.example.org:7443
          --token abc.def --ca-hash "sha256:$(printf '0%.0s' $(seq 64))" --k3s-join-command true)
  fi
  scripts=$cp_root/usr/share/minispod
  [ $script = control-plane ] || scripts=$agent_root/usr/share/minispod
  "$scripts/install-$script.sh" "${args[@]}" > "$scratch/first-$script.log"
  snapshot "$root" > "$scratch/before"
  "$scripts/install-$script.sh" "${args[@]}" > "$scratch/second-$script.log"
  snapshot "$root" > "$scratch/after"
  diff -u "$scratch/before" "$scratch/after" || fail "install-$script.sh changed files on its second run"
  if grep -q '  installed\|  created\|  added\|  set ' "$scratch/second-$script.log"; then
    fail "install-$script.sh reported changes on its second run: $(cat "$scratch/second-$script.log")"
  fi
  [ -L "$root/etc/systemd/system/multi-user.target.wants/minispod-$script.service" ] \
    || fail "install-$script.sh did not enable the unit"
done
root=$cp_root
expect_mode "$root" etc/minispod/control-plane.env 600
expect_mode "$root" var/lib/minispod 700
expect_mode "$root" var/lib/minispod/pki/ca.key 600
expect_mode "$root" etc/ssl/minispod/ca.crt 644
cmp -s "$root/etc/ssl/minispod/ca.crt" "$root/var/lib/minispod/pki/ca.crt" || fail "the CA published for nginx is not the CA"
grep -q '^MINISPOD_ADMIN_PASSWORD=.\{32\}$' "$root/etc/minispod/control-plane.env" || fail "no generated admin password"
grep -q '^tls-san = \["cp.example.org"\]$' "$root/etc/minispod/control-plane.toml" \
  || fail "the packaged control-plane.toml was not given tls-san: $(cat "$root/etc/minispod/control-plane.toml")"
for log in first second; do
  grep -q '^  install-agent.sh --server https://cp.example.org:7443 --token [0-9a-f]\{12\}\.[A-Za-z0-9_-]\{43\} --ca-hash sha256:[0-9a-f]\{64\}$' "$scratch/$log-control-plane.log" \
    || fail "install-control-plane.sh did not print the join command: $(cat "$scratch/$log-control-plane.log")"
done
[ "$(grep -ho -- '--token [^ ]*' "$scratch/first-control-plane.log" "$scratch/second-control-plane.log" | sort -u | wc -l)" = 2 ] \
  || fail "each run should print a fresh token"
expect_mode "$scratch/root-agent-twice" etc/minispod/agent.env 600
expect_mode "$scratch/root-agent-twice" var/lib/minispod-agent 700
echo "install scripts: idempotent, secrets generated once, units enabled, packaged configuration completed"

# End to end, in a private network and mount namespace.
missing=
command -v ip >/dev/null || missing="$missing iproute2"
command -v curl >/dev/null || missing="$missing curl"
command -v unshare >/dev/null || missing="$missing util-linux"
if [ -n "$missing" ]; then
  apt-get update -qq
  apt-get install -y --no-install-recommends $missing >/dev/null
fi
join=$(sed -n 's/^  \(install-agent.sh --server .*\)$/\1/p' "$scratch/second-control-plane.log")
cat > "$scratch/e2e.sh" <<'EOF2'
set -euo pipefail
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
ip link set lo up
printf '127.0.0.1 localhost\n127.0.0.1 cp.example.org\n' > "$scratch/hosts"
mount --bind "$scratch/hosts" /etc/hosts
# export_env_file FILE: a systemd EnvironmentFile's KEY=VALUE lines.
export_env_file() {
  local line
  while IFS= read -r line; do
    case "$line" in [A-Z_]*=*) export "${line?}" ;; esac
  done < "$1"
}
# The control plane as its unit runs it (ExecStart, EnvironmentFile,
# Environment), with the root's paths.
unit=$cp_root/usr/lib/systemd/system/minispod-control-plane.service
grep -qx 'ExecStart=/usr/bin/minispod-control-plane serve --config /etc/minispod/control-plane.toml' "$unit" \
  || fail "the unit's ExecStart changed: update this test"
(
  export_env_file "$cp_root/etc/minispod/control-plane.env"
  export MINISPOD_DATA_DIR=$cp_root/var/lib/minispod
  exec "$cp_root/usr/bin/minispod-control-plane" serve --config "$cp_root/etc/minispod/control-plane.toml"
) > "$scratch/cp.log" 2>&1 &
cp_pid=$!
agent_pid=
trap 'kill $cp_pid $agent_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/7443) 2>/dev/null && break
  kill -0 $cp_pid 2>/dev/null || fail "the control plane did not start: $(cat "$scratch/cp.log")"
  sleep 0.2
done
# The certificate covers the printed name, and nginx's copy of the CA verifies it.
curl -sS -o /dev/null --cacert "$cp_root/etc/ssl/minispod/ca.crt" https://cp.example.org:7443/ \
  || fail "https://cp.example.org:7443 does not verify with /etc/ssl/minispod/ca.crt"
# Exactly the printed command, on the "worker" (its root; no K3s here).
read -ra cmd <<< "$join"
"$agent_root/usr/share/minispod/${cmd[0]}" "${cmd[@]:1}" \
  --root "$agent_root" --binary "$agent_root/usr/bin/minispod-agent" --k3s-join-command true > "$scratch/agent-install.log"
(
  export_env_file "$agent_root/etc/minispod/agent.env"
  export MINISPOD_STATE_DIR=$agent_root/var/lib/minispod-agent
  export MINISPOD_TOKEN_FILE=$agent_root/var/lib/minispod-agent/enroll.token
  export MINISPOD_K3S_CONFIG=$agent_root/etc/rancher/k3s/config.yaml
  exec "$agent_root/usr/bin/minispod-agent" run
) > "$scratch/agent.log" 2>&1 &
agent_pid=$!
online=
for _ in $(seq 150); do
  if curl -sS --fail http://127.0.0.1:9464/metrics 2>/dev/null | grep -qx 'minispod_workers_online 1'; then
    online=1
    break
  fi
  kill -0 $agent_pid 2>/dev/null || fail "the agent exited: $(cat "$scratch/agent.log")"
  sleep 0.2
done
[ -n "$online" ] || fail "the agent did not come online: $(tail -n 20 "$scratch/agent.log")"
# The agent does not keep the spent token.
[ ! -e "$agent_root/var/lib/minispod-agent/enroll.token" ] || fail "the agent kept its token file after enrolling"
echo "end to end: the printed join command enrolled an agent against https://cp.example.org:7443"
EOF2
scratch=$scratch cp_root=$cp_root agent_root=$agent_root join=$join \
  unshare --net --mount --fork bash "$scratch/e2e.sh" || fail "the install path does not work end to end"
