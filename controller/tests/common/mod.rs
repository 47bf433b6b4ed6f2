//! Shared test harness: a fresh database per test (PostgreSQL when
//! `TIKFLEET_TEST_DATABASE_URL` names a server, SQLite in a temp dir otherwise), the API on
//! a loopback port, and helpers that build tenants, tokens, agents, routers, plans and
//! subscribers through the real HTTP API.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde_json::{Value, json};
use tikfleet_controller::app::{AppState, HubInfo, api_router};
use tikfleet_controller::clock::{Clock, ManualClock};
use tikfleet_controller::crypto::AtRestKey;
use tikfleet_controller::db::Db;
use tikfleet_shared::UnixMillis;

/// The environment variable naming a PostgreSQL server for the PostgreSQL pass.
pub const PG_ENV: &str = "TIKFLEET_TEST_DATABASE_URL";

/// A fresh database and what opened it.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    pub clock: ManualClock,
    pub key: AtRestKey,
    _dir: Option<tempfile::TempDir>,
}

/// 2026-01-01T00:00:00Z.
pub const START: i64 = 1_767_225_600_000;

/// Opens a fresh database for one test.
pub async fn test_db() -> TestDb {
    let clock = ManualClock::new(UnixMillis(START));
    let key = AtRestKey::generate().unwrap();
    let (url, dir) = match std::env::var(PG_ENV) {
        Ok(server) if !server.is_empty() => (fresh_pg_database(&server).await, None),
        _ => {
            let dir = tempfile::tempdir().unwrap();
            (tikfleet_controller::db::sqlite_url(dir.path()), Some(dir))
        }
    };
    let db = Db::open(&url, key.clone(), Arc::new(clock.clone()))
        .await
        .unwrap();
    TestDb {
        db,
        url,
        clock,
        key,
        _dir: dir,
    }
}

/// Creates a database named for this test on the server and returns its URL.
async fn fresh_pg_database(server: &str) -> String {
    sqlx::any::install_default_drivers();
    let name = format!("tf_{}", uuid::Uuid::now_v7().simple());
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(server)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, query) = server
        .split_once('?')
        .map_or((server, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// The API on a loopback port.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub t: TestDb,
    pub admin: String,
}

/// A tenant with an operator and a viewer token.
pub struct Tenant {
    pub id: String,
    pub operator: String,
    pub viewer: String,
}

/// An enrolled agent and its keys.
pub struct Agent {
    pub id: String,
    pub key_id: String,
    pub identity: Ed25519KeyPair,
    pub seal_secret: zeroize::Zeroizing<[u8; 32]>,
}

pub const HUB_URL: &str = "wss://hub.test:7443/agent";

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|state| state).await
}

