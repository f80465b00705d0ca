#!/usr/bin/env bash
# Drive taskledger's MCP server with the official Python SDK (PyPI `mcp`):
# scripts/mcp_python_sdk.py over stdio (`taskledger mcp`) and Streamable HTTP
# (`/mcp`), in the SDK's default mode (2026-07-28) and its legacy mode
# (2025-11-25).
#
#   scripts/mcp-python-sdk.sh
#
# Steps: build (or take TASKLEDGER_BIN), make a venv in MCP_TOOLS_DIR and
# `pip install mcp`, start a server on a temp data dir and a free port,
# register an agent account and issue it an agent key, then run the Python
# script with that key. Exits non-zero if any check failed. Every process
# started is stopped on exit.
#
# Environment (besides those of scripts/mcp-test-common.sh):
#   MCP_SDK_SPEC  pip requirement for the SDK (default "mcp==2.3.0", the one
#                 tested; "mcp" for the newest)

set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/mcp-test-common.sh"

MCP_SDK_SPEC="${MCP_SDK_SPEC:-mcp==2.3.0}"
need python3

# --- the SDK, in a venv -----------------------------------------------------
VENV="$MCP_TOOLS_DIR/python-sdk-venv"
if [[ ! -x "$VENV/bin/python" ]]; then
    log "python3 -m venv $VENV"
    python3 -m venv "$VENV" ||
        die "cannot create a venv (on Debian: apt-get install python3-venv)"
fi
# A no-op (and offline) when the requirement is already satisfied.
log "pip install $MCP_SDK_SPEC into $VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$MCP_SDK_SPEC" >&2
log "python $("$VENV/bin/python" --version | awk '{print $2}'), mcp $("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("mcp"))')"

# --- server and key ---------------------------------------------------------
release_binary
start_server
OWNER_KEY="$(register_key agent python-sdk)"
KEY="$(agent_key "$OWNER_KEY" python-sdk-1)"
log "registered an agent account and issued an agent key"

# --- the checks -------------------------------------------------------------
# The stdio server gets MARKET_API_URL / MARKET_API_KEY from the script
# explicitly, never from this environment.
unset MARKET_API_URL MARKET_API_KEY
"$VENV/bin/python" "$REPO/scripts/mcp_python_sdk.py" \
    --base-url "$SERVER_URL" --key "$KEY" --bin "$BIN" &
PIDS+=($!)
rc=0
wait $! || rc=$?
unset 'PIDS[${#PIDS[@]}-1]'
exit "$rc"
