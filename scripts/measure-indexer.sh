#!/usr/bin/env bash
# measure-indexer.sh — the in-process indexer (`serve --indexer`) against the
# separate one (`index --watch`, the baseline), on the project's fake API
# server (release build) holding N Deployments (default 20,000, two
# containers each, 5,000 distinct images, 100 namespaces).
#
# Per run and per mode: start → /readyz 200, start → first ConfigMap write,
# RSS when written (VmRSS, VmHWM); for serve, also how soon a push finds a
# Deployment created afterwards (bounded below by --debounce, 2 s).
# Prints medians over RUNS (default 3) and serve/index ratios.
#
# BEFORE=DIR also measures DIR/pushroll (e.g. a build of an older commit),
# alternating with this tree's run by run, and adds a before/after table.
#
#   cargo build --release --locked -p pushroll -p fake-apiserver
#   scripts/measure-indexer.sh [N] [RUNS]
#   BEFORE=/tmp/old scripts/measure-indexer.sh 50000 3
#
# Needs curl and python3 (to write the objects); not part of CI.
set -euo pipefail
N=${1:-20000}
RUNS=${2:-3}
B=$(cd "$(dirname "$0")/.." && pwd)/target/release
BEFORE=${BEFORE:-}
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
now() { date +%s.%N; }
python3 - "$N" > "$W/objects.json" <<'PY'
import json, sys
n = int(sys.argv[1])
items = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "pushroll"}}]
for i in range(n):
    items.append({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"svc{i}", "namespace": f"team-{i % 100}"},
        "spec": {"selector": {"matchLabels": {"app": f"svc{i}"}},
            "template": {"metadata": {"labels": {"app": f"svc{i}"}},
                "spec": {"containers": [
                    {"name": "app", "image": f"us-east1-docker.pkg.dev/p/r/app{i % 5000}:v1"},
                    {"name": "proxy", "image": "nginx:1.27"}]}}}})
json.dump(items, sys.stdout)
PY
push() {
    curl -s -d "{\"action\":\"INSERT\",\"tag\":\"us-east1-docker.pkg.dev/p/r/$1:v1\",\"digest\":\"sha256:$(printf '1%.0s' {1..64})\"}" \
        "http://127.0.0.1:$2/push"
}
# one BIN MODE RUN: prints "ready written rss_kib hwm_kib found"
one() {
    local bin=$1 mode=$2 run=$3 port=$((18080 + $3)) dir
    dir=$(mktemp -d "$W/$mode-$run-XXXX")
    "$B/fake-apiserver" --load "$W/objects.json" --kubeconfig "$dir/kc" --history 100000 > "$dir/url" 2> "$dir/fake.err" &
    local fake=$!
    until [ -s "$dir/kc" ] && [ -s "$dir/url" ]; do sleep 0.05; done
    local args t0 pid
    if [ "$mode" = serve ]; then
        args=(serve --indexer --auth none --dry-run --index-file "$dir/none/index.json")
    else
        args=(index --watch)
    fi
    t0=$(now)
    KUBECONFIG="$dir/kc" POD_NAME="$mode-$run" "$bin" --log-format json "${args[@]}" \
        --listen "127.0.0.1:$port" --index-configmap pushroll/pushroll-index 2> "$dir/err" &
    pid=$!
    until curl -sf -o /dev/null "http://127.0.0.1:$port/readyz"; do sleep 0.01; done
    local ready; ready=$(echo "$(now) - $t0" | bc)
    until curl -s "http://127.0.0.1:$port/metrics" | grep -q 'pushroll_index_writes_total{result="written"} 1'; do sleep 0.01; done
    local written; written=$(echo "$(now) - $t0" | bc)
    local rss hwm
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    local found=-
    if [ "$mode" = serve ]; then
        push app42 "$port" | grep -q would-restart || { echo "app42 not found" >&2; exit 1; }
        curl -sf -o /dev/null -H 'content-type: application/json' \
            -d '{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"late","namespace":"team-1"},"spec":{"selector":{"matchLabels":{"app":"late"}},"template":{"metadata":{"labels":{"app":"late"}},"spec":{"containers":[{"name":"app","image":"us-east1-docker.pkg.dev/p/r/brandnew:v1"}]}}}}' \
            "$(cat "$dir/url")/apis/apps/v1/namespaces/team-1/deployments"
        local t1; t1=$(now)
        until push brandnew "$port" | grep -q would-restart; do sleep 0.01; done
        found=$(echo "$(now) - $t1" | bc)
    fi
    kill -TERM "$pid"; wait "$pid" || { echo "$mode exited non-zero" >&2; exit 1; }
    kill "$fake"; wait "$fake" 2>/dev/null || true
    echo "$ready $written $rss $hwm $found"
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for mode in index serve; do
    for run in $(seq 1 "$RUNS"); do
        [ -z "$BEFORE" ] || one "$BEFORE/pushroll" "$mode" "$run" >> "$W/before-$mode.txt"
        one "$B/pushroll" "$mode" "$run" >> "$W/$mode.txt"
    done
done
col() { awk -v c="$2" '{print $c}' "$W/$1.txt" | median; }
printf '%s Deployments, %s runs each, medians\n' "$N" "$RUNS"
printf '| | index --watch (baseline) | serve --indexer | ratio |\n| --- | --- | --- | --- |\n'
for c in "1 start → ready (s)" "2 start → first write (s)" "3 VmRSS at first write (MiB)" "4 VmHWM (MiB)"; do
    i=${c%% *}; label=${c#* }
    a=$(col index "$i"); b=$(col serve "$i")
    if [ "$i" -ge 3 ]; then
        a=$(echo "scale=1; $a / 1024" | bc); b=$(echo "scale=1; $b / 1024" | bc)
    else
        a=$(printf '%.3f' "$a"); b=$(printf '%.3f' "$b")
    fi
    printf '| %s | %s | %s | %.2f |\n' "$label" "$a" "$b" "$(echo "scale=4; $b / $a" | bc)"
done
printf '| a Deployment created after ready → found by a push (s) | — | %.3f | |\n' "$(col serve 5)"
[ -n "$BEFORE" ] || exit 0
printf '\n%s/pushroll (before) against %s/pushroll (after), same runs, medians\n' "$BEFORE" "$B"
printf '| | before | after | after/before |\n| --- | --- | --- | --- |\n'
for mode in index serve; do
    for c in "3 VmRSS at first write (MiB)" "4 VmHWM (MiB)" "2 start → first write (s)"; do
        i=${c%% *}; label=${c#* }
        a=$(col "before-$mode" "$i"); b=$(col "$mode" "$i")
        if [ "$i" -ge 3 ]; then
            a=$(echo "scale=1; $a / 1024" | bc); b=$(echo "scale=1; $b / 1024" | bc)
        else
            a=$(printf '%.3f' "$a"); b=$(printf '%.3f' "$b")
        fi
        printf '| %s: %s | %s | %s | %.2f |\n' "$mode" "$label" "$a" "$b" "$(echo "scale=4; $b / $a" | bc)"
    done
done