/// [`spawn_app`] with its state changed by `configure` (e.g. another health retention).
pub async fn spawn_app_with(configure: impl FnOnce(AppState) -> AppState) -> TestApp {
    let t = test_db().await;
    let state = AppState::new(
        t.db.clone(),
        Arc::new(t.clock.clone()) as Arc<dyn Clock>,
        HubInfo {
            url: HUB_URL.into(),
            ca_pem: Some("-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n".into()),
        },
    );
    let state = configure(state);
    let admin =
        t.db.bootstrap_admin()
            .await
            .unwrap()
            .expect("first admin token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, api_router(state)).await.unwrap();
    });
    TestApp {
        base: format!("http://{addr}"),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        t,
        admin,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
        };
        (status, value)
    }

    pub async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(self.url(path)).bearer_auth(token))
            .await
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(self.url(path))
                .bearer_auth(token)
                .json(&body),
        )
        .await
    }

    pub async fn post_empty(&self, token: &str, path: &str) -> (StatusCode, Value) {
        self.send(self.http.post(self.url(path)).bearer_auth(token))
            .await
    }

    pub async fn patch(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            self.http
                .patch(self.url(path))
                .bearer_auth(token)
                .json(&body),
        )
        .await
    }

    pub async fn put(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.put(self.url(path)).bearer_auth(token).json(&body))
            .await
    }

    pub async fn delete(&self, token: &str, path: &str) -> (StatusCode, Value) {
        self.send(self.http.delete(self.url(path)).bearer_auth(token))
            .await
    }

    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, String) {
        let mut req = self.http.request(method, self.url(path)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    /// A tenant with an operator and a viewer token.
    pub async fn tenant(&self, name: &str) -> Tenant {
        let (s, t) = self
            .post(&self.admin, "/api/v1/tenants", json!({"name": name}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        let id = t["id"].as_str().unwrap().to_owned();
        let token = |role: &'static str| {
            let id = id.clone();
            async move {
                let (s, v) = self
                    .post(
                        &self.admin,
                        &format!("/api/v1/tenants/{id}/tokens"),
                        json!({"role": role, "name": format!("{name}-{role}")}),
                    )
                    .await;
                assert_eq!(s, StatusCode::CREATED, "{v}");
                v["token"].as_str().unwrap().to_owned()
            }
        };
        let operator = token("operator").await;
        let viewer = token("viewer").await;
        Tenant {
            id,
            operator,
            viewer,
        }
    }

    /// Creates an enrollment token for the tenant with `token`.
    pub async fn enrollment_token(&self, token: &str, tenant: &str) -> String {
        let (s, v) = self
            .post(
                token,
                &format!("/api/v1/tenants/{tenant}/enrollment-tokens"),
                json!({"ttl_secs": 3600}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }

    /// Enrolls an agent into the tenant.
    pub async fn agent(&self, tenant: &Tenant, name: &str) -> Agent {
        let token = self.enrollment_token(&tenant.operator, &tenant.id).await;
        let identity = new_identity();
        let (seal_secret, seal_public) = tikfleet_shared::seal::generate();
        let (s, v) = self
            .send(
                self.http
                    .post(self.url("/api/v1/agents/enroll"))
                    .json(&json!({
                        "token": token,
                        "name": name,
                        "public_key": STANDARD.encode(identity.public_key().as_ref()),
                        "seal_key": STANDARD.encode(seal_public),
                        "agent_version": "0.1.0",
                    })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        Agent {
            id: v["agent_id"].as_str().unwrap().to_owned(),
            key_id: v["key_id"].as_str().unwrap().to_owned(),
            identity,
            seal_secret,
        }
    }

    pub async fn enroll(&self, body: Value) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(self.url("/api/v1/agents/enroll"))
                .json(&body),
        )
        .await
    }

    pub async fn rotate(&self, agent: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(self.url(&format!("/api/v1/agents/{agent}/keys")))
                .json(&body),
        )
        .await
    }

    pub async fn router(&self, token: &str, agent: &str, name: &str) -> Value {
        let (s, v) = self
            .post(
                token,
                "/api/v1/routers",
                json!({
                    "agent_id": agent, "name": name, "address": "127.0.0.1", "api_port": 8728,
                    "username": "admin", "password": "router-secret-pw",
                }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    pub async fn plan(&self, token: &str, name: &str, rate: &str) -> Value {
        let (s, v) = self
            .post(
                token,
                "/api/v1/plans",
                json!({"name": name, "rate_limit": rate}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    pub async fn subscriber(
        &self,
        token: &str,
        router: &str,
        plan: &str,
        username: &str,
        service: &str,
    ) -> Value {
        let (s, v) = self
            .post(
                token,
                "/api/v1/subscribers",
                json!({
                    "username": username, "password": "sub-secret-pw", "plan_id": plan,
                    "router_id": router, "service": service, "expires_at": "2026-06-01T00:00:00Z",
                }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }
}

pub fn new_identity() -> Ed25519KeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

/// Asserts the JSON error shape and returns its code.
pub fn error_code(v: &Value) -> &str {
    let e = &v["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message: {v}"
    );
    assert!(e["retryable"].is_boolean(), "no retryable: {v}");
    e["code"].as_str().unwrap_or_else(|| panic!("no code: {v}"))
}

/// A tenant with one agent and one router, made through the API.
pub struct Site {
    pub tenant: Tenant,
    pub agent: tikfleet_shared::AgentId,
    pub router: tikfleet_shared::RouterId,
}

/// Makes tenant `name` with agent `{name}-site` and router `{name}-core`.
pub async fn site(app: &TestApp, name: &str) -> Site {
    let tenant = app.tenant(name).await;
    let agent = app.agent(&tenant, &format!("{name}-site")).await;
    let router = app
        .router(&tenant.operator, &agent.id, &format!("{name}-core"))
        .await;
    Site {
        tenant,
        agent: agent.id.parse().unwrap(),
        router: router["id"].as_str().unwrap().parse().unwrap(),
    }
}

/// Commits `records` as the agent's next outbox seqs, the way the hub does.
pub async fn commit(
    db: &Db,
    agent: tikfleet_shared::AgentId,
    records: Vec<tikfleet_shared::record::OutboxRecord>,
) {
    use tikfleet_controller::hub::HubStore as _;
    let from = db.records_committed(agent).await.unwrap();
    let batch: Vec<(u64, _)> = (from + 1..).zip(records).collect();
    let last = from + batch.len() as u64;
    assert_eq!(db.commit_records(agent, &batch).await.unwrap(), last);
}
