#!/usr/bin/env bash
# Checks Kubernetes objects against Kubernetes' own schemas, offline, with
# kubernetes-validate (PyPI) in strict mode (unknown fields are errors):
#
#   .ci/validate-kubernetes.sh        the manifests, deploy/kubernetes/*.yaml
#   .ci/validate-kubernetes.sh DIR    those, and every *.json under DIR: the
#                                     objects and patch bodies the control
#                                     plane sent to the stand-in API server
#                                     of the cluster tests
#                                     (MINISPOD_KUBE_REQUEST_DIR)
#
# kubernetes-validate itself passes more than it should, so this script
# fails on each of these too:
# - an object of a kind it has no schema for (it only warns): a misspelt
#   kind or apiVersion would otherwise pass;
# - a file that holds no object (an empty file, `---` alone), and a DIR that
#   holds no *.json file at all: a run that validated nothing is no pass;
# - a file that does not parse (it stops at it, leaving the rest of its
#   batch unchecked).
# Every body the control plane sends must therefore be a whole object with
# apiVersion and kind, as server-side apply bodies are.
set -euo pipefail
# DIR as the caller named it, before moving to the repository's root.
dump_dir=${1:+$(realpath -m -- "$1")}
cd "$(dirname "$0")/.."

kubernetes_version=1.33.0
validator_version=1.37.0
venv=.ci/.venv
validator=$venv/bin/kubernetes-validate
# One process per file costs ~0.25 s of start-up each; a batch pays it once
# (300 objects: 80 s one by one, 5.5 s in one process).
batch=500

if [ ! -x "$validator" ] || [ "$("$validator" --version)" != "$validator_version" ]; then
  # .ci/test.sh makes this venv (grpcurl); make it here when run alone.
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$validator_version"
fi

fail() { echo "validate-kubernetes: $*" >&2; exit 1; }

# validate WHAT FILE...: validates FILEs in batches; fails unless every file
# holds at least one object and every object passed.
validate() {
  local what=$1
  shift
  local out
  out=$(mktemp -d /tmp/minispod-validate.XXXXXX)
  # Batches run in parallel, each into a log of its own (lines of two
  # processes writing one file could interleave).
  local rc=0 jobs per
  jobs=$(nproc)
  # Enough batches to keep every core busy, none above $batch files.
  per=$(( ($# + jobs - 1) / jobs ))
  [ "$per" -le "$batch" ] || per=$batch
  printf '%s\0' "$@" \
    | xargs -0 -n "$per" -P "$jobs" bash -c \
        'log=$(mktemp -p "$0" batch.XXXXXX); exec "$1" --strict -k "$2" "${@:3}" >"$log" 2>&1' \
        "$out" "$validator" "$kubernetes_version" \
    || rc=$?
  local logs=("$out"/batch.*)
  [ -e "${logs[0]}" ] || { rm -rf "$out"; fail "$what: the validator did not run"; }
  cat "${logs[@]}" > "$out/all"
  local passed problems unchecked
  passed=$(grep -c '^INFO .* passed for resource ' "$out/all" || true)
  problems=$(grep -v '^INFO .* passed for resource ' "$out/all" || true)
  # Files with at least one object that passed, against those given.
  sed -n 's/^INFO \(.*\) passed for resource .*/\1/p' "$out/all" | sort -u > "$out/validated"
  printf '%s\n' "$@" | sort -u > "$out/given"
  unchecked=$(comm -23 "$out/given" "$out/validated")
  rm -rf "$out"
  if [ -n "$problems" ]; then
    printf '%s\n' "$problems" >&2
  fi
  if [ -n "$unchecked" ]; then
    echo "validate-kubernetes: $what: these files had no object that passed (empty, or not checked after an error above):" >&2
    printf '%s\n' "$unchecked" | sed 's/^/  /' >&2
  fi
  if [ -n "$problems" ] || [ -n "$unchecked" ] || [ "$rc" -ne 0 ]; then
    fail "$what: FAILED against Kubernetes $kubernetes_version ($passed objects passed, exit status $rc)"
  fi
  echo "validate-kubernetes: $what: $passed objects in $# files valid against Kubernetes $kubernetes_version (strict)"
}

manifests=(deploy/kubernetes/*.yaml)
[ -e "${manifests[0]}" ] || fail "no manifests in deploy/kubernetes/"
validate "deploy/kubernetes" "${manifests[@]}"

if [ -n "$dump_dir" ]; then
  dir=$dump_dir
  [ -d "$dir" ] || fail "$dir is not a directory"
  mapfile -d '' dumps < <(find "$dir" -type f -name '*.json' -print0 | sort -z)
  [ "${#dumps[@]}" -gt 0 ] \
    || fail "$dir holds no *.json file: the cluster tests sent nothing there (is MINISPOD_KUBE_REQUEST_DIR set for them?)"
  validate "$dir" "${dumps[@]}"
fi
