#!/usr/bin/env python3
"""Drive taskledger's MCP server with the official Python SDK (PyPI `mcp`).

For each protocol mode the SDK offers (its default `auto`, which speaks
2026-07-28 with taskledger, and `legacy`, the 2025-11-25 initialize
handshake) and each transport:

- stdio: `taskledger mcp` as a subprocess, with MARKET_API_URL and
  MARKET_API_KEY passed explicitly in its environment;
- Streamable HTTP: `<base>/mcp` with the key in `X-Market-Api-Key` on the
  HTTP client;

it lists the tools (exactly the twelve of API.md), calls `who_am_i` and
checks the answer against `GET /api/v1/accounts/me` with the same key. Over
HTTP it also checks that a missing and an unknown key are refused.

    python scripts/mcp_python_sdk.py --base-url http://127.0.0.1:8080 \
        --key KEY --bin target/release/taskledger

Exit status 0 when every check passed. Run it through
scripts/mcp-python-sdk.sh, which sets up the venv, the server and the key.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from importlib.metadata import version

import anyio
import httpx2
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

TOOLS = {
    "who_am_i",
    "fetch_tasks",
    "get_task",
    "get_verification_package",
    "claim_task",
    "submit_result",
    "my_executions",
    "get_execution_status",
    "check_credits",
    "check_reputation",
    "publish_task",
    "verify_result",
}

# The protocol version each SDK mode must end up speaking with taskledger.
MODES = {"auto": "2026-07-28", "legacy": "2025-11-25"}


def rest_me(base: str, key: str) -> dict:
    req = urllib.request.Request(
        f"{base}/api/v1/accounts/me", headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def http_client(key: str | None) -> httpx2.AsyncClient:
    headers = {"X-Market-Api-Key": key} if key is not None else {}
    # The SDK's own defaults: 30 s, and 300 s to read (streams stay open).
    return httpx2.AsyncClient(
        headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)
    )


async def list_all_tools(client: Client) -> list:
    tools, cursor = [], None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


async def exercise(client: Client, expected_me: dict, want_version: str) -> str:
    """The checks on one connected client; a one-line summary."""
    got_version = client.protocol_version
    assert got_version == want_version, f"protocol {got_version}, wanted {want_version}"
    info = client.server_info
    # 2026-era servers may leave their identity out; when given it is ours.
    if info is not None:
        assert info.name == "taskledger", f"server name {info.name!r}"

    tools = await list_all_tools(client)
    names = {t.name for t in tools}
    assert len(tools) == 12 and names == TOOLS, f"tools: {sorted(names)}"
    for t in tools:
        assert t.description, f"{t.name} has no description"
        assert t.input_schema.get("type") == "object", f"{t.name} input schema"

    result = await client.call_tool("who_am_i", {})
    assert not result.is_error, f"who_am_i failed: {result.content}"
    me = result.structured_content
    assert isinstance(me, dict), f"who_am_i structured content: {me!r}"
    for field in ("id", "type", "name"):
        assert me.get(field) == expected_me.get(field), (
            f"who_am_i {field}={me.get(field)!r}, REST says {expected_me.get(field)!r}"
        )
    for field in ("reputation_score", "gift_balance", "earned_balance", "compute_tier"):
        assert field in me, f"who_am_i lacks {field}"
    line = result.content[0].text
    assert expected_me["name"] in line, f"who_am_i line: {line!r}"

    # A business refusal is a tool error, not a protocol error.
    bad = await client.call_tool("get_task", {"task_id": "not-a-uuid"})
    assert bad.is_error, "get_task with a bad id must be a tool error"
    assert bad.structured_content["code"] == "validation_failed", bad.structured_content

    return f"protocol {got_version}, {len(tools)} tools, who_am_i: {line}"


async def over_stdio(args, mode: str, expected_me: dict) -> str:
    params = StdioServerParameters(
        command=args.bin,
        args=["mcp"],
        env={
            "MARKET_API_URL": f"{args.base_url}/api/v1",
            "MARKET_API_KEY": args.key,
            "TASKLEDGER_LOG_FILTER": "error",
        },
    )
    async with Client(params, mode=mode) as client:
        return await exercise(client, expected_me, MODES[mode])


async def over_http(args, mode: str, expected_me: dict) -> str:
    async with http_client(args.key) as hc:
        transport = streamable_http_client(f"{args.base_url}/mcp", http_client=hc)
        async with Client(transport, mode=mode) as client:
            return await exercise(client, expected_me, MODES[mode])


def leaves(e: BaseException):
    if isinstance(e, BaseExceptionGroup):
        for x in e.exceptions:
            yield from leaves(x)
    else:
        yield e


def raw_status(base: str, key: str | None) -> tuple[int, dict]:
    """POST tools/list to /mcp without the SDK: the HTTP status and body."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }
    if key is not None:
        headers["X-Market-Api-Key"] = key
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    req = urllib.request.Request(f"{base}/mcp", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, {}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


async def refused_over_http(args, mode: str, key: str | None) -> str:
    """Connecting and listing tools must fail without a valid key: the SDK
    gets an error answer (not a transport failure) and the HTTP answer is 401
    `unauthorized`."""
    status, body = raw_status(args.base_url, key)
    assert status == 401 and body.get("code") == "unauthorized", f"raw POST /mcp: {status} {body}"
    try:
        with anyio.fail_after(30):
            async with http_client(key) as hc:
                transport = streamable_http_client(f"{args.base_url}/mcp", http_client=hc)
                async with Client(transport, mode=mode) as client:
                    await client.list_tools()
    except Exception as e:  # noqa: BLE001 - the refusal we want, checked below
        errors = list(leaves(e))
        assert any(isinstance(x, MCPError) for x in errors), f"not an MCP error answer: {errors!r}"
        return f"HTTP {status} {body['code']}; SDK raised {errors[0]!r}"
    raise AssertionError(f"key {key!r} was accepted")


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8080")
    p.add_argument("--key", required=True, help="an owner or agent key")
    p.add_argument("--bin", required=True, help="the taskledger binary (for stdio)")
    args = p.parse_args()
    args.base_url = args.base_url.rstrip("/")

    print(f"mcp (Python SDK) {version('mcp')}, httpx2 {version('httpx2')}")
    expected_me = rest_me(args.base_url, args.key)
    print(f"REST /accounts/me: {expected_me['type']} {expected_me['name']} ({expected_me['id']})")

    checks = []
    for mode in MODES:
        checks.append((f"stdio, mode={mode}", over_stdio(args, mode, expected_me)))
        checks.append((f"streamable HTTP, mode={mode}", over_http(args, mode, expected_me)))
        checks.append((f"streamable HTTP, mode={mode}, no key", refused_over_http(args, mode, None)))
        checks.append(
            (f"streamable HTTP, mode={mode}, unknown key", refused_over_http(args, mode, "tlo_not-a-key"))
        )

    failed = 0
    for name, coro in checks:
        try:
            with anyio.fail_after(120):
                summary = await coro
            print(f"PASS  {name}: {summary}")
        except BaseException as e:  # noqa: BLE001 - report every check
            if isinstance(e, KeyboardInterrupt):
                raise
            failed += 1
            print(f"FAIL  {name}: {type(e).__name__}: {e}")
    print(f"{len(checks) - failed}/{len(checks)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(anyio.run(main))
