#!/usr/bin/env bash
# bench/compare.sh — ydht's performance figures, side by side, from ONE run on ONE machine.
#
# What it does:
#   1. builds the release binary and starts `ydht serve all` (3 nodes, replicator,
#      users, gateway) in a temporary data dir with RATE_LIMIT_PER_MINUTE=0
#      (rate limiting off: only for benchmarks), signs up a user and creates an
#      API key through the users API (curl + jq);
#   2. measures with `ydht bench` (JSON output):
#        a. node-1's internal /store GET and PUT directly (one hop) vs the same
#           operations through the gateway at eventual consistency (two hops);
#        b. eventual vs strong PUT through the gateway at 1 and 64 clients, and
#           conditional PUTs (--op cas: Paxos among the owners) uncontended at 1 and
#           64 clients and contended on one key (successes/s and 412s/s);
#        c. a 3-member etcd cluster on loopback vs ydht strong PUT / GET;
#        d. (skip with SKIP_MEMORY=1) one node holding 1,000,000 keys of 100-byte
#           values: its RSS, and its restart time after SIGKILL (snapshot + WAL replay);
#        e. batches: 100 puts per POST /v1/batch vs single puts, at 16 and 64 clients;
#        f. (skip with SKIP_ANCHORS=1) anchors: Redis (redis-benchmark -c CLIENTS -d VALUE_SIZE,
#           SET and GET, in memory and with appendonly yes + appendfsync always) and nginx
#           answering a fixed VALUE_SIZE-byte body to `ydht bench --op get` (the HTTP ceiling);
#   3. prints every run's figures, with the server CPU per operation (user + system time of
#      every server process over the measured requests: ydht's `serve all`, the etcd members,
#      redis-server, nginx), and a table of ratios against the targets of issues 7, 15, 16, 21.
#
# The etcd comparison, and why it is on equal footing:
#   - etcd comes from Debian (`etcd-server`, `etcd-client`; installed with apt-get
#     if missing). Debian does not ship etcd's `benchmark` tool, and `etcdctl check
#     perf` only runs a fixed put profile, so both systems are driven by the SAME
#     load generator: `ydht bench` has a hidden `--target-etcd URL` mode that
#     speaks etcd's v3 HTTP/JSON gateway (`POST /v3/kv/put`, and `POST /v3/kv/range`
#     with `serializable: true`, i.e. a local read without a quorum round).
#     Same clients, same keep-alive HTTP/1.1 connection pool, same value size and
#     key count, same warm-up and duration.
#   - Both acknowledge a write only after it is fsync'd on a majority of 3 replicas
#     (etcd: raft log; ydht strong: the owners' WALs). Both run all 3 members on
#     this machine and disk, and share its cores with the load generator.
#   - etcd's HTTP gateway turns JSON into gRPC inside the etcd process (an extra
#     in-process hop and base64 encoding); ydht's gateway also adds a hop (gateway →
#     nodes). Load goes to etcd's leader (best case: followers would forward puts).
#   - ydht is compared at `strong`, its quorum level; ydht's strong GET reads a
#     quorum of owners, a stronger guarantee than etcd's serializable range.
#
# Settings (environment): DURATION (10s per run), WARMUP (2s), CLIENTS (64),
# VALUE_SIZE (100), KEYS (10000), ETCD_PORT (23790: clients on +1..+3, peers on
# +11..+13, Redis +106/+107, nginx +200), SKIP_ETCD=1, SKIP_MEMORY=1, SKIP_ANCHORS=1,
# REDIS_REQUESTS (400000 per Redis run), MEMORY_KEYS (1000000),
# CARGO_TARGET_DIR (where the release binary is built), YDHT_BIN (use this binary
# instead of building; e.g. a debug build for a quick smoke run of the script).
#
# Every process the script starts is stopped on exit (trap), and the temporary
# directory is removed.
set -euo pipefail

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CLIENTS=${CLIENTS:-64}
VALUE_SIZE=${VALUE_SIZE:-100}
KEYS=${KEYS:-10000}
ETCD_PORT=${ETCD_PORT:-23790}
MEMORY_KEYS=${MEMORY_KEYS:-1000000}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ydht-compare.XXXXXX")
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

prepare

