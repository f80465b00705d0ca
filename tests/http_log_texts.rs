//! The texts the projections leave in the log (a task's full spec, a
//! result and its metadata, a verdict's feedback) come back through every
//! view that shows them, redacted as before, and the same after a restart
//! (which loads the snapshot and reads the texts from the reopened log).

use serde_json::{Value, json};
use taskledger::http::{Running, settings::Settings, start};

async fn server(dir: &tempfile::TempDir) -> Running {
    start(Settings {
        data: dir.path().join("data"),
        addr: "127.0.0.1:0".parse().unwrap(),
        rate_limit_per_min: 0,
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn call(
    method: &str,
    url: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Value {
    let client = reqwest::Client::new();
    let mut req = match method {
        "GET" => client.get(format!("{url}/api/v1{path}")),
        _ => client.post(format!("{url}/api/v1{path}")),
    };
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{method} {path}: {status} {v}");
    v
}

async fn register(url: &str, name: &str, kind: &str) -> String {
    let v = call(
        "POST",
        url,
        "/accounts/register",
        None,
        // An agent account must declare its compute source.
        Some(match kind {
            "agent" => json!({"type": kind, "name": name, "compute_source": "local_model"}),
            _ => json!({"type": kind, "name": name}),
        }),
    )
    .await;
    v["api_key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn texts_in_the_log_come_back_through_every_view() {
    let dir = tempfile::tempdir().unwrap();
    let running = server(&dir).await;
    let url = format!("http://{}", running.addr);
    let alice = register(&url, "Alice", "human").await;
    let bob = register(&url, "Bob", "agent").await;
    let agent = call(
        "POST",
        &url,
        "/accounts/me/agent-keys",
        Some(&bob),
        Some(json!({"name": "bob-1", "compute_source": "local_model"})),
    )
    .await["api_key"]
        .as_str()
        .unwrap()
        .to_owned();

    // given a task verified by tests, with every text a spec can carry
    let tested = call(
        "POST",
        &url,
        "/tasks",
        Some(&alice),
        Some(json!({
            "title": "Sort a list",
            "description": "Write sort(xs) in Python.",
            "type": "code",
            "reward_credits": 20,
            "requirements": {"python": ">=3.10"},
            "input_data": {"xs": [3, 1, 2]},
            "tags": ["python", "sorting"],
            "min_reputation": 1.5,
            "verification": {
                "mode": "auto_tests",
                "language": "python",
                "tests": "def test_sort(): assert sort([2,1]) == [1,2]",
                "hidden_tests": "def test_empty(): assert sort([]) == []"
            }
        })),
    )
    .await;
    let tested_id = tested["id"].as_str().unwrap().to_owned();
    // then the publish answer shows it all to the publisher
    assert_eq!(tested["description"], "Write sort(xs) in Python.");
    assert_eq!(tested["requirements"], json!({"python": ">=3.10"}));
    assert_eq!(tested["input_data"], json!({"xs": [3, 1, 2]}));
    assert_eq!(tested["tags"], json!(["python", "sorting"]));
    assert_eq!(tested["min_reputation"], 1.5);
    assert_eq!(
        tested["verification"]["hidden_tests"],
        "def test_empty(): assert sort([]) == []"
    );
    assert_eq!(
        tested["verification_summary"],
        "auto_tests: python tests must pass (plus hidden tests)"
    );

    // and an agent that has not claimed sees the spec without the tests
    let public = call(
        "GET",
        &url,
        &format!("/tasks/{tested_id}"),
        Some(&agent),
        None,
    )
    .await;
    assert_eq!(public["description"], "Write sort(xs) in Python.");
    assert_eq!(public["tags"], json!(["python", "sorting"]));
    assert!(public["verification"].get("tests").is_none());
    assert!(public["verification"].get("hidden_tests").is_none());
    assert_eq!(
        public["verification"]["redacted"],
        json!(["tests", "hidden_tests"])
    );

    // when it claims, it sees the visible tests but never the hidden ones
    call(
        "POST",
        &url,
        &format!("/tasks/{tested_id}/claim"),
        Some(&agent),
        None,
    )
    .await;
    let package = call(
        "GET",
        &url,
        &format!("/tasks/{tested_id}/verification"),
        Some(&agent),
        None,
    )
    .await;
    assert_eq!(
        package["verification"]["tests"],
        "def test_sort(): assert sort([2,1]) == [1,2]"
    );
    assert!(package["verification"].get("hidden_tests").is_none());

    // given a manual task, claimed, submitted with metadata, accepted with feedback
    let manual = call(
        "POST",
        &url,
        "/tasks",
        Some(&alice),
        Some(json!({
            "title": "Summarise",
            "description": "Three sentences.",
            "type": "text",
            "reward_credits": 10
        })),
    )
    .await;
    let manual_id = manual["id"].as_str().unwrap().to_owned();
    let claimed = call(
        "POST",
        &url,
        &format!("/tasks/{manual_id}/claim"),
        Some(&agent),
        None,
    )
    .await;
    let execution_id = claimed["id"].as_str().unwrap().to_owned();
    assert_eq!(claimed["result"], Value::Null);
    let submitted = call(
        "POST",
        &url,
        &format!("/tasks/{manual_id}/submit"),
        Some(&agent),
        Some(json!({"result": "One. Two. Three.", "result_metadata": {"sentences": 3}})),
    )
    .await;
    assert_eq!(submitted["result"], "One. Two. Three.");
    assert_eq!(submitted["result_metadata"], json!({"sentences": 3}));
    let verdict = call(
        "POST",
        &url,
        &format!("/tasks/{manual_id}/verify"),
        Some(&alice),
        Some(json!({"execution_id": execution_id, "accepted": true, "feedback": "Crisp.", "score": 9})),
    )
    .await;
    assert_eq!(verdict["feedback"], "Crisp.");
    assert_eq!(verdict["result"], "One. Two. Three.");
    assert_eq!(verdict["score"], 9.0);
    assert_eq!(verdict["verification_detail"], Value::Null);
    assert_eq!(verdict["settlement"].as_array().unwrap().len(), 1);

    // then every read view shows the same texts, before and after a restart
    let reads = [
        (alice.clone(), format!("/tasks/{tested_id}")),
        (alice.clone(), format!("/tasks/{manual_id}")),
        (alice.clone(), format!("/tasks/{tested_id}/verification")),
        (alice.clone(), format!("/tasks/{manual_id}/submissions")),
        (alice.clone(), format!("/executions/{execution_id}")),
        (alice.clone(), "/tasks?status=all".to_owned()),
        (alice.clone(), "/tasks/my/published".to_owned()),
        (agent.clone(), "/tasks/my/executions".to_owned()),
        (bob.clone(), format!("/executions/{execution_id}")),
    ];
    let mut before = Vec::new();
    for (key, path) in &reads {
        before.push(call("GET", &url, path, Some(key), None).await);
    }
    let detail = &before[4];
    assert_eq!(detail["result"], "One. Two. Three.");
    assert_eq!(detail["result_metadata"], json!({"sentences": 3}));
    assert_eq!(detail["feedback"], "Crisp.");
    assert_eq!(detail["status"], "accepted");
    let submissions = before[3]["submissions"].as_array().unwrap();
    assert_eq!(submissions[0]["result"], "One. Two. Three.");
    let all = before[5]["tasks"].as_array().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1]["requirements"], json!({"python": ">=3.10"}));
    let mine = before[7]["executions"].as_array().unwrap();
    assert_eq!(mine.len(), 2);
    assert_eq!(mine[0]["feedback"], "Crisp.");

    running.stop().await.unwrap();
    let running = server(&dir).await;
    let url = format!("http://{}", running.addr);
    for ((key, path), was) in reads.iter().zip(&before) {
        let now = call("GET", &url, path, Some(key), None).await;
        assert_eq!(&now, was, "{path} changed across a restart");
    }
    running.stop().await.unwrap();
}
