# bench/lib.sh — what bench/compare.sh and bench/memory.sh share; source it after
# setting ROOT (the repository) and, optionally, YDHT_BIN and CARGO_TARGET_DIR.
# Sets BIN: the ydht binary to measure (YDHT_BIN, else the release build).

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${YDHT_BIN:-$TARGET_DIR/release/ydht}

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Checks the tools the scripts call, then builds the release binary unless YDHT_BIN names one.
prepare() {
    local tool
    for tool in curl jq bc; do
        command -v "$tool" >/dev/null || die "$tool is required (apt-get install $tool)"
    done
    if [[ -z ${YDHT_BIN:-} ]]; then
        say "building the release binary ($BIN)"
        (cd "$ROOT" && cargo build --release --quiet --bin ydht)
    fi
}

# announced FILE NAME PID: waits until FILE contains "ydht NAME listening on URL" and prints URL.
announced() {
    local file=$1 name=$2 pid=$3 deadline=$((SECONDS + 60)) url
    while ((SECONDS < deadline)); do
        url=$(sed -n "s/^ydht $name listening on \(http[^ ]*\).*/\1/p" "$file" | head -n 1)
        if [[ -n $url ]]; then
            echo "$url"
            return
        fi
        kill -0 "$pid" 2>/dev/null || die "$name exited before it listened; see its log"
        sleep 0.1
    done
    die "$name did not announce itself within 60 s"
}
