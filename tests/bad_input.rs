//! The bad-input catalogue over HTTP (issue 7): a table of malformed
//! requests on every write route, each sent as raw bytes by a real client
//! to one shared server. For every case: a 4xx (never a 5xx, a hang or a
//! dropped connection), the one error shape with the expected stable code
//! (and the field named for `validation_failed`), and the head of the log
//! unchanged afterwards: nothing appended.
//!
//! Categories: body framing (empty, not JSON, trailing bytes, wrong JSON
//! root, wrong Content-Type, over the body limit), fields (wrong types,
//! missing, unknown, oversized), numbers (negative, zero, fractional, huge),
//! UUIDs in paths and bodies, encodings (non-UTF-8 bytes, lone surrogates,
//! percent-encoded bytes), deep nesting, deadlines, and principals and
//! headers that `tests/http_auth.rs` does not already cover (revoked and
//! rotated keys, malformed and repeated `Authorization`, huge tokens).
//! Valid-but-unusual text (emoji, ZWJ, RTL override, NUL) is accepted and
//! must round-trip exactly: see `unusual_but_valid_text_is_kept_exactly`.
//! The MCP cases are in `tests/mcp_bad_input.rs`.

mod common;

use common::{ADMIN_TOKEN, Server, assert_error_shape, rfc3339_in, task_body};
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The default `TASKLEDGER_BODY_LIMIT_BYTES` of test servers.
const BODY_LIMIT_BYTES: usize = 2 * 1024 * 1024;

/// One request of the catalogue and the answer it must get.
struct Case {
    category: &'static str,
    name: String,
    method: Method,
    path: String,
    /// Sent as `Authorization: Bearer <key>`.
    key: Option<String>,
    /// Extra headers, raw bytes (may be non-UTF-8), appended in order.
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Option<Vec<u8>>,
    /// `application/json` when a body is sent, unless set here.
    content_type: Option<&'static str>,
    status: u16,
    code: &'static str,
    /// For `validation_failed`: a field the answer must name (prefix match).
    field: Option<String>,
}

impl Case {
    fn new(category: &'static str, name: impl Into<String>, method: Method, path: &str) -> Self {
        Case {
            category,
            name: name.into(),
            method,
            path: path.to_owned(),
            key: None,
            headers: Vec::new(),
            body: None,
            content_type: None,
            status: 0,
            code: "",
            field: None,
        }
    }

    fn key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }

    fn header(mut self, name: &'static str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn json(self, v: Value) -> Self {
        self.raw(v.to_string())
    }

    fn raw(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.body = Some(bytes.into());
        self
    }

    fn content_type(mut self, ct: &'static str) -> Self {
        self.content_type = Some(ct);
        self
    }

    fn expect(mut self, status: u16, code: &'static str) -> Self {
        self.status = status;
        self.code = code;
        self
    }

    /// 400 `validation_failed` naming `field`.
    fn invalid(self, field: &str) -> Self {
        let mut c = self.expect(400, "validation_failed");
        c.field = Some(field.to_owned());
        c
    }

    fn bad_request(self) -> Self {
        self.expect(400, "bad_request")
    }
}

