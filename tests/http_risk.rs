//! The risk engine over real HTTP: the local rules (self-dealing, young
//! accounts, rapid signups, reciprocal payouts), the operator's review, and
//! a remote engine (a local test server) that allows, denies, answers 503,
//! hangs or answers garbage, at each of the four hooks.

mod common;

use common::{ADMIN_TOKEN, Agent, Owner, Server, Wallet, task_body};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use taskledger::risk::EngineKind;

fn wallet(gift: u64, earned: u64, frozen: u64) -> Wallet {
    Wallet {
        gift,
        earned,
        frozen,
    }
}

/// Register a human owner as seen from `addr` (one trusted proxy hop).
async fn register_from(s: &Server, name: &str, addr: &str) -> Value {
    s.call(
        Method::POST,
        "/accounts/register",
        None,
        Some(json!({"type": "human", "name": name})),
        &[("X-Forwarded-For", addr)],
    )
    .await
    .body
}

async fn owner_from(s: &Server, name: &str, addr: &str) -> Owner {
    let b = register_from(s, name, addr).await;
    Owner {
        id: b["id"].as_str().expect("id").to_owned(),
        key: b["api_key"].as_str().expect("api_key").to_owned(),
    }
}

async fn flags(s: &Server, status: &str) -> Vec<Value> {
    let r = s
        .call(
            Method::GET,
            &format!("/admin/risk-flags?status={status}"),
            None,
            None,
            &[("X-Admin-Token", ADMIN_TOKEN)],
        )
        .await
        .expect(200);
    r.body["flags"].as_array().cloned().unwrap_or_default()
}

async fn resolve(s: &Server, flag: &str, action: &str) -> common::Resp {
    s.call(
        Method::POST,
        &format!("/admin/risk-flags/{flag}/{action}"),
        None,
        Some(json!({"reason": "reviewed"})),
        &[("X-Admin-Token", ADMIN_TOKEN), ("X-Operator-Name", "dana")],
    )
    .await
}

/// Publish, claim and accept a task of `reward`; the verdict's answer.
async fn settle(s: &Server, publisher: &Owner, agent: &Agent, reward: u64) -> common::Resp {
    let task = s.publish(publisher, task_body(reward)).await;
    let x = s.claim(agent, &task).await;
    s.submit(agent, &task, "done").await;
    s.verify(
        publisher,
        &task,
        json!({"execution_id": x, "accepted": true}),
    )
    .await
}

