//! `auto_tests`: pytest or node in a sandbox.
//!
//! Owns running a submission's untrusted code against a task's tests: a fresh
//! temp dir (deleted afterwards), an empty environment, rlimits (CPU, address
//! space, processes, file size), a wall-clock limit that kills the whole
//! process group, a capped output tail, and no network. It never panics,
//! never leaves a process behind, and never blocks a tokio worker (the blocking
//! parts run in `spawn_blocking`).
//!
//! Isolation, probed once per process ([`isolation`]):
//! - `"bubblewrap"`: `bwrap` with new net, ipc, pid and uts namespaces (and a
//!   user namespace when we are not root), a root file system of read-only
//!   binds of `/usr` and the runner's install, `--tmpfs /tmp`, the temp dir as
//!   `/work`.
//! - `"unshare"`: the same view built here in `pre_exec` (`unshare(2)`, bind
//!   mounts, `pivot_root`) when `bwrap` is missing. No pid namespace: a
//!   process that calls `setsid` leaves the process group, so when we are
//!   root the run's own uid is swept with `kill(-1)` afterwards.
//! - `"none"`: only rlimits, empty env and a process group, and no network
//!   isolation, so it runs only when `TASKLEDGER_SANDBOX_ALLOW_UNISOLATED=1`;
//!   otherwise the run is [`TestOutcome::SandboxUnavailable`].
//!
//! When the server runs as root, the tests run as a uid of their own
//! (`SANDBOX_UID_BASE` + a counter): `RLIMIT_NPROC` is never enforced for
//! root, and a fresh uid makes the process limit count this run only.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use taskledger_events::TestLanguage;
use tokio::io::AsyncReadExt;

/// The verdict detail shows at most this much of the output tail.
const DETAIL_OUTPUT_BYTES_MAX: usize = 2 * 1024;
/// V8 reserves about 1 GiB of address space up front (its code range and
/// heap cages), so node cannot start under a 256 MiB `RLIMIT_AS`. Node gets
/// this address-space cap instead and its heap is capped with
/// `--max-old-space-size` at `Limits::memory_bytes`.
const NODE_ADDRESS_SPACE_BYTES_MIN: u64 = 2 * 1024 * 1024 * 1024;
/// When we are root, each run gets a uid from this block (no distribution
/// allocates it), so `RLIMIT_NPROC` counts this run's processes only.
const SANDBOX_UID_BASE: u32 = 2_000_000_000;
const SANDBOX_UID_POOL: u32 = 4096;
/// After the run ends or is killed, how long the output pipes may take to close.
const DRAIN_AFTER_EXIT_MS: u64 = 2_000;
/// The isolation probe runs `true` in the sandbox; it must end within this.
const PROBE_WALL_MS: u64 = 10_000;
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Inside the sandbox the temp dir is mounted here.
const WORK_INSIDE: &str = "/work";
const UNISOLATED_OPT_IN: &str = "TASKLEDGER_SANDBOX_ALLOW_UNISOLATED";

#[derive(Clone, Debug)]
pub struct Limits {
    pub wall: Duration,
    /// `RLIMIT_CPU`, per process.
    pub cpu_secs: u64,
    /// `RLIMIT_AS`, per process (node: see `NODE_ADDRESS_SPACE_BYTES_MIN`).
    pub memory_bytes: u64,
    /// `RLIMIT_NPROC`: processes and threads of the run.
    pub processes: u64,
    /// `RLIMIT_FSIZE`.
    pub file_bytes: u64,
    /// Combined stdout and stderr kept (the tail); the rest is read and dropped.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            wall: Duration::from_secs(15),
            cpu_secs: 10,
            memory_bytes: 256 * 1024 * 1024,
            processes: 32,
            file_bytes: 16 * 1024 * 1024,
            output_bytes: 64 * 1024,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TestOutcome {
    /// Exit 0.
    Passed,
    /// Non-zero exit, or killed by a resource limit other than wall time.
    Failed,
    /// The wall clock ran out: the whole process group was killed.
    TimedOut,
    /// No python3 with pytest, or no node, on the host.
    RunnerMissing(String),
    /// No isolation could be set up (and unisolated runs are not allowed).
    SandboxUnavailable(String),
}

impl TestOutcome {
    fn code(&self) -> &'static str {
        match self {
            TestOutcome::Passed => "passed",
            TestOutcome::Failed => "failed",
            TestOutcome::TimedOut => "timed_out",
            TestOutcome::RunnerMissing(_) => "runner_missing",
            TestOutcome::SandboxUnavailable(_) => "sandbox_unavailable",
        }
    }
}

#[derive(Clone, Debug)]
pub struct TestRun {
    pub outcome: TestOutcome,
    /// `"bubblewrap"`, `"unshare"` or `"none"`.
    pub isolation: &'static str,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_ms: u64,
    /// Tail of stdout and stderr, lossy UTF-8, at most `Limits::output_bytes`.
    pub output: String,
    pub output_truncated: bool,
}