/// Send one case; `Err` says what went wrong.
async fn run(s: &Server, c: &Case) -> Result<(), String> {
    let before = s.head_seq().await;
    let mut req = s.http.request(c.method.clone(), s.url(&c.path));
    if let Some(k) = &c.key {
        req = req.bearer_auth(k);
    }
    for (name, value) in &c.headers {
        let value = HeaderValue::from_bytes(value).map_err(|e| format!("bad test header: {e}"))?;
        req = req.header(HeaderName::from_static(name), value);
    }
    if let Some(b) = &c.body {
        req = req
            .header("content-type", c.content_type.unwrap_or("application/json"))
            .body(b.clone());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("no answer (hang or dropped connection): {e}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| format!("no body: {e}"))?;
    let shown: String = text.chars().take(300).collect();
    if !(400..500).contains(&status) {
        return Err(format!("answered {status}, not a 4xx: {shown}"));
    }
    let body: Value = serde_json::from_str(&text)
        .map_err(|_| format!("{status} with a body that is not JSON: {shown}"))?;
    let shape = std::panic::catch_unwind(|| {
        assert_error_shape(&c.method, &c.path, status, &body, &text);
    });
    if shape.is_err() {
        return Err(format!("{status} not in the one error shape: {shown}"));
    }
    let code = body["code"].as_str().unwrap_or("");
    if (status, code) != (c.status, c.code) {
        return Err(format!(
            "expected {} {}, got {status} {code}: {shown}",
            c.status, c.code
        ));
    }
    if let Some(f) = &c.field {
        let named: Vec<&str> = body["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x["field"].as_str())
            .collect();
        if !named.iter().any(|n| n.starts_with(f.as_str())) {
            return Err(format!("fields {named:?} do not name `{f}`: {shown}"));
        }
    }
    let after = s.head_seq().await;
    if after != before {
        return Err(format!("the log grew from seq {before} to {after}"));
    }
    Ok(())
}

/// `{...base, key: value}`.
fn with(base: &Value, key: &str, value: Value) -> Value {
    let mut v = base.clone();
    v[key] = value;
    v
}

/// `base` without `key`.
fn without(base: &Value, key: &str) -> Value {
    let mut v = base.clone();
    v.as_object_mut().expect("an object").remove(key);
    v
}

/// `n` nested arrays: `[[[...]]]`.
fn nested(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

/// A JSON text of `base` with `key` set to the raw JSON `raw` (which need
/// not be valid JSON: deep nesting, bad escapes).
fn splice(base: &Value, key: &str, raw: &str) -> Vec<u8> {
    let mut v = base.clone();
    v[key] = json!("\u{1}MARK\u{1}");
    v.to_string()
        .replace("\"\\u0001MARK\\u0001\"", raw)
        .into_bytes()
}

/// A write route and a body it would accept from `key` (or refuse for a
/// reason that appends nothing), for the body framing cases.
struct Route {
    name: &'static str,
    path: String,
    key: Option<String>,
    headers: Vec<(&'static str, Vec<u8>)>,
    valid: Value,
    /// A body that is valid JSON and the right shape, with a field that is
    /// not (so the wrong-Content-Type case proves the body is still checked).
    invalid: (Value, &'static str),
}

impl Route {
    fn case(&self, category: &'static str, what: &str) -> Case {
        let mut c = Case::new(
            category,
            format!("{}: {what}", self.name),
            Method::POST,
            &self.path,
        );
        c.key = self.key.clone();
        c.headers = self.headers.clone();
        c
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_a_clear_4xx_and_appends_nothing() {
    let s = Server::start_with(|c| c.redeem_enabled = true).await;
    let a = s.register("alice").await;
    let ak = s.agent(&a, "alice-1").await;
    let b = s.register("bob").await;
    let bk = s.agent(&b, "bob-1").await;
    let open = s.publish_reward(&a, 10).await;
    let claimed = s.publish_reward(&a, 10).await;
    let x = s.claim(&bk, &claimed).await;
    let revoked = s.agent(&b, "bob-spare").await;
    s.call(
        Method::DELETE,
        &format!("/accounts/me/agent-keys/{}", revoked.id),
        Some(&b.key),
        None,
        &[],
    )
    .await
    .expect(200);
    let d = s.register("dave").await;
    s.post_empty("/accounts/me/rotate-key", &d.key)
        .await
        .expect(200);
    let rotated_away = d.key.clone();
    let no_flag = "6f1c1a9e-0000-4000-8000-000000000001";
    let admin = vec![("x-admin-token", ADMIN_TOKEN.as_bytes().to_vec())];

    let routes = vec![
        Route {
            name: "register",
            path: "/accounts/register".into(),
            key: None,
            headers: vec![],
            valid: json!({"type": "human", "name": "eve"}),
            invalid: (json!({"type": "human", "name": ""}), "name"),
        },
        Route {
            name: "issue agent key",
            path: "/accounts/me/agent-keys".into(),
            key: Some(a.key.clone()),
            headers: vec![],
            valid: json!({"name": "k", "compute_source": "local_model"}),
            invalid: (
                json!({"name": "k", "compute_source": "bogus"}),
                "compute_source",
            ),
        },
        Route {
            name: "redeem",
            path: "/accounts/me/redeem".into(),
            key: Some(a.key.clone()),
            headers: vec![],
            valid: json!({"amount": 1}),
            invalid: (json!({"amount": 0}), "amount"),
        },
        Route {
            name: "publish",
            path: "/tasks".into(),
            key: Some(a.key.clone()),
            headers: vec![],
            valid: task_body(10),
            invalid: (
                with(&task_body(10), "reward_credits", json!(0)),
                "reward_credits",
            ),
        },
        Route {
            name: "submit",
            path: format!("/tasks/{claimed}/submit"),
            key: Some(bk.key.clone()),
            headers: vec![],
            valid: json!({"result": "done"}),
            invalid: (json!({"result": "  "}), "result"),
        },
        Route {
            name: "verify",
            path: format!("/tasks/{claimed}/verify"),
            key: Some(a.key.clone()),
            headers: vec![],
            valid: json!({"execution_id": x, "accepted": false}),
            invalid: (
                json!({"execution_id": x, "accepted": true, "score": 11}),
                "score",
            ),
        },
        Route {
            name: "release flag",
            path: format!("/admin/risk-flags/{no_flag}/release"),
            key: None,
            headers: admin.clone(),
            valid: json!({"reason": "checked"}),
            invalid: (json!({"reason": ""}), "reason"),
        },
        Route {
            name: "confirm flag",
            path: format!("/admin/risk-flags/{no_flag}/confirm"),
            key: None,
            headers: admin.clone(),
            valid: json!({"reason": "checked"}),
            invalid: (json!({"reason": ""}), "reason"),
        },
    ];

    let mut cases: Vec<Case> = Vec::new();

    // ---- body framing, on every route that reads a body ----
    for r in &routes {
        let v = r.valid.to_string();
        let framing = "body framing";
        cases.push(r.case(framing, "empty body").raw("").bad_request());
        cases.push(r.case(framing, "not JSON").raw("name=eve").bad_request());
        cases.push(
            r.case(framing, "truncated JSON")
                .raw(&v[..v.len() - 1])
                .bad_request(),
        );
        cases.push(
            r.case(framing, "trailing bytes after the JSON")
                .raw(format!("{v} trailing"))
                .bad_request(),
        );
        cases.push(
            r.case(framing, "two JSON values")
                .raw(format!("{v}{v}"))
                .bad_request(),
        );
        for root in ["null", "[]", "42", "\"text\"", "true"] {
            cases.push(
                r.case(framing, &format!("JSON root {root}"))
                    .raw(root)
                    .invalid("body"),
            );
        }
        cases.push(
            r.case(framing, "Content-Type text/plain")
                .json(r.valid.clone())
                .content_type("text/plain")
                .bad_request(),
        );
        cases.push(
            r.case(framing, "Content-Type form")
                .json(r.valid.clone())
                .content_type("application/x-www-form-urlencoded")
                .bad_request(),
        );
        cases.push(
            r.case(framing, "application/json; charset=utf-8, invalid field")
                .json(r.invalid.0.clone())
                .content_type("application/json; charset=utf-8")
                .invalid(r.invalid.1),
        );
        let mut big = r.valid.clone();
        big["padding"] = json!("a".repeat(BODY_LIMIT_BYTES));
        cases.push(
            r.case(framing, "body over the limit")
                .json(big)
                .expect(413, "too_large"),
        );
        cases.push(
            r.case("fields", "unknown field")
                .json(with(&r.valid, "bogus", json!(1)))
                .invalid("bogus"),
        );
        let mut bytes = v.clone().into_bytes();
        let quote = bytes.iter().rposition(|b| *b == b'"').expect("a string");
        bytes.splice(quote..quote, [0xff, 0xfe]);
        cases.push(
            r.case("encoding", "non-UTF-8 bytes in a string")
                .raw(bytes.clone())
                .bad_request(),
        );
        let mut overlong = v.clone().into_bytes();
        overlong.splice(quote..quote, [0xc0, 0xaf]);
        cases.push(
            r.case("encoding", "overlong UTF-8 sequence")
                .raw(overlong)
                .bad_request(),
        );
        cases.push(
            r.case("encoding", "UTF-16 body")
                .raw(
                    v.encode_utf16()
                        .flat_map(|u| u.to_le_bytes())
                        .collect::<Vec<u8>>(),
                )
                .bad_request(),
        );
        cases.push(
            r.case("encoding", "Idempotency-Key not ASCII")
                .json(r.valid.clone())
                .header("idempotency-key", vec![b'k', 0xff])
                .invalid("Idempotency-Key"),
        );
        cases.push(
            r.case("encoding", "Idempotency-Key of 201 characters")
                .json(r.valid.clone())
                .header("idempotency-key", "k".repeat(201))
                .invalid("Idempotency-Key"),
        );
    }

    // ---- register ----
    let reg = json!({"type": "human", "name": "eve"});
    let register = |name: &str| {
        Case::new(
            "fields",
            format!("register: {name}"),
            Method::POST,
            "/accounts/register",
        )
    };
    for (what, body, field) in [
        ("type a number", with(&reg, "type", json!(1)), "type"),
        ("type unknown", with(&reg, "type", json!("robot")), "type"),
        ("name a number", with(&reg, "name", json!(5)), "name"),
        ("name null", with(&reg, "name", Value::Null), "name"),
        ("name empty", with(&reg, "name", json!("")), "name"),
        ("name blank", with(&reg, "name", json!(" \t\n")), "name"),
        (
            "name of 101 characters",
            with(&reg, "name", json!("n".repeat(101))),
            "name",
        ),
        (
            "name of 101 emoji",
            with(&reg, "name", json!("😀".repeat(101))),
            "name",
        ),
        ("email a number", with(&reg, "email", json!(5)), "email"),
        (
            "email of 255 characters",
            with(&reg, "email", json!(format!("{}@x.io", "e".repeat(250)))),
            "email",
        ),
        (
            "compute_source a bool",
            with(&reg, "compute_source", json!(true)),
            "compute_source",
        ),
        (
            "compute_source of 65 characters",
            with(&reg, "compute_source", json!("c".repeat(65))),
            "compute_source",
        ),
        (
            "attestation of 2001 characters",
            with(&reg, "compute_attestation", json!("a".repeat(2001))),
            "compute_attestation",
        ),
        (
            "metadata over 16 KiB",
            with(&reg, "metadata", json!({"k": "m".repeat(16 * 1024)})),
            "metadata",
        ),
        ("missing type", without(&reg, "type"), "type"),
        ("missing name", without(&reg, "name"), "name"),
        (
            "agent without compute_source",
            with(&reg, "type", json!("agent")),
            "compute_source",
        ),
    ] {
        cases.push(register(what).json(body).invalid(field));
    }
    cases.push(
        register("name twice")
            .raw(r#"{"type":"human","name":"a","name":"b"}"#)
            .invalid("name"),
    );
    cases.push(
        register("type twice")
            .raw(r#"{"type":"agent","name":"a","type":"human"}"#)
            .invalid("type"),
    );
    cases.push(
        register("metadata nested 10,000 deep")
            .raw(splice(&reg, "metadata", &nested(10_000)))
            .bad_request(),
    );
    cases.push(
        register("name a lone surrogate")
            .raw(splice(&reg, "name", "\"\\ud800\""))
            .bad_request(),
    );
    cases.push(
        register("name a lone trailing surrogate")
            .raw(splice(&reg, "name", "\"a\\udc00b\""))
            .bad_request(),
    );
    cases.push(
        register("name a raw control character")
            .raw(splice(&reg, "name", "\"a\u{1}b\""))
            .bad_request(),
    );

    // ---- agent keys ----
    let akb = json!({"name": "k", "compute_source": "local_model"});
    let issue = |what: &str| {
        Case::new(
            "fields",
            format!("issue agent key: {what}"),
            Method::POST,
            "/accounts/me/agent-keys",
        )
        .key(&a.key)
    };
    for (what, body, field) in [
        ("name an array", with(&akb, "name", json!([])), "name"),
        (
            "name of 101 characters",
            with(&akb, "name", json!("n".repeat(101))),
            "name",
        ),
        (
            "compute_source a bool",
            with(&akb, "compute_source", json!(true)),
            "compute_source",
        ),
        (
            "compute_source missing",
            without(&akb, "compute_source"),
            "compute_source",
        ),
        (
            "compute_source of 65 characters",
            with(&akb, "compute_source", json!("c".repeat(65))),
            "compute_source",
        ),
        ("missing name", without(&akb, "name"), "name"),
    ] {
        cases.push(issue(what).json(body).invalid(field));
    }
    let revoke = |what: &str, id: &str| {
        Case::new(
            "uuids",
            format!("revoke agent key: {what}"),
            Method::DELETE,
            &format!("/accounts/me/agent-keys/{id}"),
        )
        .key(&a.key)
    };
    cases.push(revoke("not a UUID", "not-a-uuid").invalid("id"));
    cases.push(revoke("UUID plus a digit", &format!("{}0", ak.id)).invalid("id"));
    cases.push(revoke("percent-encoded invalid UTF-8", "%FF%FE").invalid("id"));
    cases.push(revoke("percent-encoded NUL", "%00").invalid("id"));
    cases.push(revoke("1000 characters", &"a".repeat(1000)).invalid("id"));
    cases.push(revoke("another owner's key", &bk.id).expect(404, "not_found"));
    cases.push(revoke("an unknown key", no_flag).expect(404, "not_found"));

    // ---- redeem ----
    let redeem = |what: &str| {
        Case::new(
            "numbers",
            format!("redeem: {what}"),
            Method::POST,
            "/accounts/me/redeem",
        )
        .key(&a.key)
    };
    for (what, raw) in [
        ("amount -1", "-1"),
        ("amount 1.5", "1.5"),
        ("amount 2^64", "18446744073709551616"),
        ("amount 1e308", "1e308"),
        ("amount a string", "\"10\""),
        ("amount null", "null"),
    ] {
        cases.push(
            redeem(what)
                .raw(format!("{{\"amount\":{raw}}}"))
                .invalid("amount"),
        );
    }
    cases.push(
        redeem("amount 1e400")
            .raw("{\"amount\":1e400}")
            .bad_request(),
    );
    cases.push(
        redeem("amount 0")
            .json(json!({"amount": 0}))
            .invalid("amount"),
    );
    cases.push(
        redeem("amount u64::MAX")
            .json(json!({"amount": u64::MAX}))
            .invalid("amount"),
    );
    cases.push(
        redeem("amount above the earned balance")
            .json(json!({"amount": 1}))
            .expect(402, "insufficient_credits"),
    );
    cases.push(redeem("missing amount").json(json!({})).invalid("amount"));

    // ---- publish ----
    let t = task_body(10);
    let publish = |category: &'static str, what: &str| {
        Case::new(category, format!("publish: {what}"), Method::POST, "/tasks").key(&a.key)
    };
    for (what, body, field) in [
        ("title a number", with(&t, "title", json!(1)), "title"),
        ("title null", with(&t, "title", Value::Null), "title"),
        ("title empty", with(&t, "title", json!("")), "title"),
        (
            "title of 201 characters",
            with(&t, "title", json!("t".repeat(201))),
            "title",
        ),
        (
            "title of 201 emoji",
            with(&t, "title", json!("😀".repeat(201))),
            "title",
        ),
        (
            "title of 201 ZWJ sequences",
            with(&t, "title", json!("\u{200d}".repeat(201))),
            "title",
        ),
        (
            "description null",
            with(&t, "description", Value::Null),
            "description",
        ),
        (
            "description of 20,001 characters",
            with(&t, "description", json!("d".repeat(20_001))),
            "description",
        ),
        ("type an object", with(&t, "type", json!({})), "type"),
        (
            "type of 51 characters",
            with(&t, "type", json!("t".repeat(51))),
            "type",
        ),
        (
            "deadline a number",
            with(&t, "deadline", json!(1_700_000_000)),
            "deadline",
        ),
        (
            "max_executors a string",
            with(&t, "max_executors", json!("2")),
            "max_executors",
        ),
        ("tags a string", with(&t, "tags", json!("a")), "tags"),
        ("tags of numbers", with(&t, "tags", json!([1])), "tags"),
        ("21 tags", with(&t, "tags", json!(vec!["x"; 21])), "tags"),
        (
            "a tag of 51 characters",
            with(&t, "tags", json!(["t".repeat(51)])),
            "tags",
        ),
        ("an empty tag", with(&t, "tags", json!([""])), "tags"),
        (
            "min_reputation a string",
            with(&t, "min_reputation", json!("3")),
            "min_reputation",
        ),
        (
            "requirements over 64 KiB",
            with(&t, "requirements", json!("r".repeat(64 * 1024))),
            "requirements",
        ),
        (
            "input_data over 64 KiB",
            with(&t, "input_data", json!(["i".repeat(64 * 1024)])),
            "input_data",
        ),
        (
            "verification a string",
            with(&t, "verification", json!("manual")),
            "verification",
        ),
        (
            "verification mode unknown",
            with(&t, "verification", json!({"mode": "nope"})),
            "verification",
        ),
        (
            "verification unknown field",
            with(&t, "verification", json!({"mode": "manual", "x": 1})),
            "verification",
        ),
        (
            "auto_rules without rules",
            with(&t, "verification", json!({"mode": "auto_rules"})),
            "verification",
        ),
        (
            "auto_rules with no rules",
            with(
                &t,
                "verification",
                json!({"mode": "auto_rules", "rules": []}),
            ),
            "verification.rules",
        ),
        (
            "51 rules",
            with(
                &t,
                "verification",
                json!({"mode": "auto_rules", "rules": vec![json!({"type": "contains", "value": "x"}); 51]}),
            ),
            "verification.rules",
        ),
        (
            "a rule value of 1001 characters",
            with(
                &t,
                "verification",
                json!({"mode": "auto_rules", "rules": [{"type": "contains", "value": "v".repeat(1001)}]}),
            ),
            "verification.rules[0]",
        ),
        (
            "a rule type unknown",
            with(
                &t,
                "verification",
                json!({"mode": "auto_rules", "rules": [{"type": "nope", "value": "x"}]}),
            ),
            "verification",
        ),
        (
            "a rule value an array",
            with(
                &t,
                "verification",
                json!({"mode": "auto_rules", "rules": [{"type": "contains", "value": [1]}]}),
            ),
            "verification.rules[0]",
        ),
        (
            "min_length not a number",
            with(
                &t,
                "verification",
                json!({"mode": "auto_rules", "rules": [{"type": "min_length", "value": "ten"}]}),
            ),
            "verification.rules[0]",
        ),
        (
            "min_length negative",
            with(
                &t,
                "verification",
                json!({"mode": "auto_rules", "rules": [{"type": "min_length", "value": -1}]}),
            ),
            "verification.rules[0]",
        ),
        (
            "tests over 256 KiB",
            with(
                &t,
                "verification",
                json!({"mode": "auto_tests", "language": "python", "tests": "#".repeat(256 * 1024 + 1)}),
            ),
            "verification",
        ),
        (
            "tests language unknown",
            with(
                &t,
                "verification",
                json!({"mode": "auto_tests", "language": "cobol", "tests": "x"}),
            ),
            "verification",
        ),
        (
            "rubric of 10,001 characters",
            with(
                &t,
                "verification",
                json!({"mode": "auto_llm", "rubric": "r".repeat(10_001)}),
            ),
            "verification",
        ),
        (
            "pass_threshold 11",
            with(
                &t,
                "verification",
                json!({"mode": "auto_llm", "rubric": "r", "pass_threshold": 11}),
            ),
            "verification.pass_threshold",
        ),
        ("missing title", without(&t, "title"), "title"),
        ("missing type", without(&t, "type"), "type"),
        (
            "missing reward_credits",
            without(&t, "reward_credits"),
            "reward_credits",
        ),
    ] {
        cases.push(publish("fields", what).json(body).invalid(field));
    }
    for (field, raws) in [
        (
            "reward_credits",
            &[
                "-1",
                "0",
                "1.5",
                "18446744073709551615",
                "18446744073709551616",
                "1e308",
                "1000000001",
                "\"10\"",
                "null",
            ][..],
        ),
        (
            "max_executors",
            &[
                "-1",
                "0",
                "11",
                "256",
                "1.5",
                "18446744073709551616",
                "1e308",
            ][..],
        ),
        (
            "min_reputation",
            &["-0.01", "10.01", "1e308", "-1e308", "\"3\""][..],
        ),
    ] {
        for raw in raws {
            cases.push(
                publish("numbers", &format!("{field} {raw}"))
                    .raw(splice(&t, field, raw))
                    .invalid(field),
            );
        }
    }
    cases.push(
        publish("numbers", "reward_credits 1e400")
            .raw(splice(&t, "reward_credits", "1e400"))
            .bad_request(),
    );
    cases.push(
        publish("numbers", "reward_credits above the wallet")
            .json(with(&t, "reward_credits", json!(1001)))
            .expect(402, "insufficient_credits"),
    );
    cases.push(
        publish("nesting", "input_data nested 10,000 deep")
            .raw(splice(&t, "input_data", &nested(10_000)))
            .bad_request(),
    );
    cases.push(
        publish("nesting", "requirements nested 10,000 deep objects")
            .raw(splice(
                &t,
                "requirements",
                &format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000)),
            ))
            .bad_request(),
    );
    cases.push(
        publish("nesting", "a rule value nested 10,000 deep")
            .raw(
                with(&t, "verification", json!({"mode": "auto_rules", "rules": [{"type": "json_path_equals", "path": "a", "value": "\u{1}MARK\u{1}"}]}))
                    .to_string()
                    .replace("\"\\u0001MARK\\u0001\"", &nested(10_000)),
            )
            .bad_request(),
    );
    cases.push(
        publish("encoding", "title a lone surrogate")
            .raw(splice(&t, "title", "\"x\\ud800\""))
            .bad_request(),
    );
    cases.push(
        publish("encoding", "title a surrogate pair reversed")
            .raw(splice(&t, "title", "\"\\udc00\\ud800\""))
            .bad_request(),
    );
    for (what, deadline) in [
        ("in the past", rfc3339_in(-60_000)),
        ("now", rfc3339_in(0)),
        ("in 400 days", rfc3339_in(400 * 24 * 3600 * 1000)),
        ("year 9999", "9999-12-31T23:59:59Z".into()),
        ("beyond chrono's range", "+262144-01-01T00:00:00Z".into()),
        ("year 10000", "10000-01-01T00:00:00Z".into()),
        ("a negative year", "-0001-01-01T00:00:00Z".into()),
        ("before the epoch", "1969-12-31T23:59:59Z".into()),
        ("the epoch", "1970-01-01T00:00:00Z".into()),
        ("not a time", "tomorrow".into()),
        ("empty", String::new()),
        ("without a zone", "2027-01-01T00:00:00".into()),
        ("a date only", "2027-01-01".into()),
        ("month 13", "2027-13-01T00:00:00Z".into()),
    ] {
        cases.push(
            publish("deadlines", &format!("deadline {what}"))
                .json(with(&t, "deadline", json!(deadline)))
                .invalid("deadline"),
        );
    }

    // ---- claim, submit, verify, cancel: ids and bodies ----
    let sub = json!({"result": "done"});
    let submit = |category: &'static str, what: &str| {
        Case::new(
            category,
            format!("submit: {what}"),
            Method::POST,
            &format!("/tasks/{claimed}/submit"),
        )
        .key(&bk.key)
    };
    for (what, body, field) in [
        ("result a number", json!({"result": 5}), "result"),
        ("result null", json!({"result": null}), "result"),
        ("result empty", json!({"result": ""}), "result"),
        ("missing result", json!({"result_metadata": {}}), "result"),
        (
            "result_metadata over 64 KiB",
            json!({"result": "r", "result_metadata": {"m": "m".repeat(64 * 1024)}}),
            "result_metadata",
        ),
    ] {
        cases.push(submit("fields", what).json(body).invalid(field));
    }
    cases.push(
        submit("fields", "result of 1 MiB + 1")
            .json(json!({"result": "r".repeat(1024 * 1024 + 1)}))
            .expect(413, "too_large"),
    );
    cases.push(
        submit("fields", "result of 1 MiB + 1 in 4-byte characters")
            .json(json!({"result": format!("{}r", "😀".repeat(256 * 1024))}))
            .expect(413, "too_large"),
    );
    cases.push(
        submit("nesting", "result_metadata nested 10,000 deep")
            .raw(splice(&sub, "result_metadata", &nested(10_000)))
            .bad_request(),
    );
    cases.push(
        submit("nesting", "result_metadata nested 100,000 deep")
            .raw(splice(&sub, "result_metadata", &nested(100_000)))
            .bad_request(),
    );
    cases.push(
        submit("encoding", "result a lone surrogate")
            .raw(splice(&sub, "result", "\"\\ud800\""))
            .bad_request(),
    );
    let ver = json!({"execution_id": x, "accepted": true});
    let verify = |category: &'static str, what: &str| {
        Case::new(
            category,
            format!("verify: {what}"),
            Method::POST,
            &format!("/tasks/{claimed}/verify"),
        )
        .key(&a.key)
    };
    for (what, body, field) in [
        (
            "execution_id not a UUID",
            with(&ver, "execution_id", json!("not-a-uuid")),
            "execution_id",
        ),
        (
            "execution_id empty",
            with(&ver, "execution_id", json!("")),
            "execution_id",
        ),
        (
            "execution_id too long",
            with(&ver, "execution_id", json!(format!("{x}0"))),
            "execution_id",
        ),
        (
            "execution_id a number",
            with(&ver, "execution_id", json!(5)),
            "execution_id",
        ),
        (
            "accepted a string",
            with(&ver, "accepted", json!("yes")),
            "accepted",
        ),
        ("accepted 1", with(&ver, "accepted", json!(1)), "accepted"),
        (
            "feedback a number",
            with(&ver, "feedback", json!(5)),
            "feedback",
        ),
        (
            "reopen a string",
            with(&ver, "reopen", json!("no")),
            "reopen",
        ),
        (
            "missing execution_id",
            without(&ver, "execution_id"),
            "execution_id",
        ),
        ("missing accepted", without(&ver, "accepted"), "accepted"),
    ] {
        let category = if what.contains("UUID") || what.contains("execution_id") {
            "uuids"
        } else {
            "fields"
        };
        cases.push(verify(category, what).json(body).invalid(field));
    }
    for raw in [
        "-1",
        "-0.01",
        "10.01",
        "11",
        "1e308",
        "18446744073709551616",
        "\"8\"",
    ] {
        cases.push(
            verify("numbers", &format!("score {raw}"))
                .raw(splice(&ver, "score", raw))
                .invalid("score"),
        );
    }
    cases.push(
        verify("fields", "feedback of 10,001 characters")
            .json(with(
                &with(&ver, "accepted", json!(false)),
                "feedback",
                json!("f".repeat(10_001)),
            ))
            .invalid("feedback"),
    );
    cases.push(
        verify("uuids", "an execution of another task")
            .json(with(&ver, "execution_id", json!(no_flag)))
            .expect(404, "not_found"),
    );
    for (route, key, body) in [
        ("claim", &bk.key, None),
        ("submit", &bk.key, Some(sub.clone())),
        ("verify", &a.key, Some(ver.clone())),
        ("cancel", &a.key, None),
    ] {
        for (what, id) in [
            ("not a UUID", "not-a-uuid".to_owned()),
            ("UUID plus a digit", format!("{open}0")),
            (
                "UUID without dashes plus junk",
                format!("{}zz", open.replace('-', "")),
            ),
            ("percent-encoded invalid UTF-8", "%C3%28".to_owned()),
            ("percent-encoded NUL", "%00".to_owned()),
            ("a 10,000 character id", "a".repeat(10_000)),
        ] {
            let mut c = Case::new(
                "uuids",
                format!("{route}: task id {what}"),
                Method::POST,
                &format!("/tasks/{id}/{route}"),
            )
            .key(key);
            if let Some(b) = &body {
                c = c.json(b.clone());
            }
            cases.push(c.invalid("id"));
        }
        let mut c = Case::new(
            "uuids",
            format!("{route}: empty task id"),
            Method::POST,
            &format!("/tasks//{route}"),
        )
        .key(key);
        if let Some(b) = &body {
            c = c.json(b.clone());
        }
        cases.push(c.invalid("id"));
        let mut c = Case::new(
            "uuids",
            format!("{route}: unknown task"),
            Method::POST,
            &format!("/tasks/{no_flag}/{route}"),
        )
        .key(key);
        if let Some(b) = &body {
            c = c.json(b.clone());
        }
        cases.push(c.expect(404, "not_found"));
    }
    for route in ["release", "confirm"] {
        let flag = |what: &str, id: &str| {
            Case::new(
                "uuids",
                format!("{route} flag: {what}"),
                Method::POST,
                &format!("/admin/risk-flags/{id}/{route}"),
            )
            .header("x-admin-token", ADMIN_TOKEN)
            .json(json!({"reason": "checked"}))
        };
        cases.push(flag("not a UUID", "not-a-uuid").invalid("id"));
        cases.push(flag("percent-encoded invalid UTF-8", "%FF").invalid("id"));
        cases.push(flag("unknown", no_flag).expect(404, "not_found"));
        cases.push(
            flag("reason of 1001 characters", no_flag)
                .json(json!({"reason": "r".repeat(1001)}))
                .invalid("reason"),
        );
        cases.push(
            flag("reason a number", no_flag)
                .json(json!({"reason": 5}))
                .invalid("reason"),
        );
        cases.push(
            flag("missing reason", no_flag)
                .json(json!({}))
                .invalid("reason"),
        );
    }
    // Queries with bad bytes and numbers (reads: they must still be 4xx).
    for q in [
        "limit=%FF",
        "limit=-1",
        "limit=1e3",
        "limit=0",
        "limit=101",
        "offset=18446744073709551616",
        "status=%00",
        "bogus=1",
    ] {
        let field = if q.starts_with("limit=0") || q.starts_with("limit=101") {
            "limit"
        } else {
            if q.starts_with("status") {
                "status"
            } else {
                "query"
            }
        };
        cases.push(
            Case::new(
                "encoding",
                format!("list tasks ?{q}"),
                Method::GET,
                &format!("/tasks?{q}"),
            )
            .key(&a.key)
            .invalid(field),
        );
    }

    // ---- principals and headers http_auth.rs does not cover ----
    let owner_writes: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            "/accounts/me/agent-keys".into(),
            Some(akb.clone()),
        ),
        (
            Method::POST,
            "/accounts/me/redeem".into(),
            Some(json!({"amount": 1})),
        ),
        (Method::POST, "/accounts/me/rotate-key".into(), None),
        (
            Method::DELETE,
            format!("/accounts/me/agent-keys/{}", ak.id),
            None,
        ),
        (Method::POST, "/tasks".into(), Some(t.clone())),
        (
            Method::POST,
            format!("/tasks/{claimed}/verify"),
            Some(ver.clone()),
        ),
        (Method::POST, format!("/tasks/{open}/cancel"), None),
    ];
    let agent_writes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::POST, format!("/tasks/{open}/claim"), None),
        (
            Method::POST,
            format!("/tasks/{claimed}/submit"),
            Some(sub.clone()),
        ),
    ];
    let principal = |what: String, m: &Method, path: &str, body: &Option<Value>| {
        let c = Case::new("principals", what, m.clone(), path);
        match body {
            Some(b) => c.json(b.clone()),
            None => c,
        }
    };
    for (m, path, body) in owner_writes.iter().chain(&agent_writes) {
        cases.push(
            principal(format!("{m} {path}: rotated-away owner key"), m, path, body)
                .key(&rotated_away)
                .expect(401, "unauthorized"),
        );
        cases.push(
            principal(format!("{m} {path}: revoked agent key"), m, path, body)
                .key(&revoked.key)
                .expect(401, "unauthorized"),
        );
        for (what, value) in [
            ("Bearer without a token", b"Bearer".to_vec()),
            ("Bearer and spaces", b"Bearer    ".to_vec()),
            ("Basic", format!("Basic {}", a.key).into_bytes()),
            ("the key without a scheme", a.key.clone().into_bytes()),
            (
                "Bearer with two tokens",
                format!("Bearer {} {}", a.key, bk.key).into_bytes(),
            ),
            (
                "a 10 KB token",
                format!("Bearer {}", "k".repeat(10 * 1024)).into_bytes(),
            ),
            (
                "non-UTF-8 bytes",
                [b"Bearer tlo_".as_slice(), &[0xff, 0xfe, 0x80]].concat(),
            ),
        ] {
            cases.push(
                principal(format!("{m} {path}: Authorization {what}"), m, path, body)
                    .header("authorization", value)
                    .expect(401, "unauthorized"),
            );
        }
        let good = if agent_writes.iter().any(|(_, p, _)| p == path) {
            &bk.key
        } else {
            &a.key
        };
        cases.push(
            principal(
                format!("{m} {path}: two Authorization headers, good first"),
                m,
                path,
                body,
            )
            .header("authorization", format!("Bearer {good}"))
            .header("authorization", "Bearer tlo_nope")
            .expect(401, "unauthorized"),
        );
        cases.push(
            principal(
                format!("{m} {path}: two Authorization headers, good last"),
                m,
                path,
                body,
            )
            .header("authorization", "Bearer tlo_nope")
            .header("authorization", format!("Bearer {good}"))
            .expect(401, "unauthorized"),
        );
        cases.push(
            principal(
                format!("{m} {path}: X-Market-Api-Key non-UTF-8"),
                m,
                path,
                body,
            )
            .header("x-market-api-key", vec![b't', 0xff])
            .expect(401, "unauthorized"),
        );
    }
    for (m, path, body) in &owner_writes {
        cases.push(
            principal(
                format!("{m} {path}: an agent key with a body"),
                m,
                path,
                &body.clone().or(Some(json!({}))),
            )
            .key(&ak.key)
            .expect(403, "forbidden"),
        );
    }
    for (m, path, body) in &agent_writes {
        cases.push(
            principal(
                format!("{m} {path}: an owner key with a body"),
                m,
                path,
                &body.clone().or(Some(json!({}))),
            )
            .key(&b.key)
            .expect(403, "forbidden"),
        );
    }
    for route in ["release", "confirm"] {
        let path = format!("/admin/risk-flags/{no_flag}/{route}");
        let body = Some(json!({"reason": "checked"}));
        for (what, value) in [
            ("non-UTF-8", vec![b't', 0xff]),
            ("10 KB", vec![b't'; 10 * 1024]),
            ("wrong", b"nope".to_vec()),
            (
                "with spaces around",
                format!("  {ADMIN_TOKEN}x ").into_bytes(),
            ),
        ] {
            cases.push(
                principal(
                    format!("{route} flag: X-Admin-Token {what}"),
                    &Method::POST,
                    &path,
                    &body,
                )
                .header("x-admin-token", value)
                .expect(401, "unauthorized"),
            );
        }
        cases.push(
            principal(
                format!("{route} flag: an owner key"),
                &Method::POST,
                &path,
                &body,
            )
            .key(&a.key)
            .expect(401, "unauthorized"),
        );
    }

    // ---- run ----
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &cases {
        *counts.entry(c.category).or_default() += 1;
        if let Err(why) = run(&s, c).await {
            failures.push(format!(
                "[{}] {} {} {}: {why}",
                c.category,
                c.method,
                c.path.chars().take(80).collect::<String>(),
                c.name
            ));
        }
    }
    println!(
        "{} cases in {:?}: {counts:?}",
        cases.len(),
        started.elapsed()
    );
    // Still up, still consistent.
    s.head_seq().await;
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(
        s.get("/accounts/me", &a.key).await.expect(200).body["id"],
        a.id
    );
    s.assert_reconciled().await;
    s.stop().await;
}

/// Valid text that looks odd is not refused: it is stored and shown back
/// byte for byte. Uppercase UUIDs parse. A deadline within the year is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusual_but_valid_text_is_kept_exactly() {
    let s = Server::start().await;
    for name in [
        "Zoë 👩‍💻 dev",                // ZWJ sequence, 4-byte emoji, precomposed
        "e\u{301}",                  // combining accent
        "admin\u{202e}txt.exe",      // RTL override
        "a\u{0}b",                   // NUL
        "zero\u{200b}width\u{feff}", // zero-width space, BOM
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",                   // astral plane letters
        &"😀".repeat(100),           // 100 characters, 400 bytes: at the limit
    ] {
        let r = s
            .call(
                Method::POST,
                "/accounts/register",
                None,
                Some(json!({"type": "human", "name": name})),
                &[],
            )
            .await
            .expect(201);
        assert_eq!(r.body["name"], name, "register answer");
        let id = r.body["id"].as_str().expect("id").to_owned();
        let key = r.body["api_key"].as_str().expect("key").to_owned();
        let me = s.get("/accounts/me", &key).await.expect(200);
        assert_eq!(me.body["name"], name, "/accounts/me");
        let public = s
            .get(&format!("/accounts/{}", id.to_uppercase()), &key)
            .await
            .expect(200);
        assert_eq!(public.body["name"], name, "public profile");
        assert_eq!(public.body["id"], id, "an uppercase id is the same id");
    }
    let a = s.register("alice").await;
    let title = "😀".repeat(200); // 200 characters, 800 bytes
    let mut body = task_body(10);
    body["title"] = json!(title);
    body["description"] = json!("line\u{2028}sep \u{202e}rtl \u{0} nul");
    body["tags"] = json!(["👩‍👩‍👧‍👦", "\u{200d}x"]);
    body["deadline"] = json!(rfc3339_in(24 * 3600 * 1000));
    body["input_data"] =
        json!({"deep": serde_json::from_str::<Value>(&nested(100)).expect("json")});
    let id = s.publish(&a, body.clone()).await;
    let task = s.task(&a.key, &id.to_uppercase()).await;
    assert_eq!(task["id"], id);
    for f in ["title", "description", "tags", "input_data"] {
        assert_eq!(task[f], body[f], "{f} round-trips");
    }
    s.stop().await;
}