# bench LABEL ARGS…: one `ydht bench` run, its JSON saved as $WORK/LABEL.json.
bench() {
    local label=$1
    shift
    say "bench $label"
    "$BIN" bench --output json --warmup "$WARMUP" --value-size "$VALUE_SIZE" "$@" >"$WORK/$label.json"
}
field() { jq -r "$2" "$WORK/$1.json"; }
ops() { field "$1" '.ops_per_sec|floor'; }
p50() { field "$1" '.latency_ms.p50'; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- ydht cluster
say "starting ydht serve all in $WORK/ydht"
YDHT_DATA_DIR=$WORK/ydht RATE_LIMIT_PER_MINUTE=0 GATEWAY_PORT=0 USERMANAGER_PORT=0 DHTNODE_PORT=0 \
    REPLICATOR_PORT=0 RUST_LOG=warn "$BIN" serve all >"$WORK/ydht.out" 2>"$WORK/ydht.err" &
YDHT_PID=$!
PIDS+=("$YDHT_PID")
GATEWAY=$(announced "$WORK/ydht.out" gateway "$YDHT_PID")
USERS=$(announced "$WORK/ydht.out" users "$YDHT_PID")
NODE1=$(announced "$WORK/ydht.out" node-1 "$YDHT_PID")
SECRET=$(cat "$WORK/ydht/cluster.secret")

curl -sf -X POST "$USERS/signup" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","username":"bench","password":"benchmark-password"}' >/dev/null
TOKEN=$(curl -sf -X POST "$USERS/login" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","password":"benchmark-password"}' | jq -r .access_token)
API_KEY=$(curl -sf -X POST "$USERS/apikeys" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{"name":"bench","scopes":["read","write"]}' | jq -r .key)
[[ $API_KEY == ydht_* ]] || die "could not create an API key"

GW=(--gateway "$GATEWAY" --api-key "$API_KEY" --server-pid "$YDHT_PID")
NODE=(--target-node "$NODE1" --cluster-secret "$SECRET" --server-pid "$YDHT_PID")
RUN=(--duration "$DURATION" --keys "$KEYS")

# a. one hop vs two hops
bench node_get "${NODE[@]}" "${RUN[@]}" --op get --clients "$CLIENTS"
bench node_put "${NODE[@]}" "${RUN[@]}" --op put --clients "$CLIENTS"
bench gw_get_eventual "${GW[@]}" "${RUN[@]}" --op get --clients "$CLIENTS" --consistency eventual
bench gw_put_eventual "${GW[@]}" "${RUN[@]}" --op put --clients "$CLIENTS" --consistency eventual
# b. eventual vs strong
bench gw_put_eventual_c1 "${GW[@]}" "${RUN[@]}" --op put --clients 1 --consistency eventual
bench gw_put_strong_c1 "${GW[@]}" "${RUN[@]}" --op put --clients 1 --consistency strong
bench gw_put_strong "${GW[@]}" "${RUN[@]}" --op put --clients "$CLIENTS" --consistency strong
bench gw_get_strong "${GW[@]}" "${RUN[@]}" --op get --clients "$CLIENTS" --consistency strong
# d. conditional writes (compare-and-set): uncontended at 1 and 64 clients, then contended on one key
bench gw_cas_c1 "${GW[@]}" "${RUN[@]}" --op cas --clients 1
bench gw_cas "${GW[@]}" "${RUN[@]}" --op cas --clients "$CLIENTS"
bench gw_cas_contended "${GW[@]}" --duration "$DURATION" --keys 1 --op cas --clients "$CLIENTS"
# e. batches of 100 puts vs single puts, at the same client counts
bench gw_put_c16 "${GW[@]}" "${RUN[@]}" --op put --clients 16
bench gw_batch100_c16 "${GW[@]}" "${RUN[@]}" --op put --clients 16 --batch 100
bench gw_batch100 "${GW[@]}" "${RUN[@]}" --op put --clients "$CLIENTS" --batch 100

kill "$YDHT_PID"
wait "$YDHT_PID" 2>/dev/null || true

# ---------------------------------------------------------------- etcd
if [[ ${SKIP_ETCD:-0} != 1 ]]; then
    if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
        say "installing etcd-server and etcd-client (apt-get)"
        apt-get install -y -qq etcd-server etcd-client >/dev/null || {
            apt-get update -qq && apt-get install -y -qq etcd-server etcd-client >/dev/null
        }
    fi
    CLUSTER=""
    for i in 1 2 3; do
        CLUSTER+="${CLUSTER:+,}m$i=http://127.0.0.1:$((ETCD_PORT + 10 + i))"
    done
    ENDPOINTS=""
    for i in 1 2 3; do
        client=http://127.0.0.1:$((ETCD_PORT + i))
        ENDPOINTS+="${ENDPOINTS:+,}$client"
        etcd --name "m$i" --data-dir "$WORK/etcd$i" \
            --listen-client-urls "$client" --advertise-client-urls "$client" \
            --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10 + i))" \
            --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10 + i))" \
            --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token ydht-compare \
            --logger zap --log-level error >"$WORK/etcd$i.log" 2>&1 &
        PIDS+=("$!")
    done
    say "waiting for the etcd cluster ($ENDPOINTS)"
    deadline=$((SECONDS + 60))
    until ETCDCTL_API=3 etcdctl --endpoints "$ENDPOINTS" endpoint health >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { cat "$WORK"/etcd*.log >&2; die "etcd did not become healthy in 60 s"; }
        sleep 0.3
    done
    LEADER=$(ETCDCTL_API=3 etcdctl --endpoints "$ENDPOINTS" endpoint status -w json |
        jq -r '.[] | select(.Status.leader == .Status.header.member_id) | .Endpoint' | head -n 1)
    [[ -n $LEADER ]] || die "could not find the etcd leader"
    say "etcd leader: $LEADER"
    ETCD_PIDS=()
    for pid in "${PIDS[@]}"; do
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == etcd ]] && ETCD_PIDS+=(--server-pid "$pid")
    done
    bench etcd_put --target-etcd "$LEADER" "${RUN[@]}" --op put --clients "$CLIENTS" "${ETCD_PIDS[@]}"
    bench etcd_get --target-etcd "$LEADER" "${RUN[@]}" --op get --clients "$CLIENTS" "${ETCD_PIDS[@]}"
