//! Automatic verification over real HTTP: a submit to an `auto_rules`,
//! `auto_tests` or `auto_llm` task comes back with its verdict and its
//! settlement; what cannot be decided falls back to the publisher's review;
//! a restart verifies what was left unverified.

mod common;

use common::{Agent, Owner, Server, task_body, wallet};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

/// Alice publishes, Bob's agent key works.
async fn market(s: &Server) -> (Owner, Owner, Agent) {
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let bk = s.agent(&bob, "b").await;
    (alice, bob, bk)
}

async fn publish_auto(s: &Server, owner: &Owner, reward: u64, verification: Value) -> String {
    let mut body = task_body(reward);
    body["verification"] = verification;
    s.publish(owner, body).await
}

/// Submit and return the answer (200), whatever the verdict.
async fn submit(s: &Server, agent: &Agent, task: &str, body: Value) -> Value {
    s.post(&format!("/tasks/{task}/submit"), &agent.key, body)
        .await
        .expect(200)
        .body
}

fn rules() -> Value {
    json!({"mode": "auto_rules", "rules": [
        {"type": "contains", "value": "def solve"},
        {"type": "not_contains", "value": "TODO"},
        {"type": "regex", "value": "^def \\w+\\("},
        {"type": "min_length", "value": "10"},
        {"type": "json_path_equals", "path": "lang", "value": "python"},
        {"type": "contains", "value": "return 42", "hidden": true},
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_rules_task_pays_a_passing_submission_within_the_submit_call() {
    let s = Server::start().await;
    let (alice, bob, bk) = market(&s).await;
    let task = publish_auto(&s, &alice, 10, rules()).await;
    s.claim(&bk, &task).await;
    let x = submit(
        &s,
        &bk,
        &task,
        json!({"result": "def solve():\n    return 42\n", "result_metadata": {"lang": "python"}}),
    )
    .await;
    assert_eq!(x["status"], "accepted", "{x}");
    assert_eq!(x["auto_verified"], true);
    assert_eq!(x["verifier"], "auto_rules");
    assert_eq!(x["score"], 10.0);
    let detail = &x["verification_detail"];
    assert_eq!(
        (detail["passed"].as_u64(), detail["total"].as_u64()),
        (Some(6), Some(6))
    );
    // The hidden rule is reported, its value is not.
    assert_eq!(detail["rules"][5]["hidden"], true, "{detail}");
    assert!(detail["rules"][5].get("value").is_none(), "{detail}");
    assert_eq!(s.task(&alice.key, &task).await["status"], "completed");
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 10));
    assert_eq!(s.wallet(&alice.key).await, wallet(990, 0));
    s.assert_reconciled().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_rules_task_rejects_a_failing_submission_and_reopens_with_the_escrow_kept() {
    let s = Server::start().await;
    let (alice, bob, bk) = market(&s).await;
    let task = publish_auto(&s, &alice, 10, rules()).await;
    let x_id = s.claim(&bk, &task).await;
    // Five of six rules pass: the hidden one does not.
    let x = submit(
        &s,
        &bk,
        &task,
        json!({"result": "def solve():\n    return 41\n", "result_metadata": {"lang": "python"}}),
    )
    .await;
    assert_eq!(x["status"], "rejected", "{x}");
    assert_eq!(x["auto_verified"], true);
    assert_eq!(x["score"], 8.33);
    assert_eq!(x["verification_detail"]["rules"][5]["passed"], false);
    assert_eq!(x["id"], x_id.as_str());
    assert_eq!(s.task(&alice.key, &task).await["status"], "open");
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 0));
    assert_eq!(s.wallet(&alice.key).await, wallet(990, 0));
    // Another agent may take the re-opened task and get paid.
    let carol = s.register("carol").await;
    let ck = s.agent(&carol, "c").await;
    s.claim(&ck, &task).await;
    let x = submit(
        &s,
        &ck,
        &task,
        json!({"result": "def solve():\n    return 42\n", "result_metadata": {"lang": "python"}}),
    )
    .await;
    assert_eq!(x["status"], "accepted", "{x}");
    assert_eq!(s.wallet(&carol.key).await, wallet(1000, 10));
    s.assert_reconciled().await;
    s.stop().await;
}

fn tests_python() -> Value {
    json!({"mode": "auto_tests", "language": "python",
           "tests": "from solution import add\n\ndef test_add():\n    assert add(2, 3) == 5\n",
           "hidden_tests": "from solution import add\n\ndef test_negative():\n    assert add(-2, -3) == -5\n"})
}

fn tests_javascript() -> Value {
    json!({"mode": "auto_tests", "language": "javascript",
           "tests": "const assert = require('assert');\nconst { add } = require('./solution.js');\nassert.strictEqual(add(2, 3), 5);\n"})
}

/// A task with `verification`, a correct and a wrong solution: the first
/// is paid, the second rejected, each within its submit call.
async fn pays_right_rejects_wrong(verification: Value, right: &str, wrong: &str) {
    let s = Server::start().await;
    let (alice, bob, bk) = market(&s).await;
    let good = publish_auto(&s, &alice, 10, verification.clone()).await;
    let bad = publish_auto(&s, &alice, 10, verification).await;
    s.claim(&bk, &good).await;
    let x = submit(&s, &bk, &good, json!({ "result": right })).await;
    assert_eq!(x["status"], "accepted", "{x}");
    assert_eq!(x["verifier"], "auto_tests");
    assert_eq!(x["score"], 10.0);
    assert!(x["verification_detail"]["isolation"].is_string(), "{x}");
    s.claim(&bk, &bad).await;
    let x = submit(&s, &bk, &bad, json!({ "result": wrong })).await;
    assert_eq!(x["status"], "rejected", "{x}");
    assert_eq!(x["verifier"], "auto_tests");
    assert_eq!(s.task(&alice.key, &bad).await["status"], "open");
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 10));
    s.assert_reconciled().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_tests_python_task_pays_a_correct_solution_and_rejects_a_wrong_one() {
    pays_right_rejects_wrong(
        tests_python(),
        "def add(a, b):\n    return a + b\n",
        "def add(a, b):\n    return abs(a) + abs(b)\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_tests_javascript_task_pays_a_correct_solution_and_rejects_a_wrong_one() {
    pays_right_rejects_wrong(
        tests_javascript(),
        "exports.add = (a, b) => a + b;\n",
        "exports.add = (a, b) => a - b;\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_run_past_its_time_limit_falls_back_to_the_publishers_review() {
    let s = Server::start_with(|s| s.tests_timeout_secs = 2).await;
    let (alice, bob, bk) = market(&s).await;
    let task = publish_auto(&s, &alice, 10, tests_python()).await;
    let x_id = s.claim(&bk, &task).await;
    let x = submit(&s, &bk, &task, json!({"result": "while True:\n    pass\n"})).await;
    assert_eq!(x["status"], "submitted", "{x}");
    let reason = x["fallback_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("timed out"), "{x}");
    // No verdict, so no reputation change; the publisher decides.
    s.verify(
        &alice,
        &task,
        json!({"execution_id": x_id, "accepted": true}),
    )
    .await
    .expect(200);
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 10));
    s.stop().await;
}

/// A local OpenAI-compatible judge: answers `{score, reasoning}` with the
/// whole-point score held in `score`, or hangs while `hang` is 1.
struct Judge {
    url: String,
    score: Arc<AtomicU8>,
    hang: Arc<AtomicU8>,
    calls: Arc<AtomicUsize>,
}

async fn judge() -> Judge {
    use axum::{Json, Router, extract::State, routing::post};
    type Shared = (Arc<AtomicU8>, Arc<AtomicU8>, Arc<AtomicUsize>);
    let shared: Shared = Default::default();
    async fn complete(State((score, hang, calls)): State<Shared>) -> Json<Value> {
        calls.fetch_add(1, Ordering::SeqCst);
        if hang.load(Ordering::SeqCst) == 1 {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let content = json!({"score": score.load(Ordering::SeqCst), "reasoning": "checked"});
        Json(json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content.to_string()}}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
        }))
    }
    let app = Router::new()
        .route("/v1/chat/completions", post(complete))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Judge {
        url: format!("http://{addr}/v1"),
        score: shared.0,
        hang: shared.1,
        calls: shared.2,
    }
}

