#!/usr/bin/env bash
# bench/memory.sh — one node's memory and restart time with many keys (the last
# part of bench/compare.sh, on its own, so it can be re-run quickly).
#
# Starts `ydht serve node` in a temporary data dir, fills it through its internal
# `/store` API with MEMORY_KEYS keys of VALUE_SIZE bytes (`ydht bench --op get`
# creates every key once before measuring), and prints:
#   - the node's RSS once the fill is acknowledged, and again 5 s later (a
#     snapshot may still be running when the fill ends);
#   - the restart time after SIGKILL (snapshot load + WAL replay, until /health
#     answers) and the RSS right after the restart and 2 s later (recovery reads
#     the snapshot and segments whole; the allocator returns those buffers lazily).
#
# Settings (environment): MEMORY_KEYS (1000000), VALUE_SIZE (100), CLIENTS (64),
# CARGO_TARGET_DIR (where the release binary is built), YDHT_BIN (use this binary
# instead of building), MEMORY_FIGURES (also write the figures to this file as
# JSON; bench/compare.sh reads them). The node and the temporary directory are
# removed on exit.
set -euo pipefail

MEMORY_KEYS=${MEMORY_KEYS:-1000000}
VALUE_SIZE=${VALUE_SIZE:-100}
CLIENTS=${CLIENTS:-64}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ydht-memory.XXXXXX")
NODE_PID=""

cleanup() {
    if [[ -n $NODE_PID ]]; then
        kill "$NODE_PID" 2>/dev/null || true
        wait "$NODE_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

prepare

start_node() {
    YDHT_DATA_DIR=$WORK/data DHTNODE_PORT=0 RUST_LOG=warn "$BIN" serve node >"$WORK/node.out" 2>>"$WORK/node.err" &
    NODE_PID=$!
    NODE_URL=$(announced "$WORK/node.out" node "$NODE_PID") || { cat "$WORK/node.err" >&2; exit 1; }
}
rss_mb() { echo "scale=1; $(awk '/^VmRSS/ {print $2}' "/proc/$NODE_PID/status") / 1024" | bc -l; }
metric() { curl -sf "$NODE_URL/metrics" | jq -r "$1"; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
start_node
SECRET=$(cat "$WORK/data/cluster.secret")
say "filling $NODE_URL with $MEMORY_KEYS keys of $VALUE_SIZE B"
fill_started=$(date +%s.%N)
"$BIN" bench --output json --target-node "$NODE_URL" --cluster-secret "$SECRET" --op get \
    --keys "$MEMORY_KEYS" --value-size "$VALUE_SIZE" --clients "$CLIENTS" --requests 1 --warmup 0s --keep >"$WORK/fill.json"
FILL_S=$(echo "$(date +%s.%N) - $fill_started" | bc -l)
RSS_FILLED=$(rss_mb)
# A snapshot may still be running when the fill ends: read again once it had time to finish.
sleep 5
RSS_SETTLED=$(rss_mb)
KEYS_BEFORE=$(metric .key_count)

kill -KILL "$NODE_PID"
wait "$NODE_PID" 2>/dev/null || true
restart_started=$(date +%s.%N)
start_node
until curl -sf "$NODE_URL/health" >/dev/null; do sleep 0.02; done
RESTART_S=$(echo "$(date +%s.%N) - $restart_started" | bc -l)
RSS_RESTARTED=$(rss_mb)
# The allocator hands the recovery's read buffers back to the OS shortly after.
sleep 2
RSS_RESTARTED_LATER=$(rss_mb)
KEYS_AFTER=$(metric .key_count)

echo "one node, $MEMORY_KEYS keys of $VALUE_SIZE B ($(nproc) cores; load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-38s %10s\n' "fill time s" "$(printf '%.2f' "$FILL_S")"
printf '%-38s %10s\n' "RSS MB after the fill" "$RSS_FILLED"
printf '%-38s %10s\n' "RSS MB 5 s later" "$RSS_SETTLED"
printf '%-38s %10s\n' "restart s after SIGKILL" "$(printf '%.2f' "$RESTART_S")"
printf '%-38s %10s\n' "RSS MB right after the restart" "$RSS_RESTARTED"
printf '%-38s %10s\n' "RSS MB 2 s after the restart" "$RSS_RESTARTED_LATER"
printf '%-38s %10s\n' "keys before / after the restart" "$KEYS_BEFORE / $KEYS_AFTER"
if [[ -n ${MEMORY_FIGURES:-} ]]; then
    jq -n --argjson rss_filled_mb "$RSS_FILLED" --argjson rss_settled_mb "$RSS_SETTLED" \
        --argjson restart_s "$(printf '%.3f' "$RESTART_S")" --argjson keys_after "$KEYS_AFTER" \
        '{rss_filled_mb: $rss_filled_mb, rss_settled_mb: $rss_settled_mb, restart_s: $restart_s, keys_after: $keys_after}' \
        >"$MEMORY_FIGURES"
fi
