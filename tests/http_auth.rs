//! The auth matrix on every route of the router: no key, a bad key, the
//! publisher, its agent key, the executor's owner and agent key, and a
//! stranger's owner and agent key; operator routes without, with a wrong
//! and with the right `X-Admin-Token`, and 404 when no token is configured.
//! The route list is checked against `/api/v1/openapi.json` and API.md.

mod common;

use common::{ADMIN_TOKEN, Server, assert_error_shape, task_body};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Every route of API.md, as OpenAPI writes it.
const API_MD_ROUTES: [(&str, &str); 31] = [
    ("get", "/health"),
    ("post", "/api/v1/accounts/register"),
    ("get", "/api/v1/accounts/me"),
    ("get", "/api/v1/accounts/me/credits"),
    ("get", "/api/v1/accounts/me/ledger"),
    ("get", "/api/v1/accounts/me/reputation"),
    ("post", "/api/v1/accounts/me/redeem"),
    ("post", "/api/v1/accounts/me/rotate-key"),
    ("get", "/api/v1/accounts/{id}"),
    ("post", "/api/v1/accounts/me/agent-keys"),
    ("get", "/api/v1/accounts/me/agent-keys"),
    ("delete", "/api/v1/accounts/me/agent-keys/{id}"),
    ("get", "/api/v1/market/overview"),
    ("post", "/api/v1/tasks"),
    ("get", "/api/v1/tasks"),
    ("get", "/api/v1/tasks/{id}"),
    ("get", "/api/v1/tasks/{id}/verification"),
    ("post", "/api/v1/tasks/{id}/claim"),
    ("post", "/api/v1/tasks/{id}/submit"),
    ("post", "/api/v1/tasks/{id}/verify"),
    ("post", "/api/v1/tasks/{id}/cancel"),
    ("get", "/api/v1/tasks/{id}/submissions"),
    ("get", "/api/v1/tasks/my/executions"),
    ("get", "/api/v1/tasks/my/published"),
    ("get", "/api/v1/executions/{id}"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/admin/reconcile"),
    ("get", "/api/v1/admin/risk-flags"),
    ("post", "/api/v1/admin/risk-flags/{id}/release"),
    ("post", "/api/v1/admin/risk-flags/{id}/confirm"),
    ("get", "/metrics"),
];

/// Paths served outside the REST contract (other transports), allowed in
/// the document without an auth row here.
const OTHER_TRANSPORTS: [&str; 1] = ["/mcp"];

/// Who calls, in the order of the expectation arrays.
#[derive(Clone, Copy, Debug)]
enum Who {
    NoKey,
    BadKey,
    /// The publisher of the tasks under test.
    A,
    /// The publisher's agent key.
    Ak,
    /// The executor's owner.
    B,
    /// The executor (claimed and submitted).
    Bk,
    /// A stranger.
    C,
    /// A stranger's agent key (claims only where the table says).
    Ck,
}

const ORDER: [Who; 8] = [
    Who::NoKey,
    Who::BadKey,
    Who::A,
    Who::Ak,
    Who::B,
    Who::Bk,
    Who::C,
    Who::Ck,
];

struct Row {
    method: Method,
    /// As in OpenAPI, e.g. `/api/v1/tasks/{id}`.
    template: &'static str,
    /// The concrete path called.
    path: String,
    body: Option<Value>,
    /// Status per caller, in [`ORDER`].
    expect: [u16; 8],
}

/// Only owners may: 401 without a valid key, 403 for agent keys.
const OWNER_ONLY: [u16; 8] = [401, 401, 200, 403, 200, 403, 200, 403];
/// Any valid key.
const ANY_KEY: [u16; 8] = [401, 401, 200, 200, 200, 200, 200, 200];
/// Agent keys only.
const AGENT_ONLY: [u16; 8] = [401, 401, 403, 200, 403, 200, 403, 200];
/// The publisher only.
const PUBLISHER_ONLY: [u16; 8] = [401, 401, 200, 403, 403, 403, 403, 403];
/// Operator routes called with API keys (as Bearer) instead of the token.
const OPERATOR: [u16; 8] = [401; 8];

fn with(base: [u16; 8], ok: u16) -> [u16; 8] {
    base.map(|s| if s == 200 { ok } else { s })
}

/// Send one request and return its status; error bodies are checked for
/// the one shape; event streams are not read.
async fn status_of(
    s: &Server,
    method: &Method,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> u16 {
    let mut req = s.http.request(method.clone(), s.url(path));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let stream = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    if stream {
        return status;
    }
    let text = resp.text().await.expect("body");
    if status >= 400 {
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_error_shape(method, path, status, &v, &text);
        assert_ne!(
            v["error"].as_str().map(|e| e.starts_with("route ")),
            Some(true),
            "{method} {path} fell through to the router's fallback: {text}"
        );
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_kind_of_caller_as_the_table_says() {
    let s = Server::start_with(|c| c.redeem_enabled = true).await;
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
    let spare = s.agent(&a, "spare").await;
    let t = s.publish_reward(&a, 10).await;
    let x = s.claim(&bk, &t).await;
    s.submit(&bk, &t, "r").await;
    let mut t2_body = task_body(10);
    t2_body["max_executors"] = json!(2);
    let t2 = s.publish(&a, t2_body).await;
    let tc = s.publish_reward(&a, 10).await;
    let flag = "6f1c1a9e-0000-4000-8000-000000000001";
    let bad_key = format!("tlo_{}", "ab".repeat(32));

    let key_of = |w: Who| -> Option<String> {
        match w {
            Who::NoKey => None,
            Who::BadKey => Some(bad_key.clone()),
            Who::A => Some(a.key.clone()),
            Who::Ak => Some(ak.key.clone()),
            Who::B => Some(b.key.clone()),
            Who::Bk => Some(bk.key.clone()),
            Who::C => Some(c.key.clone()),
            Who::Ck => Some(ck.key.clone()),
        }
    };

    let row = |method: Method,
               template: &'static str,
               path: String,
               body: Option<Value>,
               expect: [u16; 8]| Row {
        method,
        template,
        path,
        body,
        expect,
    };
    let rows = vec![
        row(Method::GET, "/health", "/health".into(), None, [200; 8]),
        row(
            Method::POST,
            "/api/v1/accounts/register",
            "/accounts/register".into(),
            Some(json!({"type": "agent", "name": "r", "compute_source": "local_model"})),
            [201; 8],
        ),
        row(
            Method::GET,
            "/api/v1/accounts/me",
            "/accounts/me".into(),
            None,
            ANY_KEY,
        ),
        row(
            Method::GET,
            "/api/v1/accounts/me/credits",
            "/accounts/me/credits".into(),
            None,
            ANY_KEY,
        ),
        row(
            Method::GET,
            "/api/v1/accounts/me/ledger",
            "/accounts/me/ledger".into(),
            None,
            OWNER_ONLY,
        ),
        row(
            Method::GET,
            "/api/v1/accounts/me/reputation",
            "/accounts/me/reputation".into(),
            None,
            ANY_KEY,
        ),
        // Nobody has earned anything yet: owners get 402, agent keys 403.
        row(
            Method::POST,
            "/api/v1/accounts/me/redeem",
            "/accounts/me/redeem".into(),
            Some(json!({"amount": 1})),
            with(OWNER_ONLY, 402),
        ),
        row(
            Method::GET,
            "/api/v1/accounts/{id}",
            format!("/accounts/{}", a.id),
            None,
            ANY_KEY,
        ),
        row(
            Method::POST,
            "/api/v1/accounts/me/agent-keys",
            "/accounts/me/agent-keys".into(),
            Some(json!({"name": "extra", "compute_source": "payg_api_key"})),
            with(OWNER_ONLY, 201),
        ),
        row(
            Method::GET,
            "/api/v1/accounts/me/agent-keys",
            "/accounts/me/agent-keys".into(),
            None,
            OWNER_ONLY,
        ),
        // Another owner's key is as unknown as a missing one.
        row(
            Method::DELETE,
            "/api/v1/accounts/me/agent-keys/{id}",
            format!("/accounts/me/agent-keys/{}", spare.id),
            None,
            [401, 401, 200, 403, 404, 403, 404, 403],
        ),
        row(
            Method::GET,
            "/api/v1/market/overview",
            "/market/overview".into(),
            None,
            OWNER_ONLY,
        ),
        row(
            Method::POST,
            "/api/v1/tasks",
            "/tasks".into(),
            Some(task_body(1)),
            with(OWNER_ONLY, 201),
        ),
        row(Method::GET, "/api/v1/tasks", "/tasks".into(), None, ANY_KEY),
        row(
            Method::GET,
            "/api/v1/tasks/{id}",
            format!("/tasks/{t}"),
            None,
            ANY_KEY,
        ),
        row(
            Method::GET,
            "/api/v1/tasks/{id}/verification",
            format!("/tasks/{t}/verification"),
            None,
            ANY_KEY,
        ),
        // Owners cannot claim; nor can the publisher's own agent key.
        row(
            Method::POST,
            "/api/v1/tasks/{id}/claim",
            format!("/tasks/{t2}/claim"),
            None,
            [401, 401, 403, 403, 403, 201, 403, 201],
        ),
        // Only the keys that claimed it may submit.
        row(
            Method::POST,
            "/api/v1/tasks/{id}/submit",
            format!("/tasks/{t2}/submit"),
            Some(json!({"result": "r"})),
            [401, 401, 403, 403, 403, 200, 403, 200],
        ),
        row(
            Method::GET,
            "/api/v1/tasks/{id}/submissions",
            format!("/tasks/{t}/submissions"),
            None,
            PUBLISHER_ONLY,
        ),
        // The publisher and the executor (key and owner); nobody else.
        row(
            Method::GET,
            "/api/v1/executions/{id}",
            format!("/executions/{x}"),
            None,
            [401, 401, 200, 403, 200, 200, 403, 403],
        ),
        row(
            Method::POST,
            "/api/v1/tasks/{id}/verify",
            format!("/tasks/{t}/verify"),
            Some(json!({"execution_id": x, "accepted": true})),
            PUBLISHER_ONLY,
        ),
        row(
            Method::POST,
            "/api/v1/tasks/{id}/cancel",
            format!("/tasks/{tc}/cancel"),
            None,
            PUBLISHER_ONLY,
        ),
        row(
            Method::GET,
            "/api/v1/tasks/my/executions",
            "/tasks/my/executions".into(),
            None,
            AGENT_ONLY,
        ),
        row(
            Method::GET,
            "/api/v1/tasks/my/published",
            "/tasks/my/published".into(),
            None,
            OWNER_ONLY,
        ),
        row(
            Method::GET,
            "/api/v1/events",
            "/events".into(),
            None,
            ANY_KEY,
        ),
        row(
            Method::GET,
            "/api/v1/admin/reconcile",
            "/admin/reconcile".into(),
            None,
            OPERATOR,
        ),
        row(
            Method::GET,
            "/api/v1/admin/risk-flags",
            "/admin/risk-flags".into(),
            None,
            OPERATOR,
        ),
        row(
            Method::POST,
            "/api/v1/admin/risk-flags/{id}/release",
            format!("/admin/risk-flags/{flag}/release"),
            Some(json!({"reason": "checked"})),
            OPERATOR,
        ),
        row(
            Method::POST,
            "/api/v1/admin/risk-flags/{id}/confirm",
            format!("/admin/risk-flags/{flag}/confirm"),
            Some(json!({"reason": "checked"})),
            OPERATOR,
        ),
        row(Method::GET, "/metrics", "/metrics".into(), None, OPERATOR),
        // Last: it replaces the owners' keys.
        row(
            Method::POST,
            "/api/v1/accounts/me/rotate-key",
            "/accounts/me/rotate-key".into(),
            None,
            OWNER_ONLY,
        ),
    ];

    // The table covers API.md, and API.md is what the OpenAPI document lists.
    let table: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| (r.method.as_str().to_lowercase(), r.template.to_owned()))
        .collect();
    let api_md: BTreeSet<(String, String)> = API_MD_ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(table, api_md, "the auth table and API.md differ");
    let documented = openapi_routes(&s).await;
    assert_eq!(documented, api_md, "openapi.json and API.md differ");

    let mut failures = Vec::new();
    for r in &rows {
        for (i, who) in ORDER.iter().enumerate() {
            let key = key_of(*who);
            let got = status_of(&s, &r.method, &r.path, key.as_deref(), r.body.as_ref(), &[]).await;
            if got != r.expect[i] {
                failures.push(format!(
                    "{} {} as {who:?}: expected {}, got {got}",
                    r.method, r.path, r.expect[i]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "auth matrix:\n{}", failures.join("\n"));

    // Effects the table implies: the revoked and the rotated keys stop working.
    for (old, what) in [
        (&spare.key, "revoked agent key"),
        (&a.key, "rotated owner key"),
    ] {
        let r = s
            .call(Method::GET, "/accounts/me", Some(old), None, &[])
            .await;
        assert_eq!(
            (r.status, r.code()),
            (401, "unauthorized"),
            "{what}: {}",
            r.text
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_accepted_in_both_headers_and_nowhere_else() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let id = |r: common::Resp| r.expect(200).body["id"].as_str().unwrap().to_owned();
    let via_header = id(s
        .call(
            Method::GET,
            "/accounts/me",
            None,
            None,
            &[("X-Market-Api-Key", &a.key)],
        )
        .await);
    assert_eq!(via_header, a.id);
    let lower = format!("bearer {}", a.key);
    let via_lower = id(s
        .call(
            Method::GET,
            "/accounts/me",
            None,
            None,
            &[("Authorization", &lower)],
        )
        .await);
    assert_eq!(via_lower, a.id);
    for (name, value) in [
        ("Authorization", a.key.clone()),
        ("Authorization", format!("Basic {}", a.key)),
        ("Authorization", "Bearer ".to_owned()),
        ("X-Api-Key", a.key.clone()),
    ] {
        s.call(Method::GET, "/accounts/me", None, None, &[(name, &value)])
            .await
            .expect_err(401, "unauthorized");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_routes_need_the_right_admin_token() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let flag = "6f1c1a9e-0000-4000-8000-000000000001";
    let reason = json!({"reason": "checked"});
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/admin/reconcile".into(), None),
        (Method::GET, "/admin/risk-flags".into(), None),
        (
            Method::POST,
            format!("/admin/risk-flags/{flag}/release"),
            Some(reason.clone()),
        ),
        (
            Method::POST,
            format!("/admin/risk-flags/{flag}/confirm"),
            Some(reason.clone()),
        ),
        (Method::GET, "/metrics".into(), None),
    ];
    for (m, p, body) in &routes {
        for headers in [
            vec![],
            vec![("X-Admin-Token", "wrong")],
            vec![("X-Admin-Token", "")],
        ] {
            let r = s.call(m.clone(), p, None, body.clone(), &headers).await;
            assert_eq!(
                (r.status, r.code()),
                (401, "unauthorized"),
                "{m} {p} {headers:?}: {}",
                r.text
            );
        }
        // An owner key is no admin token, whatever the header.
        let r = s
            .call(
                m.clone(),
                p,
                Some(&a.key),
                body.clone(),
                &[("X-Admin-Token", &a.key)],
            )
            .await;
        assert_eq!(r.status, 401, "{m} {p}: {}", r.text);
    }
    let ok = [("X-Admin-Token", ADMIN_TOKEN)];
    let r = s
        .call(Method::GET, "/admin/reconcile", None, None, &ok)
        .await
        .expect(200);
    for f in [
        "ok", "head_seq", "issued", "wallets", "escrow", "redeemed", "diff",
    ] {
        assert!(!r.body[f].is_null(), "reconcile lacks {f}: {}", r.text);
    }
    assert_eq!(r.body["issued"], 1000);
    assert_eq!(r.body["wallets"]["gift"], 1000);
    let r = s
        .call(Method::GET, "/admin/risk-flags", None, None, &ok)
        .await
        .expect(200);
    assert_eq!(r.body["flags"], json!([]));
    for action in ["release", "confirm"] {
        s.call(
            Method::POST,
            &format!("/admin/risk-flags/{flag}/{action}"),
            None,
            Some(reason.clone()),
            &ok,
        )
        .await
        .expect_err(404, "not_found");
    }
    let r = s
        .call(Method::GET, "/metrics", None, None, &ok)
        .await
        .expect(200);
    assert!(r.text.contains("# TYPE"), "not Prometheus text: {}", r.text);
    for series in [
        "taskledger_head_seq",
        "taskledger_snapshot_seq",
        "taskledger_conservation_ok 1",
    ] {
        assert!(r.text.contains(series), "no {series} in {}", r.text);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_operator_routes_do_not_exist() {
    let s = Server::start_with(|c| c.admin_token = None).await;
    let a = s.register("alice").await;
    let flag = "6f1c1a9e-0000-4000-8000-000000000001";
    for (m, p) in [
        (Method::GET, "/admin/reconcile".to_owned()),
        (Method::GET, "/admin/risk-flags".to_owned()),
        (Method::POST, format!("/admin/risk-flags/{flag}/release")),
        (Method::POST, format!("/admin/risk-flags/{flag}/confirm")),
        (Method::GET, "/metrics".to_owned()),
    ] {
        let body = (m == Method::POST).then(|| json!({"reason": "x"}));
        for headers in [
            vec![],
            vec![("X-Admin-Token", ADMIN_TOKEN)],
            vec![("X-Admin-Token", "")],
        ] {
            s.call(m.clone(), &p, Some(&a.key), body.clone(), &headers)
                .await
                .expect_err(404, "not_found");
        }
    }
    // Everything else still works.
    s.get("/accounts/me", &a.key).await.expect(200);
    s.stop().await;
}

/// `(method, path)` pairs of `/api/v1/openapi.json`.
async fn openapi_routes(s: &Server) -> BTreeSet<(String, String)> {
    let doc = s
        .call(Method::GET, "/api/v1/openapi.json", None, None, &[])
        .await
        .expect(200)
        .body;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "not OpenAPI 3: {}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    let mut out = BTreeSet::new();
    for (path, item) in paths {
        if OTHER_TRANSPORTS.contains(&path.as_str()) {
            continue;
        }
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                out.insert((method.to_owned(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_serves_exactly_what_openapi_documents() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let documented = openapi_routes(&s).await;
    let paths: BTreeSet<&str> = documented.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(paths.len(), 29, "API.md has 29 paths: {paths:#?}");
    let api_md: BTreeSet<(String, String)> = API_MD_ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(documented, api_md);

    // Each documented route is served: a call never falls through to the
    // router's fallback (whose message starts with "route ").
    let some_id = "00000000-0000-4000-8000-000000000000";
    for (m, p) in &documented {
        let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
        let path = p.replace("{id}", some_id);
        let body = (method == Method::POST).then(|| json!({}));
        status_of(
            &s,
            &method,
            &path,
            Some(&a.key),
            body.as_ref(),
            &[("X-Admin-Token", ADMIN_TOKEN)],
        )
        .await;
        // Other methods on the same path are not served.
        let other = if method == Method::PUT {
            Method::PATCH
        } else {
            Method::PUT
        };
        let r = s.call(other.clone(), &path, Some(&a.key), None, &[]).await;
        assert!(
            r.status == 405 || r.status == 404,
            "{other} {path} is served but not documented: {}",
            r.text
        );
    }
    // And what is not documented is not served.
    for p in [
        "/api/v1/nothing",
        "/api/v1/tasks/x/y/z",
        "/admin/reconcile",
        "/api/v2/tasks",
    ] {
        let resp = s
            .http
            .get(format!("{}{p}", s.base))
            .bearer_auth(&a.key)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_error_shape(&Method::GET, p, status, &body, &text);
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("not_found")),
            "{p}: {text}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_answers_429_with_retry_after() {
    let s = Server::start_with(|c| c.rate_limit_per_min = 3).await;
    let a = s.register("alice").await;
    for _ in 0..3 {
        s.get("/accounts/me", &a.key).await.expect(200);
    }
    let r = s
        .get("/accounts/me", &a.key)
        .await
        .expect_err(429, "rate_limited");
    let retry: u64 = r.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    // The limit is per principal: another account is not limited.
    let b = s.register("bob").await;
    s.get("/accounts/me", &b.key).await.expect(200);
    s.stop().await;
}