impl TestRun {
    fn without_run(outcome: TestOutcome, isolation: &'static str) -> TestRun {
        TestRun {
            outcome,
            isolation,
            exit_code: None,
            signal: None,
            duration_ms: 0,
            output: String::new(),
            output_truncated: false,
        }
    }

    /// JSON for the verdict detail shown to the agent: outcome, isolation,
    /// exit code or signal, duration and the last 2 KiB of output. When hidden
    /// tests ran, no output at all (it could reveal them), only pytest's
    /// counts when its summary is the last line. The submitted code wrote
    /// that output, so the counts are only as honest as the submission.
    pub fn detail(&self, hidden_tests_ran: bool) -> serde_json::Value {
        let mut detail = serde_json::json!({
            "outcome": self.outcome.code(),
            "isolation": self.isolation,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "duration_ms": self.duration_ms,
        });
        match &self.outcome {
            TestOutcome::RunnerMissing(why) | TestOutcome::SandboxUnavailable(why) => {
                detail["reason"] = why.as_str().into();
            }
            _ => {}
        }
        if hidden_tests_ran {
            if let Some(counts) = pytest_counts(&self.output) {
                detail["counts"] = counts;
            }
        } else {
            let tail = str_tail(&self.output, DETAIL_OUTPUT_BYTES_MAX);
            detail["output"] = tail.into();
            detail["output_truncated"] =
                (self.output_truncated || tail.len() < self.output.len()).into();
        }
        detail
    }
}

/// Which isolation this host offers, probed once by running `true` in it:
/// `"bubblewrap"`, `"unshare"` or `"none"`. The first call blocks for the
/// probe (tens of milliseconds).
pub fn isolation() -> &'static str {
    host_isolation().name()
}

/// Run `tests` (and `hidden_tests`) against `solution` in a fresh temp dir,
/// sandboxed.
///
/// Python: `solution.py`, `test_solution.py` (+ `test_hidden.py`), run by
/// `python3 -m pytest -q -p no:cacheprovider`. JavaScript: `solution.js`,
/// `test.js` (+ `hidden_test.js`), run by `node test.js` then
/// `node hidden_test.js`; both must exit 0.
pub async fn run_tests(
    language: TestLanguage,
    solution: &str,
    tests: &str,
    hidden_tests: Option<&str>,
    limits: &Limits,
) -> TestRun {
    run_tests_with(
        &Overrides::default(),
        language,
        solution,
        tests,
        hidden_tests,
        limits,
    )
    .await
}

/// Test seam: force an isolation or a runner binary.
#[doc(hidden)]
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `"bubblewrap"`, `"unshare"` or `"none"`, used without probing.
    pub isolation: Option<&'static str>,
    /// The python3 or node binary to use instead of the one found on PATH.
    pub runner: Option<PathBuf>,
}

#[doc(hidden)]
pub async fn run_tests_with(
    overrides: &Overrides,
    language: TestLanguage,
    solution: &str,
    tests: &str,
    hidden_tests: Option<&str>,
    limits: &Limits,
) -> TestRun {
    let overrides = overrides.clone();
    let files = source_files(language, solution, tests, hidden_tests);
    let limits_owned = limits.clone();
    let prepared =
        tokio::task::spawn_blocking(move || prepare(&overrides, language, files, &limits_owned))
            .await;
    let prepared = match prepared {
        Ok(Ok(prepared)) => prepared,
        Ok(Err(run)) => return *run,
        Err(join_error) => {
            return TestRun::without_run(
                TestOutcome::SandboxUnavailable(format!("preparing the run failed: {join_error}")),
                "none",
            );
        }
    };
    let mut prepared = prepared;
    let run = execute(&mut prepared, limits).await;
    let uid = prepared.uid;
    // Sweeping the run's uid and deleting the temp dir touch the file
    // system and fork: off the async workers.
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(uid) = uid {
            kill_all_of_uid(uid);
        }
        drop(prepared);
    })
    .await;
    run
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isolation {
    Bubblewrap,
    Unshare,
    None,
}

impl Isolation {
    fn name(self) -> &'static str {
        match self {
            Isolation::Bubblewrap => "bubblewrap",
            Isolation::Unshare => "unshare",
            Isolation::None => "none",
        }
    }

    fn from_name(name: &str) -> Option<Isolation> {
        [Isolation::Bubblewrap, Isolation::Unshare, Isolation::None]
            .into_iter()
            .find(|isolation| isolation.name() == name)
    }
}

fn host_isolation() -> Isolation {
    static PROBED: OnceLock<Isolation> = OnceLock::new();
    *PROBED.get_or_init(|| {
        if find_on_path("bwrap").is_some() && probe(Isolation::Bubblewrap) {
            Isolation::Bubblewrap
        } else if probe(Isolation::Unshare) {
            Isolation::Unshare
        } else {
            Isolation::None
        }
    })
}

