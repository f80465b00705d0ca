//! The `auto_tests` sandbox against hostile submissions: each test runs real
//! python3/pytest or node in the isolation this host offers (bubblewrap after
//! `.ci/run`), and the security tests again in the `unshare` fallback when
//! the host allows user namespaces.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use taskledger::verify::sandbox::{
    Limits, Overrides, TestOutcome, TestRun, isolation, run_tests, run_tests_with,
};
use taskledger_events::TestLanguage;

fn require_isolation() {
    assert_ne!(
        isolation(),
        "none",
        "these tests need a sandbox: install bubblewrap (apt-get install bubblewrap), as .ci/run does"
    );
}

fn fast() -> Limits {
    Limits {
        wall: Duration::from_secs(5),
        ..Limits::default()
    }
}

async fn python(solution: &str, tests: &str, limits: &Limits) -> TestRun {
    require_isolation();
    let run = run_tests(TestLanguage::Python, solution, tests, None, limits).await;
    eprintln!(
        "{:?} in {} ms via {}",
        run.outcome, run.duration_ms, run.isolation
    );
    run
}

/// Runs under each isolation worth checking here: the probed one, and
/// `unshare` too when it works on this host.
async fn python_each_isolation(solution: &str, tests: &str) -> Vec<TestRun> {
    require_isolation();
    let mut runs = Vec::new();
    let mut isolations = vec![isolation()];
    if isolation() != "unshare" && unshare_works().await {
        isolations.push("unshare");
    }
    for name in isolations {
        let overrides = Overrides {
            isolation: Some(name),
            runner: None,
        };
        let run = run_tests_with(
            &overrides,
            TestLanguage::Python,
            solution,
            tests,
            None,
            &fast(),
        )
        .await;
        eprintln!(
            "{name}: {:?} in {} ms\n{}",
            run.outcome, run.duration_ms, run.output
        );
        assert_eq!(run.isolation, name);
        runs.push(run);
    }
    runs
}

async fn unshare_works() -> bool {
    let overrides = Overrides {
        isolation: Some("unshare"),
        runner: None,
    };
    let run = run_tests_with(
        &overrides,
        TestLanguage::Python,
        "",
        "def test_ok():\n    pass\n",
        None,
        &fast(),
    )
    .await;
    run.outcome == TestOutcome::Passed
}

/// Pids whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

/// Waits up to 2 s for every process with `marker` to be gone.
async fn assert_gone(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "processes left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}.{nanos}", 5000 + std::process::id() % 1000)
}

const ADD_TESTS: &str = "from solution import add\n\ndef test_add():\n    assert add(2, 3) == 5\n";

#[tokio::test]
async fn python_correct_solution_passes_and_wrong_one_fails() {
    let right = python("def add(a, b):\n    return a + b\n", ADD_TESTS, &fast()).await;
    assert_eq!(right.outcome, TestOutcome::Passed, "{}", right.output);
    assert_eq!(right.exit_code, Some(0));
    assert!(right.output.contains("1 passed"), "{}", right.output);

    let wrong = python("def add(a, b):\n    return a - b\n", ADD_TESTS, &fast()).await;
    assert_eq!(wrong.outcome, TestOutcome::Failed, "{}", wrong.output);
    assert!(wrong.output.contains("1 failed"), "{}", wrong.output);
    let detail = wrong.detail(false);
    assert_eq!(detail["outcome"], "failed");
    assert!(detail["output"].as_str().unwrap().len() <= 2048);
    let hidden = wrong.detail(true);
    assert!(hidden.get("output").is_none(), "{hidden}");
    assert_eq!(hidden["counts"]["failed"], 1, "{hidden}");
}

#[tokio::test]
async fn python_hidden_tests_run_too() {
    require_isolation();
    let hidden = "from solution import add\n\ndef test_negative():\n    assert add(-2, -3) == -5\n";
    let cheat = "def add(a, b):\n    return 5\n";
    let run = run_tests(
        TestLanguage::Python,
        cheat,
        ADD_TESTS,
        Some(hidden),
        &fast(),
    )
    .await;
    assert_eq!(run.outcome, TestOutcome::Failed, "{}", run.output);
    assert_eq!(run.detail(true)["counts"]["passed"], 1);
}

#[tokio::test]
async fn javascript_correct_solution_passes_and_wrong_one_fails() {
    require_isolation();
    let tests = "const assert = require('assert');\nconst add = require('./solution.js');\nassert.strictEqual(add(2, 3), 5);\n";
    let hidden = "const assert = require('assert');\nconst add = require('./solution.js');\nassert.strictEqual(add(-2, -3), -5);\n";
    let right = "module.exports = (a, b) => a + b;\n";
    let run = run_tests(
        TestLanguage::Javascript,
        right,
        tests,
        Some(hidden),
        &fast(),
    )
    .await;
    eprintln!("js right: {} ms", run.duration_ms);
    assert_eq!(run.outcome, TestOutcome::Passed, "{}", run.output);

    let cheat = "module.exports = () => 5;\n";
    let run = run_tests(
        TestLanguage::Javascript,
        cheat,
        tests,
        Some(hidden),
        &fast(),
    )
    .await;
    assert_eq!(
        run.outcome,
        TestOutcome::Failed,
        "hidden test must run: {}",
        run.output
    );

    let wrong = "module.exports = (a, b) => a - b;\n";
    let run = run_tests(TestLanguage::Javascript, wrong, tests, None, &fast()).await;
    assert_eq!(run.outcome, TestOutcome::Failed, "{}", run.output);
    assert!(run.output.contains("AssertionError"), "{}", run.output);
}

