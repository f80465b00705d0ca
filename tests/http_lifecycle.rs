//! Every branch of a task's life over real HTTP: accept, reject with and
//! without re-open, supersede, lease expiry, deadline expiry, cancel, a
//! publish the wallet cannot cover, idempotent retries, validation errors,
//! reputation gating and the claim rules. Balances, statuses, ledger rows
//! and reputation are checked to the credit and to the hundredth.

mod common;

use common::{Server, rfc3339_in, task_body, wallet};
use serde_json::{Value, json};

fn row(v: &Value) -> (String, i64, u64, String, String) {
    (
        v["class"].as_str().unwrap_or_default().to_owned(),
        v["delta"].as_i64().expect("delta"),
        v["balance_after"].as_u64().expect("balance_after"),
        v["reason"].as_str().unwrap_or_default().to_owned(),
        v["task_id"].as_str().unwrap_or_default().to_owned(),
    )
}

fn rows(v: &Value) -> Vec<(String, i64, u64, String, String)> {
    v.as_array().expect("rows").iter().map(row).collect()
}

fn r(
    class: &str,
    delta: i64,
    after: u64,
    reason: &str,
    task: &str,
) -> (String, i64, u64, String, String) {
    (class.into(), delta, after, reason.into(), task.into())
}

#[track_caller]
fn assert_points(v: &Value, expected: f64) {
    let got = v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert!(
        (got - expected).abs() < 1e-9,
        "expected {expected}, got {got}"
    );
}