/// Run `true` in the sandbox the way a test run would.
fn probe(isolation: Isolation) -> bool {
    let Ok(dir) = tempfile::tempdir() else {
        return false;
    };
    let work = dir.path().join("work");
    if std::fs::create_dir(&work).is_err() {
        return false;
    }
    let uid = sandbox_uid();
    if let Some(uid) = uid
        && std::os::unix::fs::chown(&work, Some(uid), Some(uid)).is_err()
    {
        return false;
    }
    let jail = Jail {
        isolation,
        dir: dir.path().to_path_buf(),
        work,
        binds: Vec::new(),
        uid,
        limits: Rlimits::from(&Limits::default()),
    };
    let Ok(mut command) = jail.command(Path::new("/usr/bin/true"), &[], &[]) else {
        return false;
    };
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let Ok(mut child) = command.spawn() else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_millis(PROBE_WALL_MS);
    let passed = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                kill_group(child.id());
                let _ = child.wait();
                break false;
            }
        }
    };
    if let Some(uid) = uid {
        kill_all_of_uid(uid);
    }
    passed
}

/// The interpreter and what of the host it needs, read-only.
#[derive(Clone, Debug)]
struct Runner {
    program: PathBuf,
    binds: Vec<PathBuf>,
    env: Vec<(String, String)>,
}

fn runner(language: TestLanguage, program: Option<&Path>) -> Result<Runner, String> {
    static PYTHON: OnceLock<Result<Runner, String>> = OnceLock::new();
    static NODE: OnceLock<Result<Runner, String>> = OnceLock::new();
    match (language, program) {
        (TestLanguage::Python, Some(program)) => python_runner(program.as_os_str()),
        (TestLanguage::Javascript, Some(program)) => node_runner(program.as_os_str()),
        (TestLanguage::Python, None) => PYTHON
            .get_or_init(|| {
                let program = std::env::var_os("TASKLEDGER_SANDBOX_PYTHON")
                    .unwrap_or_else(|| "python3".into());
                python_runner(&program)
            })
            .clone(),
        (TestLanguage::Javascript, None) => NODE
            .get_or_init(|| {
                let program =
                    std::env::var_os("TASKLEDGER_SANDBOX_NODE").unwrap_or_else(|| "node".into());
                node_runner(&program)
            })
            .clone(),
    }
}

/// Asks the host's python3 (often a pyenv shim) where it really lives and
/// where pytest is, so exactly that can be bound read-only.
fn python_runner(program: &OsStr) -> Result<Runner, String> {
    const WHERE: &str = "import os, sys, pytest\n\
        print(os.path.realpath(sys.executable))\n\
        print(os.path.realpath(sys.prefix))\n\
        print(os.path.realpath(sys.base_prefix))\n\
        print(os.path.realpath(os.path.dirname(os.path.dirname(pytest.__file__))))";
    let printed = std::process::Command::new(program)
        .args(["-c", WHERE])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|error| format!("cannot run {}: {error}", program.to_string_lossy()))?;
    if !printed.status.success() {
        return Err(format!(
            "{} has no pytest: {}",
            program.to_string_lossy(),
            String::from_utf8_lossy(&printed.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&printed.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let [executable, prefix, base_prefix, site] = lines[..] else {
        return Err(format!("unexpected answer from python: {stdout:?}"));
    };
    let mut binds = Vec::new();
    for dir in [prefix, base_prefix, site] {
        add_bind(&mut binds, PathBuf::from(dir));
    }
    let mut env = Vec::new();
    let site = PathBuf::from(site);
    if !(site.starts_with(prefix) || site.starts_with(base_prefix)) {
        env.push((
            "PYTHONPATH".to_string(),
            site.to_string_lossy().into_owned(),
        ));
    }
    Ok(Runner {
        program: PathBuf::from(executable),
        binds,
        env,
    })
}

/// `node` from PATH (or the given path), resolved; its install prefix is
/// bound read-only unless it lives in `/usr`.
fn node_runner(program: &OsStr) -> Result<Runner, String> {
    let found = if program.as_bytes().contains(&b'/') {
        Some(PathBuf::from(program))
    } else {
        find_on_path(program)
    };
    let program = found
        .and_then(|path| std::fs::canonicalize(path).ok())
        .filter(|path| path.is_file())
        .ok_or_else(|| format!("node not found ({})", program.to_string_lossy()))?;
    let mut binds = Vec::new();
    if let Some(prefix) = program.parent().and_then(Path::parent) {
        add_bind(&mut binds, prefix.to_path_buf());
    }
    Ok(Runner {
        program,
        binds,
        env: Vec::new(),
    })
}

/// Adds `dir` unless the system binds or an earlier bind already hold it.
fn add_bind(binds: &mut Vec<PathBuf>, dir: PathBuf) {
    let covered = SYSTEM_DIRS.iter().any(|system| dir.starts_with(system))
        || binds.iter().any(|bound| dir.starts_with(bound));
    if !covered && dir.is_dir() {
        binds.retain(|bound| !bound.starts_with(&dir));
        binds.push(dir);
    }
}

fn find_on_path(name: impl AsRef<OsStr>) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name.as_ref()))
        .find(|candidate| candidate.is_file())
}

