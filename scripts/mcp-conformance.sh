#!/usr/bin/env bash
# Run the official MCP conformance suite (npm @modelcontextprotocol/conformance)
# against `taskledger serve`.
#
#   scripts/mcp-conformance.sh [SCENARIO...]
#
# Default scenarios: server-initialize ping tools-list
# server-sse-multiple-streams dns-rebinding-protection (the others expect
# fixture tools, prompts and resources a market does not have).
#
# Steps: build (or take TASKLEDGER_BIN), start a server on a temp data dir
# and a free port, register an account for a key, start
# scripts/mcp-key-proxy.mjs (the suite cannot send headers; /mcp needs a
# key), install Node 22 and the suite into MCP_TOOLS_DIR (npm packages
# `node` and `@modelcontextprotocol/conformance`; Debian's Node 20 cannot run
# the suite), then `npx conformance server --url PROXY/mcp --scenario S` per
# scenario. Prints PASS/FAIL per scenario; exits 1 if any failed. Every
# process started is stopped on exit.
#
# Environment (besides those of scripts/mcp-test-common.sh):
#   CONFORMANCE_VERSION  suite version (default 0.1.16, the one tested; "latest" works)
#   NODE_MAJOR           Node version for the suite (default 22)
#   CONFORMANCE_OUT      if set, the suite saves per-scenario results under it

set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/mcp-test-common.sh"

CONFORMANCE_VERSION="${CONFORMANCE_VERSION:-0.1.16}"
NODE_MAJOR="${NODE_MAJOR:-22}"
if [[ $# -gt 0 ]]; then
    SCENARIOS=("$@")
else
    SCENARIOS=(server-initialize ping tools-list server-sse-multiple-streams dns-rebinding-protection)
fi

need node
need npm
need python3

# --- the suite and Node 22, locally -----------------------------------------
NPM_DIR="$MCP_TOOLS_DIR/conformance"
installed_version() {
    node -p "require(process.argv[1]).version" \
        "$NPM_DIR/node_modules/@modelcontextprotocol/conformance/package.json" 2>/dev/null || true
}
node22_ok() {
    [[ -x "$NPM_DIR/node_modules/.bin/node" ]] &&
        [[ "$("$NPM_DIR/node_modules/.bin/node" --version 2>/dev/null)" == v"$NODE_MAJOR".* ]]
}
if [[ "$CONFORMANCE_VERSION" == latest || "$(installed_version)" != "$CONFORMANCE_VERSION" ]] || ! node22_ok; then
    log "npm install node@$NODE_MAJOR @modelcontextprotocol/conformance@$CONFORMANCE_VERSION into $NPM_DIR"
    mkdir -p "$NPM_DIR"
    [[ -f "$NPM_DIR/package.json" ]] || echo '{"private": true}' >"$NPM_DIR/package.json"
    npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error \
        "node@$NODE_MAJOR" "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" >&2
fi
# The `node` package fetches its binary in an install script; if npm was set
# to skip scripts there is none.
node22_ok || die "no Node $NODE_MAJOR in $NPM_DIR/node_modules/.bin (npm install scripts disabled?)"
export PATH="$NPM_DIR/node_modules/.bin:$PATH"
log "node $(node --version), conformance $(installed_version)"

# --- server, key, proxy -----------------------------------------------------
release_binary
start_server
KEY="$(register_key human conformance)"

MARKET_API_KEY="$KEY" node "$REPO/scripts/mcp-key-proxy.mjs" 0 "$SERVER_URL" \
    >"$TMP_DIR/proxy.log" 2>&1 &
PIDS+=($!)
PROXY_PORT="$(wait_for_line "$TMP_DIR/proxy.log" '^listening ([0-9]+)$' $! "the key proxy")"
URL="http://127.0.0.1:$PROXY_PORT/mcp"
log "proxy: $URL -> $SERVER_URL/mcp (adds X-Market-Api-Key)"

# --- the scenarios ----------------------------------------------------------
failed=()
results=()
for s in "${SCENARIOS[@]}"; do
    log "scenario $s"
    out_args=()
    [[ -n "${CONFORMANCE_OUT:-}" ]] && out_args=(-o "$CONFORMANCE_OUT")
    # In the background so that a signal to this script is handled at once
    # (the cleanup stops `timeout`, which passes the signal on to the suite).
    (cd "$NPM_DIR" && exec timeout 300 npx --no conformance server --url "$URL" --scenario "$s" "${out_args[@]}") \
        >"$TMP_DIR/$s.out" 2>&1 &
    PIDS+=($!)
    rc=0
    wait $! || rc=$?
    unset 'PIDS[${#PIDS[@]}-1]'
    cat "$TMP_DIR/$s.out"
    # Pass: exit 0 and "Passed: N/N, 0 failed, 0 warnings" with N > 0.
    summary="$(sed -n -E 's/.*Passed: ([0-9]+)\/([0-9]+), ([0-9]+) failed, ([0-9]+) warnings.*/\1 \2 \3 \4/p' "$TMP_DIR/$s.out" | tail -n 1)"
    read -r passed total nfailed warnings <<<"${summary:-0 0 1 0}"
    if [[ $rc -eq 0 && $total -gt 0 && $passed -eq $total && $nfailed -eq 0 && $warnings -eq 0 ]]; then
        results+=("PASS  $s ($passed/$total checks)")
    else
        results+=("FAIL  $s (exit $rc, ${passed}/${total} checks, $nfailed failed, $warnings warnings)")
        failed+=("$s")
    fi
done

echo
echo "MCP conformance $(installed_version) on node $(node --version), taskledger $("$BIN" --version | awk '{print $2}'):"
printf '%s\n' "${results[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "${#failed[@]} of ${#SCENARIOS[@]} scenario(s) failed: ${failed[*]}"
    exit 1
fi
echo "all ${#SCENARIOS[@]} scenarios passed"
