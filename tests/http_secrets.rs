//! Task secrets over every route that shows a task: `tests`, `rubric` and
//! hidden rule values are absent from every body before a claim; after a
//! claim the claimant sees `tests`, `rubric` and visible rules but never
//! the `hidden_*` parts; the publisher sees everything. The raw response
//! text is searched for marker strings, so a secret cannot hide in any
//! field, message or frame.

mod common;

use common::{Agent, Owner, Server};
use serde_json::{Value, json};
use std::time::Duration;

const TESTS: &str = "MARK-TESTS-3f9a";
const HIDDEN_TESTS: &str = "MARK-HIDDEN-TESTS-77c1";
const RUBRIC: &str = "MARK-RUBRIC-b2d0";
const HIDDEN_RUBRIC: &str = "MARK-HIDDEN-RUBRIC-90ee";
const HIDDEN_RULE: &str = "MARK-HIDDEN-RULE-4a4a";
const HIDDEN_REGEX: &str = "MARK-HIDDEN-REGEX-1c1c";
/// A visible rule's value: public by design (the criteria agents work to).
const VISIBLE_RULE: &str = "MARK-VISIBLE-RULE-5e5e";

/// Shown to claimants and the publisher only.
const CLAIMANT_SECRETS: [&str; 2] = [TESTS, RUBRIC];
/// Shown to the publisher only.
const HIDDEN: [&str; 4] = [HIDDEN_TESTS, HIDDEN_RUBRIC, HIDDEN_RULE, HIDDEN_REGEX];

struct Market {
    s: Server,
    alice: Owner,
    bob: Owner,
    carol: Owner,
    bk: Agent,
    ck: Agent,
    tasks: [String; 3],
}

async fn market() -> Market {
    let s = Server::start().await;
    let (alice, bob, carol) = (
        s.register("alice").await,
        s.register("bob").await,
        s.register("carol").await,
    );
    let (bk, ck) = (s.agent(&bob, "b").await, s.agent(&carol, "c").await);
    let base = |v: Value| json!({"title": "Secretive", "type": "code", "reward_credits": 10, "verification": v});
    let tests = s
        .post(
            "/tasks",
            &alice.key,
            base(json!({
                "mode": "auto_tests", "language": "python",
                "tests": format!("def test_a():\n    assert '{TESTS}'"),
                "hidden_tests": format!("def test_b():\n    assert '{HIDDEN_TESTS}'"),
            })),
        )
        .await
        .expect(201);
    let llm = s
        .post(
            "/tasks",
            &alice.key,
            base(json!({
                "mode": "auto_llm", "rubric": format!("Judge by {RUBRIC}"),
                "pass_threshold": 7, "hidden_rubric": format!("Also {HIDDEN_RUBRIC}"),
            })),
        )
        .await
        .expect(201);
    let rules = s
        .post(
            "/tasks",
            &alice.key,
            base(json!({"mode": "auto_rules", "rules": [
                {"type": "contains", "value": VISIBLE_RULE},
                {"type": "contains", "value": HIDDEN_RULE, "hidden": true},
                {"type": "regex", "value": format!("{HIDDEN_REGEX}.*"), "hidden": true},
            ]})),
        )
        .await
        .expect(201);
    // The publisher's own answer carries everything.
    for (r, marks) in [
        (&tests, vec![TESTS, HIDDEN_TESTS]),
        (&llm, vec![RUBRIC, HIDDEN_RUBRIC]),
        (&rules, vec![VISIBLE_RULE, HIDDEN_RULE, HIDDEN_REGEX]),
    ] {
        for m in marks {
            assert!(
                r.text.contains(m),
                "the publisher's answer lacks {m}: {}",
                r.text
            );
        }
    }
    let id = |r: &common::Resp| r.body["id"].as_str().unwrap().to_owned();
    let tasks = [id(&tests), id(&llm), id(&rules)];
    Market {
        s,
        alice,
        bob,
        carol,
        bk,
        ck,
        tasks,
    }
}

