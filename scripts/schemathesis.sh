#!/usr/bin/env bash
# Runs schemathesis (property-based API tests generated from openapi.yaml)
# against `pushroll serve --demo` and fails on any failed check.
#
#   scripts/schemathesis.sh [PUSHROLL_BINARY]     default: target/debug/pushroll
#   scripts/schemathesis.sh --install             only install (CI does it while
#                                                 cargo builds)
#
# schemathesis is pip-installed (pinned) once into a virtualenv under the
# cache directory, outside the work tree:
#   ${PUSHROLL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pushroll}/schemathesis-VERSION
# Env: SCHEMATHESIS_MAX_EXAMPLES (examples per operation and phase, 100),
#      SCHEMATHESIS_SEED (fixed seed for a reproducible run; random when unset),
#      PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.32.5
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-100}
CACHE=${PUSHROLL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pushroll}
VENV=$CACHE/schemathesis-$VERSION
BIN=${1:-target/debug/pushroll}

die() { echo "schemathesis.sh: $*" >&2; exit 1; }
install_only=0
[[ $BIN == --install ]] && install_only=1
(( install_only )) || [[ -x $BIN ]] || die "$BIN is not an executable (cargo build first, or pass the binary's path)"

if [[ ! -f $VENV/.installed ]]; then
  echo "installing schemathesis $VERSION into $VENV" >&2
  rm -rf "$VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
  touch "$VENV/.installed"
fi
(( install_only )) && exit 0

port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp)
# --demo: the embedded index, --auth none, --dry-run, no cluster.
"$BIN" serve --demo --listen "127.0.0.1:$port" --log-format json 2>"$log" &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$log"; }
trap cleanup EXIT

deadline=$(( $(date +%s) + 30 ))
until curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; do
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "pushroll exited"; }
  (( $(date +%s) < deadline )) || { cat "$log" >&2; die "pushroll not ready after 30 s"; }
  sleep 0.1
done

seed=()
[[ -n ${SCHEMATHESIS_SEED:-} ]] && seed=(--seed "$SCHEMATHESIS_SEED")
status=0
# From the cache dir: schemathesis keeps its state in ./.schemathesis.
# One worker: with two, the worker threads share Hypothesis' unlocked
# lambda-source cache (AST_LAMBDAS_CACHE), and a KeyError from that race
# surfaced as a "FlakyFailure" runtime error in the examples phase (seen on
# POST /push and POST /webhooks/{source}); the run takes about 10 s anyway.
spec=$PWD/openapi.yaml
(cd "$CACHE" && "$VENV/bin/schemathesis" run "$spec" \
  --url "http://127.0.0.1:$port" \
  --checks "$CHECKS" \
  --max-examples "$MAX_EXAMPLES" \
  --workers 1 \
  "${seed[@]}") || status=$?
if (( status != 0 )); then
  echo "--- pushroll's log (last 50 lines)" >&2
  tail -n 50 "$log" >&2
fi
exit "$status"
