//! Server-Sent Events over a real socket: what an owner and an agent key
//! see, resume with `Last-Event-ID` after a disconnect (nothing missed,
//! nothing twice, strictly increasing), catch-up turning into live
//! delivery, the `?type=` filter and its refusals.
//!
//! The oracle is the service's own live record stream, subscribed before
//! the first write: every record with its seq and event, from which the
//! test works out, by the rules of API.md, which seqs each caller must get.

mod common;

use common::{Frame, Owner, Server, SseReader, task_body};
use reqwest::Method;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use taskledger_events::{Event, Record};
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(10);

/// Collects the log as the service broadcasts it.
struct Oracle {
    live: broadcast::Receiver<Arc<Record>>,
    records: Vec<Arc<Record>>,
}

impl Oracle {
    /// Every record up to the server's current head.
    async fn sync(&mut self, s: &Server) -> &[Arc<Record>] {
        let head = s.head_seq().await;
        while self.records.last().map_or(0, |r| r.seq) < head {
            let r = tokio::time::timeout(WAIT, self.live.recv())
                .await
                .expect("the live stream stalled")
                .expect("the oracle lagged");
            self.records.push(r);
        }
        &self.records
    }
}

fn execution_of(e: &Event) -> Option<String> {
    let id = match e {
        Event::TaskClaimed(e) => e.execution_id,
        Event::ResultSubmitted(e) => e.execution_id,
        Event::VerdictRecorded(e) => e.execution_id,
        Event::VerificationFallback(e) => e.execution_id,
        Event::ExecutionSuperseded(e) => e.execution_id,
        Event::LeaseReleased(e) => e.execution_id,
        _ => return None,
    };
    Some(id.to_string())
}

/// The account an account-level event is about.
fn account_of(e: &Event) -> Option<String> {
    let id = match e {
        Event::AccountRegistered(e) => e.account_id,
        Event::OwnerKeyRotated(e) => e.account_id,
        Event::AgentKeyIssued(e) => e.owner_id,
        Event::AgentKeyRevoked(e) => e.owner_id,
        Event::CreditsGranted(e) => e.owner_id,
        Event::CreditsRedeemed(e) => e.owner_id,
        _ => return None,
    };
    Some(id.to_string())
}

/// What an owner sees (API.md): its account, its tasks, and the executions
/// of its agent keys.
struct OwnerView<'a> {
    id: &'a str,
    tasks: &'a BTreeSet<String>,
    executions: &'a BTreeSet<String>,
}

impl OwnerView<'_> {
    fn sees(&self, e: &Event) -> bool {
        if matches!(e, Event::IdempotencyRecorded(_)) {
            return false;
        }
        account_of(e).is_some_and(|a| a == self.id)
            || e.task_id()
                .is_some_and(|t| self.tasks.contains(&t.to_string()))
            || execution_of(e).is_some_and(|x| self.executions.contains(&x))
    }
}

/// What an agent key sees: new and re-opened tasks, and its own executions.
fn agent_sees(executions: &BTreeSet<String>, e: &Event) -> bool {
    matches!(e, Event::TaskPublished(_) | Event::TaskReopened(_))
        || execution_of(e).is_some_and(|x| executions.contains(&x))
}

fn seqs(records: &[Arc<Record>], keep: impl Fn(&Event) -> bool) -> Vec<u64> {
    records
        .iter()
        .filter(|r| keep(&r.event))
        .map(|r| r.seq)
        .collect()
}

