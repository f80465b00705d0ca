//! The command line end to end: demo, audit, export, tamper, rebuild.

use std::path::Path;
use std::process::{Command, Output};

fn taskledger(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taskledger"))
        .args(args)
        .output()
        .expect("runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn demo_audits_clean_with_every_terminal_status() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = data.to_str().unwrap();
    let demo = taskledger(&["demo", "--data", d, "--tasks", "600", "--seed", "7"]);
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let audit = taskledger(&["audit", "--data", d]);
    let text = stdout(&audit);
    assert!(audit.status.success(), "{text}");
    assert!(text.contains("conservation: ok"), "{text}");
    for status in ["completed", "failed", "cancelled", "expired"] {
        let n: u64 = text
            .split(&format!("{status} "))
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(n > 0, "no {status} tasks in: {text}");
    }
    let rebuild = taskledger(&["rebuild", "--data", d]);
    assert!(rebuild.status.success(), "{}", stdout(&rebuild));
    assert!(stdout(&rebuild).contains("rebuilt state equals the stored snapshot"));

    let json = taskledger(&["audit", "--data", d, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(
        v["issued"].as_u64().unwrap(),
        [
            "wallets_gift",
            "wallets_earned",
            "escrow",
            "frozen",
            "redeemed"
        ]
        .iter()
        .map(|k| v[k].as_u64().unwrap())
        .sum::<u64>()
    );

    check_tamper(dir.path(), d);
}

fn seq_named(o: &Output) -> Option<u64> {
    let text = stdout(o);
    let rest = text.split("FAILED at seq ").nth(1)?;
    rest.split(':').next()?.parse().ok()
}

fn check_tamper(dir: &Path, data: &str) {
    let log = dir.join("x.log");
    let export = taskledger(&["export", "--data", data, "--out", log.to_str().unwrap()]);
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let bytes = std::fs::read(&log).unwrap();
    assert!(
        taskledger(&["audit", "--file", log.to_str().unwrap()])
            .status
            .success()
    );

    // Frame offsets: 12-byte header, then u32 length + record per record.
    let mut frames = Vec::new();
    let mut at = 12;
    while frames.len() < 50 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        frames.push((at, len));
        at += 4 + len;
    }
    let bad = dir.join("bad.log");
    let bad_s = bad.to_str().unwrap();
    // A flipped byte anywhere in record 20 names seq 20.
    let (start, len) = frames[19];
    for off in [0, 4, 12, 30, 60, 90, 4 + len - 1] {
        let mut b = bytes.clone();
        b[start + off] ^= 0x10;
        std::fs::write(&bad, &b).unwrap();
        let o = taskledger(&["audit", "--file", bad_s]);
        assert!(!o.status.success());
        assert_eq!(seq_named(&o), Some(20), "flip at +{off}: {}", stdout(&o));
    }
    // Swapping records 10 and 11 names seq 10.
    let (s10, l10) = frames[9];
    let (s11, l11) = frames[10];
    let mut b = bytes[..s10].to_vec();
    b.extend_from_slice(&bytes[s11..s11 + 4 + l11]);
    b.extend_from_slice(&bytes[s10..s10 + 4 + l10]);
    b.extend_from_slice(&bytes[s11 + 4 + l11..]);
    std::fs::write(&bad, &b).unwrap();
    let o = taskledger(&["audit", "--file", bad_s]);
    assert!(!o.status.success());
    assert_eq!(seq_named(&o), Some(10), "{}", stdout(&o));
    // Truncating inside the last record names the last seq.
    let records: u64 = stdout(&taskledger(&["audit", "--file", log.to_str().unwrap()]))
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("records: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    let footer_start = {
        let mut at = 12;
        for _ in 0..records {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            at += 4 + len;
        }
        at
    };
    std::fs::write(&bad, &bytes[..footer_start - 5]).unwrap();
    let o = taskledger(&["audit", "--file", bad_s]);
    assert!(!o.status.success());
    assert_eq!(seq_named(&o), Some(records), "{}", stdout(&o));
}
