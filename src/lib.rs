//! taskledger: the service and its command line, on top of the event log
//! (`taskledger-events`) and its projections (`taskledger-projections`).
//!
//! - [`error`]: domain refusals with stable codes and HTTP statuses.
//! - [`commands`]: one file per command, each with its pure `decide`.
//! - [`clock`]: where time enters (only the writer reads it).
//! - [`writer`]: the single writer with group commit.
//! - [`service`]: start-up (snapshot + tail replay) and the handle callers use.
//! - [`http`]: the REST API, SSE, metrics and timers (`taskledger serve`).
//! - [`mcp`]: the MCP tools over stdio and Streamable HTTP (rmcp).
//! - [`audit`]: offline replay of a data dir or an export: chain, rules, conservation.
//! - [`risk`]: the risk-rules seam (register, publish, claim, settle hooks).
//! - [`flags`]: `taskledger flags`: risk-hold review against a data dir or a server.
//! - [`verify`]: automatic verification (rules, sandboxed tests, LLM judge).

#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod audit;
pub mod clock;
pub mod commands;
pub mod demo;
pub mod error;
pub mod flags;
pub mod http;
pub mod mcp;
pub mod risk;
pub mod service;
pub mod verify;
pub mod writer;