fi

# ---------------------------------------------------------------- anchors: Redis and nginx
# cpu_ticks PID…: user + system clock ticks those processes used so far (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() {
    local pid total=0
    for pid in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}
# redis_run LABEL PORT PID TEST: redis-benchmark of one command; saves {ops_per_sec, server_cpu.us_per_op} as LABEL.json.
redis_run() {
    local label=$1 port=$2 pid=$3 test=$4 requests=$((REDIS_REQUESTS)) before after ops
    say "bench $label (redis-benchmark -t $test -c $CLIENTS -d $VALUE_SIZE -n $requests)"
    before=$(cpu_ticks "$pid")
    ops=$(redis-benchmark -p "$port" -c "$CLIENTS" -d "$VALUE_SIZE" -n "$requests" -r "$KEYS" -t "$test" --csv |
        awk -F'","' 'NR > 1 {print $2}' | tr -d '"' | head -n 1)
    after=$(cpu_ticks "$pid")
    jq -n --arg ops "$ops" --argjson ticks "$((after - before))" --argjson hz "$(getconf CLK_TCK)" \
        --argjson requests "$requests" --argjson clients "$CLIENTS" \
        '{clients: $clients, ops_per_sec: ($ops|tonumber), latency_ms: {p50: null, p99: null, p99_9: null},
          errors: {}, server_cpu: {us_per_op: ($ticks / $hz * 1000000 / $requests)}}' >"$WORK/$label.json"
}
if [[ ${SKIP_ANCHORS:-0} != 1 ]]; then
    REDIS_REQUESTS=${REDIS_REQUESTS:-400000}
    command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null ||
        die "redis-server and redis-benchmark are required (apt-get install redis-server), or SKIP_ANCHORS=1"
    for mode in memory durable; do
        port=$((ETCD_PORT + 100 + ${#mode}))
        mkdir -p "$WORK/redis-$mode"
        if [[ $mode == memory ]]; then
            persistence=(--save "" --appendonly no)
        else
            persistence=(--save "" --appendonly yes --appendfsync always)
        fi
        redis-server --port "$port" --bind 127.0.0.1 --dir "$WORK/redis-$mode" "${persistence[@]}" \
            --daemonize no >"$WORK/redis-$mode.log" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
        redis_run "redis_${mode}_set" "$port" "$pid" set
        redis_run "redis_${mode}_get" "$port" "$pid" get
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done

    if ! command -v nginx >/dev/null; then
        say "installing nginx-light (apt-get)"
        apt-get install -y -qq nginx-light >/dev/null || {
            apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null
        }
    fi
    NGINX_PORT=$((ETCD_PORT + 200))
    BODY=$(head -c "$VALUE_SIZE" /dev/zero | tr '\0' 'a')
    cat >"$WORK/nginx.conf" <<CONF
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx.error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx-body;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / { default_type application/octet-stream; return 200 "$BODY"; }
    }
}
CONF
    nginx -c "$WORK/nginx.conf" -g 'daemon off;' &
    PIDS+=("$!")
    until curl -sf "http://127.0.0.1:$NGINX_PORT/" >/dev/null; do sleep 0.1; done
    NGINX_PIDS=()
    for pid in $(pgrep -f "nginx.*$WORK/nginx.conf") $(pgrep -P "$(cat "$WORK/nginx.pid")"); do
        NGINX_PIDS+=(--server-pid "$pid")
    done
    # nginx answers every request (the key creation, the reads and the clean-up) with the body.
    bench nginx_get --gateway "http://127.0.0.1:$NGINX_PORT" --api-key ydht_nginx_anchor "${RUN[@]}" --op get \
        --clients "$CLIENTS" "${NGINX_PIDS[@]}"
fi

# ---------------------------------------------------------------- one node: memory and restart
if [[ ${SKIP_MEMORY:-0} != 1 ]]; then
    say "memory: one node with $MEMORY_KEYS keys of 100 B (bench/memory.sh)"
    YDHT_BIN=$BIN MEMORY_KEYS=$MEMORY_KEYS VALUE_SIZE=100 CLIENTS=$CLIENTS MEMORY_FIGURES=$WORK/memory.figures \
        bash "$ROOT/bench/memory.sh" >&2
    RSS_MB=$(jq -r .rss_filled_mb "$WORK/memory.figures")
    RESTART_S=$(jq -r .restart_s "$WORK/memory.figures")
    KEY_COUNT=$(jq -r .keys_after "$WORK/memory.figures")
fi

# ---------------------------------------------------------------- report
echo
echo "ydht bench figures (${DURATION} per run after ${WARMUP} warm-up; ${VALUE_SIZE} B values; ${KEYS} keys; $(nproc) cores)"
echo "load average before the run: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews every figure)"
printf '%-22s %8s %10s %10s %10s %10s %8s %12s\n' run clients ops/s p50_ms p99_ms p99.9_ms errors cpu_us/op
for file in "$WORK"/*.json; do
    label=$(basename "$file" .json)
    jq -r --arg name "$label" \
        '[$name, .clients, (.ops_per_sec|floor), (.latency_ms.p50 // "-"), (.latency_ms.p99 // "-"),
          (.latency_ms.p99_9 // "-"), ([.errors[]]|add // 0),
          (if .server_cpu.us_per_op == null then "-" else (.server_cpu.us_per_op * 10 | round / 10) end)] | @tsv' \
        "$file" | awk -F'\t' '{printf "%-22s %8s %10s %10s %10s %10s %8s %12s\n", $1, $2, $3, $4, $5, $6, $7, $8}'
done

ratio() { echo "scale=3; $1 / $2" | bc -l; }
cpu() { printf '%.1f' "$(field "$1" '.server_cpu.us_per_op')"; }
# verdict VALUE OP LIMIT → met / NOT met
verdict() { if (($(echo "$1 $2 $3" | bc -l))); then echo met; else echo "NOT met"; fi; }
row() { printf '%-46s %10s %10s %8s   %-10s %s\n' "$@"; }

echo
row comparison A B "A/B" target verdict
R=$(ratio "$(ops gw_get_eventual)" "$(ops node_get)")
row "GET c$CLIENTS ops/s: gateway eventual / node" "$(ops gw_get_eventual)" "$(ops node_get)" "$R" ">= 0.50" "$(verdict "$R" '>=' 0.5)"
R=$(ratio "$(ops gw_put_eventual)" "$(ops node_put)")
row "PUT c$CLIENTS ops/s: gateway eventual / node" "$(ops gw_put_eventual)" "$(ops node_put)" "$R" ">= 0.40" "$(verdict "$R" '>=' 0.4)"
R=$(ratio "$(p50 gw_put_strong_c1)" "$(p50 gw_put_eventual_c1)")
row "PUT c1 p50 ms: strong / eventual" "$(p50 gw_put_strong_c1)" "$(p50 gw_put_eventual_c1)" "$R" "<= 2" "$(verdict "$R" '<=' 2)"
row "PUT c1 p50 ms: strong, eventual < 5 ms" "$(p50 gw_put_strong_c1)" "$(p50 gw_put_eventual_c1)" "" "< 5 ms" \
    "$(if (($(echo "$(p50 gw_put_strong_c1) < 5 && $(p50 gw_put_eventual_c1) < 5" | bc -l))); then echo met; else echo "NOT met"; fi)"
R=$(ratio "$(ops gw_put_strong)" "$(ops gw_put_eventual)")
row "PUT c$CLIENTS ops/s: strong / eventual" "$(ops gw_put_strong)" "$(ops gw_put_eventual)" "$R" "" ""
R=$(ratio "$(p50 gw_cas_c1)" "$(p50 gw_put_strong_c1)")
row "PUT c1 p50 ms: conditional / strong" "$(p50 gw_cas_c1)" "$(p50 gw_put_strong_c1)" "$R" "<= 2" "$(verdict "$R" '<=' 2)"
R=$(ratio "$(ops gw_cas)" "$(ops gw_put_strong)")
row "PUT c$CLIENTS ops/s: conditional / strong" "$(ops gw_cas)" "$(ops gw_put_strong)" "$R" ">= 0.5" "$(verdict "$R" '>=' 0.5)"
CONTENDED_412=$(field gw_cas_contended '.errors.http_412 // 0')
row "one key, c$CLIENTS: successes/s, 412s/s" "$(ops gw_cas_contended)" \
    "$(echo "scale=0; $CONTENDED_412 / $(field gw_cas_contended .elapsed_secs)" | bc -l)" "" "" ""
if [[ ${SKIP_ETCD:-0} != 1 ]]; then
    R=$(ratio "$(ops gw_put_strong)" "$(ops etcd_put)")
    row "PUT c$CLIENTS ops/s: ydht strong / etcd" "$(ops gw_put_strong)" "$(ops etcd_put)" "$R" ">= 1" "$(verdict "$R" '>=' 1)"
    R=$(ratio "$(ops gw_get_strong)" "$(ops etcd_get)")
    row "GET c$CLIENTS ops/s: ydht strong / etcd serializable" "$(ops gw_get_strong)" "$(ops etcd_get)" "$R" ">= 1" \
        "$(verdict "$R" '>=' 1)"
fi
R=$(ratio "$(ops gw_batch100_c16)" "$(ops gw_put_c16)")
row "keys/s c16: batch of 100 / single PUT" "$(ops gw_batch100_c16)" "$(ops gw_put_c16)" "$R" ">= 5" "$(verdict "$R" '>=' 5)"
R=$(ratio "$(ops gw_batch100)" "$(ops gw_put_eventual)")
row "keys/s c$CLIENTS: batch of 100 / single PUT" "$(ops gw_batch100)" "$(ops gw_put_eventual)" "$R" ">= 5" "$(verdict "$R" '>=' 5)"
R=$(ratio "$(cpu gw_put_eventual)" "$(cpu gw_put_strong)")
row "CPU us/op c$CLIENTS: eventual / strong PUT" "$(cpu gw_put_eventual)" "$(cpu gw_put_strong)" "$R" "<= 1" "$(verdict "$R" '<=' 1)"
R=$(ratio "$(ops gw_put_eventual)" "$(ops gw_put_strong)")
row "PUT c$CLIENTS ops/s: eventual / strong" "$(ops gw_put_eventual)" "$(ops gw_put_strong)" "$R" ">= 1" "$(verdict "$R" '>=' 1)"
R=$(ratio "$(p50 gw_put_eventual_c1)" "$(p50 gw_put_strong_c1)")
row "PUT c1 p50 ms: eventual / strong" "$(p50 gw_put_eventual_c1)" "$(p50 gw_put_strong_c1)" "$R" "<= 1" "$(verdict "$R" '<=' 1)"
if [[ ${SKIP_ANCHORS:-0} != 1 ]]; then
    R=$(ratio "$(cpu gw_get_eventual)" "$(cpu redis_memory_get)")
    row "CPU us/op: gateway GET / Redis GET" "$(cpu gw_get_eventual)" "$(cpu redis_memory_get)" "$R" "<= 3" "$(verdict "$R" '<=' 3)"
    R=$(ratio "$(cpu gw_put_strong)" "$(cpu redis_durable_set)")
    row "CPU us/op: strong PUT / Redis fsync SET" "$(cpu gw_put_strong)" "$(cpu redis_durable_set)" "$R" "<= 5" "$(verdict "$R" '<=' 5)"
    R=$(ratio "$(ops gw_get_eventual)" "$(ops nginx_get)")
    row "GET c$CLIENTS ops/s: gateway / nginx fixed body" "$(ops gw_get_eventual)" "$(ops nginx_get)" "$R" "" ""
    R=$(ratio "$(ops node_get)" "$(ops nginx_get)")
    row "GET c$CLIENTS ops/s: node / nginx fixed body" "$(ops node_get)" "$(ops nginx_get)" "$R" "" ""
fi
if [[ ${SKIP_MEMORY:-0} != 1 ]]; then
    row "node RSS MB with $MEMORY_KEYS keys" "$RSS_MB" "" "" "<= 300" "$(verdict "$RSS_MB" '<=' 300)"
    row "node restart s after SIGKILL ($KEY_COUNT keys)" "$(printf '%.2f' "$RESTART_S")" "" "" "<= 3" \
        "$(verdict "$RESTART_S" '<=' 3)"
fi