fn llm() -> Value {
    json!({"mode": "auto_llm", "rubric": "A correct three-sentence summary.", "pass_threshold": 6})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_llm_task_is_judged_within_the_submit_call() {
    let j = judge().await;
    let url = j.url.clone();
    let s = Server::start_with(|s| s.llm_url = Some(url)).await;
    let (alice, bob, bk) = market(&s).await;
    j.score.store(9, Ordering::SeqCst);
    let task = publish_auto(&s, &alice, 10, llm()).await;
    s.claim(&bk, &task).await;
    let x = submit(&s, &bk, &task, json!({"result": "One. Two. Three."})).await;
    assert_eq!(x["status"], "accepted", "{x}");
    assert_eq!(x["verifier"], "auto_llm");
    assert_eq!(x["score"], 9.0);
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 10));
    // A low score rejects and re-opens.
    j.score.store(3, Ordering::SeqCst);
    let task = publish_auto(&s, &alice, 10, llm()).await;
    s.claim(&bk, &task).await;
    let x = submit(&s, &bk, &task, json!({"result": "Nothing useful."})).await;
    assert_eq!(x["status"], "rejected", "{x}");
    assert_eq!(s.task(&alice.key, &task).await["status"], "open");
    assert_eq!(j.calls.load(Ordering::SeqCst), 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_llm_task_without_a_judge_falls_back_to_the_publishers_review() {
    let s = Server::start().await;
    let (alice, bob, bk) = market(&s).await;
    let task = publish_auto(&s, &alice, 10, llm()).await;
    let x_id = s.claim(&bk, &task).await;
    let x = submit(&s, &bk, &task, json!({"result": "One. Two. Three."})).await;
    assert_eq!(x["status"], "submitted", "{x}");
    assert!(
        x["fallback_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not configured"),
        "{x}"
    );
    s.verify(
        &alice,
        &task,
        json!({"execution_id": x_id, "accepted": true, "score": 7}),
    )
    .await
    .expect(200);
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 10));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_left_unverified_by_a_restart_gets_its_verdict_after_it() {
    // The judge hangs and the submit call waits only 200 ms: the answer is
    // the pending execution. Then the server stops before any verdict.
    let j = judge().await;
    j.hang.store(1, Ordering::SeqCst);
    let url = j.url.clone();
    let mut s = Server::start_with(|s| {
        s.llm_url = Some(url);
        s.verify_wait_ms = 200;
        s.llm_timeout_secs = 3600;
    })
    .await;
    let (alice, bob, bk) = market(&s).await;
    let task = publish_auto(&s, &alice, 10, llm()).await;
    let x_id = s.claim(&bk, &task).await;
    let x = submit(&s, &bk, &task, json!({"result": "One. Two. Three."})).await;
    assert_eq!(x["status"], "submitted", "{x}");
    assert!(x["fallback_reason"].is_null(), "{x}");
    // Restarted with a judge that answers: the pending submission is found
    // and verified without anyone asking.
    j.score.store(8, Ordering::SeqCst);
    j.hang.store(0, Ordering::SeqCst);
    s.restart(|_| {}).await;
    let x = s
        .poll(&format!("/executions/{x_id}"), &bk.key, |x| {
            x["status"] != "submitted"
        })
        .await;
    assert_eq!(x["status"], "accepted", "{x}");
    assert_eq!(x["verifier"], "auto_llm");
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 10));
    s.assert_reconciled().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catastrophic_regex_on_a_long_submission_is_decided_at_once() {
    // `(a+)+$` against "aaa...a!" is exponential for a backtracking engine;
    // the linear-time engine rejects 1 MiB of it inside the submit call.
    let s = Server::start().await;
    let (alice, _bob, bk) = market(&s).await;
    let task = publish_auto(
        &s,
        &alice,
        10,
        json!({"mode": "auto_rules", "rules": [{"type": "regex", "value": "(a+)+$"}]}),
    )
    .await;
    s.claim(&bk, &task).await;
    let long = format!("{}!", "a".repeat((1 << 20) - 1));
    let x = submit(&s, &bk, &task, json!({ "result": long })).await;
    assert_eq!(x["status"], "rejected", "{}", x["verification_detail"]);
    assert_eq!(x["verification_detail"]["rules"][0]["passed"], false);
    s.stop().await;
}
