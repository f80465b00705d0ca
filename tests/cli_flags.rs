//! `taskledger flags list|release|confirm` end to end: the real binary
//! against a data dir made by `taskledger demo`, and against a server
//! started in-process on `127.0.0.1:0`; refusals exit 1 naming the API's
//! code, usage errors exit 2, and a data dir held by a server is refused.

mod common;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use taskledger::clock::SystemClock;
use taskledger::commands::{self, Policy, RaiseFlag};
use taskledger::service::Service;
use taskledger_events::{AccountId, FlagId, Principal, RiskKind, SledStore};

fn taskledger(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskledger"));
    cmd.args(args)
        .env_remove("TASKLEDGER_ADMIN_TOKEN")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn expect_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

/// A market with history: the demo raises two flags and resolves both
/// (one released, one confirmed); it leaves none open.
fn demo_dir(dir: &Path) {
    let d = dir.to_str().expect("utf-8 path");
    let demo = taskledger(&["demo", "--data", d, "--tasks", "300"], &[]);
    expect_exit(&demo, 0);
}

/// Raise an open flag on the owner with the most earned credits, holding
/// `freeze` of them, through `svc` as the risk engine would. Returns the
/// flag and its owner.
async fn raise(svc: &Service, freeze: u64) -> (FlagId, AccountId) {
    let owner_id = svc
        .read()
        .owners
        .values()
        .max_by_key(|o| o.wallet.earned)
        .map(|o| o.id)
        .expect("the demo registered owners");
    let flag_id = FlagId::random();
    let cmd = commands::Command::RaiseFlag(RaiseFlag {
        flag_id,
        kind: RiskKind::SelfDealingSuspected,
        owner_id,
        task_id: None,
        reason: "test: same address as the publisher".into(),
        freeze,
    });
    svc.execute(Principal::System, None, cmd)
        .await
        .expect("raises");
    (flag_id, owner_id)
}

/// Raise flags on a data dir no server holds, through the real service.
fn raise_in_dir(dir: &Path, freezes: &[u64]) -> Vec<(FlagId, AccountId)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let store = SledStore::open(dir).expect("opens");
        let (svc, writer) =
            Service::start(Box::new(store), Policy::default(), Arc::new(SystemClock))
                .expect("starts");
        let mut out = Vec::new();
        for f in freezes {
            out.push(raise(&svc, *f).await);
        }
        svc.shutdown().await.expect("stops");
        drop(svc);
        writer.join().expect("the writer ends");
        out
    })
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

fn flag_in(list: &Value, id: FlagId) -> Option<&Value> {
    list["flags"]
        .as_array()
        .expect("a flags array")
        .iter()
        .find(|f| f["id"] == id.to_string())
}

