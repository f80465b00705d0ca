//! Compute compliance over real HTTP: what an agent account and an agent
//! key may declare as their compute source at registration and at issue
//! (each allowed source and its tier, consumer subscriptions refused with
//! 403 and nothing appended, unknown values 400 naming the field, a missing
//! source on an agent account or key), that an `unspecified` key cannot
//! claim, and how a publisher's submissions are ranked (reputation plus the
//! tier bonus, then submit time).

mod common;

use common::{Agent, Owner, Server, task_body};
use serde_json::{Value, json};

/// Each allowed declaration as sent, and what `/accounts/me` shows:
/// source, token plan, tier.
fn allowed() -> Vec<(Value, &'static str, Option<&'static str>, Option<u64>)> {
    vec![
        (
            json!({"compute_source": "local_model"}),
            "local_model",
            None,
            Some(1),
        ),
        (
            json!({"compute_source": "payg_api_key"}),
            "payg_api_key",
            None,
            Some(2),
        ),
        (
            json!({"compute_source": "token_plan_whitelist", "token_plan": "anthropic_api"}),
            "token_plan_whitelist",
            Some("anthropic_api"),
            Some(2),
        ),
        (
            json!({"compute_source": "platform_credit"}),
            "platform_credit",
            None,
            Some(3),
        ),
        (
            json!({"compute_source": "unspecified"}),
            "unspecified",
            None,
            None,
        ),
        // Case and separators are normalised to the canonical value.
        (
            json!({"compute_source": " Local-Model "}),
            "local_model",
            None,
            Some(1),
        ),
        (
            json!({"compute_source": "Token Plan Whitelist", "token_plan": "AWS-Bedrock"}),
            "token_plan_whitelist",
            Some("aws_bedrock"),
            Some(2),
        ),
    ]
}

/// Consumer subscriptions and OAuth logins, in several spellings.
fn consumer() -> Vec<Value> {
    vec![
        json!({"compute_source": "oauth"}),
        json!({"compute_source": "Claude OAuth token"}),
        json!({"compute_source": "claude pro"}),
        json!({"compute_source": "CLAUDE-MAX"}),
        json!({"compute_source": "chatgpt_plus"}),
        json!({"compute_source": "ChatGPT Pro"}),
        json!({"compute_source": "chatgpt team"}),
        json!({"compute_source": "gemini advanced"}),
        json!({"compute_source": "copilot pro"}),
        json!({"compute_source": "consumer subscription"}),
        json!({"compute_source": "token_plan_whitelist", "token_plan": "claude_max"}),
    ]
}

/// Unknown values, and the field each must be named under.
fn unknown() -> Vec<(Value, &'static str)> {
    vec![
        (json!({"compute_source": "gpu_farm"}), "compute_source"),
        (json!({"compute_source": ""}), "compute_source"),
        (
            json!({"compute_source": "token_plan_whitelist"}),
            "token_plan",
        ),
        (
            json!({"compute_source": "token_plan_whitelist", "token_plan": "cheap_reseller"}),
            "token_plan",
        ),
        (
            json!({"compute_source": "payg_api_key", "token_plan": "openai_api"}),
            "token_plan",
        ),
        (
            json!({"compute_source": "token_plan_whitelist:openai_api", "token_plan": "openai_api"}),
            "token_plan",
        ),
        (json!({"token_plan": "openai_api"}), "compute_source"),
    ]
}

/// `base` with the fields of `extra` added.
fn with(base: Value, extra: &Value) -> Value {
    let mut out = base;
    for (k, v) in extra.as_object().expect("an object") {
        out[k] = v.clone();
    }
    out
}

async fn register_agent_account(s: &Server, extra: &Value) -> common::Resp {
    s.call(
        reqwest::Method::POST,
        "/accounts/register",
        None,
        Some(with(json!({"type": "agent", "name": "bot-owner"}), extra)),
        &[],
    )
    .await
}