async fn local() -> Server {
    Server::start_with(|s| {
        s.risk_engine = EngineKind::Local;
        s.trusted_proxy_hops = 1;
        s.risk_young_account_days = 0;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_dealing_is_paid_then_held_and_the_operator_releases_or_confirms() {
    let s = local().await;
    // Publisher and executor owner from the same address.
    let alice = owner_from(&s, "alice", "198.51.100.1").await;
    let bob = owner_from(&s, "bob", "198.51.100.1").await;
    let bk = s.agent(&bob, "b").await;
    settle(&s, &alice, &bk, 10).await.expect(200);
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 0, 10));
    let open = flags(&s, "open").await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["kind"], "self_dealing_suspected");
    assert_eq!(open[0]["frozen"], 10);
    assert_eq!(open[0]["owner_id"], bob.id.as_str());
    let flag = open[0]["id"].as_str().expect("id").to_owned();
    // Release: frozen back to earned, with the operator's name; twice: 409.
    let r = resolve(&s, &flag, "release").await.expect(200);
    assert_eq!(r.body["resolved_by"], "dana");
    assert_eq!(r.body["status"], "released");
    resolve(&s, &flag, "release")
        .await
        .expect_err(409, "conflict");
    resolve(&s, &flag, "confirm")
        .await
        .expect_err(409, "conflict");
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 10, 0));
    // Again, confirmed this time: it stays frozen.
    settle(&s, &alice, &bk, 20).await.expect(200);
    let flag = flags(&s, "open").await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    resolve(&s, &flag, "confirm").await.expect(200);
    resolve(&s, &flag, "confirm")
        .await
        .expect_err(409, "conflict");
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 10, 20));
    assert_eq!(flags(&s, "all").await.len(), 2);
    s.assert_reconciled().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_from_different_addresses_are_paid_without_a_hold() {
    let s = local().await;
    let alice = owner_from(&s, "alice", "198.51.100.1").await;
    let bob = owner_from(&s, "bob", "198.51.100.2").await;
    let bk = s.agent(&bob, "b").await;
    settle(&s, &alice, &bk, 10).await.expect(200);
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 10, 0));
    assert!(flags(&s, "all").await.is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_verdict_is_held_for_self_dealing_too() {
    let s = local().await;
    let alice = owner_from(&s, "alice", "198.51.100.1").await;
    let bob = owner_from(&s, "bob", "198.51.100.1").await;
    let bk = s.agent(&bob, "b").await;
    let mut body = task_body(10);
    body["verification"] =
        json!({"mode": "auto_rules", "rules": [{"type": "contains", "value": "ok"}]});
    let task = s.publish(&alice, body).await;
    s.claim(&bk, &task).await;
    let x = s
        .post(
            &format!("/tasks/{task}/submit"),
            &bk.key,
            json!({"result": "ok"}),
        )
        .await
        .expect(200);
    assert_eq!(x.body["status"], "accepted", "{}", x.text);
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 0, 10));
    assert_eq!(flags(&s, "open").await[0]["kind"], "self_dealing_suspected");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_young_account_may_not_publish_above_the_cap() {
    let s = Server::start_with(|s| s.risk_engine = EngineKind::Local).await;
    let alice = s.register("alice").await;
    let head = s.head_seq().await;
    let r = s.post("/tasks", &alice.key, task_body(51)).await;
    r.expect_err(403, "risk_denied");
    assert_eq!(s.head_seq().await, head, "a refusal appends nothing");
    assert_eq!(s.wallet(&alice.key).await, wallet(1000, 0, 0));
    s.publish(&alice, task_body(50)).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_signups_from_one_address_raise_a_cluster_flag() {
    let s = local().await;
    owner_from(&s, "a1", "203.0.113.5").await;
    owner_from(&s, "a2", "203.0.113.5").await;
    owner_from(&s, "other", "203.0.113.6").await;
    assert!(flags(&s, "all").await.is_empty());
    let third = owner_from(&s, "a3", "203.0.113.5").await;
    let open = flags(&s, "open").await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["kind"], "rapid_signup_cluster");
    assert_eq!(open[0]["owner_id"], third.id.as_str());
    assert_eq!(open[0]["frozen"], 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reciprocal_payouts_raise_a_collusion_flag() {
    let s = local().await;
    let a = owner_from(&s, "a", "192.0.2.1").await;
    let b = owner_from(&s, "b", "192.0.2.2").await;
    let (ak, bk) = (s.agent(&a, "ak").await, s.agent(&b, "bk").await);
    // a pays b twice, b pays a once: nothing yet.
    settle(&s, &a, &bk, 10).await.expect(200);
    settle(&s, &a, &bk, 10).await.expect(200);
    settle(&s, &b, &ak, 10).await.expect(200);
    assert!(flags(&s, "all").await.is_empty());
    // b pays a a second time: two each way.
    settle(&s, &b, &ak, 10).await.expect(200);
    let open = flags(&s, "open").await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["kind"], "collusion_suspected");
    assert_eq!(open[0]["owner_id"], a.id.as_str());
    assert_eq!(s.wallet(&a.key).await, wallet(980, 10, 10));
    s.assert_reconciled().await;
    s.stop().await;
}

/// A remote risk engine: answers per hook as `modes` says (default allow).
#[derive(Clone, Default)]
struct Engine {
    url: String,
    modes: Arc<Mutex<HashMap<String, &'static str>>>,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Engine {
    fn set(&self, hook: &str, mode: &'static str) {
        self.modes.lock().expect("lock").insert(hook.into(), mode);
    }
}

async fn engine() -> Engine {
    use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse};
    let mut e = Engine::default();
    async fn check(State(e): State<Engine>, Json(body): Json<Value>) -> axum::response::Response {
        let hook = body["hook"].as_str().unwrap_or_default().to_owned();
        e.seen.lock().expect("lock").push(body);
        let mode = *e.modes.lock().expect("lock").get(&hook).unwrap_or(&"allow");
        match mode {
            "deny" => Json(json!({"decision": "deny", "reason": "on a list"})).into_response(),
            "503" => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            "hang" => {
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                StatusCode::OK.into_response()
            }
            "garbage" => "<html>not json</html>".into_response(),
            _ => Json(json!({"decision": "allow"})).into_response(),
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    e.url = format!("http://{}/check", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route("/check", axum::routing::post(check))
        .with_state(e.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    e
}

async fn remote(e: &Engine) -> Server {
    let url = e.url.clone();
    Server::start_with(|s| {
        s.risk_engine = EngineKind::Remote;
        s.risk_remote_url = Some(url);
        s.risk_remote_key = Some("risk-key".into());
        s.risk_remote_timeout_ms = 300;
        s.risk_recheck_ms = 100;
    })
    .await
}

const FAILURES: [&str; 3] = ["503", "hang", "garbage"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_engine_at_registration_denies_and_otherwise_fails_open() {
    let e = engine().await;
    let s = remote(&e).await;
    s.register("allowed").await;
    e.set("register", "deny");
    let head = s.head_seq().await;
    s.call(
        Method::POST,
        "/accounts/register",
        None,
        Some(json!({"type": "human", "name": "denied"})),
        &[],
    )
    .await
    .expect_err(403, "risk_denied");
    assert_eq!(s.head_seq().await, head);
    for mode in FAILURES {
        e.set("register", mode);
        s.register(mode).await; // 201: fail open
    }
    assert!(flags(&s, "all").await.is_empty());
    let seen = e.seen.lock().expect("lock").clone();
    assert!(seen.iter().all(|b| b["hook"] == "register"), "{seen:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_engine_at_publish_denies_and_otherwise_fails_open() {
    let e = engine().await;
    let s = remote(&e).await;
    let alice = s.register("alice").await;
    s.publish(&alice, task_body(10)).await;
    e.set("publish", "deny");
    let head = s.head_seq().await;
    s.post("/tasks", &alice.key, task_body(10))
        .await
        .expect_err(403, "risk_denied");
    assert_eq!(s.head_seq().await, head);
    for mode in FAILURES {
        e.set("publish", mode);
        s.publish(&alice, task_body(10)).await;
    }
    assert_eq!(s.wallet(&alice.key).await, wallet(960, 0, 0));
    let seen = e.seen.lock().expect("lock").clone();
    let publish = seen
        .iter()
        .find(|b| b["hook"] == "publish")
        .expect("a publish check");
    assert_eq!(publish["reward"], 10);
    assert_eq!(publish["account_id"], alice.id.as_str());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_engine_at_claim_denies_and_otherwise_fails_open() {
    let e = engine().await;
    let s = remote(&e).await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let bk = s.agent(&bob, "b").await;
    e.set("claim", "deny");
    let task = s.publish(&alice, task_body(10)).await;
    let head = s.head_seq().await;
    s.post_empty(&format!("/tasks/{task}/claim"), &bk.key)
        .await
        .expect_err(403, "risk_denied");
    assert_eq!(s.head_seq().await, head);
    for mode in FAILURES {
        e.set("claim", mode);
        let task = s.publish(&alice, task_body(10)).await;
        s.claim(&bk, &task).await;
    }
    e.set("claim", "allow");
    s.claim(&bk, &task).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_engine_at_settlement_holds_on_deny_and_fails_closed() {
    let e = engine().await;
    let s = remote(&e).await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let bk = s.agent(&bob, "b").await;
    // Allowed: paid.
    settle(&s, &alice, &bk, 10).await.expect(200);
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 10, 0));
    // Denied: paid into a hold for the operator (a settlement is never
    // refused after the work was accepted).
    e.set("settle", "deny");
    settle(&s, &alice, &bk, 10).await.expect(200);
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 10, 10));
    let open = flags(&s, "open").await;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["kind"], "operator_hold");
    let held = open[0]["id"].as_str().expect("id").to_owned();
    // Unreachable in three ways: held (fail closed), each a flag.
    for mode in FAILURES {
        e.set("settle", mode);
        settle(&s, &alice, &bk, 10).await.expect(200);
    }
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 10, 40));
    let open = flags(&s, "open").await;
    assert_eq!(
        open.iter()
            .filter(|f| f["kind"] == "risk_check_unavailable")
            .count(),
        3,
        "{open:?}"
    );
    // The engine comes back and allows: the re-check releases those three,
    // the operator's hold stays.
    e.set("settle", "allow");
    let deadline = std::time::Instant::now() + common::POLL_DEADLINE;
    while flags(&s, "open").await.len() > 1 {
        assert!(std::time::Instant::now() < deadline, "holds never released");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let open = flags(&s, "open").await;
    assert_eq!(open[0]["id"], held.as_str());
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 40, 10));
    let released = flags(&s, "released").await;
    assert!(
        released.iter().all(|f| f["resolved_by"] == "risk-engine"),
        "{released:?}"
    );
    s.assert_reconciled().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeem_is_off_unless_enabled_and_takes_earned_credits_only() {
    // Off by default.
    let s = Server::start().await;
    let alice = s.register("alice").await;
    s.post("/accounts/me/redeem", &alice.key, json!({"amount": 1}))
        .await
        .expect_err(403, "forbidden");
    s.stop().await;

    let s = Server::start_with(|c| c.redeem_enabled = true).await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let bk = s.agent(&bob, "b").await;
    // Gift alone cannot be redeemed.
    let head = s.head_seq().await;
    s.post("/accounts/me/redeem", &bob.key, json!({"amount": 1}))
        .await
        .expect_err(402, "insufficient_credits");
    assert_eq!(s.head_seq().await, head);
    // Earned can, into the redeemed account, and no more than earned.
    settle(&s, &alice, &bk, 30).await.expect(200);
    s.post("/accounts/me/redeem", &bob.key, json!({"amount": 31}))
        .await
        .expect_err(402, "insufficient_credits");
    s.post("/accounts/me/redeem", &bob.key, json!({"amount": 30}))
        .await
        .expect(200);
    assert_eq!(s.wallet(&bob.key).await, wallet(1000, 0, 0));
    let report = s.assert_reconciled().await;
    assert_eq!(report["redeemed"], 30, "{report}");
    s.stop().await;
}