/// Every read route that can show these tasks to `key`, as raw text.
async fn everything_seen_by(m: &Market, key: &str, agent: bool) -> Vec<(String, String)> {
    let mut paths = vec![
        "/tasks".to_owned(),
        "/tasks?status=all".to_owned(),
        "/tasks?status=all&type=code".to_owned(),
        "/tasks?status=claimed".to_owned(),
        format!("/accounts/{}", m.alice.id),
        "/accounts/me".to_owned(),
        "/accounts/me/credits".to_owned(),
    ];
    for t in &m.tasks {
        paths.push(format!("/tasks/{t}"));
        paths.push(format!("/tasks/{t}/verification"));
    }
    if agent {
        paths.push("/tasks/my/executions".to_owned());
    } else {
        paths.push("/tasks/my/published".to_owned());
        paths.push("/market/overview".to_owned());
        paths.push("/accounts/me/ledger".to_owned());
    }
    let mut out = Vec::new();
    for p in paths {
        let r = m.s.get(&p, key).await.expect(200);
        out.push((p, r.text));
    }
    // Every frame of the event stream from the beginning of the log.
    let head = m.s.head_seq().await;
    let mut reader = m.s.events(key, "?since=0", &[]).await;
    // The stream sends only what the caller may see; wait a moment past the
    // last frame it has for this caller.
    while let Some(f) = reader.next(Duration::from_millis(300)).await {
        if f.id.is_some_and(|id| id >= head) {
            break;
        }
    }
    // Agent keys see every publish; owners at least their own registration.
    let expected = if agent {
        "task_published"
    } else {
        "account_registered"
    };
    assert!(
        reader.raw.contains(&format!("event: {expected}")),
        "the stream showed nothing to search: {}",
        reader.raw
    );
    out.push(("/events?since=0".to_owned(), reader.raw.clone()));
    out
}

#[track_caller]
fn assert_absent(seen: &[(String, String)], marks: &[&str], who: &str) {
    for (path, text) in seen {
        for m in marks {
            assert!(!text.contains(m), "{who} sees {m} in GET {path}: {text}");
        }
    }
}