/// What goes into the work dir, by file name.
fn source_files(
    language: TestLanguage,
    solution: &str,
    tests: &str,
    hidden_tests: Option<&str>,
) -> Vec<(&'static str, String)> {
    let (solution_name, tests_name, hidden_name) = match language {
        TestLanguage::Python => ("solution.py", "test_solution.py", "test_hidden.py"),
        TestLanguage::Javascript => ("solution.js", "test.js", "hidden_test.js"),
    };
    let mut files = vec![
        (solution_name, solution.to_string()),
        (tests_name, tests.to_string()),
    ];
    if let Some(hidden) = hidden_tests {
        files.push((hidden_name, hidden.to_string()));
    }
    files
}

/// A run ready to spawn; dropping it deletes the temp dir.
struct Prepared {
    /// Taken when spawned (a `pre_exec` hook cannot be cloned).
    command: Option<std::process::Command>,
    isolation: Isolation,
    uid: Option<u32>,
    _dir: tempfile::TempDir,
}

fn prepare(
    overrides: &Overrides,
    language: TestLanguage,
    files: Vec<(&'static str, String)>,
    limits: &Limits,
) -> Result<Prepared, Box<TestRun>> {
    let isolation = match overrides.isolation {
        Some(name) => Isolation::from_name(name).unwrap_or(Isolation::None),
        None => host_isolation(),
    };
    let unavailable = |why: String| {
        Box::new(TestRun::without_run(
            TestOutcome::SandboxUnavailable(why),
            isolation.name(),
        ))
    };
    if isolation == Isolation::None && std::env::var(UNISOLATED_OPT_IN).as_deref() != Ok("1") {
        return Err(unavailable(format!(
            "no sandbox on this host (install bubblewrap, or allow user namespaces); \
             set {UNISOLATED_OPT_IN}=1 to run tests without network isolation"
        )));
    }
    let runner = runner(language, overrides.runner.as_deref()).map_err(|why| {
        Box::new(TestRun::without_run(
            TestOutcome::RunnerMissing(why),
            isolation.name(),
        ))
    })?;

    let dir = tempfile::Builder::new()
        .prefix("taskledger-sandbox-")
        .tempdir()
        .map_err(|error| unavailable(format!("cannot make a temp dir: {error}")))?;
    let work = dir.path().join("work");
    let uid = sandbox_uid();
    let written = std::fs::create_dir(&work).and_then(|()| {
        for (name, text) in &files {
            std::fs::write(work.join(name), text)?;
        }
        if let Some(uid) = uid {
            std::os::unix::fs::chown(&work, Some(uid), Some(uid))?;
            for (name, _) in &files {
                std::os::unix::fs::chown(work.join(name), Some(uid), Some(uid))?;
            }
        }
        Ok(())
    });
    written.map_err(|error| unavailable(format!("cannot write the sources: {error}")))?;

    let mut rlimits = Rlimits::from(limits);
    let memory_mib = (limits.memory_bytes / (1024 * 1024)).max(16);
    let heap_flag = format!("--max-old-space-size={memory_mib}");
    let program = runner.program.as_os_str().to_os_string();
    let (executable, args): (PathBuf, Vec<OsString>) = match language {
        TestLanguage::Python => {
            let mut args: Vec<OsString> = ["-m", "pytest", "-q", "-p", "no:cacheprovider"]
                .map(OsString::from)
                .to_vec();
            args.extend(files.iter().skip(1).map(|(name, _)| OsString::from(name)));
            (runner.program.clone(), args)
        }
        TestLanguage::Javascript => {
            rlimits.address_space_bytes = limits.memory_bytes.max(NODE_ADDRESS_SPACE_BYTES_MIN);
            if files.len() > 2 {
                let script = "\"$0\" \"$1\" test.js && exec \"$0\" \"$1\" hidden_test.js";
                let args = vec!["-c".into(), script.into(), program, heap_flag.into()];
                (PathBuf::from("/bin/sh"), args)
            } else {
                (
                    runner.program.clone(),
                    vec![heap_flag.into(), "test.js".into()],
                )
            }
        }
    };
    let jail = Jail {
        isolation,
        dir: dir.path().to_path_buf(),
        work,
        binds: runner.binds.clone(),
        uid,
        limits: rlimits,
    };
    let command = jail
        .command(&executable, &args, &runner.env)
        .map_err(|error| unavailable(format!("cannot set up the sandbox: {error}")))?;
    Ok(Prepared {
        command: Some(command),
        isolation,
        uid,
        _dir: dir,
    })
}

/// The uid a run gets when we are root, else `None` (runs keep our uid).
fn sandbox_uid() -> Option<u32> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    root.then(|| SANDBOX_UID_BASE + NEXT.fetch_add(1, Ordering::Relaxed) % SANDBOX_UID_POOL)
}

/// Kills every process of `uid`: from a child that becomes `uid` and calls
/// `kill(-1, SIGKILL)`, which spares only itself.
fn kill_all_of_uid(uid: u32) {
    let mut command = std::process::Command::new("/usr/bin/true");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(uid, uid, uid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                return Err(io::Error::last_os_error());
            }
            libc::kill(-1, libc::SIGKILL);
            Ok(())
        });
    }
    let _ = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

