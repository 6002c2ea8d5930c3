# Shared helpers of the MiniSpod install scripts (sourced, not run).
# Every step changes only what is missing or different, so running a script
# twice changes nothing the second time.

say() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# install_file SRC DEST MODE: copy when DEST is absent or different.
install_file() {
  if [ -f "$2" ] && cmp -s "$1" "$2"; then
    [ "$(stat -c %a "$2")" = "$3" ] || chmod "$3" "$2"
    return 0
  fi
  install -D -m "$3" "$1" "$2"
  say "  installed $2"
}

# write_file DEST MODE: stdin becomes DEST when absent or different.
write_file() {
  local tmp
  tmp=$(mktemp)
  cat > "$tmp"
  install_file "$tmp" "$1" "$2"
  rm -f "$tmp"
}

# write_once DEST MODE: stdin becomes DEST only when it is absent (secrets,
# files an operator may have edited).
write_once() {
  if [ -e "$1" ]; then
    cat > /dev/null
    return 0
  fi
  write_file "$1" "$2"
}

# ensure_setting FILE KEY VALUE: a TOML `KEY = VALUE` line, replacing the
# key's line, or appended when the key is absent (or only commented out).
ensure_setting() {
  local line="$2 = $3"
  grep -qxF "$line" "$1" && return 0
  local tmp
  tmp=$(mktemp)
  if grep -q "^$2 *=" "$1"; then
    awk -v k="$2" -v l="$line" '$0 ~ "^"k" *=" { if (!done) print l; done=1; next } { print }' "$1" > "$tmp"
  else
    cat "$1" > "$tmp"
    printf '%s\n' "$line" >> "$tmp"
  fi
  cat "$tmp" > "$1"
  rm -f "$tmp"
  say "  set $2 in $1"
}

# ensure_tls_san FILE NAME: NAME in the file's tls-san list.
ensure_tls_san() {
  local current
  current=$(sed -n 's/^tls-san *= *\[\(.*\)\].*/\1/p' "$1" | head -n 1)
  if ! grep -q '^tls-san *=' "$1"; then
    ensure_setting "$1" tls-san "[\"$2\"]"
  elif ! grep -q '^tls-san *= *\[.*\]' "$1"; then
    die "$1: write tls-san on one line, or add \"$2\" to it yourself"
  elif ! printf '%s' "$current" | grep -qF "\"$2\""; then
    case "$current" in
      *[![:space:]]*) ensure_setting "$1" tls-san "[\"$2\", $current]" ;;
      *) ensure_setting "$1" tls-san "[\"$2\"]" ;;
    esac
  fi
}

# ensure_dir DIR MODE
ensure_dir() {
  if [ ! -d "$1" ]; then
    install -d -m "$2" "$1"
    say "  created $1"
  elif [ "$(stat -c %a "$1")" != "$2" ]; then
    chmod "$2" "$1"
  fi
}

# enable_unit ROOT UNIT: enable (and start, on a live system) a unit.
enable_unit() {
  if [ -n "$1" ]; then
    systemctl --root="$1" --quiet enable "$2" 2>/dev/null || die "systemctl --root enable $2 failed"
  elif [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now --quiet "$2"
  else
    say "  systemd is not running here: start $2 yourself"
  fi
}

# random_secret: 32 URL-safe characters.
random_secret() {
  head -c 48 /dev/urandom | base64 | tr -d '/+=\n' | head -c 32
}

# find_binary NAME GIVEN: the binary to install.
find_binary() {
  local here
  here=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
  for candidate in "$2" "$here/../target/release/$1" "/usr/bin/$1"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  die "no $1 binary: build it (cargo build --release) or pass --binary"
}
