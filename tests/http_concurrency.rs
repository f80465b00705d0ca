//! Races over real HTTP: 64 agents claiming a one-slot task at once, and
//! two verdicts on one submission at once. One winner, the rest refused
//! with the claim rule's own code, and the reward paid exactly once.

mod common;

use common::{Agent, Server, Wallet};
use serde_json::json;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_claims_have_exactly_one_winner() {
    let s = Arc::new(Server::start().await);
    let publisher = s.register("publisher").await;
    let mut agents: Vec<Agent> = Vec::new();
    for o in 0..4 {
        let owner = s.register(&format!("owner-{o}")).await;
        for k in 0..16 {
            agents.push(s.agent(&owner, &format!("agent-{o}-{k}")).await);
        }
    }
    let task = s.publish_reward(&publisher, 50).await;
    let head = s.head_seq().await;

    let barrier = Arc::new(tokio::sync::Barrier::new(agents.len()));
    let mut joins = Vec::new();
    for agent in agents.clone() {
        let (s, barrier, task) = (s.clone(), barrier.clone(), task.clone());
        joins.push(tokio::spawn(async move {
            barrier.wait().await;
            let r = s
                .post_empty(&format!("/tasks/{task}/claim"), &agent.key)
                .await;
            (agent.id, r.status, r.code().to_owned(), r.body)
        }));
    }
    let mut winners = Vec::new();
    let mut refusals = std::collections::BTreeMap::<(u16, String), usize>::new();
    for j in joins {
        let (id, status, code, body) = j.await.unwrap();
        if status == 201 {
            assert_eq!(body["agent_key_id"], id.as_str());
            winners.push(body["id"].as_str().unwrap().to_owned());
        } else {
            *refusals.entry((status, code)).or_default() += 1;
        }
    }
    assert_eq!(winners.len(), 1, "refusals: {refusals:?}");
    // Every loser met an open task with its one slot taken.
    assert_eq!(
        refusals.into_iter().collect::<Vec<_>>(),
        vec![((409, "task_full".to_owned()), 63)]
    );
    assert_eq!(s.head_seq().await, head + 1, "one claim, one record");
    let t = s.task(&publisher.key, &task).await;
    assert_eq!(t["status"], "claimed");
    assert_eq!(t["active_executions"], 1);
    assert_eq!(t["executions_count"], 1);
    let subs = s
        .get(&format!("/tasks/{task}/submissions"), &publisher.key)
        .await
        .expect(200)
        .body;
    assert_eq!(subs["submissions"][0]["id"], winners[0].as_str());
    s.assert_reconciled().await;
    Arc::try_unwrap(s).ok().expect("one owner").stop().await;
}

/// Publish, claim and submit; the task and execution ids.
async fn submitted(
    s: &Server,
    publisher: &common::Owner,
    agent: &Agent,
    reward: u64,
) -> (String, String) {
    let task = s.publish_reward(publisher, reward).await;
    let x = s.claim(agent, &task).await;
    s.submit(agent, &task, "work").await;
    (task, x)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_verdicts_pay_exactly_once() {
    let s = Arc::new(Server::start().await);
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let bk = s.agent(&bob, "b").await;
    const ROUNDS: usize = 6;
    const REWARD: u64 = 30;
    let mut paid = 0u64;
    let mut accept_wins = 0;
    let mut reject_wins = 0;
    for round in 0..ROUNDS {
        let (task, x) = submitted(&s, &alice, &bk, REWARD).await;
        let before = s.wallet(&bob.key).await;
        let accept = json!({"execution_id": x, "accepted": true});
        let other = if round % 2 == 0 {
            accept.clone()
        } else {
            json!({"execution_id": x, "accepted": false})
        };
        let (r1, r2) = tokio::join!(
            s.verify(&alice, &task, accept.clone()),
            s.verify(&alice, &task, other.clone())
        );
        let mut answers = [
            (r1.status, r1.code().to_owned()),
            (r2.status, r2.code().to_owned()),
        ];
        answers.sort();
        assert_eq!(
            answers,
            [(200, String::new()), (409, "conflict".to_owned())],
            "round {round}: {} / {}",
            r1.text,
            r2.text
        );
        let winner = if r1.status == 200 { &r1 } else { &r2 };
        let after = s.wallet(&bob.key).await;
        let t = s.task(&alice.key, &task).await;
        let e = s.execution(&bk.key, &x).await;
        if winner.body["status"] == "accepted" {
            accept_wins += 1;
            paid += REWARD;
            assert_eq!(
                after,
                Wallet {
                    earned: before.earned + REWARD,
                    ..before
                },
                "round {round}"
            );
            assert_eq!(t["status"], "completed");
            assert_eq!(e["status"], "accepted");
            assert_eq!(e["settlement"].as_array().map(Vec::len), Some(1));
        } else {
            reject_wins += 1;
            assert_eq!(winner.body["status"], "rejected");
            assert_eq!(after, before, "round {round}: a reject pays nothing");
            assert_eq!(t["status"], "open");
            assert_eq!(t["escrow_gift"], REWARD);
            assert_eq!(e["status"], "rejected");
        }
        s.assert_reconciled().await;
    }
    assert_eq!(s.wallet(&bob.key).await.earned, paid);
    assert_eq!(accept_wins + reject_wins, ROUNDS);
    assert!(accept_wins >= ROUNDS / 2, "double accepts always pay once");
    // Every reward is either paid, or still in escrow of a re-opened task.
    let rec = s.assert_reconciled().await;
    assert_eq!(rec["wallets"]["earned"], paid);
    assert_eq!(rec["escrow"], REWARD * reject_wins as u64);
    Arc::try_unwrap(s).ok().expect("one owner").stop().await;
}
