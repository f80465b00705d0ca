//! The texts the projections leave in the log (a task's full spec, a
//! result and its metadata, a verdict's feedback) come back through every
//! view that shows them, redacted as before, and the same after a restart
//! (which loads the snapshot and reads the texts from the reopened log).

mod common;

use common::Server;
use serde_json::{Value, json};

#[tokio::test]
async fn texts_in_the_log_come_back_through_every_view() {
    let mut s = Server::start().await;
    let alice = s.register("Alice").await.key;
    let bob = s.register("Bob").await;
    let agent = s.agent(&bob, "bob-1").await.key;
    let bob = bob.key;

    // given a task verified by tests, with every text a spec can carry
    let tested = s
        .post(
            "/tasks",
            &alice,
            json!({
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
            }),
        )
        .await
        .expect(201)
        .body;
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
    let public = s
        .get(&format!("/tasks/{tested_id}"), &agent)
        .await
        .expect(200)
        .body;
    assert_eq!(public["description"], "Write sort(xs) in Python.");
    assert_eq!(public["tags"], json!(["python", "sorting"]));
    assert!(public["verification"].get("tests").is_none());
    assert!(public["verification"].get("hidden_tests").is_none());
    assert_eq!(
        public["verification"]["redacted"],
        json!(["tests", "hidden_tests"])
    );

    // when it claims, it sees the visible tests but never the hidden ones
    s.post_empty(&format!("/tasks/{tested_id}/claim"), &agent)
        .await
        .expect(201);
    let package = s
        .get(&format!("/tasks/{tested_id}/verification"), &agent)
        .await
        .expect(200)
        .body;
    assert_eq!(
        package["verification"]["tests"],
        "def test_sort(): assert sort([2,1]) == [1,2]"
    );
    assert!(package["verification"].get("hidden_tests").is_none());

    // given a manual task, claimed, submitted with metadata, accepted with feedback
    let manual = s
        .post(
            "/tasks",
            &alice,
            json!({
                "title": "Summarise",
                "description": "Three sentences.",
                "type": "text",
                "reward_credits": 10
            }),
        )
        .await
        .expect(201)
        .body;
    let manual_id = manual["id"].as_str().unwrap().to_owned();
    let claimed = s
        .post_empty(&format!("/tasks/{manual_id}/claim"), &agent)
        .await
        .expect(201)
        .body;
    let execution_id = claimed["id"].as_str().unwrap().to_owned();
    assert_eq!(claimed["result"], Value::Null);
    let submitted = s
        .post(
            &format!("/tasks/{manual_id}/submit"),
            &agent,
            json!({"result": "One. Two. Three.", "result_metadata": {"sentences": 3}}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(submitted["result"], "One. Two. Three.");
    assert_eq!(submitted["result_metadata"], json!({"sentences": 3}));
    let verdict = s.post(&format!("/tasks/{manual_id}/verify"), &alice, json!({"execution_id": execution_id, "accepted": true, "feedback": "Crisp.", "score": 9})).await.expect(200).body;
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
        before.push(s.get(path, key).await.expect(200).body);
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

    s.restart(|_| {}).await;
    for ((key, path), was) in reads.iter().zip(&before) {
        let now = s.get(path, key).await.expect(200).body;
        assert_eq!(&now, was, "{path} changed across a restart");
    }
    s.stop().await;
}
