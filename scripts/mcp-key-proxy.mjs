#!/usr/bin/env node
// A header-adding reverse proxy for MCP test clients that cannot send
// headers (the official conformance suite takes a URL only).
//
//   node scripts/mcp-key-proxy.mjs LISTEN_PORT UPSTREAM_URL
//   env MARKET_API_KEY: the key to inject as X-Market-Api-Key
//
// Every request is forwarded to UPSTREAM_URL (e.g. http://127.0.0.1:8080)
// with the same method, path, headers and body, plus `X-Market-Api-Key`
// when the client sent no key of its own. The Host header is passed through
// unchanged, so the server's DNS-rebinding protection still judges what the
// client sent. Bodies are piped both ways without buffering: SSE frames reach
// the client as the server writes them. The proxy listens on 127.0.0.1 only
// and prints "listening PORT" once ready (port 0 picks a free one).
// Node standard library only; works on Node 20 and later.

import http from "node:http";

const [listenPort, upstreamUrl] = process.argv.slice(2);
const key = process.env.MARKET_API_KEY;
if (!listenPort || !upstreamUrl || !key) {
  console.error("usage: MARKET_API_KEY=K node mcp-key-proxy.mjs LISTEN_PORT UPSTREAM_URL");
  process.exit(2);
}
const upstream = new URL(upstreamUrl);
if (upstream.protocol !== "http:") {
  console.error("only http:// upstreams are supported");
  process.exit(2);
}

// Hop-by-hop headers (RFC 9110 7.6.1) are not forwarded.
const HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
]);

function forwardable(headers) {
  const out = {};
  for (const [name, value] of Object.entries(headers)) {
    if (!HOP.has(name)) out[name] = value;
  }
  return out;
}

const agent = new http.Agent({ keepAlive: true });

const server = http.createServer((req, res) => {
  const headers = forwardable(req.headers);
  if (!headers["x-market-api-key"] && !headers["authorization"]) {
    headers["x-market-api-key"] = key;
  }
  // `headers.host` is the client's Host, forwarded as is.
  const up = http.request(
    {
      agent,
      hostname: upstream.hostname,
      port: upstream.port || 80,
      method: req.method,
      path: req.url,
      headers,
    },
    (upRes) => {
      res.writeHead(upRes.statusCode, upRes.statusMessage, forwardable(upRes.headers));
      res.flushHeaders();
      upRes.pipe(res);
      upRes.on("error", () => res.destroy());
    },
  );
  up.on("socket", (s) => s.setNoDelay(true));
  up.on("error", (e) => {
    if (!res.headersSent) {
      res.writeHead(502, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: `proxy: ${e.message}`, code: "bad_gateway" }));
    } else {
      res.destroy();
    }
  });
  // The client went away (e.g. it cancelled an SSE stream): drop upstream too.
  res.on("close", () => {
    if (!res.writableFinished) up.destroy();
  });
  req.pipe(up);
});
server.on("connection", (s) => s.setNoDelay(true));
server.keepAliveTimeout = 65_000;
server.listen(Number(listenPort), "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    server.closeAllConnections?.();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
  });
}