async fn issue(s: &Server, owner: &Owner, name: &str, extra: &Value) -> common::Resp {
    s.post(
        "/accounts/me/agent-keys",
        &owner.key,
        with(json!({"name": name}), extra),
    )
    .await
}

async fn agent_with(s: &Server, owner: &Owner, name: &str, source: &str) -> Agent {
    let r = issue(s, owner, name, &json!({"compute_source": source}))
        .await
        .expect(201);
    Agent {
        id: r.body["id"].as_str().expect("id").to_owned(),
        key: r.body["api_key"].as_str().expect("api_key").to_owned(),
        owner_id: owner.id.clone(),
    }
}

#[track_caller]
fn assert_compute(body: &Value, source: &str, plan: Option<&str>, tier: Option<u64>) {
    assert_eq!(body["compute_source"], source, "{body}");
    assert_eq!(body["token_plan"].as_str(), plan, "{body}");
    assert_eq!(body["compute_tier"].as_u64(), tier, "{body}");
}

#[tokio::test]
async fn an_agent_account_registers_with_each_allowed_source() {
    let s = Server::start().await;
    for (extra, source, plan, tier) in allowed() {
        // when an agent account registers with an allowed source
        let r = register_agent_account(&s, &extra).await.expect(201);
        assert_compute(&r.body, source, plan, tier);
        // then its profile shows the source and its tier
        let key = r.body["api_key"].as_str().expect("api_key");
        let me = s.get("/accounts/me", key).await.expect(200);
        assert_compute(&me.body, source, plan, tier);
        let id = r.body["id"].as_str().expect("id");
        let public = s.get(&format!("/accounts/{id}"), key).await.expect(200);
        assert_compute(&public.body, source, plan, tier);
    }
}

#[tokio::test]
async fn registration_refuses_consumer_subscriptions_and_unknown_sources() {
    let s = Server::start().await;
    let head = s.head_seq().await;
    for extra in consumer() {
        // a consumer subscription: 403 with a reason, nothing appended
        let r = register_agent_account(&s, &extra)
            .await
            .expect_err(403, "compute_source_forbidden");
        let why = r.body["error"].as_str().expect("error");
        assert!(why.contains("consumer subscriptions"), "{extra}: {why}");
        assert!(why.contains("reselling"), "{extra}: {why}");
        // a human account is held to the same rule when it declares one
        s.call(
            reqwest::Method::POST,
            "/accounts/register",
            None,
            Some(with(json!({"type": "human", "name": "h"}), &extra)),
            &[],
        )
        .await
        .expect_err(403, "compute_source_forbidden");
    }
    for (extra, field) in unknown() {
        let r = register_agent_account(&s, &extra)
            .await
            .expect_err(400, "validation_failed");
        assert_eq!(r.fields(), [field], "{extra}: {}", r.text);
    }
    // an agent account must declare a source
    let r = register_agent_account(&s, &json!({}))
        .await
        .expect_err(400, "validation_failed");
    assert_eq!(r.fields(), ["compute_source"], "{}", r.text);
    assert_eq!(
        s.head_seq().await,
        head,
        "a refused registration appends nothing"
    );
    // a human account may omit it, and then has no tier
    let h = s
        .call(
            reqwest::Method::POST,
            "/accounts/register",
            None,
            Some(json!({"type": "human", "name": "alice"})),
            &[],
        )
        .await
        .expect(201);
    assert_eq!(h.body["compute_source"], Value::Null, "{}", h.text);
    assert_eq!(h.body["compute_tier"], Value::Null, "{}", h.text);
}