#[test]
fn against_a_data_dir_list_release_confirm_and_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    demo_dir(&data);
    let d = data.to_str().unwrap();
    let raised = raise_in_dir(&data, &[40, 25]);
    let ((a, _), (b, _)) = (raised[0], raised[1]);

    // list: the text table shows the open flags only, with their holds.
    let list = taskledger(&["flags", "list", "--data", d], &[]);
    expect_exit(&list, 0);
    let text = stdout(&list);
    assert!(text.starts_with("ID "), "{text}");
    assert!(
        text.contains(&a.to_string()) && text.contains(&b.to_string()),
        "{text}"
    );
    assert_eq!(
        text.lines().count(),
        3,
        "a header and two open flags: {text}"
    );
    assert!(
        text.contains("self_dealing_suspected") && text.contains(" open "),
        "{text}"
    );
    assert!(
        !text.contains("released") && !text.contains("confirmed"),
        "{text}"
    );

    // list --json --status all: the demo's resolved flags too.
    let all = json(&taskledger(
        &["flags", "list", "--data", d, "--status", "all", "--json"],
        &[],
    ));
    let statuses: Vec<&str> = all["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["status"].as_str().unwrap())
        .collect();
    assert!(
        statuses.contains(&"released") && statuses.contains(&"confirmed"),
        "{all}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == "open").count(),
        2,
        "{all}"
    );
    let frozen_a = flag_in(&all, a).expect("flag a listed")["frozen"]
        .as_u64()
        .unwrap();
    assert!(frozen_a > 0, "the hold froze earned credits: {all}");

    // release: exit 0, recorded with the operator and the reason.
    let rel = taskledger(
        &[
            "flags",
            "release",
            &a.to_string(),
            "--reason",
            "checked the addresses",
            "--operator",
            "alice",
            "--data",
            d,
        ],
        &[],
    );
    expect_exit(&rel, 0);
    assert!(stdout(&rel).contains("released"), "{}", stdout(&rel));
    let released = json(&taskledger(
        &[
            "flags", "list", "--data", d, "--status", "released", "--json",
        ],
        &[],
    ));
    let fa = flag_in(&released, a).expect("a is released");
    assert_eq!(fa["resolved_by"], "alice");
    assert_eq!(fa["resolution_reason"], "checked the addresses");

    // The books still balance after the CLI wrote to the log.
    let audit = taskledger(&["audit", "--data", d], &[]);
    expect_exit(&audit, 0);
    assert!(
        stdout(&audit).contains("conservation: ok"),
        "{}",
        stdout(&audit)
    );

    // A second release, or a confirm of a resolved flag: 409 conflict.
    for action in ["release", "confirm"] {
        let again = taskledger(
            &[
                "flags",
                action,
                &a.to_string(),
                "--reason",
                "again",
                "--operator",
                "bob",
                "--data",
                d,
            ],
            &[],
        );
        expect_exit(&again, 1);
        assert!(stderr(&again).contains("conflict"), "{}", stderr(&again));
    }
    // An unknown flag: 404 not_found.
    let unknown = taskledger(
        &[
            "flags",
            "confirm",
            &FlagId::random().to_string(),
            "--reason",
            "x",
            "--operator",
            "bob",
            "--data",
            d,
        ],
        &[],
    );
    expect_exit(&unknown, 1);
    assert!(
        stderr(&unknown).contains("not_found"),
        "{}",
        stderr(&unknown)
    );

    // confirm: the hold stays; the flag leaves the open list.
    let conf = taskledger(
        &[
            "flags",
            "confirm",
            &b.to_string(),
            "--reason",
            "fraud",
            "--operator",
            "carol",
            "--data",
            d,
            "--json",
        ],
        &[],
    );
    expect_exit(&conf, 0);
    let fb = json(&conf);
    assert_eq!(
        (fb["status"].as_str(), fb["resolved_by"].as_str()),
        (Some("confirmed"), Some("carol"))
    );
    let open = taskledger(&["flags", "list", "--data", d], &[]);
    expect_exit(&open, 0);
    assert!(
        stdout(&open).contains("no open risk flags"),
        "{}",
        stdout(&open)
    );

    // Replay of the whole log agrees.
    let audit = json(&taskledger(&["audit", "--data", d, "--json"], &[]));
    assert_eq!(audit["ok"], true, "{audit}");

    // Usage errors exit 2: a bad id, a missing reason, no target.
    for args in [
        vec![
            "flags",
            "release",
            "not-a-uuid",
            "--reason",
            "x",
            "--operator",
            "o",
            "--data",
            d,
        ],
        vec![
            "flags",
            "release",
            &b.to_string(),
            "--operator",
            "o",
            "--data",
            d,
        ],
        vec!["flags", "list"],
        vec!["flags", "list", "--url", "http://127.0.0.1:9"],
        vec!["flags", "list", "--data", d, "--status", "pending"],
    ] {
        let o = taskledger(&args, &[]);
        expect_exit(&o, 2);
    }
    // A path with no market is not created on the way.
    let missing = tmp.path().join("nothing-here");
    let o = taskledger(&["flags", "list", "--data", missing.to_str().unwrap()], &[]);
    expect_exit(&o, 1);
    assert!(!missing.exists(), "a mistyped --data made a new market");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_server_the_same_and_its_data_dir_is_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    demo_dir(&data);
    let running = taskledger::http::start(common::settings(&data))
        .await
        .expect("the server starts");
    let url = format!("http://{}", running.addr);
    let (a, owner) = raise(&running.service, 30).await;
    let (b, _) = raise(&running.service, 0).await;
    let earned_before = running.service.read().owners[&owner].wallet.earned;
    let token = common::ADMIN_TOKEN;

    // Every CLI run blocks; keep them off the server's runtime threads.
    let cli = |args: Vec<String>, env: Vec<(&'static str, String)>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            taskledger(&args, &env)
        })
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    // list with --admin-token, and with the token from the environment.
    let list = cli(
        s(&["flags", "list", "--url", &url, "--admin-token", token]),
        vec![],
    )
    .await
    .unwrap();
    expect_exit(&list, 0);
    assert!(stdout(&list).contains(&a.to_string()), "{}", stdout(&list));
    let listed = cli(
        s(&[
            "flags",
            "list",
            "--url",
            &format!("{url}/api/v1/"),
            "--json",
        ]),
        vec![("TASKLEDGER_ADMIN_TOKEN", token.to_string())],
    )
    .await
    .unwrap();
    expect_exit(&listed, 0);
    let listed = json(&listed);
    assert_eq!(listed["flags"].as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(flag_in(&listed, a).unwrap()["frozen"], 30);

    // release: the server records the operator; the hold is back in earned.
    let rel = cli(
        s(&[
            "flags",
            "release",
            &a.to_string(),
            "--reason",
            "ok",
            "--operator",
            "dana",
            "--url",
            &url,
            "--admin-token",
            token,
            "--json",
        ]),
        vec![],
    )
    .await
    .unwrap();
    expect_exit(&rel, 0);
    let fa = json(&rel);
    assert_eq!(
        (fa["status"].as_str(), fa["resolved_by"].as_str()),
        (Some("released"), Some("dana"))
    );
    assert_eq!(
        running.service.read().owners[&owner].wallet.earned,
        earned_before + 30
    );
    let again = cli(
        s(&[
            "flags",
            "release",
            &a.to_string(),
            "--reason",
            "ok",
            "--operator",
            "dana",
            "--url",
            &url,
            "--admin-token",
            token,
        ]),
        vec![],
    )
    .await
    .unwrap();
    expect_exit(&again, 1);
    assert!(stderr(&again).contains("conflict"), "{}", stderr(&again));
    let unknown = cli(
        s(&[
            "flags",
            "confirm",
            &FlagId::random().to_string(),
            "--reason",
            "x",
            "--operator",
            "dana",
            "--url",
            &url,
            "--admin-token",
            token,
        ]),
        vec![],
    )
    .await
    .unwrap();
    expect_exit(&unknown, 1);
    assert!(
        stderr(&unknown).contains("not_found"),
        "{}",
        stderr(&unknown)
    );
    let conf = cli(
        s(&[
            "flags",
            "confirm",
            &b.to_string(),
            "--reason",
            "fraud",
            "--operator",
            "erin",
            "--url",
            &url,
            "--admin-token",
            token,
        ]),
        vec![],
    )
    .await
    .unwrap();
    expect_exit(&conf, 0);
    assert!(stdout(&conf).contains("confirmed"), "{}", stdout(&conf));
    {
        let state = running.service.read();
        let f = &state.flags[&b];
        let by = f.resolution.as_ref().map(|r| r.operator.as_str());
        assert_eq!(by, Some("erin"), "the operator's name is in the event");
    }

    // A wrong token is refused, and changes nothing.
    for args in [
        s(&["flags", "list", "--url", &url, "--admin-token", "wrong"]),
        s(&[
            "flags",
            "confirm",
            &a.to_string(),
            "--reason",
            "x",
            "--operator",
            "eve",
            "--url",
            &url,
            "--admin-token",
            "wrong",
        ]),
    ] {
        let o = cli(args, vec![]).await.unwrap();
        expect_exit(&o, 1);
        assert!(stderr(&o).contains("unauthorized"), "{}", stderr(&o));
    }

    // The server holds the data dir: the in-process path refuses clearly.
    let d = data.to_str().unwrap().to_string();
    for args in [
        s(&["flags", "list", "--data", &d]),
        s(&[
            "flags",
            "release",
            &b.to_string(),
            "--reason",
            "x",
            "--operator",
            "o",
            "--data",
            &d,
        ]),
    ] {
        let o = cli(args, vec![]).await.unwrap();
        expect_exit(&o, 1);
        assert!(
            stderr(&o).contains("in use") && stderr(&o).contains("--url"),
            "{}",
            stderr(&o)
        );
    }

    running.stop().await.expect("a clean stop");
    let audit = cli(s(&["audit", "--data", &d]), vec![]).await.unwrap();
    expect_exit(&audit, 0);
}