/// The key kept the starting reputation with no history, and its execution
/// of `task` can no longer submit (409 `conflict`).
async fn assert_unscored_and_cannot_submit(s: &Server, key: &str, task: &str) {
    let me = s.get("/accounts/me/reputation", key).await.expect(200).body;
    assert_points(&me["score"], 5.0);
    assert_eq!(me["history"], json!([]));
    s.post(
        &format!("/tasks/{task}/submit"),
        key,
        json!({"result": "late"}),
    )
    .await
    .expect_err(409, "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_pays_the_executor_owner_as_earned_and_moves_reputation() {
    let s = Server::start().await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let bk = s.agent(&bob, "bob-1").await;
    let task = s.publish_reward(&alice, 100).await;
    let t = s.task(&alice.key, &task).await;
    assert_eq!(
        (
            t["status"].as_str(),
            t["escrow_gift"].as_u64(),
            t["escrow_earned"].as_u64()
        ),
        (Some("open"), Some(100), Some(0))
    );
    assert_eq!(s.wallet(&alice.key).await, wallet(900, 0));

    // Claim: an execution in progress with a lease; the task is claimed.
    let claim = s
        .post_empty(&format!("/tasks/{task}/claim"), &bk.key)
        .await
        .expect(201);
    let x = claim.body["id"].as_str().unwrap().to_owned();
    assert_eq!(claim.body["status"], "in_progress");
    assert_eq!(claim.body["task_id"], task.as_str());
    assert_eq!(claim.body["agent_key_id"], bk.id.as_str());
    assert_eq!(claim.body["executor_owner_id"], bob.id.as_str());
    let lease = claim.body["lease_expires_at"].as_str().expect("lease");
    let lease = chrono::DateTime::parse_from_rfc3339(lease).expect("RFC 3339 lease");
    assert!(lease > chrono::Utc::now() + chrono::Duration::minutes(29));
    assert_eq!(s.task(&alice.key, &task).await["status"], "claimed");

    let sub = s.submit(&bk, &task, "the summary").await;
    assert_eq!(
        sub.body["result_hash"].as_str().map(str::len),
        Some(64),
        "{}",
        sub.text
    );
    assert_eq!(s.task(&alice.key, &task).await["status"], "submitted");

    // Accept: the whole reward, as earned, to bob; the task completes.
    let v = s
        .verify(&alice, &task, json!({"execution_id": x, "accepted": true}))
        .await
        .expect(200);
    assert_eq!(v.body["status"], "accepted");
    assert_eq!(v.body["task_status"], "completed");
    assert_eq!(v.body["verifier"], "publisher");
    assert_eq!(v.body["auto_verified"], false);
    assert_points(&v.body["score"], 8.0);
    let payout = vec![r("earned", 100, 100, "payout", &task)];
    assert_eq!(rows(&v.body["settlement"]), payout, "{}", v.text);

    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 100));
    assert_eq!(
        s.wallet(&bk.key).await,
        wallet(1000, 100),
        "an agent key sees its owner's wallet"
    );
    assert_eq!(s.wallet(&alice.key).await, wallet(900, 0));
    let t = s.task(&alice.key, &task).await;
    assert_eq!(t["status"], "completed");
    assert_eq!(
        (t["escrow_gift"].as_u64(), t["escrow_earned"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(t["closed_at"].is_string(), "{t}");

    // Reputation: 5.00 -> 5.00 + 0.15 x (8 - 5) = 5.45, one history row.
    let me = s.get("/accounts/me", &bk.key).await.expect(200).body;
    assert_eq!(me["type"], "agent_key");
    assert_eq!(me["owner_id"], bob.id.as_str());
    assert_points(&me["reputation_score"], 5.45);
    assert_eq!(
        me["counts"],
        json!({"claimed": 1, "submitted": 1, "accepted": 1, "rejected": 0})
    );
    let rep = s
        .get("/accounts/me/reputation", &bk.key)
        .await
        .expect(200)
        .body;
    assert_points(&rep["score"], 5.45);
    let hist = rep["history"].as_array().unwrap();
    assert_eq!(hist.len(), 1, "{rep}");
    assert_eq!(hist[0]["execution_id"], x.as_str());
    assert_points(&hist[0]["outcome"], 8.0);
    assert_points(&hist[0]["score_after"], 5.45);

    // Ledgers, newest first.
    let bl = s
        .get("/accounts/me/ledger", &bob.key)
        .await
        .expect(200)
        .body;
    assert_eq!(bl["total"], 2);
    assert_eq!(
        rows(&bl["rows"]),
        vec![payout[0].clone(), r("gift", 1000, 1000, "signup_gift", "")]
    );
    let al = s
        .get("/accounts/me/ledger", &alice.key)
        .await
        .expect(200)
        .body;
    assert_eq!(
        rows(&al["rows"]),
        vec![
            r("gift", -100, 900, "publish", &task),
            r("gift", 1000, 1000, "signup_gift", "")
        ]
    );
    let credits = s
        .get("/accounts/me/credits", &bob.key)
        .await
        .expect(200)
        .body;
    assert_eq!(rows(&credits["recent"])[0], payout[0]);

    // The execution, with the same settlement, for executor and publisher.
    for key in [&bk.key, &bob.key, &alice.key] {
        let e = s.execution(key, &x).await;
        assert_eq!(e["status"], "accepted");
        assert_eq!(e["task"]["status"], "completed");
        assert_eq!(e["task"]["id"], task.as_str());
        assert_eq!(rows(&e["settlement"]), payout);
    }

    // A second verdict is refused and pays nothing.
    s.verify(&alice, &task, json!({"execution_id": x, "accepted": true}))
        .await
        .expect_err(409, "conflict");
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 100));
    s.assert_reconciled().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_reopens_with_escrow_kept_for_the_next_agent() {
    let s = Server::start().await;
    let (alice, bob, carol) = (
        s.register("alice").await,
        s.register("bob").await,
        s.register("carol").await,
    );
    let (bk, ck) = (s.agent(&bob, "b").await, s.agent(&carol, "c").await);
    let task = s.publish_reward(&alice, 100).await;
    let x = s.claim(&bk, &task).await;
    s.submit(&bk, &task, "not good").await;
    let v = s
        .verify(
            &alice,
            &task,
            json!({"execution_id": x, "accepted": false, "feedback": "too short"}),
        )
        .await
        .expect(200);
    assert_eq!(v.body["status"], "rejected");
    assert_eq!(v.body["task_status"], "open");
    assert_eq!(v.body["feedback"], "too short");
    assert_points(&v.body["score"], 0.0);
    assert_eq!(v.body["settlement"], json!([]));

    let t = s.task(&alice.key, &task).await;
    assert_eq!(t["status"], "open");
    assert_eq!(
        (t["escrow_gift"].as_u64(), t["escrow_earned"].as_u64()),
        (Some(100), Some(0))
    );
    assert_eq!(t["reopened"], 1);
    assert_eq!(s.wallet(&alice.key).await, wallet(900, 0));
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 0));
    // Reputation: 5.00 x 0.85 = 4.25.
    let me = s.get("/accounts/me", &bk.key).await.expect(200).body;
    assert_points(&me["reputation_score"], 4.25);
    assert_eq!(me["counts"]["rejected"], 1);

    // One execution per key per task; another agent can claim.
    s.post_empty(&format!("/tasks/{task}/claim"), &bk.key)
        .await
        .expect_err(409, "already_claimed");
    let x2 = s.claim(&ck, &task).await;
    assert_ne!(x, x2);
    assert_eq!(s.task(&alice.key, &task).await["status"], "claimed");
    s.assert_reconciled().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_without_reopen_refunds_the_exact_gift_earned_split() {
    let s = Server::start().await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let (ak, bk) = (s.agent(&alice, "a").await, s.agent(&bob, "b").await);
    // Bob earns 100 so that his next task is funded by gift and earned.
    let first = s.publish_reward(&alice, 100).await;
    s.complete(&alice, &bk, &first, None).await;
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 100));

    let task = s.publish_reward(&bob, 1050).await;
    let t = s.task(&bob.key, &task).await;
    assert_eq!(
        (t["escrow_gift"].as_u64(), t["escrow_earned"].as_u64()),
        (Some(1000), Some(50))
    );
    assert_eq!(s.wallet(&bob.key).await, wallet(0, 50));

    let x = s.claim(&ak, &task).await;
    s.submit(&ak, &task, "wrong").await;
    let v = s
        .verify(
            &bob,
            &task,
            json!({"execution_id": x, "accepted": false, "reopen": false}),
        )
        .await
        .expect(200);
    assert_eq!(v.body["status"], "rejected");
    assert_eq!(v.body["task_status"], "failed");
    let mut settlement = rows(&v.body["settlement"]);
    settlement.sort();
    assert_eq!(
        settlement,
        vec![
            r("earned", 50, 100, "refund_failed", &task),
            r("gift", 1000, 1000, "refund_failed", &task),
        ],
        "{}",
        v.text
    );
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 100));
    assert_eq!(
        s.wallet(&alice.key).await,
        wallet(900, 0),
        "the executor is paid nothing"
    );
    let t = s.task(&bob.key, &task).await;
    assert_eq!(t["status"], "failed");
    assert_eq!(
        (t["escrow_gift"].as_u64(), t["escrow_earned"].as_u64()),
        (Some(0), Some(0))
    );
    let mut e = rows(&s.execution(&ak.key, &x).await["settlement"]);
    e.sort();
    assert_eq!(e, settlement);
    // A failed task takes no claims.
    let dk = s.agent(&alice, "a2").await;
    s.post_empty(&format!("/tasks/{task}/claim"), &dk.key)
        .await
        .expect_err(409, "task_not_open");
    s.assert_reconciled().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_supersedes_the_other_active_execution() {
    let s = Server::start().await;
    let (alice, bob, carol, dave) = (
        s.register("alice").await,
        s.register("bob").await,
        s.register("carol").await,
        s.register("dave").await,
    );
    let (bk, ck, dk) = (
        s.agent(&bob, "b").await,
        s.agent(&carol, "c").await,
        s.agent(&dave, "d").await,
    );
    let mut body = task_body(60);
    body["max_executors"] = json!(2);
    let task = s.publish(&alice, body).await;
    let xb = s.claim(&bk, &task).await;
    let xc = s.claim(&ck, &task).await;
    let t = s.task(&alice.key, &task).await;
    assert_eq!(
        (t["status"].as_str(), t["active_executions"].as_u64()),
        (Some("claimed"), Some(2))
    );
    s.post_empty(&format!("/tasks/{task}/claim"), &dk.key)
        .await
        .expect_err(409, "task_full");

    s.submit(&bk, &task, "b's work").await;
    let subs = s
        .get(&format!("/tasks/{task}/submissions"), &alice.key)
        .await
        .expect(200)
        .body;
    assert_eq!(
        subs["submissions"].as_array().map(Vec::len),
        Some(2),
        "{subs}"
    );
    s.verify(&alice, &task, json!({"execution_id": xb, "accepted": true}))
        .await
        .expect(200);

    let e = s.execution(&ck.key, &xc).await;
    assert_eq!(e["status"], "superseded");
    assert_eq!(e["settlement"], json!([]));
    assert_eq!(s.execution(&bk.key, &xb).await["status"], "accepted");
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 60));
    assert_eq!(s.wallet(&carol.key).await, wallet(1000, 0));
    // Superseded changes no reputation and cannot submit any more.
    assert_unscored_and_cannot_submit(&s, &ck.key, &task).await;
    assert_eq!(s.task(&alice.key, &task).await["status"], "completed");
    s.assert_reconciled().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_lease_releases_the_claim_without_reputation_change() {
    let s = Server::start_with(|c| c.lease_secs = 1).await;
    let (alice, bob, carol) = (
        s.register("alice").await,
        s.register("bob").await,
        s.register("carol").await,
    );
    let (bk, ck) = (s.agent(&bob, "b").await, s.agent(&carol, "c").await);
    let task = s.publish_reward(&alice, 40).await;
    let x = s.claim(&bk, &task).await;
    let e = s
        .poll(&format!("/executions/{x}"), &bk.key, |e| {
            e["status"] != "in_progress"
        })
        .await;
    assert_eq!(e["status"], "released", "{e}");
    assert_eq!(e["settlement"], json!([]));
    let t = s.task(&alice.key, &task).await;
    assert_eq!(
        (t["status"].as_str(), t["escrow_gift"].as_u64()),
        (Some("open"), Some(40))
    );
    assert_eq!(s.wallet(&alice.key).await, wallet(960, 0));
    assert_unscored_and_cannot_submit(&s, &bk.key, &task).await;
    // The slot is free again.
    s.claim(&ck, &task).await;
    s.assert_reconciled().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_deadline_expires_and_refunds_an_idle_task() {
    let s = Server::start().await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let bk = s.agent(&bob, "b").await;
    let mut body = task_body(70);
    body["deadline"] = json!(rfc3339_in(1500));
    let task = s.publish(&alice, body).await;
    assert_eq!(s.task(&alice.key, &task).await["status"], "open");
    assert_eq!(s.wallet(&alice.key).await, wallet(930, 0));
    let t = s
        .poll(&format!("/tasks/{task}"), &alice.key, |t| {
            t["status"] != "open"
        })
        .await;
    assert_eq!(t["status"], "expired", "{t}");
    assert_eq!(
        (t["escrow_gift"].as_u64(), t["escrow_earned"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(s.wallet(&alice.key).await, wallet(1000, 0));
    let ledger = s
        .get("/accounts/me/ledger", &alice.key)
        .await
        .expect(200)
        .body;
    assert_eq!(
        row(&ledger["rows"][0]),
        r("gift", 70, 1000, "refund_expired", &task)
    );
    s.post_empty(&format!("/tasks/{task}/claim"), &bk.key)
        .await
        .expect_err(409, "task_not_open");
    s.assert_reconciled().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_refunds_and_is_refused_while_an_execution_is_active() {
    let s = Server::start().await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let bk = s.agent(&bob, "b").await;
    let task = s.publish_reward(&alice, 70).await;
    let x = s.claim(&bk, &task).await;
    s.post_empty(&format!("/tasks/{task}/cancel"), &alice.key)
        .await
        .expect_err(409, "conflict");
    s.submit(&bk, &task, "meh").await;
    s.post_empty(&format!("/tasks/{task}/cancel"), &alice.key)
        .await
        .expect_err(409, "conflict");
    assert_eq!(s.wallet(&alice.key).await, wallet(930, 0));
    s.verify(&alice, &task, json!({"execution_id": x, "accepted": false}))
        .await
        .expect(200);

    let c = s
        .post_empty(&format!("/tasks/{task}/cancel"), &alice.key)
        .await
        .expect(200);
    assert_eq!(c.body["status"], "cancelled");
    assert_eq!(s.wallet(&alice.key).await, wallet(1000, 0));
    let ledger = s
        .get("/accounts/me/ledger", &alice.key)
        .await
        .expect(200)
        .body;
    assert_eq!(
        row(&ledger["rows"][0]),
        r("gift", 70, 1000, "refund_cancelled", &task)
    );
    s.post_empty(&format!("/tasks/{task}/cancel"), &alice.key)
        .await
        .expect_err(409, "task_not_open");
    let ck = s.agent(&bob, "b2").await;
    s.post_empty(&format!("/tasks/{task}/claim"), &ck.key)
        .await
        .expect_err(409, "task_not_open");
    s.assert_reconciled().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_wallet_cannot_cover_is_402_and_changes_nothing() {
    let s = Server::start().await;
    let alice = s.register("alice").await;
    s.publish_reward(&alice, 300).await;
    let head = s.head_seq().await;
    let before = s.wallet(&alice.key).await;
    assert_eq!(before, wallet(700, 0));
    s.post("/tasks", &alice.key, task_body(701))
        .await
        .expect_err(402, "insufficient_credits");
    assert_eq!(s.head_seq().await, head);
    assert_eq!(s.wallet(&alice.key).await, before);
    let mine = s
        .get("/tasks/my/published", &alice.key)
        .await
        .expect(200)
        .body;
    assert_eq!(mine["total"], 1);
    // Exactly what is left still publishes.
    s.publish_reward(&alice, 700).await;
    assert_eq!(s.wallet(&alice.key).await, wallet(0, 0));
    s.assert_reconciled().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_retry_replays_the_first_answer() {
    let s = Server::start().await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let idem = [("Idempotency-Key", "publish-42")];
    let first = s
        .call(
            reqwest::Method::POST,
            "/tasks",
            Some(&alice.key),
            Some(task_body(25)),
            &idem,
        )
        .await
        .expect(201);
    let head = s.head_seq().await;
    let again = s
        .call(
            reqwest::Method::POST,
            "/tasks",
            Some(&alice.key),
            Some(task_body(25)),
            &idem,
        )
        .await;
    // The replay is answered 200 (the first answer was 201), same body.
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body, first.body);
    assert_eq!(again.body["id"], first.body["id"]);
    assert_eq!(s.head_seq().await, head, "a replay appends nothing");
    assert_eq!(s.wallet(&alice.key).await, wallet(975, 0));
    let mine = s
        .get("/tasks/my/published", &alice.key)
        .await
        .expect(200)
        .body;
    assert_eq!(mine["total"], 1);

    // The same key for another request is a conflict, and changes nothing.
    s.call(
        reqwest::Method::POST,
        "/tasks",
        Some(&alice.key),
        Some(task_body(26)),
        &idem,
    )
    .await
    .expect_err(409, "conflict");
    assert_eq!(s.head_seq().await, head);
    // Keys are per caller: bob's use of the same key is his own publish.
    let bobs = s
        .call(
            reqwest::Method::POST,
            "/tasks",
            Some(&bob.key),
            Some(task_body(25)),
            &idem,
        )
        .await
        .expect(201);
    assert_ne!(bobs.body["id"], first.body["id"]);

    // A claim retried with its key answers the same execution.
    let bk = s.agent(&bob, "b").await;
    let task = first.body["id"].as_str().unwrap();
    let path = format!("/tasks/{task}/claim");
    let c1 = s
        .call(
            reqwest::Method::POST,
            &path,
            Some(&bk.key),
            None,
            &[("Idempotency-Key", "c-1")],
        )
        .await
        .expect(201);
    let head = s.head_seq().await;
    let c2 = s
        .call(
            reqwest::Method::POST,
            &path,
            Some(&bk.key),
            None,
            &[("Idempotency-Key", "c-1")],
        )
        .await;
    assert_eq!(c2.status, 200, "{}", c2.text);
    assert_eq!(c1.body["id"], c2.body["id"]);
    assert_eq!(s.head_seq().await, head);
    s.assert_reconciled().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_name_the_bad_fields() {
    let s = Server::start().await;
    let alice = s.register("alice").await;
    let head = s.head_seq().await;
    let r = s
        .post(
            "/tasks",
            &alice.key,
            json!({"title": "", "type": "text", "reward_credits": 0, "max_executors": 11, "min_reputation": 11}),
        )
        .await
        .expect_err(400, "validation_failed");
    let fields = r.fields();
    for f in ["title", "reward_credits", "max_executors", "min_reputation"] {
        assert!(fields.iter().any(|x| x == f), "{f} not in {fields:?}");
    }
    // A wrong JSON type names the field.
    let r = s
        .post(
            "/tasks",
            &alice.key,
            json!({"title": "t", "type": "text", "reward_credits": "ten"}),
        )
        .await
        .expect_err(400, "validation_failed");
    assert_eq!(r.fields(), ["reward_credits"]);
    // Empty rules, a bad regex, a past deadline.
    let mut body = task_body(10);
    body["verification"] = json!({"mode": "auto_rules", "rules": []});
    let r = s
        .post("/tasks", &alice.key, body)
        .await
        .expect_err(400, "validation_failed");
    assert_eq!(r.fields(), ["verification.rules"]);
    let mut body = task_body(10);
    body["verification"] =
        json!({"mode": "auto_rules", "rules": [{"type": "regex", "value": "("}]});
    let r = s
        .post("/tasks", &alice.key, body)
        .await
        .expect_err(400, "validation_failed");
    assert_eq!(r.fields(), ["verification.rules[0]"]);
    let mut body = task_body(10);
    body["deadline"] = json!(rfc3339_in(-60_000));
    let r = s
        .post("/tasks", &alice.key, body)
        .await
        .expect_err(400, "validation_failed");
    assert_eq!(r.fields(), ["deadline"]);
    let mut body = task_body(10);
    body["deadline"] = json!("tomorrow");
    let r = s
        .post("/tasks", &alice.key, body)
        .await
        .expect_err(400, "validation_failed");
    assert_eq!(r.fields(), ["deadline"]);
    // Malformed JSON is a bad request; an unknown field is refused.
    let r = s
        .http
        .post(s.url("/tasks"))
        .bearer_auth(&alice.key)
        .header("content-type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["code"], "bad_request", "{b}");
    let mut body = task_body(10);
    body["colour"] = json!("blue");
    s.post("/tasks", &alice.key, body)
        .await
        .expect_err(400, "validation_failed");
    // A body over the limit is 413.
    let mut body = task_body(10);
    body["description"] = json!("x".repeat(3 * 1024 * 1024));
    s.post("/tasks", &alice.key, body)
        .await
        .expect_err(413, "too_large");
    // A bad registration.
    s.call(
        reqwest::Method::POST,
        "/accounts/register",
        None,
        Some(json!({"type": "robot", "name": "x"})),
        &[],
    )
    .await
    .expect_err(400, "validation_failed");
    let r = s
        .call(
            reqwest::Method::POST,
            "/accounts/register",
            None,
            Some(json!({"type": "human", "name": ""})),
            &[],
        )
        .await
        .expect_err(400, "validation_failed");
    assert_eq!(r.fields(), ["name"]);
    // Bad paging and a bad status filter.
    let r = s
        .get("/tasks?limit=0", &alice.key)
        .await
        .expect_err(400, "validation_failed");
    assert_eq!(r.fields(), ["limit"]);
    let r = s
        .get("/tasks?status=done", &alice.key)
        .await
        .expect_err(400, "validation_failed");
    assert_eq!(r.fields(), ["status"]);
    let r = s
        .get("/tasks/not-a-uuid", &alice.key)
        .await
        .expect_err(400, "validation_failed");
    assert_eq!(r.fields(), ["id"]);
    assert_eq!(s.head_seq().await, head, "no refusal wrote anything");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_reputation_gates_claims_until_earned() {
    let s = Server::start().await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let bk = s.agent(&bob, "b").await;
    let mut body = task_body(10);
    body["min_reputation"] = json!(6);
    let gated = s.publish(&alice, body).await;
    s.post_empty(&format!("/tasks/{gated}/claim"), &bk.key)
        .await
        .expect_err(403, "reputation_too_low");
    // What the list says matches what the claim answered.
    let t = s.task(&bk.key, &gated).await;
    assert_eq!(t["claimability"]["claimable"], false);
    assert_eq!(t["claimability"]["reason"], "reputation_too_low");

    // Two accepts at 10: 5.00 -> 5.75 -> 6.39 (about).
    let t1 = s.publish_reward(&alice, 5).await;
    s.complete(&alice, &bk, &t1, Some(10.0)).await;
    assert_points(
        &s.get("/accounts/me", &bk.key).await.expect(200).body["reputation_score"],
        5.75,
    );
    s.post_empty(&format!("/tasks/{gated}/claim"), &bk.key)
        .await
        .expect_err(403, "reputation_too_low");
    let t2 = s.publish_reward(&alice, 5).await;
    s.complete(&alice, &bk, &t2, Some(10.0)).await;
    let score = s.get("/accounts/me", &bk.key).await.expect(200).body["reputation_score"]
        .as_f64()
        .unwrap();
    assert!((6.38..=6.39).contains(&score), "{score}");
    assert_eq!(
        s.task(&bk.key, &gated).await["claimability"]["claimable"],
        true
    );
    s.claim(&bk, &gated).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_of_own_tasks_by_owners_and_by_undeclared_keys_are_refused() {
    let s = Server::start().await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let ak = s.agent(&alice, "a").await;
    let task = s.publish_reward(&alice, 10).await;
    let head = s.head_seq().await;
    // An agent key of the publisher's own account (the message names the rule).
    let r = s
        .post_empty(&format!("/tasks/{task}/claim"), &ak.key)
        .await
        .expect_err(403, "forbidden");
    assert!(
        r.body["error"].as_str().unwrap().contains("own owner"),
        "{}",
        r.text
    );
    // An owner key is not an agent key.
    s.post_empty(&format!("/tasks/{task}/claim"), &bob.key)
        .await
        .expect_err(403, "forbidden");
    // A key whose compute source is declared `unspecified`.
    let bare = s
        .post(
            "/accounts/me/agent-keys",
            &bob.key,
            json!({"name": "bare", "compute_source": "unspecified"}),
        )
        .await
        .expect(201);
    let bare_key = bare.body["api_key"].as_str().unwrap();
    s.post_empty(&format!("/tasks/{task}/claim"), bare_key)
        .await
        .expect_err(403, "compute_source_required");
    // An unknown task.
    let bk = s.agent(&bob, "b").await;
    let head2 = s.head_seq().await;
    assert_eq!(head2, head + 2, "two agent keys were issued");
    s.post_empty("/tasks/00000000-0000-4000-8000-000000000000/claim", &bk.key)
        .await
        .expect_err(404, "not_found");
    assert_eq!(s.head_seq().await, head2);
    assert_eq!(s.task(&alice.key, &task).await["status"], "open");
    s.stop().await;
}
