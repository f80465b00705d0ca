//! Automatic verification, off the writer: a worker pool turns each
//! `ResultSubmitted` of an automatic task into an `auto_verdict` or a
//! `fallback` command.
//!
//! - [`rules`]: `auto_rules`, pure and linear-time.
//! - [`sandbox`]: `auto_tests`, untrusted code in a sandbox.
//! - [`llm`]: `auto_llm`, an OpenAI-compatible judge.
//! - [`pool`]: the worker pool that runs them and records the verdicts.

pub mod llm;
pub mod pool;
pub mod rules;
pub mod sandbox;