fn kill_group(pgid: u32) {
    if let Ok(pgid) = libc::pid_t::try_from(pgid) {
        // SAFETY: a plain syscall; the group is our child's own.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
    }
}

async fn execute(prepared: &mut Prepared, limits: &Limits) -> TestRun {
    let isolation = prepared.isolation.name();
    let Some(command) = prepared.command.take() else {
        return TestRun::without_run(
            TestOutcome::SandboxUnavailable("the run was already started".to_string()),
            isolation,
        );
    };
    let mut command = tokio::process::Command::from(command);
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            return TestRun::without_run(
                TestOutcome::SandboxUnavailable(format!("cannot start the sandbox: {error}")),
                isolation,
            );
        }
    };
    let pgid = child.id();
    let tail = Arc::new(Mutex::new(Tail::new(limits.output_bytes)));
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(tokio::spawn(read_into(stdout, Arc::clone(&tail))));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(tokio::spawn(read_into(stderr, Arc::clone(&tail))));
    }

    let (status, timed_out) = match tokio::time::timeout(limits.wall, child.wait()).await {
        Ok(status) => (status.ok(), false),
        Err(_elapsed) => {
            if let Some(pgid) = pgid {
                kill_group(pgid);
            }
            let _ = child.start_kill();
            (child.wait().await.ok(), true)
        }
    };
    // Whatever still holds the pipes was in the group or the namespace.
    if let Some(pgid) = pgid {
        kill_group(pgid);
    }
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    for reader in readers {
        let drained =
            tokio::time::timeout(Duration::from_millis(DRAIN_AFTER_EXIT_MS), reader).await;
        if let Err(_elapsed) = drained {
            tracing::warn!("sandbox output still open {DRAIN_AFTER_EXIT_MS} ms after the run");
        }
    }

    let (output, output_truncated) = match tail.lock() {
        Ok(tail) => tail.text(),
        Err(poisoned) => poisoned.into_inner().text(),
    };
    let exit_code = status.and_then(|status| status.code());
    let signal = status.and_then(|status| status.signal());
    let outcome = if timed_out {
        TestOutcome::TimedOut
    } else if exit_code == Some(0) {
        TestOutcome::Passed
    } else {
        TestOutcome::Failed
    };
    TestRun {
        outcome,
        isolation,
        exit_code,
        signal,
        duration_ms,
        output,
        output_truncated,
    }
}

async fn read_into(mut pipe: impl tokio::io::AsyncRead + Unpin, tail: Arc<Mutex<Tail>>) {
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => match tail.lock() {
                Ok(mut tail) => tail.push(&chunk[..read]),
                Err(poisoned) => poisoned.into_inner().push(&chunk[..read]),
            },
        }
    }
}

/// The last `capacity` bytes of the output.
struct Tail {
    bytes: VecDeque<u8>,
    capacity: usize,
    truncated: bool,
}

