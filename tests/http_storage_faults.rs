//! Storage faults under a real server, through the `FaultyStore` seam
//! (`taskledger::http::start_on`): after a failed flush the writer takes no
//! more commands (503 `unavailable`) rather than guess what is on disk,
//! reads go on, and a restart finds every acknowledged write and nothing
//! else; a torn or corrupted record makes the next start refuse to serve,
//! naming the seq.

mod common;

use common::settings;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;
use taskledger::http::{Running, start, start_on};
use taskledger_events::{FaultyStore, SledStore};

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn of(running: &Running) -> Client {
        Client {
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
            base: format!("http://{}/api/v1", running.addr),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("answer");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn register(&self, name: &str) -> (u16, Value) {
        self.call(
            Method::POST,
            "/accounts/register",
            None,
            Some(json!({"type": "human", "name": name})),
        )
        .await
    }
}

/// A server over `FaultyStore<SledStore>` at `data`, set up by `plan`.
async fn faulty(data: &Path, plan: impl FnOnce(&mut FaultyStore<SledStore>)) -> Running {
    let store = SledStore::open(data).expect("open");
    let history = store.reader();
    let mut faulty = FaultyStore::new(store);
    plan(&mut faulty);
    start_on(settings(data), Box::new(faulty), history)
        .await
        .expect("the server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_flush_writes_get_503_reads_go_on_and_a_restart_keeps_what_was_acknowledged()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Two appends succeed, then every flush fails.
    let running = faulty(&data, |f| {
        f.fail_after_appends(2);
    })
    .await;
    let c = Client::of(&running);
    let (s1, alice) = c.register("alice").await;
    let (s2, bob) = c.register("bob").await;
    assert_eq!((s1, s2), (201, 201));
    let alice_key = alice["api_key"].as_str().expect("key").to_owned();
    // The third write fails to flush: 503, and so does every later one,
    // whatever the command.
    let (s, body) = c.register("carol").await;
    assert_eq!(
        (s, body["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    let (s, body) = c
        .call(
            Method::POST,
            "/tasks",
            Some(&alice_key),
            Some(json!({"title": "t", "type": "x", "reward_credits": 5})),
        )
        .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    // Reads still answer, from what was acknowledged.
    let (s, me) = c
        .call(Method::GET, "/accounts/me", Some(&alice_key), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(me["gift_balance"], 1000);
    // The stop reports the failed store instead of pretending it flushed.
    assert!(running.stop().await.is_err());

    // Restart on the same data: alice and bob are there, carol is not.
    let running = start(settings(&data)).await.expect("restart");
    let c = Client::of(&running);
    let (s, _) = c
        .call(Method::GET, "/accounts/me", Some(&alice_key), None)
        .await;
    assert_eq!(s, 200, "an acknowledged registration was lost");
    let bob_id = bob["id"].as_str().expect("id");
    let (s, _) = c
        .call(
            Method::GET,
            &format!("/accounts/{bob_id}"),
            Some(&alice_key),
            None,
        )
        .await;
    assert_eq!(s, 200);
    // Writes work again on the reopened store.
    assert_eq!(c.register("dave").await.0, 201);
    running.stop().await.expect("a clean stop");
    let audit = std::process::Command::new(env!("CARGO_BIN_EXE_taskledger"))
        .args(["audit", "--data"])
        .arg(&data)
        .output()
        .expect("audit");
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.status.success(), "{text}");
    // Alice, bob and dave: two records each (the account, its signup gift).
    assert!(text.contains("records: 6\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_write_is_refused_at_the_next_start_naming_its_seq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let running = faulty(&data, |f| {
        f.tear_next_append();
    })
    .await;
    let c = Client::of(&running);
    // The append is torn: the writer poisons itself and answers 503.
    let (s, body) = c.register("alice").await;
    assert_eq!(s, 503, "{body}");
    let _ = running.stop().await;
    let err = start(settings(&data))
        .await
        .err()
        .expect("a torn log is not served");
    // The registration's batch is seq 1 (the account) and 2 (its gift);
    // the tear hits the last record of the batch.
    let why = format!("{err:#}");
    assert!(why.contains("log corrupt at seq 2"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_byte_is_refused_at_the_next_start_naming_its_seq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    {
        let running = start(settings(&data)).await.expect("start");
        let c = Client::of(&running);
        for name in ["a", "b", "c"] {
            assert_eq!(c.register(name).await.0, 201);
        }
        running.stop().await.expect("stop");
    }
    {
        let mut f = FaultyStore::new(SledStore::open(&data).expect("open"));
        f.flip_byte(2, 90).expect("flip a byte of seq 2");
    }
    let err = start(settings(&data))
        .await
        .err()
        .expect("a corrupted log is not served");
    let why = format!("{err:#}");
    assert!(why.contains("log corrupt at seq 2"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_serves_the_records_before_the_damage_and_refuses_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut keys = Vec::new();
    {
        let running = start(settings(&data)).await.expect("start");
        let c = Client::of(&running);
        for name in ["a", "b", "c"] {
            let (s, body) = c.register(name).await;
            assert_eq!(s, 201);
            keys.push(body["api_key"].as_str().expect("key").to_owned());
        }
        running.stop().await.expect("stop");
    }
    // Damage seq 4 (b's signup gift).
    {
        let mut f = FaultyStore::new(SledStore::open(&data).expect("open"));
        f.flip_byte(4, 90).expect("flip");
    }
    let mut s = settings(&data);
    s.read_only = true;
    let running = start(s)
        .await
        .expect("a read-only start serves a damaged log");
    let c = Client::of(&running);
    // Seq 1-3 are served: a with its gift, b without (its gift was seq 4).
    let (st, a) = c
        .call(Method::GET, "/accounts/me", Some(&keys[0]), None)
        .await;
    assert_eq!((st, &a["gift_balance"]), (200, &json!(1000)), "{a}");
    let (st, b) = c
        .call(Method::GET, "/accounts/me", Some(&keys[1]), None)
        .await;
    assert_eq!((st, &b["gift_balance"]), (200, &json!(0)), "{b}");
    // c (seq 5-6) is past the damage: unknown here.
    let (st, _) = c
        .call(Method::GET, "/accounts/me", Some(&keys[2]), None)
        .await;
    assert_eq!(st, 401);
    // Every write is refused, naming why.
    let (st, body) = c.register("d").await;
    assert_eq!(
        (st, body["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap_or_default().contains("seq 4"),
        "{body}"
    );
    running
        .stop()
        .await
        .expect("a read-only server stops cleanly");
    // Nothing changed on disk: a normal start still refuses, naming seq 4.
    let err = start(settings(&data)).await.err().expect("still refused");
    assert!(
        format!("{err:#}").contains("log corrupt at seq 4"),
        "{err:#}"
    );
}
