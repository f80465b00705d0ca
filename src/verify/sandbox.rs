//! `auto_tests`: pytest or node in a sandbox.