impl Tail {
    fn new(capacity: usize) -> Tail {
        Tail {
            bytes: VecDeque::with_capacity(capacity.min(READ_CHUNK_BYTES)),
            capacity,
            truncated: false,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        let keep = &chunk[chunk.len().saturating_sub(self.capacity)..];
        self.truncated |= keep.len() < chunk.len();
        let overflow = (self.bytes.len() + keep.len()).saturating_sub(self.capacity);
        if overflow > 0 {
            self.truncated = true;
            self.bytes.drain(..overflow);
        }
        self.bytes.extend(keep);
        debug_assert!(self.bytes.len() <= self.capacity);
    }

    fn text(&self) -> (String, bool) {
        let bytes: Vec<u8> = self.bytes.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        // Replacement characters can make the text longer than the bytes.
        let text = str_tail(&text, self.capacity);
        (text.to_string(), self.truncated || text.len() < bytes.len())
    }
}

/// The last at most `bytes_max` bytes of `text`, cut at a char boundary.
fn str_tail(text: &str, bytes_max: usize) -> &str {
    let mut start = text.len().saturating_sub(bytes_max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// pytest's summary (`2 passed, 1 failed in 0.03s`) when it is the last line.
fn pytest_counts(output: &str) -> Option<serde_json::Value> {
    static SUMMARY: OnceLock<Option<regex::Regex>> = OnceLock::new();
    static COUNT: OnceLock<Option<regex::Regex>> = OnceLock::new();
    let summary = SUMMARY
        .get_or_init(|| {
            regex::Regex::new(r"^=*\s*(\d+ [a-z]+)(, \d+ [a-z]+)* in [0-9.]+s( \([0-9:]+\))?\s*=*$")
                .ok()
        })
        .as_ref()?;
    let count = COUNT
        .get_or_init(|| {
            regex::Regex::new(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)").ok()
        })
        .as_ref()?;
    let last = output.lines().rev().find(|line| !line.trim().is_empty())?;
    if !summary.is_match(last.trim()) {
        return None;
    }
    let mut counts = serde_json::Map::new();
    for found in count.captures_iter(last) {
        let number: u64 = found[1].parse().ok()?;
        let kind = if found[2].starts_with("error") {
            "errors"
        } else {
            &found[2]
        };
        counts.insert(kind.to_string(), number.into());
    }
    Some(serde_json::Value::Object(counts))
}

/// Host directories every sandbox sees read-only (a symlink, as on merged-usr
/// systems, is recreated as the same symlink).
const SYSTEM_DIRS: [&str; 4] = ["/usr", "/bin", "/lib", "/lib64"];
/// Device nodes the `unshare` sandbox binds from the host.
const DEVICES: [&str; 4] = ["/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"];

/// The rlimits a run's processes get.
#[derive(Clone, Copy, Debug)]
struct Rlimits {
    cpu_secs: u64,
    address_space_bytes: u64,
    processes: u64,
    file_bytes: u64,
}

impl From<&Limits> for Rlimits {
    fn from(limits: &Limits) -> Rlimits {
        Rlimits {
            cpu_secs: limits.cpu_secs,
            address_space_bytes: limits.memory_bytes,
            processes: limits.processes,
            file_bytes: limits.file_bytes,
        }
    }
}

#[cfg(target_env = "gnu")]
type RlimitResource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type RlimitResource = libc::c_int;

impl Rlimits {
    /// In the child between fork and exec: async-signal-safe. `RLIMIT_NPROC`
    /// only with `processes`, as it must be set after the uid or user
    /// namespace the run will count in.
    fn apply(&self, processes: bool) -> io::Result<()> {
        set_rlimit(libc::RLIMIT_CORE, 0)?;
        set_rlimit(libc::RLIMIT_CPU, self.cpu_secs)?;
        set_rlimit(libc::RLIMIT_AS, self.address_space_bytes)?;
        set_rlimit(libc::RLIMIT_FSIZE, self.file_bytes)?;
        if processes {
            set_rlimit(libc::RLIMIT_NPROC, self.processes)?;
        }
        Ok(())
    }
}

fn set_rlimit(resource: RlimitResource, value: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `limit` is a valid rlimit for the duration of the call.
    check(unsafe { libc::setrlimit(resource, &limit) })
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn c_path(path: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(path.as_ref().as_bytes()).map_err(io::Error::other)
}

/// One sandbox: where it lives on the host and what it may see.
struct Jail {
    isolation: Isolation,
    /// The temp dir: `work/` (the run's files) and, for `unshare`, `root/`.
    dir: PathBuf,
    work: PathBuf,
    /// Extra host directories bound read-only at the same path.
    binds: Vec<PathBuf>,
    /// The uid the run becomes (when we are root).
    uid: Option<u32>,
    limits: Rlimits,
}

impl Jail {
    /// The command that runs `program` in this sandbox, in its own process
    /// group, with only the given environment.
    fn command(
        &self,
        program: &Path,
        args: &[OsString],
        runner_env: &[(String, String)],
    ) -> io::Result<std::process::Command> {
        let home = match self.isolation {
            Isolation::None => self.work.as_os_str(),
            Isolation::Bubblewrap | Isolation::Unshare => OsStr::new(WORK_INSIDE),
        };
        let mut env: Vec<(OsString, OsString)> = vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("HOME".into(), home.into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
        ];
        env.extend(
            runner_env
                .iter()
                .map(|(key, value)| (key.into(), value.into())),
        );
        let mut command = match self.isolation {
            Isolation::Bubblewrap => self.bubblewrap(program, args, &env)?,
            Isolation::Unshare => self.unshare(program, args, &env)?,
            Isolation::None => self.unisolated(program, args, &env),
        };
        command.process_group(0);
        Ok(command)
    }

    fn bubblewrap(
        &self,
        program: &Path,
        args: &[OsString],
        env: &[(OsString, OsString)],
    ) -> io::Result<std::process::Command> {
        let bwrap = find_on_path("bwrap")
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "bwrap not on PATH"))?;
        let mut command = std::process::Command::new(bwrap);
        command.env_clear();
        if self.uid.is_some() {
            // As root bwrap makes no user namespace; the run drops to its own
            // uid with setpriv, which needs these three, and then has none.
            command.args([
                "--unshare-net",
                "--unshare-ipc",
                "--unshare-pid",
                "--unshare-uts",
                "--unshare-cgroup-try",
                "--cap-add",
                "CAP_SETUID",
                "--cap-add",
                "CAP_SETGID",
                "--cap-add",
                "CAP_SETPCAP",
            ]);
        } else {
            command.arg("--unshare-all");
        }
        command.args(["--die-with-parent", "--new-session", "--clearenv"]);
        for (key, value) in env {
            command.arg("--setenv").arg(key).arg(value);
        }
        for dir in SYSTEM_DIRS {
            match std::fs::symlink_metadata(dir) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    command
                        .arg("--symlink")
                        .arg(std::fs::read_link(dir)?)
                        .arg(dir);
                }
                Ok(meta) if meta.is_dir() => {
                    command.args(["--ro-bind", dir, dir]);
                }
                _ => {}
            }
        }
        // bwrap would make the parents of a bind (say `/root/.pyenv`) mode
        // 0700, closed to the run's uid.
        let mut parents: Vec<&Path> = Vec::new();
        for dir in &self.binds {
            let mut ancestors: Vec<&Path> = dir.ancestors().skip(1).collect();
            ancestors.reverse();
            for parent in ancestors.into_iter().skip(1) {
                if !parents.contains(&parent) {
                    parents.push(parent);
                    command.args(["--perms", "0755", "--dir"]).arg(parent);
                }
            }
            command.arg("--ro-bind").arg(dir).arg(dir);
        }
        command
            .args([
                "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--bind",
            ])
            .arg(&self.work)
            .args([WORK_INSIDE, "--chdir", WORK_INSIDE, "--"]);
        if let Some(uid) = self.uid {
            let uid = uid.to_string();
            command
                .args(["/usr/bin/setpriv", "--reuid", &uid, "--regid", &uid])
                .args([
                    "--clear-groups",
                    "--inh-caps=-all",
                    "--bounding-set=-all",
                    "--",
                ]);
        }
        // RLIMIT_NPROC inside: set before bwrap makes its user namespace, it
        // would count every process of our uid on the host.
        command
            .arg("/usr/bin/prlimit")
            .arg(format!("--nproc={0}:{0}", self.limits.processes))
            .arg("--")
            .arg(program)
            .args(args);
        let limits = self.limits;
        // SAFETY: setrlimit only, which is async-signal-safe.
        unsafe {
            command.pre_exec(move || limits.apply(false));
        }
        Ok(command)
    }