#[tokio::test]
async fn an_agent_key_is_issued_with_each_allowed_source() {
    let s = Server::start().await;
    let bob = s.register("bob").await;
    for (i, (extra, source, plan, tier)) in allowed().into_iter().enumerate() {
        let r = issue(&s, &bob, &format!("k{i}"), &extra).await.expect(201);
        assert_compute(&r.body, source, plan, tier);
        let key = r.body["api_key"].as_str().expect("api_key");
        let me = s.get("/accounts/me", key).await.expect(200);
        assert_eq!(me.body["type"], "agent_key");
        assert_compute(&me.body, source, plan, tier);
    }
    let list = s.get("/accounts/me/agent-keys", &bob.key).await.expect(200);
    let tiers: Vec<Option<u64>> = list.body["agent_keys"]
        .as_array()
        .expect("agent_keys")
        .iter()
        .map(|k| k["compute_tier"].as_u64())
        .collect();
    let expected: Vec<Option<u64>> = allowed().into_iter().map(|a| a.3).collect();
    assert_eq!(tiers, expected);
}

#[tokio::test]
async fn agent_key_issue_refuses_consumer_subscriptions_and_unknown_sources() {
    let s = Server::start().await;
    let bob = s.register("bob").await;
    let head = s.head_seq().await;
    for extra in consumer() {
        let r = issue(&s, &bob, "k", &extra)
            .await
            .expect_err(403, "compute_source_forbidden");
        let why = r.body["error"].as_str().expect("error");
        assert!(why.contains("reselling"), "{extra}: {why}");
    }
    for (extra, field) in unknown() {
        let r = issue(&s, &bob, "k", &extra)
            .await
            .expect_err(400, "validation_failed");
        assert_eq!(r.fields(), [field], "{extra}: {}", r.text);
    }
    // every key declares a source
    let r = issue(&s, &bob, "k", &json!({}))
        .await
        .expect_err(400, "validation_failed");
    assert_eq!(r.fields(), ["compute_source"], "{}", r.text);
    assert_eq!(s.head_seq().await, head, "a refused key appends nothing");
    let list = s.get("/accounts/me/agent-keys", &bob.key).await.expect(200);
    assert_eq!(list.body["agent_keys"], json!([]));
}

#[tokio::test]
async fn an_unspecified_key_cannot_claim_but_a_declared_one_can() {
    let s = Server::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let mut body = task_body(10);
    body["max_executors"] = json!(2);
    let task = s.publish(&alice, body).await;
    let vague = agent_with(&s, &bob, "vague", "unspecified").await;
    // the task tells the key why it may not claim
    let t = s.task(&vague.key, &task).await;
    assert_eq!(
        t["claimability"]["reason"], "compute_source_required",
        "{t}"
    );
    let head = s.head_seq().await;
    s.post_empty(&format!("/tasks/{task}/claim"), &vague.key)
        .await
        .expect_err(403, "compute_source_required");
    assert_eq!(s.head_seq().await, head);
    // a whitelisted token plan may claim
    let r = issue(
        &s,
        &bob,
        "planned",
        &json!({"compute_source": "token_plan_whitelist", "token_plan": "openai_api"}),
    )
    .await
    .expect(201);
    let planned = Agent {
        id: r.body["id"].as_str().expect("id").to_owned(),
        key: r.body["api_key"].as_str().expect("api_key").to_owned(),
        owner_id: bob.id.clone(),
    };
    s.claim(&planned, &task).await;
}

/// Reputation of an agent key, in hundredths, as `/accounts/me` shows it.
async fn reputation(s: &Server, agent: &Agent) -> i64 {
    let me = s.get("/accounts/me", &agent.key).await.expect(200);
    (me.body["reputation_score"]
        .as_f64()
        .expect("reputation_score")
        * 100.0)
        .round() as i64
}

