# Shared by scripts/mcp-conformance.sh and scripts/mcp-python-sdk.sh: the
# release binary, a throwaway server on a free port, an account's key, and
# cleanup of every process started. Source it; do not run it.
#
# Environment:
#   TASKLEDGER_BIN    use this binary instead of building one
#   CARGO_TARGET_DIR  where `cargo build --release` puts it (default: target/)
#   MCP_TOOLS_DIR     where npm / pip packages are installed
#                     (default: target/mcp-tools)
#   KEEP_TMP=1        keep the temp dir (server data and logs) at exit

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MCP_TOOLS_DIR="${MCP_TOOLS_DIR:-$REPO/target/mcp-tools}"
TMP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/taskledger-mcp.XXXXXX")"
PIDS=()

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # Newest first: the proxy before the server it talks to.
    local i pid
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid="${PIDS[i]}"
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ $rc -ne 0 && -f "$TMP_DIR/server.log" ]]; then
        echo "--- last lines of the server log ($TMP_DIR/server.log):" >&2
        tail -n 20 "$TMP_DIR/server.log" >&2 || true
    fi
    if [[ "${KEEP_TMP:-0}" == 1 || $rc -ne 0 ]]; then
        echo "(temp dir kept: $TMP_DIR)" >&2
    else
        rm -rf "$TMP_DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required"; }

# Sets BIN to the release binary, building it unless TASKLEDGER_BIN is set.
release_binary() {
    if [[ -n "${TASKLEDGER_BIN:-}" ]]; then
        BIN="$TASKLEDGER_BIN"
    else
        need cargo
        log "cargo build --release --bin taskledger"
        (cd "$REPO" && cargo build --release --bin taskledger) >&2
        BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/taskledger"
        [[ "$BIN" = /* ]] || BIN="$REPO/$BIN"
    fi
    [[ -x "$BIN" ]] || die "no taskledger binary at $BIN"
    log "binary: $BIN ($("$BIN" --version))"
}

# Reads the first line of FILE matching the extended regex RE (capturing
# group 1 via sed) while process PID lives; prints the match. Waits 30 s.
wait_for_line() {
    local file="$1" re="$2" pid="$3" what="$4" got
    for _ in $(seq 1 300); do
        got="$(sed -n -E "s/$re/\1/p" "$file" 2>/dev/null | head -n 1)"
        if [[ -n "$got" ]]; then
            printf '%s\n' "$got"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { cat "$file" >&2; die "$what exited before it was ready"; }
        sleep 0.1
    done
    cat "$file" >&2
    die "$what did not get ready within 30 s"
}

# Starts `taskledger serve` on a fresh data dir and a free port; sets
# SERVER_URL (http://127.0.0.1:PORT).
start_server() {
    "$BIN" serve --data "$TMP_DIR/data" --addr 127.0.0.1:0 --log json \
        >"$TMP_DIR/server.log" 2>&1 &
    PIDS+=($!)
    local addr
    addr="$(wait_for_line "$TMP_DIR/server.log" \
        '.*"taskledger listening".*"addr":"([^"]+)".*' $! "the server")"
    SERVER_URL="http://$addr"
    log "server: $SERVER_URL (data and log in $TMP_DIR)"
}

# POST JSON to the REST API; prints the answer. register_key prints the
# api_key of a new account (TYPE NAME), agent_key one of a new agent key of
# the account with key OWNER_KEY.
rest_post() {
    python3 - "$SERVER_URL/api/v1$1" "$2" "${3:-}" <<'EOF'
import json, sys, urllib.error, urllib.request
url, body, key = sys.argv[1], sys.argv[2], sys.argv[3]
headers = {"Content-Type": "application/json"}
if key:
    headers["Authorization"] = f"Bearer {key}"
req = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
try:
    with urllib.request.urlopen(req, timeout=10) as resp:
        print(resp.read().decode())
except urllib.error.HTTPError as e:
    sys.exit(f"POST {url}: {e.code} {e.read().decode()}")
EOF
}

json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

register_key() {
    # An agent account must declare its compute source.
    local source=""
    if [ "$1" = agent ]; then source=',"compute_source":"local_model"'; fi
    rest_post /accounts/register "{\"type\":\"$1\",\"name\":\"$2\"$source}" | json_field api_key
}

agent_key() {
    rest_post /accounts/me/agent-keys "{\"name\":\"$2\",\"compute_source\":\"local_model\"}" "$1" |
        json_field api_key
}