    fn unshare(
        &self,
        program: &Path,
        args: &[OsString],
        env: &[(OsString, OsString)],
    ) -> io::Result<std::process::Command> {
        let plan = MountPlan::new(self)?;
        let mut command = std::process::Command::new(program);
        command.args(args).env_clear().envs(env.iter().cloned());
        // SAFETY: `MountPlan::enter` makes only async-signal-safe syscalls on
        // data prepared before the fork.
        unsafe {
            command.pre_exec(move || plan.enter());
        }
        Ok(command)
    }

    fn unisolated(
        &self,
        program: &Path,
        args: &[OsString],
        env: &[(OsString, OsString)],
    ) -> std::process::Command {
        let mut command = std::process::Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(env.iter().cloned())
            .current_dir(&self.work);
        let (uid, limits) = (self.uid, self.limits);
        // SAFETY: only async-signal-safe syscalls.
        unsafe {
            command.pre_exec(move || {
                if let Some(uid) = uid {
                    become_uid(uid)?;
                }
                check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
                limits.apply(true)
            });
        }
        command
    }
}

/// In the child: drop every group and become `uid` (which also drops root's
/// capabilities).
fn become_uid(uid: u32) -> io::Result<()> {
    // SAFETY: plain syscalls.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(uid, uid, uid))?;
        check(libc::setresuid(uid, uid, uid))
    }
}

struct BindMount {
    source: CString,
    target: CString,
    read_only: bool,
    /// The source mount's nosuid/nodev/noexec/atime flags: a read-only
    /// remount in a user namespace must keep them.
    kept_flags: libc::c_ulong,
}

/// The `unshare` sandbox's root file system, as paths prepared before the
/// fork so that the child only makes syscalls.
struct MountPlan {
    /// `uid_map` and `gid_map` contents when we make a user namespace.
    id_maps: Option<(CString, CString)>,
    root: CString,
    dirs: Vec<CString>,
    files: Vec<CString>,
    binds: Vec<BindMount>,
    symlinks: Vec<(CString, CString)>,
    tmp: CString,
    work_inside: CString,
    uid: Option<u32>,
    limits: Rlimits,
}

