//! Real kills: a child process (this test binary, re-executed) opens the
//! sled store over and over and is killed with SIGKILL at random moments;
//! every time, the parent must open the store, find every record written
//! before and verify the chain. Guards the "move stale snap.*.generating
//! aside" step of `SledStore::open` (DESIGN.md, "The log").

mod common;

use common::{batch, fill, read_verified};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use taskledger_events::*;

const CHILD_DIR_ENV: &str = "TASKLEDGER_KILL_OPEN_DIR";
const CHILD_OPENS_ENV: &str = "TASKLEDGER_KILL_OPEN_COUNT";
const ROUNDS: u64 = 10;
const CHILD_LIFETIME_MS_MAX: u64 = 20_000;

/// The child: open and close the store until killed (or the lifetime ends).
/// Does nothing when run as an ordinary test.
#[test]
fn kill_open_child() {
    let (Ok(dir), Ok(opens)) = (std::env::var(CHILD_DIR_ENV), std::env::var(CHILD_OPENS_ENV))
    else {
        return;
    };
    let mut opens = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(opens)
        .unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(CHILD_LIFETIME_MS_MAX) {
        drop(SledStore::open(&dir).unwrap());
        opens.write_all(b"o").unwrap();
    }
}

#[test]
fn store_survives_kills_during_open() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let opens = tmp.path().join("child-opens");
    let mut written = {
        let mut store = SledStore::open(&data).unwrap();
        fill(&mut store, 20, 200)
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = seed;
    let mut moved_aside = 0;
    for round in 0..ROUNDS {
        // xorshift64: a delay of 0..=60 ms once the child is opening
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay_ms = rng % 61;
        let opens_before = std::fs::metadata(&opens).map_or(0, |m| m.len());
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "kill_open_child", "--test-threads=1"])
            .env(CHILD_DIR_ENV, &data)
            .env(CHILD_OPENS_ENV, &opens)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the child has completed one open, however slow the
        // machine is at starting processes, so the kill lands inside its
        // open/close loop rather than before it began.
        let waiting = Instant::now();
        while std::fs::metadata(&opens).map_or(0, |m| m.len()) == opens_before {
            assert!(
                waiting.elapsed() < Duration::from_millis(CHILD_LIFETIME_MS_MAX / 2),
                "seed {seed} round {round}: the child never opened the store"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let mut store = SledStore::open(&data).unwrap_or_else(|e| {
            panic!("seed {seed} round {round} ({delay_ms} ms): open failed: {e}")
        });
        moved_aside += store.moved_aside().len();
        assert_eq!(read_verified(&store), written, "seed {seed} round {round}");
        // grow the log a little between rounds
        let b = batch(store.tail(), 50);
        store.append(&b).unwrap();
        written.extend(b);
    }
    let child_opens = std::fs::metadata(&opens).map_or(0, |m| m.len());
    eprintln!(
        "{ROUNDS} kills, {child_opens} completed child opens, {moved_aside} stale snapshot files moved aside (seed {seed})"
    );
    // every child was inside its open/close loop when killed
    assert!(
        child_opens >= ROUNDS,
        "children barely opened the store ({child_opens} opens)"
    );
}