#[tokio::test]
async fn an_infinite_loop_times_out_and_leaves_no_process() {
    let marker = marker();
    let solution = format!(
        "import subprocess\nsubprocess.Popen(['sleep', '{marker}'])\n\ndef add(a, b):\n    while True:\n        pass\n"
    );
    let limits = Limits {
        wall: Duration::from_secs(3),
        ..Limits::default()
    };
    require_isolation();
    let run = tokio::spawn(async move {
        run_tests(TestLanguage::Python, &solution, ADD_TESTS, None, &limits).await
    });
    // The marker shows up while the run lives, so the check below can fail.
    let deadline = Instant::now() + Duration::from_secs(3);
    while processes_with(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the sleep of the run never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let run = run.await.unwrap();
    eprintln!("loop: {:?} after {} ms", run.outcome, run.duration_ms);
    assert_eq!(run.outcome, TestOutcome::TimedOut);
    assert!(
        (3000..5000).contains(&run.duration_ms),
        "{}",
        run.duration_ms
    );
    assert_gone(&marker).await;
}

#[tokio::test]
async fn a_fork_bomb_is_contained() {
    let marker = marker();
    let solution = format!(
        "import os, subprocess\nsubprocess.Popen(['sleep', '{marker}'])\n\ndef add(a, b):\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n"
    );
    let limits = Limits {
        wall: Duration::from_secs(3),
        ..Limits::default()
    };
    let started = Instant::now();
    let run = python(&solution, ADD_TESTS, &limits).await;
    assert!(
        matches!(run.outcome, TestOutcome::Failed | TestOutcome::TimedOut),
        "{:?}",
        run.outcome
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_gone(&marker).await;
    // The test process can still fork.
    assert!(
        std::process::Command::new("true")
            .status()
            .unwrap()
            .success()
    );
}

#[tokio::test]
async fn a_2_gib_allocation_fails_with_memory_error() {
    let solution = "def add(a, b):\n    block = bytearray(2 * 1024 ** 3)\n    return a + b\n";
    let run = python(solution, ADD_TESTS, &fast()).await;
    assert_eq!(run.outcome, TestOutcome::Failed);
    assert!(run.output.contains("MemoryError"), "{}", run.output);
}

#[tokio::test]
async fn no_network_not_even_loopback() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let tests = format!(
        "import socket, pytest\n\n\
         @pytest.mark.parametrize('address', [('127.0.0.1', {port}), ('1.1.1.1', 80)])\n\
         def test_connect(address):\n    socket.create_connection(address, timeout=2).close()\n"
    );
    for run in python_each_isolation("", &tests).await {
        assert_eq!(run.outcome, TestOutcome::Failed, "{}", run.output);
        assert!(run.output.contains("2 failed"), "{}", run.output);
        assert!(
            listener.accept().is_err(),
            "the sandbox reached the test's listener"
        );
    }
}

#[tokio::test]
async fn the_server_environment_and_files_are_out_of_reach() {
    let secrets = tempfile::tempdir().unwrap();
    let secret_file: PathBuf = secrets.path().join("secret.txt");
    std::fs::write(&secret_file, "s3cret").unwrap();
    // SAFETY: no other thread of this test binary reads or writes this
    // variable; spawned processes get an explicit environment.
    unsafe { std::env::set_var("TASKLEDGER_SECRET_CANARY", "canary") };
    let tests = format!(
        "import os\n\n\
         def test_env():\n    assert 'TASKLEDGER_SECRET_CANARY' not in os.environ, dict(os.environ)\n    names = sorted(n for n in os.environ if not n.startswith('PYTEST_') and n != 'PWD')\n    assert names == ['HOME', 'LANG', 'PATH', 'PYTHONDONTWRITEBYTECODE'], dict(os.environ)\n\n\
         def test_file():\n    assert not os.path.exists({path:?})\n    assert not os.path.exists({dir:?})\n\n\
         def test_home_dir_absent():\n    assert not os.path.exists('/home') and not os.path.exists('/etc/passwd')\n",
        path = secret_file.display().to_string(),
        dir = secrets.path().display().to_string(),
    );
    for run in python_each_isolation("", &tests).await {
        assert_eq!(run.outcome, TestOutcome::Passed, "{}", run.output);
    }
}

#[tokio::test]
async fn a_flood_of_output_is_cut_to_the_limit() {
    require_isolation();
    // node writes straight to the pipe (pytest would capture into a file,
    // where RLIMIT_FSIZE stops it first).
    let tests = "const fs = require('fs');\nconst chunk = 'x'.repeat(1024 * 1024);\nfor (let i = 0; i < 100; i++) fs.writeSync(1, chunk);\nfs.writeSync(1, 'THE-END');\n";
    let limits = Limits {
        wall: Duration::from_secs(10),
        ..Limits::default()
    };
    let run = run_tests(TestLanguage::Javascript, "", tests, None, &limits).await;
    eprintln!("flood: {:?} in {} ms", run.outcome, run.duration_ms);
    assert_eq!(run.outcome, TestOutcome::Passed);
    assert!(run.output_truncated);
    assert!(run.output.len() <= limits.output_bytes);
    assert!(run.output.ends_with("THE-END"), "the tail is kept");
}

#[tokio::test]
async fn a_missing_runner_is_reported() {
    require_isolation();
    let overrides = Overrides {
        isolation: None,
        runner: Some(PathBuf::from("/nonexistent/node")),
    };
    let run = run_tests_with(&overrides, TestLanguage::Javascript, "", "", None, &fast()).await;
    assert!(
        matches!(run.outcome, TestOutcome::RunnerMissing(_)),
        "{:?}",
        run.outcome
    );
    assert_eq!(run.detail(false)["outcome"], "runner_missing");
}