impl MountPlan {
    fn new(jail: &Jail) -> io::Result<MountPlan> {
        let root = jail.dir.join("root");
        std::fs::create_dir_all(&root)?;
        let inside = |host: &Path| root.join(host.strip_prefix("/").unwrap_or(host));
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut add_dirs = |target: &Path| {
            for ancestor in target.ancestors().collect::<Vec<_>>().into_iter().rev() {
                if ancestor.starts_with(&root)
                    && ancestor != root
                    && !dirs.iter().any(|d| d == ancestor)
                {
                    dirs.push(ancestor.to_path_buf());
                }
            }
        };
        let mut binds = Vec::new();
        let mut symlinks = Vec::new();
        let bind = |source: &Path, target: PathBuf, read_only: bool| -> io::Result<BindMount> {
            Ok(BindMount {
                source: c_path(source)?,
                target: c_path(target)?,
                read_only,
                kept_flags: mount_flags(source)?,
            })
        };
        for dir in SYSTEM_DIRS.map(Path::new) {
            match std::fs::symlink_metadata(dir) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    symlinks.push((c_path(std::fs::read_link(dir)?)?, c_path(inside(dir))?));
                }
                Ok(meta) if meta.is_dir() => {
                    add_dirs(&inside(dir));
                    binds.push(bind(dir, inside(dir), true)?);
                }
                _ => {}
            }
        }
        for dir in &jail.binds {
            add_dirs(&inside(dir));
            binds.push(bind(dir, inside(dir), true)?);
        }
        let work_inside = inside(Path::new(WORK_INSIDE));
        add_dirs(&work_inside);
        binds.push(bind(&jail.work, work_inside, false)?);
        add_dirs(&inside(Path::new("/dev")));
        let mut files = Vec::new();
        for device in DEVICES.map(Path::new) {
            files.push(c_path(inside(device))?);
            binds.push(bind(device, inside(device), false)?);
        }
        let tmp = inside(Path::new("/tmp"));
        add_dirs(&tmp);
        let id_maps = match jail.uid {
            Some(_) => None,
            None => {
                // SAFETY: getuid and getgid cannot fail.
                let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
                Some((c_path(format!("0 {uid} 1"))?, c_path(format!("0 {gid} 1"))?))
            }
        };
        Ok(MountPlan {
            id_maps,
            root: c_path(&root)?,
            dirs: dirs.iter().map(c_path).collect::<io::Result<_>>()?,
            files,
            binds,
            symlinks,
            tmp: c_path(tmp)?,
            work_inside: c_path(WORK_INSIDE)?,
            uid: jail.uid,
            limits: jail.limits,
        })
    }

    /// In the child between fork and exec: new namespaces, the new root,
    /// `pivot_root`, then the uid, capabilities and rlimits.
    fn enter(&self) -> io::Result<()> {
        let mut namespaces =
            libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
        if self.id_maps.is_some() {
            namespaces |= libc::CLONE_NEWUSER;
        }
        let null = std::ptr::null::<libc::c_char>();
        // SAFETY: every pointer is a NUL-terminated string prepared before
        // the fork (or null where the call allows it); no allocation here.
        unsafe {
            check(libc::unshare(namespaces))?;
            if let Some((uid_map, gid_map)) = &self.id_maps {
                write_file(c"/proc/self/setgroups", b"deny")?;
                write_file(c"/proc/self/uid_map", uid_map.as_bytes())?;
                write_file(c"/proc/self/gid_map", gid_map.as_bytes())?;
            }
            check(libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            let hardened = libc::MS_NOSUID | libc::MS_NODEV;
            check(libc::mount(
                c"tmpfs".as_ptr(),
                self.root.as_ptr(),
                c"tmpfs".as_ptr(),
                hardened,
                c"mode=0755".as_ptr().cast(),
            ))?;
            for dir in &self.dirs {
                if libc::mkdir(dir.as_ptr(), 0o755) == -1
                    && *libc::__errno_location() != libc::EEXIST
                {
                    return Err(io::Error::last_os_error());
                }
            }
            for file in &self.files {
                let fd = libc::open(
                    file.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                if fd == -1 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(fd);
            }
            for bind in &self.binds {
                check(libc::mount(
                    bind.source.as_ptr(),
                    bind.target.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                if bind.read_only {
                    let flags =
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | bind.kept_flags;
                    check(libc::mount(
                        null,
                        bind.target.as_ptr(),
                        null,
                        flags,
                        std::ptr::null(),
                    ))?;
                }
            }
            for (target, link) in &self.symlinks {
                check(libc::symlink(target.as_ptr(), link.as_ptr()))?;
            }
            check(libc::mount(
                c"tmpfs".as_ptr(),
                self.tmp.as_ptr(),
                c"tmpfs".as_ptr(),
                hardened,
                c"mode=1777".as_ptr().cast(),
            ))?;
            check(libc::chdir(self.root.as_ptr()))?;
            if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) == -1 {
                return Err(io::Error::last_os_error());
            }
            check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
            check(libc::chdir(self.work_inside.as_ptr()))?;
        }
        match self.uid {
            Some(uid) => become_uid(uid)?,
            None => drop_capabilities()?,
        }
        // SAFETY: a plain prctl.
        check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
        self.limits.apply(true)
    }
}

/// In the child: root of a user namespace we made keeps no capabilities
/// across exec (empty bounding and inheritable sets), so it cannot remount
/// the read-only binds.
fn drop_capabilities() -> io::Result<()> {
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    // SAFETY: plain syscalls on stack values of the layout capset expects.
    unsafe {
        for capability in 0..64 {
            // EINVAL past the kernel's last capability: nothing to drop.
            libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0);
        }
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// In the child: write `bytes` to an existing file.
///
/// # Safety
/// Only async-signal-safe calls.
unsafe fn write_file(path: &std::ffi::CStr, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated, `bytes` is valid for its length.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd == -1 {
            return Err(io::Error::last_os_error());
        }
        let written = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        libc::close(fd);
        if written != bytes.len() as isize {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The flags of the mount holding `path` that a remount must keep.
fn mount_flags(path: &Path) -> io::Result<libc::c_ulong> {
    let c_path = c_path(path)?;
    // SAFETY: statvfs fills the zeroed struct; the path is NUL-terminated.
    let stat = unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        check(libc::statvfs(c_path.as_ptr(), &mut stat))?;
        stat
    };
    let pairs = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    Ok(pairs
        .into_iter()
        .filter(|(st, _)| stat.f_flag & *st != 0)
        .fold(0, |flags, (_, ms)| flags | ms))
}
