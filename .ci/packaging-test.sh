#!/usr/bin/env bash
# Packaging tests: the Debian packages build and unpack with the expected
# files and modes, the packaged binaries run, and the install scripts run
# twice into a scratch root with no change on the second run.
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
  (cd "$1" && find . -printf '%p %m %l\n' | sort && find . -type f -exec sha256sum {} + | sort)
}
# Install scripts from the unpacked package, twice each, into fresh roots.
for script in control-plane agent; do
  root="$scratch/root-$script"
  mkdir -p "$root"
  if [ $script = control-plane ]; then
    args=(--root "$root" --binary "$scratch/pkg/usr/bin/minispod-control-plane" --name cp.example.org)
  else
    args=(--root "$root" --binary "$scratch/pkg/usr/bin/minispod-agent" --server https://cp.example.org:7443
          --token abc.def --ca-hash "sha256:$(printf '0%.0s' $(seq 64))" --k3s-join-command true)
  fi
  "$scratch/pkg/usr/share/minispod/install-$script.sh" "${args[@]}" > "$scratch/first-$script.log"
  snapshot "$root" > "$scratch/before"
  "$scratch/pkg/usr/share/minispod/install-$script.sh" "${args[@]}" > "$scratch/second.log"
  snapshot "$root" > "$scratch/after"
  diff -u "$scratch/before" "$scratch/after" || fail "install-$script.sh changed files on its second run"
  if grep -q '  installed\|  created\|  added' "$scratch/second.log"; then
    fail "install-$script.sh reported changes on its second run: $(cat "$scratch/second.log")"
  fi
  [ -L "$root/etc/systemd/system/multi-user.target.wants/minispod-$script.service" ] \
    || fail "install-$script.sh did not enable the unit"
done
root="$scratch/root-control-plane"
expect_mode "$root" etc/minispod/control-plane.env 600
expect_mode "$root" var/lib/minispod 700
expect_mode "$root" var/lib/minispod/pki/ca.key 600
grep -q '^MINISPOD_ADMIN_PASSWORD=.\{32\}$' "$root/etc/minispod/control-plane.env" || fail "no generated admin password"
grep -q 'install-agent.sh --server https://cp.example.org:7443 --token .* --ca-hash sha256:[0-9a-f]\{64\}$' "$scratch/first-control-plane.log" \
  || fail "install-control-plane.sh did not print the join command: $(cat "$scratch/first-control-plane.log")"
expect_mode "$scratch/root-agent" etc/minispod/agent.env 600
expect_mode "$scratch/root-agent" var/lib/minispod-agent 700
echo "install scripts: idempotent, secrets generated once, units enabled"