/// Checks each frame against the log and returns the ids in order.
#[track_caller]
fn ids(frames: &[Frame], records: &[Arc<Record>]) -> Vec<u64> {
    frames
        .iter()
        .map(|f| {
            let id = f.id.unwrap_or_else(|| panic!("a frame without id: {f:?}"));
            let data = f.json();
            let r = records
                .iter()
                .find(|r| r.seq == id)
                .unwrap_or_else(|| panic!("frame {id} is not in the log"));
            assert_eq!(f.event.as_deref(), Some(r.event.kind()), "{f:?}");
            assert_eq!(data["seq"], id, "{f:?}");
            assert_eq!(data["type"], r.event.kind(), "{f:?}");
            assert_eq!(
                data["task_id"].as_str().map(str::to_owned),
                r.event.task_id().map(|t| t.to_string()),
                "{f:?}"
            );
            assert_eq!(
                data["execution_id"].as_str().map(str::to_owned),
                execution_of(&r.event),
                "{f:?}"
            );
            id
        })
        .collect()
}

#[track_caller]
fn assert_strictly_increasing(ids: &[u64]) {
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids are not strictly increasing: {ids:?}"
    );
}

async fn frames_until(reader: &mut SseReader, seq: u64) -> Vec<Frame> {
    reader.until_seq(seq, WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_resumes_with_last_event_id_and_misses_nothing() {
    let s = Server::start().await;
    let mut oracle = Oracle {
        live: s.running().service.subscribe(),
        records: Vec::new(),
    };
    let (a, b, c) = (
        s.register("alice").await,
        s.register("bob").await,
        s.register("carol").await,
    );
    let (ak, bk, ck) = (
        s.agent(&a, "a").await,
        s.agent(&b, "b").await,
        s.agent(&c, "c").await,
    );
    let mut a_tasks = BTreeSet::new();
    let mut a_execs = BTreeSet::new();
    let mut b_execs = BTreeSet::new();
    let mut others = BTreeSet::new();

    // Phase 1: before anyone listens.
    let mut body = task_body(20);
    body["max_executors"] = json!(2);
    let t1 = s.publish(&a, body).await;
    a_tasks.insert(t1.clone());
    let t2 = s.publish_reward(&c, 20).await;
    let xb1 = s.claim(&bk, &t1).await;
    b_execs.insert(xb1.clone());
    s.submit(&bk, &t1, "first").await;
    s.verify(&a, &t1, json!({"execution_id": xb1, "accepted": false}))
        .await
        .expect(200);
    let xc1 = s.claim(&ck, &t1).await;
    others.insert(xc1.clone());
    s.submit(&ck, &t1, "second").await;
    let xa2 = s.claim(&ak, &t2).await;
    a_execs.insert(xa2.clone());

    let records = oracle.sync(&s).await.to_vec();
    let a_view = |tasks: &BTreeSet<String>, execs: &BTreeSet<String>| {
        let (tasks, execs, id) = (tasks.clone(), execs.clone(), a.id.clone());
        move |e: &Event| {
            OwnerView {
                id: &id,
                tasks: &tasks,
                executions: &execs,
            }
            .sees(e)
        }
    };
    let expected1 = seqs(&records, a_view(&a_tasks, &a_execs));
    assert!(expected1.len() >= 10, "{expected1:?}");
    // The publisher sees the rejected and the pending execution on its task,
    // and its agent key's claim on carol's task.
    let kinds: Vec<&str> = records
        .iter()
        .filter(|r| expected1.contains(&r.seq))
        .map(|r| r.event.kind())
        .collect();
    for k in [
        "account_registered",
        "credits_granted",
        "agent_key_issued",
        "task_published",
        "task_claimed",
        "result_submitted",
        "verdict_recorded",
        "task_reopened",
    ] {
        assert!(kinds.contains(&k), "alice should see a {k}: {kinds:?}");
    }

    // Connect from the start, read half, disconnect.
    let mut reader = s.events(&a.key, "?since=0", &[]).await;
    let half = expected1.len() / 2;
    let mut first = Vec::new();
    for _ in 0..half {
        first.push(reader.next(WAIT).await.expect("a frame"));
    }
    let first_ids = ids(&first, &records);
    assert_eq!(first_ids, expected1[..half]);
    let last_id = *first_ids.last().unwrap();
    drop(reader);

    // Phase 2: while nobody listens, then live. Bob's key listens from 0.
    let mut bob_reader = s.events(&bk.key, "?since=0", &[]).await;
    s.verify(&a, &t1, json!({"execution_id": xc1, "accepted": true}))
        .await
        .expect(200);
    let t3 = s.publish_reward(&a, 5).await;
    a_tasks.insert(t3.clone());
    s.post_empty(&format!("/tasks/{t3}/cancel"), &a.key)
        .await
        .expect(200);
    s.submit(&ak, &t2, "for carol").await;
    s.verify(&c, &t2, json!({"execution_id": xa2, "accepted": true}))
        .await
        .expect(200);
    let t4 = s.publish_reward(&b, 5).await;
    s.agent(&a, "a2").await;

    // Resume. The URL still says since=0, as a browser's reconnect would:
    // the header wins.
    let last = last_id.to_string();
    let mut reader = s
        .events(&a.key, "?since=0", &[("Last-Event-ID", &last)])
        .await;
    // Live now: a claim alice must not see, then her own publish.
    let xc4 = s.claim(&ck, &t4).await;
    others.insert(xc4.clone());
    let t5 = s.publish_reward(&a, 5).await;
    a_tasks.insert(t5.clone());
    let records = oracle.sync(&s).await.to_vec();
    let sentinel = records.last().unwrap().seq;
    assert!(matches!(
        records.last().unwrap().event,
        Event::TaskPublished(_)
    ));

    let second = frames_until(&mut reader, sentinel).await;
    let second_ids = ids(&second, &records);
    let mut all = first_ids.clone();
    all.extend(&second_ids);
    assert_strictly_increasing(&all);
    let expected = seqs(&records, a_view(&a_tasks, &a_execs));
    assert_eq!(all, expected, "alice's union differs from what she may see");
    assert!(second_ids.first().is_some_and(|f| *f > last_id));
    // Nothing about bob's task or carol's claim on it reached alice.
    for f in first.iter().chain(&second) {
        assert!(!f.data.contains(&t4), "alice saw bob's task: {f:?}");
        assert!(!f.data.contains(&xc4), "alice saw carol's claim: {f:?}");
    }
    drop(reader);

    // Bob's agent key: every published or re-opened task, and its own
    // execution only; caught up and then followed live.
    let bob_frames = frames_until(&mut bob_reader, sentinel).await;
    let bob_ids = ids(&bob_frames, &records);
    assert_strictly_increasing(&bob_ids);
    assert_eq!(bob_ids, seqs(&records, |e| agent_sees(&b_execs, e)));
    let published: BTreeSet<String> = bob_frames
        .iter()
        .filter(|f| f.event.as_deref() == Some("task_published"))
        .map(|f| f.json()["task_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        published,
        [&t1, &t2, &t3, &t4, &t5].into_iter().cloned().collect()
    );
    for f in &bob_frames {
        for x in others.iter().chain(&a_execs) {
            assert!(
                !f.data.contains(x.as_str()),
                "bob's key saw another execution: {f:?}"
            );
        }
    }
    assert!(
        bob_frames
            .iter()
            .any(|f| f.json()["execution_id"] == xb1.as_str()
                && f.event.as_deref() == Some("verdict_recorded")),
        "bob's key sees the verdict on its execution"
    );
    drop(bob_reader);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_type_filter_keeps_only_the_named_types() {
    let s = Server::start().await;
    let mut oracle = Oracle {
        live: s.running().service.subscribe(),
        records: Vec::new(),
    };
    let (a, b) = (s.register("alice").await, s.register("bob").await);
    let bk = s.agent(&b, "b").await;
    let t1 = s.publish_reward(&a, 10).await;
    s.complete(&a, &bk, &t1, None).await;
    let t2 = s.publish_reward(&b, 10).await;
    let t3 = s.publish_reward(&a, 10).await;
    let records = oracle.sync(&s).await.to_vec();
    let tasks: BTreeSet<String> = [t1, t3.clone()].into_iter().collect();
    let none = BTreeSet::new();
    let view = OwnerView {
        id: &a.id,
        tasks: &tasks,
        executions: &none,
    };
    let wanted = ["task_published", "verdict_recorded"];
    let expected = seqs(&records, |e| view.sees(e) && wanted.contains(&e.kind()));
    assert_eq!(expected.len(), 3, "two publishes and a verdict");
    let mut reader = s
        .events(&a.key, "?since=0&type=task_published,verdict_recorded", &[])
        .await;
    let frames = frames_until(&mut reader, *expected.last().unwrap()).await;
    assert_eq!(ids(&frames, &records), expected);
    assert!(!frames.iter().any(|f| f.data.contains(&t2)));
    drop(reader);

    // With nothing after `since`, the stream waits for the next one.
    let head = s.head_seq().await.to_string();
    let mut reader = s
        .events(&a.key, &format!("?since={head}&type=task_cancelled"), &[])
        .await;
    s.post_empty(&format!("/tasks/{t3}/cancel"), &a.key)
        .await
        .expect(200);
    let f = reader.next(WAIT).await.expect("the cancel, live");
    assert_eq!(f.event.as_deref(), Some("task_cancelled"));
    assert_eq!(f.json()["task_id"], t3.as_str());
    drop(reader);

    // Bad filters and bad resume points are refused with the field named.
    for (query, headers, field) in [
        ("?type=nope", vec![], "type"),
        ("?type=task_published,nope", vec![], "type"),
        ("?since=minus", vec![], "query"),
        ("", vec![("Last-Event-ID", "abc")], "Last-Event-ID"),
    ] {
        let r = s
            .call(
                Method::GET,
                &format!("/events{query}"),
                Some(&a.key),
                None,
                &headers,
            )
            .await
            .expect_err(400, "validation_failed");
        assert_eq!(r.fields(), [field], "{query} {headers:?}: {}", r.text);
    }
    s.call(Method::GET, "/events", None, None, &[])
        .await
        .expect_err(401, "unauthorized");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_since_starts_at_the_head() {
    let s = Server::start().await;
    let a: Owner = s.register("alice").await;
    s.publish_reward(&a, 10).await;
    let mut reader = s.events(&a.key, "", &[]).await;
    let t = s.publish_reward(&a, 11).await;
    let f = reader.next(WAIT).await.expect("the new publish");
    assert_eq!(f.event.as_deref(), Some("task_published"));
    assert_eq!(f.json()["task_id"], t.as_str());
    assert_eq!(f.id, Some(s.head_seq().await));
    drop(reader);
    s.stop().await;
}

/// A client that stops reading is cut off, and gets the `cutoff` frame
/// after everything buffered for it once it reads again; a client that
/// keeps reading through the same burst is not cut off and misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_cut_off_with_a_final_frame_and_a_reading_one_is_not() {
    use tokio::io::AsyncReadExt;
    let s = Server::start_with(|c| c.signup_gift = 1_000_000).await;
    let publisher: Owner = s.register("publisher").await;
    let agent_owner: Owner = s.register("agents").await;
    let agent = s.agent(&agent_owner, "watcher").await;

    // given a stalled client: a tiny receive window, and no reading past
    // the response head; and one that never reads again at all
    let mut stalled = open_stalled(&s, &agent.key).await;
    let never_reads = open_stalled(&s, &agent.key).await;

    // and a client that reads as frames come
    let mut reader = s.events(&agent.key, "?type=task_published", &[]).await;
    let (last_tx, last_rx) = tokio::sync::watch::channel(0u64);
    let reading = tokio::spawn(async move {
        let mut frames: Vec<Frame> = Vec::new();
        loop {
            match reader.next(Duration::from_millis(500)).await {
                Some(f) => frames.push(f),
                None => {
                    let last = *last_rx.borrow();
                    if last > 0 && frames.last().and_then(|f| f.id) >= Some(last) {
                        return frames;
                    }
                    assert!(frames.len() < 100_000, "the reader never caught up");
                }
            }
        }
    });

    // when more tasks are published than the live stream and the stalled
    // client's buffer hold together
    // (long titles: big frames fill the socket buffers sooner)
    const TASKS: usize = lagging_burst();
    let mut body = task_body(1);
    body["title"] = json!("t".repeat(200));
    let published = futures_util::future::join_all((0..16).map(|_| async {
        let mut ids = Vec::new();
        for _ in 0..TASKS / 16 {
            ids.push(s.publish(&publisher, body.clone()).await);
        }
        ids
    }))
    .await;
    let published: BTreeSet<String> = published.into_iter().flatten().collect();
    let last_seq = s.head_seq().await;
    last_tx.send(last_seq).expect("the reader is waiting");

    // then the reading client saw every task once, in seq order, uncut
    let frames = tokio::time::timeout(Duration::from_secs(120), reading)
        .await
        .expect("the reader caught up")
        .expect("the reader task");
    assert!(
        frames
            .iter()
            .all(|f| f.event.as_deref() == Some("task_published")),
        "no cutoff for a reading client"
    );
    let seen: Vec<String> = frames
        .iter()
        .map(|f| f.json()["task_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), published);
    assert_eq!(seen.len(), published.len(), "nothing twice");
    assert!(frames.windows(2).all(|w| w[0].id < w[1].id), "seq order");

    // and the stalled one, reading again, gets its buffered frames then
    // the cutoff frame naming the last seq it was sent
    let mut text = String::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let cutoff_frame = |text: &str| {
        let at = text.find("event: cutoff")?;
        text[at..].contains("\n\n").then_some(at)
    };
    while cutoff_frame(&text).is_none() {
        let Ok(n) = tokio::time::timeout_at(deadline, stalled.read(&mut buf)).await else {
            panic!(
                "no cutoff frame within 15 s; {} task frames of {} came",
                text.matches("event: task_published").count(),
                published.len()
            );
        };
        let n = n.expect("read");
        assert!(n > 0, "the stream ended without a cutoff frame");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let cutoff = &text[cutoff_frame(&text).expect("cutoff")..];
    assert!(cutoff.contains("\"code\":\"slow_consumer\""), "{cutoff}");
    let sent = text.matches("event: task_published").count();
    assert!(
        sent < published.len(),
        "a stalled client was sent {sent} of {} frames",
        published.len()
    );
    let last_id: u64 = text
        .rsplit("\nid: ")
        .next()
        .and_then(|t| t.split('\n').next())
        .and_then(|t| t.trim().parse().ok())
        .expect("an id before the cutoff");
    assert!(
        cutoff.contains(&format!("\"last_seq\":{last_id}")),
        "{cutoff}"
    );
    drop(stalled);

    // and a graceful stop does not wait forever on the client that never
    // reads (its socket is full, so its response can never be finished)
    tokio::time::timeout(Duration::from_secs(30), s.stop())
        .await
        .expect("the server stops despite a client that never reads");
    drop(never_reads);
}

/// `GET /events?type=task_published` on a socket with a 4 KiB receive
/// window, read up to the end of the response head and no further.
async fn open_stalled(s: &Server, key: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let addr = s.running().addr;
    let mut stream = socket.connect(addr).await.expect("connect");
    let request = format!(
        "GET /api/v1/events?type=task_published HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream
            .read_exact(&mut byte)
            .await
            .expect("the response head");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Tasks enough to overflow the live records plus a client's frame buffer
/// plus what the kernel and hyper buffer for a socket: loopback send
/// buffers grow to `tcp_wmem`'s 4 MiB, ~6,000 frames of ~700 bytes.
const fn lagging_burst() -> usize {
    let n =
        taskledger::service::LIVE_RECORDS_MAX + taskledger::http::events::CLIENT_FRAMES_MAX + 8_000;
    n - n % 16
}