#[tokio::test]
async fn submissions_rank_by_reputation_plus_tier_bonus_then_submit_time() {
    let s = Server::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    // given three keys: tier 1, tier 2 and tier 3
    let local = agent_with(&s, &bob, "local", "local_model").await;
    let payg = agent_with(&s, &bob, "payg", "payg_api_key").await;
    let platform = agent_with(&s, &bob, "platform", "platform_credit").await;
    // local loses reputation on a reject (5.00 -> 4.25);
    let t = s.publish_reward(&alice, 5).await;
    let x = s.claim(&local, &t).await;
    s.submit(&local, &t, "meh").await;
    s.verify(
        &alice,
        &t,
        json!({"execution_id": x, "accepted": false, "reopen": false}),
    )
    .await
    .expect(200);
    // payg gains it on two accepts scored 10 (5.00 -> 5.75 -> 6.39);
    for _ in 0..2 {
        let t = s.publish_reward(&alice, 5).await;
        s.complete(&alice, &payg, &t, Some(10.0)).await;
    }
    // platform stays at 5.00.
    let reps = (
        reputation(&s, &local).await,
        reputation(&s, &payg).await,
        reputation(&s, &platform).await,
    );
    assert_eq!(reps, (425, 639, 500));
    let scores = (reps.0 + 200, reps.1 + 50, reps.2);
    assert_eq!(scores, (625, 689, 500));

    // when all three submit to one task, worst score first
    let mut body = task_body(30);
    body["max_executors"] = json!(3);
    let task = s.publish(&alice, body).await;
    let mut ids = std::collections::HashMap::new();
    for a in [&platform, &local, &payg] {
        ids.insert(s.claim(a, &task).await, a.id.clone());
    }
    for a in [&platform, &local, &payg] {
        s.submit(a, &task, &format!("by {}", a.id)).await;
    }

    // then the publisher sees them by score: payg 6.89, local 6.25, platform 5.00
    let r = s
        .get(&format!("/tasks/{task}/submissions"), &alice.key)
        .await
        .expect(200);
    let subs = r.body["submissions"].as_array().expect("submissions");
    let got: Vec<(String, u64, i64, Option<u64>, u64)> = subs
        .iter()
        .map(|x| {
            (
                ids[x["id"].as_str().expect("id")].clone(),
                x["rank"].as_u64().expect("rank"),
                (x["ranking_score"].as_f64().expect("ranking_score") * 100.0).round() as i64,
                x["compute_tier"].as_u64(),
                (x["agent_reputation"].as_f64().expect("rep") * 100.0).round() as u64,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (payg.id.clone(), 1, 689, Some(2), 639),
            (local.id.clone(), 2, 625, Some(1), 425),
            (platform.id.clone(), 3, 500, Some(3), 500),
        ],
        "{}",
        r.text
    );
    // and the agents cannot see the ranking
    s.get(&format!("/tasks/{task}/submissions"), &payg.key)
        .await
        .expect_err(403, "forbidden");
}

#[tokio::test]
async fn equal_scores_rank_by_earlier_submit_time() {
    let s = Server::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    // given two keys of equal score (local, 5.00 + 2.00) and one lower
    // (pay as you go, 5.00 + 0.50)
    let first = agent_with(&s, &bob, "first", "local_model").await;
    let second = agent_with(&s, &bob, "second", "local_model").await;
    let payg = agent_with(&s, &bob, "payg", "payg_api_key").await;
    let mut body = task_body(30);
    body["max_executors"] = json!(3);
    let task = s.publish(&alice, body).await;
    // claimed in one order...
    let x_second = s.claim(&second, &task).await;
    let x_payg = s.claim(&payg, &task).await;
    let x_first = s.claim(&first, &task).await;
    // ...submitted in another: payg first, then `first`, then `second`
    // (a few ms apart: submit times are in ms)
    s.submit(&payg, &task, "p").await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    s.submit(&first, &task, "a").await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    s.submit(&second, &task, "b").await;
    let r = s
        .get(&format!("/tasks/{task}/submissions"), &alice.key)
        .await
        .expect(200);
    let order: Vec<(&str, f64)> = r.body["submissions"]
        .as_array()
        .expect("submissions")
        .iter()
        .map(|x| {
            (
                x["id"].as_str().expect("id"),
                x["ranking_score"].as_f64().expect("ranking_score"),
            )
        })
        .collect();
    // the tie goes to the earlier submit; an earlier submit never beats a
    // higher score
    assert_eq!(
        order,
        [
            (x_first.as_str(), 7.0),
            (x_second.as_str(), 7.0),
            (x_payg.as_str(), 5.5)
        ],
        "{}",
        r.text
    );
}
