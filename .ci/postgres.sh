#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster for the test suite and prints its
# administrator URL on stdout. Installs PostgreSQL from Debian's packages when
# it is missing. The cluster lives in DIR (made, then owned by the postgres
# user: initdb refuses root) and listens on 127.0.0.1 only.
#
#   url=$(.ci/postgres.sh start DIR)   # postgres://postgres@127.0.0.1:PORT/postgres
#   .ci/postgres.sh stop DIR
set -euo pipefail

bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return; }
  done
  return 1
}

case "${1:-start}" in
  start)
    if ! bin=$(bindir); then
      echo "installing PostgreSQL from Debian's packages" >&2
      apt-get update -qq >&2 || true
      apt-get install -y -qq --no-install-recommends postgresql >&2
      bin=$(bindir)
    fi
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
    dir=${2:?usage: $0 start DIR}
    mkdir -p "$dir"
    chown postgres "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    runuser -u postgres -- "$bin/initdb" -D "$dir/data" -U postgres -A trust \
      --no-sync --locale=C.UTF-8 -E UTF8 >/dev/null
    runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o \
      "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=500" \
      start >/dev/null
    echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, cluster in $dir" >&2
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    bin=$(bindir)
    runuser -u postgres -- "$bin/pg_ctl" -D "$2/data" -m immediate stop >/dev/null || true
    rm -rf "$2"
    ;;
  *)
    echo "usage: $0 start DIR | stop DIR" >&2
    exit 2
    ;;
esac