#[track_caller]
fn assert_present(text: &str, marks: &[&str], what: &str) {
    for m in marks {
        assert!(text.contains(m), "{what} lacks {m}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_hidden_until_a_claim_and_hidden_parts_forever() {
    let m = market().await;
    let s = &m.s;
    let all_secrets: Vec<&str> = CLAIMANT_SECRETS.iter().chain(&HIDDEN).copied().collect();

    // Before any claim: nobody but the publisher sees a secret.
    for (who, key, agent) in [
        ("bob's agent key", &m.bk.key, true),
        ("carol's agent key", &m.ck.key, true),
        ("bob", &m.bob.key, false),
        ("carol", &m.carol.key, false),
    ] {
        let seen = everything_seen_by(&m, key, agent).await;
        assert_absent(&seen, &all_secrets, who);
    }
    // The public view says what was withheld.
    let v = s
        .get(&format!("/tasks/{}/verification", m.tasks[0]), &m.ck.key)
        .await
        .expect(200)
        .body;
    assert_eq!(v["verification"]["mode"], "auto_tests");
    assert_eq!(v["verification"]["language"], "python");
    assert_eq!(
        v["verification"]["redacted"],
        json!(["tests", "hidden_tests"])
    );
    let v = s.task(&m.ck.key, &m.tasks[1]).await;
    assert_eq!(
        v["verification"]["redacted"],
        json!(["rubric", "hidden_rubric"])
    );
    assert_eq!(v["verification"]["pass_threshold"], 7.0);
    let v = s.task(&m.ck.key, &m.tasks[2]).await;
    let rules = &v["verification"]["rules"];
    assert_eq!(rules[0]["value"], VISIBLE_RULE);
    assert_eq!(rules[1], json!({"type": "contains", "hidden": true}));
    assert_eq!(rules[2], json!({"type": "regex", "hidden": true}));
    assert!(
        v["verification_summary"]
            .as_str()
            .unwrap()
            .contains("2 hidden")
    );

    // Bob's key claims all three.
    let mut claims = Vec::new();
    for t in &m.tasks {
        let r = s
            .post_empty(&format!("/tasks/{t}/claim"), &m.bk.key)
            .await
            .expect(201);
        assert_absent(
            &[(format!("claim {t}"), r.text.clone())],
            &all_secrets,
            "a claim answer",
        );
        claims.push(r.body["id"].as_str().unwrap().to_owned());
    }
    // The claimant: tests, rubric and visible rules; never the hidden parts.
    let t = s.task(&m.bk.key, &m.tasks[0]).await;
    assert_eq!(t["verification"]["redacted"], json!(["hidden_tests"]));
    assert!(t["verification"]["hidden_tests"].is_null());
    for (task, marks) in [
        (&m.tasks[0], vec![TESTS]),
        (&m.tasks[1], vec![RUBRIC]),
        (&m.tasks[2], vec![VISIBLE_RULE]),
    ] {
        for p in [
            format!("/tasks/{task}"),
            format!("/tasks/{task}/verification"),
        ] {
            let r = s.get(&p, &m.bk.key).await.expect(200);
            assert_present(&r.text, &marks, &format!("the claimant's GET {p}"));
        }
    }
    let seen = everything_seen_by(&m, &m.bk.key, true).await;
    assert_absent(&seen, &HIDDEN, "the claimant");
    for x in &claims {
        let r = s
            .get(&format!("/executions/{x}"), &m.bk.key)
            .await
            .expect(200);
        assert_absent(
            &[(format!("/executions/{x}"), r.text)],
            &HIDDEN,
            "the claimant",
        );
    }
    let r = s
        .post(
            &format!("/tasks/{}/submit", m.tasks[2]),
            &m.bk.key,
            json!({"result": "an answer"}),
        )
        .await
        .expect(200);
    assert_absent(
        &[("submit".into(), r.text)],
        &all_secrets,
        "a submit answer",
    );

    // Still nothing for the others, not even the claimant's owner.
    for (who, key, agent) in [
        ("carol's agent key", &m.ck.key, true),
        ("bob", &m.bob.key, false),
        ("carol", &m.carol.key, false),
    ] {
        let seen = everything_seen_by(&m, key, agent).await;
        assert_absent(&seen, &all_secrets, who);
    }
    for x in &claims {
        let r = s
            .get(&format!("/executions/{x}"), &m.bob.key)
            .await
            .expect(200);
        assert_absent(&[(format!("/executions/{x}"), r.text)], &all_secrets, "bob");
    }

    // The publisher sees everything, in each place a task is shown.
    let every: Vec<&str> = all_secrets.iter().copied().chain([VISIBLE_RULE]).collect();
    let published = s.get("/tasks/my/published", &m.alice.key).await.expect(200);
    assert_present(
        &published.text,
        &every,
        "the publisher's /tasks/my/published",
    );
    let all = s.get("/tasks?status=all", &m.alice.key).await.expect(200);
    assert_present(&all.text, &every, "the publisher's /tasks?status=all");
    for (task, marks) in [
        (&m.tasks[0], vec![TESTS, HIDDEN_TESTS]),
        (&m.tasks[1], vec![RUBRIC, HIDDEN_RUBRIC]),
        (&m.tasks[2], vec![VISIBLE_RULE, HIDDEN_RULE, HIDDEN_REGEX]),
    ] {
        for p in [
            format!("/tasks/{task}"),
            format!("/tasks/{task}/verification"),
        ] {
            let r = s.get(&p, &m.alice.key).await.expect(200);
            assert_present(&r.text, &marks, &format!("the publisher's GET {p}"));
            assert_eq!(r.body["verification"]["redacted"], json!([]), "{p}");
        }
    }
    m.s.stop().await;
}
