//! `kill -9` of the real binary under load, then restart: every write that
//! was answered with success is present, nothing is there twice, and
//! `taskledger audit` passes, with periodic snapshots stored during the
//! load. Rounds: `TASKLEDGER_CRASH_ROUNDS` (default 3;
//! the long mode runs 50).

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_taskledger");

/// A started server, the address it reported, and how many snapshots it
/// has logged as stored so far.
struct Server {
    child: Child,
    url: String,
    snapshots: Arc<AtomicUsize>,
}

fn start(data: &Path) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("TASKLEDGER_LOG", "json")
        .env("TASKLEDGER_RATE_LIMIT_PER_MIN", "0")
        // Periodic snapshots during the load: the kill can land while one
        // is encoded or stored, and the restart loads one plus a tail.
        .env("TASKLEDGER_SNAPSHOT_EVERY_RECORDS", "50")
        .env_remove("TASKLEDGER_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start taskledger serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        assert!(
            Instant::now() < deadline,
            "server did not report its address"
        );
        let line = lines
            .next()
            .expect("server exited before listening")
            .expect("read stderr");
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let Some(addr) = v["fields"]["addr"].as_str() {
            break format!("http://{addr}/api/v1");
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    let snapshots = Arc::new(AtomicUsize::new(0));
    let counter = snapshots.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let v = serde_json::from_str::<Value>(&line).unwrap_or_default();
            if v["fields"]["message"] == "snapshot stored" {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    Server {
        child,
        url,
        snapshots,
    }
}

/// What the server acknowledged, per kind.
#[derive(Default)]
struct Acked {
    tasks: Vec<String>,
    claims: Vec<(String, String)>,
    submits: Vec<String>,
    accepts: Vec<String>,
}

struct Party {
    owners: [String; 2],
    agents: [String; 2],
}

async fn post(
    http: &reqwest::Client,
    url: String,
    key: &str,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut req = http.post(url).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.ok()?;
    let status = resp.status().as_u16();
    let v = resp.json().await.ok()?;
    Some((status, v))
}

async fn setup(http: &reqwest::Client, api: &str, n: usize) -> Party {
    let mut owners = Vec::new();
    let mut agents = Vec::new();
    for side in 0..2 {
        let reg: Value = http
            .post(format!("{api}/accounts/register"))
            .json(&json!({"type": "agent", "name": format!("c{n}{side}"), "compute_source": "local_model"}))
            .send()
            .await
            .expect("register")
            .json()
            .await
            .expect("register body");
        let owner = reg["api_key"].as_str().expect("api_key").to_owned();
        let (status, key) = post(
            http,
            format!("{api}/accounts/me/agent-keys"),
            &owner,
            Some(json!({"name": "w", "compute_source": "local_model"})),
        )
        .await
        .expect("agent key");
        assert_eq!(status, 201);
        agents.push(key["api_key"].as_str().expect("key").to_owned());
        owners.push(owner);
    }
    Party {
        owners: [owners[0].clone(), owners[1].clone()],
        agents: [agents[0].clone(), agents[1].clone()],
    }
}

/// Lifecycles until the server dies; every success is recorded.
async fn drive(http: reqwest::Client, api: String, party: Party, acked: Arc<Mutex<Acked>>) {
    for round in 0.. {
        let owner = &party.owners[round % 2];
        let agent = &party.agents[(round + 1) % 2];
        let body = json!({"title": "t", "type": "crash", "reward_credits": 1});
        let Some((201, task)) = post(&http, format!("{api}/tasks"), owner, Some(body)).await else {
            return;
        };
        let task = task["id"].as_str().expect("id").to_owned();
        acked.lock().unwrap().tasks.push(task.clone());
        let Some((201, x)) = post(&http, format!("{api}/tasks/{task}/claim"), agent, None).await
        else {
            return;
        };
        let x = x["id"].as_str().expect("id").to_owned();
        acked.lock().unwrap().claims.push((task.clone(), x.clone()));
        let Some((200, _)) = post(
            &http,
            format!("{api}/tasks/{task}/submit"),
            agent,
            Some(json!({"result": "r"})),
        )
        .await
        else {
            return;
        };
        acked.lock().unwrap().submits.push(x.clone());
        let Some((200, _)) = post(
            &http,
            format!("{api}/tasks/{task}/verify"),
            owner,
            Some(json!({"execution_id": x, "accepted": true})),
        )
        .await
        else {
            return;
        };
        acked.lock().unwrap().accepts.push(x);
    }
}

async fn get(http: &reqwest::Client, url: String, key: &str) -> (u16, Value) {
    let resp = http.get(url).bearer_auth(key).send().await.expect("get");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_write() {
    let rounds: usize = std::env::var("TASKLEDGER_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut checked = 0usize;
    let mut periodic_snapshots = 0;
    for round in 0..rounds {
        let mut server = start(&data);
        let api = server.url.clone();
        let acked = Arc::new(Mutex::new(Acked::default()));
        let mut clients = Vec::new();
        let mut parties = Vec::new();
        for n in 0..8 {
            parties.push(setup(&http, &api, round * 100 + n).await);
        }
        let observer = parties[0].owners[0].clone();
        for party in parties {
            clients.push(tokio::spawn(drive(
                http.clone(),
                api.clone(),
                party,
                acked.clone(),
            )));
        }
        // Let the load run a random while, then SIGKILL.
        let ms = 200 + rand::random::<u64>() % 800;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        server.child.kill().expect("kill -9");
        server.child.wait().expect("reap");
        // This server never stopped gracefully: what it stored is periodic.
        periodic_snapshots += server.snapshots.load(Ordering::Relaxed);
        for c in clients {
            c.await.unwrap();
        }

        // Restart on the same data and check every acknowledged write.
        let mut server = start(&data);
        let api = server.url.clone();
        let a = std::mem::take(&mut *acked.lock().unwrap());
        assert!(
            !a.tasks.is_empty(),
            "round {round}: no load ran before the kill"
        );
        for t in &a.tasks {
            let (status, _) = get(&http, format!("{api}/tasks/{t}"), &observer).await;
            assert_eq!(
                status, 200,
                "round {round}: acknowledged task {t} is missing"
            );
        }
        let (_, mine) = get(
            &http,
            format!("{api}/tasks?status=all&limit=100"),
            &observer,
        )
        .await;
        assert!(mine["total"].as_u64().unwrap() >= a.tasks.len() as u64);
        for (t, x) in &a.claims {
            let (status, task) = get(&http, format!("{api}/tasks/{t}"), &observer).await;
            assert_eq!(status, 200);
            assert!(
                task["executions_count"].as_u64().unwrap() == 1,
                "round {round}: task {t} should have exactly its one execution {x}"
            );
        }
        for x in &a.accepts {
            // The publisher of each accepted execution completed its task.
            let found = a.claims.iter().find(|(_, e)| e == x).expect("claimed");
            let (_, task) = get(&http, format!("{api}/tasks/{}", found.0), &observer).await;
            assert_eq!(
                task["status"], "completed",
                "round {round}: accept of {x} lost"
            );
        }
        for x in &a.submits {
            let found = a.claims.iter().find(|(_, e)| e == x).expect("claimed");
            let (_, task) = get(&http, format!("{api}/tasks/{}", found.0), &observer).await;
            assert!(
                task["status"] == "submitted" || task["status"] == "completed",
                "round {round}: submit of {x} lost"
            );
        }
        checked += a.tasks.len() + a.claims.len() + a.submits.len() + a.accepts.len();
        // A clean stop before the next round's restart.
        stop(&mut server);
        let audit = Command::new(BIN)
            .args(["audit", "--data"])
            .arg(&data)
            .output()
            .expect("audit");
        assert!(
            audit.status.success(),
            "round {round}: audit failed:\n{}",
            String::from_utf8_lossy(&audit.stdout)
        );
    }
    assert!(checked > 0);
    assert!(
        periodic_snapshots > 0,
        "no periodic snapshot was stored under load: the restarts did not load one"
    );
    eprintln!(
        "{rounds} rounds of kill -9 under load: {checked} acknowledged writes found after restart, audit passed each round; {periodic_snapshots} periodic snapshots stored before the kills"
    );
}

fn stop(server: &mut Server) {
    // SIGTERM: graceful stop; the test then waits for a clean exit.
    let pid = server.child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    let status = server.child.wait().expect("wait");
    assert!(status.success(), "graceful stop exited {status}");
}
