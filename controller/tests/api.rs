//! The staff HTTP API over real loopback HTTP: every endpoint, the shapes clients rely on,
//! pagination, filters, CSV, errors, enrollment and key rotation, and the tenant isolation
//! matrix. Runs on SQLite, or on PostgreSQL when `TIKFLEET_TEST_DATABASE_URL` is set.

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{TestApp, error_code, new_identity, spawn_app};
use reqwest::{Method, StatusCode};
use ring::signature::KeyPair as _;
use serde_json::{Value, json};
use tikfleet_controller::hub::HubStore as _;
use tikfleet_shared::AgentId;
use tikfleet_shared::enroll::{key_id, rotate_signing_payload};

fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
        .to_owned()
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test]
async fn tenants_tokens_and_roles() {
    let app = spawn_app().await;
    let (st, t) = app
        .post(&app.admin, "/api/v1/tenants", json!({"name": "acme"}))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(keys(&t), ["drift", "id", "name"]);
    assert_eq!(t["name"], "acme");
    assert_eq!(
        t["drift"],
        json!({"policy": "enforce", "interval_secs": 3600})
    );
    let id = s(&t, "id");
    let (st, v) = app
        .post(&app.admin, "/api/v1/tenants", json!({"name": "acme"}))
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::CONFLICT, "conflict"));

    let (st, tok) = app
        .post(
            &app.admin,
            &format!("/api/v1/tenants/{id}/tokens"),
            json!({"role": "operator", "name": "ops"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(keys(&tok), ["id", "role", "token"]);
    assert_eq!(tok["role"], "operator");
    let operator = s(&tok, "token");
    let (st, v) = app
        .post(
            &operator,
            &format!("/api/v1/tenants/{id}/tokens"),
            json!({"role": "viewer", "name": "look"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let viewer = s(&v, "token");
    let (st, v) = app
        .post(
            &app.admin,
            &format!("/api/v1/tenants/{id}/tokens"),
            json!({"role": "admin", "name": "x"}),
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );

    // Operators and viewers see their own tenant only; only admins create tenants.
    let (st, v) = app.get(&operator, "/api/v1/tenants").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["items"][0]["id"], id.as_str());
    assert!(v["next_cursor"].is_null());
    let (st, v) = app
        .post(&operator, "/api/v1/tenants", json!({"name": "other"}))
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    let (st, v) = app.get(&viewer, &format!("/api/v1/tenants/{id}")).await;
    assert_eq!((st, v["name"].as_str()), (StatusCode::OK, Some("acme")));

    // Token lists never show secrets; a revoked token stops working at once.
    let (st, list) = app
        .get(&app.admin, &format!("/api/v1/tenants/{id}/tokens"))
        .await;
    assert_eq!(st, StatusCode::OK);
    let text = list.to_string();
    assert!(
        !text.contains(&operator) && !text.contains(&viewer),
        "{text}"
    );
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let (st, v) = app
        .delete(
            &viewer,
            &format!("/api/v1/tenants/{id}/tokens/{}", s(&tok, "id")),
        )
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    let (st, v) = app
        .delete(
            &app.admin,
            &format!("/api/v1/tenants/{id}/tokens/{}", s(&tok, "id")),
        )
        .await;
    assert_eq!((st, v["revoked"].as_bool()), (StatusCode::OK, Some(true)));
    let (st, v) = app.get(&operator, "/api/v1/tenants").await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );

    // Bootstrapping again creates no second admin token.
    assert_eq!(app.t.db.bootstrap_admin().await.unwrap(), None);
}

#[tokio::test]
async fn enrollment_is_one_time_and_expires() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let token = app.enrollment_token(&t.operator, &t.id).await;
    let identity = new_identity();
    let (_, seal) = tikfleet_shared::seal::generate();
    let body = json!({
        "token": token, "name": "site-1",
        "public_key": STANDARD.encode(identity.public_key().as_ref()),
        "seal_key": STANDARD.encode(seal), "agent_version": "0.1.0",
    });
    let (st, v) = app.enroll(body.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["tenant_id"], t.id.as_str());
    assert_eq!(v["key_id"], key_id(identity.public_key().as_ref()).as_str());
    assert_eq!(v["hub_url"], common::HUB_URL);
    assert!(
        v["hub_ca_pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let agent: AgentId = s(&v, "agent_id").parse().unwrap();
    let identity_row = app.t.db.agent_identity(agent).await.unwrap().unwrap();
    assert_eq!(identity_row.keys.len(), 1);
    assert_eq!(
        identity_row.keys[0].public_key,
        identity.public_key().as_ref()
    );

    // Reused: refused with a clear code, and no second agent.
    let (st, v) = app.enroll(body).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::CONFLICT, "enrollment_token_used")
    );
    let (_, agents) = app.get(&t.operator, "/api/v1/agents").await;
    assert_eq!(agents["items"].as_array().unwrap().len(), 1);
    assert_eq!(agents["items"][0]["name"], "site-1");
    assert_eq!(agents["items"][0]["connected"], false);

    // Expired: the (injected) clock passes the token's hour.
    let token = app.enrollment_token(&t.operator, &t.id).await;
    app.t.clock.advance(Duration::from_secs(3601));
    let fresh = json!({
        "token": token, "name": "site-2",
        "public_key": STANDARD.encode(new_identity().public_key().as_ref()),
        "seal_key": STANDARD.encode(seal), "agent_version": "0.1.0",
    });
    let (st, v) = app.enroll(fresh.clone()).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::GONE, "enrollment_token_expired")
    );

    let mut unknown = fresh.clone();
    unknown["token"] = json!("tfe_nope");
    let (st, v) = app.enroll(unknown).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "enrollment_token_invalid")
    );
    let mut bad_key = fresh.clone();
    bad_key["public_key"] = json!("c2hvcnQ=");
    let (st, v) = app.enroll(bad_key).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let mut extra = fresh;
    extra["admin"] = json!(true);
    let (st, v) = app.enroll(extra).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );

    // Viewers cannot make enrollment tokens; a bad ttl is refused.
    let (st, v) = app
        .post(
            &t.viewer,
            &format!("/api/v1/tenants/{}/enrollment-tokens", t.id),
            json!({}),
        )
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    let (st, v) = app
        .post(
            &t.operator,
            &format!("/api/v1/tenants/{}/enrollment-tokens", t.id),
            json!({"ttl_secs": 0}),
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let (st, v) = app
        .post_empty(
            &t.operator,
            &format!("/api/v1/tenants/{}/enrollment-tokens", t.id),
        )
        .await;
    assert_eq!(
        st,
        StatusCode::CREATED,
        "an empty body takes the defaults: {v}"
    );
}

fn rotation(
    agent: &str,
    signer: &ring::signature::Ed25519KeyPair,
    key_id: &str,
    new_pk: &[u8],
    at: u64,
) -> Value {
    let id: AgentId = agent.parse().unwrap();
    let sig = signer.sign(&rotate_signing_payload(id, new_pk, at));
    json!({
        "key_id": key_id, "new_public_key": STANDARD.encode(new_pk),
        "signed_at": at, "signature": STANDARD.encode(sig.as_ref()),
    })
}

#[tokio::test]
async fn key_rotation_checks_the_signature_and_retires_the_old_key() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let a = app.agent(&t, "site-1").await;
    let now = u64::try_from(common::START).unwrap();
    let next = new_identity();
    let next_pk = next.public_key().as_ref().to_vec();

    // Signed by another key: refused.
    let impostor = new_identity();
    let (st, v) = app
        .rotate(&a.id, rotation(&a.id, &impostor, &a.key_id, &next_pk, now))
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_signature")
    );
    // A signature over other bytes: refused.
    let mut tampered = rotation(&a.id, &a.identity, &a.key_id, &next_pk, now);
    tampered["new_public_key"] = json!(STANDARD.encode(new_identity().public_key().as_ref()));
    let (st, v) = app.rotate(&a.id, tampered).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_signature")
    );
    // Signed too long ago: refused.
    let (st, v) = app
        .rotate(
            &a.id,
            rotation(&a.id, &a.identity, &a.key_id, &next_pk, now - 301_000),
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "signature_expired")
    );
    // Garbage signature: 400.
    let mut garbage = rotation(&a.id, &a.identity, &a.key_id, &next_pk, now);
    garbage["signature"] = json!("!!");
    let (st, v) = app.rotate(&a.id, garbage).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );

    let (st, v) = app
        .rotate(
            &a.id,
            rotation(&a.id, &a.identity, &a.key_id, &next_pk, now),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let new_kid = s(&v, "key_id");
    assert_eq!(new_kid, key_id(&next_pk));
    let ident = app
        .t
        .db
        .agent_identity(a.id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ident.keys.len(), 1, "the old key is retired at once");
    assert_eq!(ident.keys[0].key_id, new_kid);

    // The same request again (a replay) names a retired key.
    let third = new_identity();
    let (st, v) = app
        .rotate(
            &a.id,
            rotation(
                &a.id,
                &a.identity,
                &a.key_id,
                third.public_key().as_ref(),
                now,
            ),
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "unknown_key")
    );

    // Revoked agents cannot rotate.
    let (st, v) = app
        .post_empty(&t.viewer, &format!("/api/v1/agents/{}/revoke", a.id))
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    let mut signal = app.t.db.signals().subscribe(a.id.parse().unwrap());
    let (st, v) = app
        .post_empty(&t.operator, &format!("/api/v1/agents/{}/revoke", a.id))
        .await;
    assert_eq!((st, v["revoked"].as_bool()), (StatusCode::OK, Some(true)));
    tokio::time::timeout(Duration::from_secs(5), signal.wait_for(|s| s.revoked))
        .await
        .unwrap()
        .unwrap();
    let (st, v) = app
        .rotate(
            &a.id,
            rotation(&a.id, &next, &new_kid, third.public_key().as_ref(), now),
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::FORBIDDEN, "agent_revoked")
    );
    let (st, v) = app
        .get(&t.viewer, &format!("/api/v1/agents/{}", a.id))
        .await;
    assert_eq!((st, v["revoked"].as_bool()), (StatusCode::OK, Some(true)));
}

#[tokio::test]
async fn routers_crud_sync_and_sealed_passwords() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let a = app.agent(&t, "site-1").await;
    let mut signal = app.t.db.signals().subscribe(a.id.parse().unwrap());
    let r = app.router(&t.operator, &a.id, "core-1").await;
    for k in [
        "id",
        "name",
        "address",
        "api_port",
        "tls",
        "agent_id",
        "ros_version",
        "status",
    ] {
        assert!(r.get(k).is_some(), "{k} missing in {r}");
    }
    assert_eq!(r["tls"], json!({"mode": "plain"}));
    assert_eq!(r["status"], "unknown");
    assert!(!r.to_string().contains("router-secret-pw"));
    tokio::time::timeout(Duration::from_secs(5), signal.wait_for(|s| s.changes >= 1))
        .await
        .unwrap()
        .unwrap();
    let id = s(&r, "id");

    // Only the agent can open the stored password.
    let routers = app
        .t
        .db
        .routers_for_agent(a.id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(routers.len(), 1);
    let opened =
        tikfleet_shared::seal::open(&a.seal_secret[..], &routers[0].sealed_password).unwrap();
    assert_eq!(opened.as_slice(), b"router-secret-pw");

    let (st, v) = app.get(&t.viewer, &format!("/api/v1/routers/{id}")).await;
    assert_eq!((st, v["name"].as_str()), (StatusCode::OK, Some("core-1")));
    let pin = "AB:".repeat(31) + "AB";
    let (st, v) = app
        .patch(&t.operator, &format!("/api/v1/routers/{id}"), json!({"name": "core-2", "tls": {"mode": "pin", "sha256": pin}, "api_port": 8729, "password": "new-router-pw"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["tls"], json!({"mode": "pin", "sha256": "ab".repeat(32)}));
    assert_eq!(v["api_port"], 8729);
    let routers = app
        .t
        .db
        .routers_for_agent(a.id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(routers[0].revision, 2);
    let opened =
        tikfleet_shared::seal::open(&a.seal_secret[..], &routers[0].sealed_password).unwrap();
    assert_eq!(opened.as_slice(), b"new-router-pw");

    let (st, v) = app
        .get(&t.viewer, &format!("/api/v1/routers/{id}/sync"))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["desired_generation"], 1);
    assert_eq!(v["applied_generation"], 0);
    assert_eq!(v["in_sync"], false);

    for bad in [
        json!({"tls": {"mode": "verify", "ca_pem": "not pem"}}),
        json!({"tls": {"mode": "pin", "sha256": "xyz"}}),
        json!({"tls": {"mode": "carrier-pigeon"}}),
        json!({"api_port": 0}),
        json!({"api_port": 70000}),
        json!({"address": "a b"}),
        json!({"agent_id": a.id}),
    ] {
        let (st, v) = app
            .patch(&t.operator, &format!("/api/v1/routers/{id}"), bad.clone())
            .await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{bad}"
        );
    }
    let (st, v) = app
        .post(&t.operator, "/api/v1/routers", json!({"agent_id": a.id, "name": "core-2", "address": "10.0.0.1", "username": "u", "password": "p"}))
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::CONFLICT, "conflict"),
        "duplicate name"
    );
    let (st, v) = app
        .post(&t.operator, "/api/v1/routers", json!({"agent_id": a.id, "name": "tls-1", "address": "10.0.0.1", "username": "u", "password": "p", "tls": {"mode": "verify"}}))
        .await;
    assert_eq!(
        (st, v["api_port"].as_u64()),
        (StatusCode::CREATED, Some(8729)),
        "TLS defaults to 8729"
    );

    let (_, list) = app.get(&t.viewer, "/api/v1/routers").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);

    // A router with subscribers cannot be deleted; without, it becomes a tombstone.
    let plan = app.plan(&t.operator, "basic", "10M/10M").await;
    let sub = app
        .subscriber(&t.operator, &id, &s(&plan, "id"), "alice", "pppoe")
        .await;
    let (st, v) = app
        .delete(&t.operator, &format!("/api/v1/routers/{id}"))
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::CONFLICT, "conflict"));
    let (st, _) = app
        .delete(
            &t.operator,
            &format!("/api/v1/subscribers/{}", s(&sub, "id")),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = app
        .delete(&t.operator, &format!("/api/v1/routers/{id}"))
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = app.get(&t.operator, &format!("/api/v1/routers/{id}")).await;
    assert_eq!((st, error_code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let routers = app
        .t
        .db
        .routers_for_agent(a.id.parse().unwrap())
        .await
        .unwrap();
    let gone = routers
        .iter()
        .find(|r| r.router_id.to_string() == id)
        .unwrap();
    assert!(gone.removed);
    assert_eq!(gone.revision, 3);

    // A revoked agent takes no new routers.
    app.post_empty(&t.operator, &format!("/api/v1/agents/{}/revoke", a.id))
        .await;
    let (st, v) = app
        .post(&t.operator, "/api/v1/routers", json!({"agent_id": a.id, "name": "late", "address": "10.0.0.2", "username": "u", "password": "p"}))
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::CONFLICT, "conflict"));
}

async fn jobs_of(app: &TestApp, token: &str, router: &str) -> Vec<Value> {
    let (st, v) = app
        .get(token, &format!("/api/v1/jobs?router_id={router}&limit=500"))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

fn kinds(jobs: &[Value]) -> Vec<String> {
    jobs.iter().map(|j| s(j, "kind")).collect()
}

#[tokio::test]
async fn plans_subscribers_and_the_jobs_they_queue() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let a = app.agent(&t, "site-1").await;
    let r = app.router(&t.operator, &a.id, "core-1").await;
    let rid = s(&r, "id");

    let plan = app.plan(&t.operator, "basic", "10M/10M").await;
    assert_eq!(
        keys(&plan),
        ["id", "name", "profile", "rate_limit", "tenant_id"]
    );
    assert_eq!(plan["profile"], "basic");
    for bad in [
        json!({"name": "x", "rate_limit": "fast"}),
        json!({"name": "x", "rate_limit": "10M/10M", "profile": "has space"}),
        json!({"name": "", "rate_limit": "10M/10M"}),
        json!({"name": "x", "rate_limit": "10M", "speed": 1}),
    ] {
        let (st, v) = app.post(&t.operator, "/api/v1/plans", bad.clone()).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{bad}"
        );
    }
    let (st, v) = app
        .post(
            &app.admin,
            "/api/v1/plans",
            json!({"name": "x", "rate_limit": "1M"}),
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "admins name the tenant"
    );
    let (st, v) = app.post(&app.admin, "/api/v1/plans", json!({"tenant_id": t.id, "name": "gold", "profile": "gold-prof", "rate_limit": "50M/50M"})).await;
    assert_eq!(
        (st, v["tenant_id"].as_str()),
        (StatusCode::CREATED, Some(t.id.as_str()))
    );
    let gold = s(&v, "id");
    let pid = s(&plan, "id");

    let sub = app
        .subscriber(&t.operator, &rid, &pid, "alice", "pppoe")
        .await;
    assert_eq!(
        keys(&sub),
        [
            "email",
            "expires_at",
            "hold",
            "id",
            "name",
            "phone",
            "plan_id",
            "router_id",
            "service",
            "status",
            "status_at",
            "status_reason",
            "tenant_id",
            "username"
        ]
    );
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["expires_at"], "2026-06-01T00:00:00Z");
    assert!(!sub.to_string().contains("sub-secret-pw"));
    let sid = s(&sub, "id");
    // One job: the account's upsert carries the plan's profile, so the agent makes the profile
    // first even when the two would otherwise run side by side.
    assert_eq!(
        kinds(&jobs_of(&app, &t.viewer, &rid).await),
        ["upsert_ppp_secret"]
    );
    app.subscriber(&t.operator, &rid, &pid, "bob", "hotspot")
        .await;
    app.subscriber(&t.operator, &rid, &pid, "carol", "hotspot")
        .await;
    assert_eq!(
        kinds(&jobs_of(&app, &t.viewer, &rid).await),
        [
            "upsert_ppp_secret",
            "upsert_hotspot_user",
            "upsert_hotspot_user"
        ]
    );
    let (_, sync) = app
        .get(&t.viewer, &format!("/api/v1/routers/{rid}/sync"))
        .await;
    assert_eq!(sync["desired_generation"], 4);

    for (bad, why) in [
        (
            json!({"username": "a b", "password": "p", "plan_id": pid, "router_id": rid, "service": "pppoe"}),
            "username",
        ),
        (
            json!({"username": "dave", "password": "p", "plan_id": pid, "router_id": rid, "service": "dialup"}),
            "service",
        ),
        (
            json!({"username": "dave", "password": "p", "plan_id": pid, "router_id": rid, "service": "pppoe", "expires_at": "tomorrow"}),
            "time",
        ),
        (
            json!({"username": "dave", "password": "", "plan_id": pid, "router_id": rid, "service": "pppoe"}),
            "password",
        ),
        (
            json!({"username": "dave", "password": "p", "plan_id": "nope", "router_id": rid, "service": "pppoe"}),
            "plan id",
        ),
    ] {
        let (st, v) = app.post(&t.operator, "/api/v1/subscribers", bad).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{why}"
        );
    }
    let (st, v) = app
        .post(&t.operator, "/api/v1/subscribers", json!({"username": "alice", "password": "p", "plan_id": pid, "router_id": rid, "service": "pppoe"}))
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::CONFLICT, "conflict"),
        "the router already has alice"
    );

    // Suspend (the tenant's default: disable): disable and disconnect, both critical; twice
    // changes nothing.
    let before = jobs_of(&app, &t.viewer, &rid).await.len();
    let (st, v) = app
        .post_empty(&t.operator, &format!("/api/v1/subscribers/{sid}/suspend"))
        .await;
    assert_eq!(
        (st, v["status"].as_str()),
        (StatusCode::OK, Some("suspended"))
    );
    app.post_empty(&t.operator, &format!("/api/v1/subscribers/{sid}/suspend"))
        .await;
    let jobs = jobs_of(&app, &t.viewer, &rid).await;
    assert_eq!(kinds(&jobs[before..]), ["disable", "disconnect_session"]);
    assert!(jobs[before..].iter().all(|j| j["priority"] == "critical"));
    let (st, v) = app
        .post_empty(&t.operator, &format!("/api/v1/subscribers/{sid}/resume"))
        .await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("active")));
    assert_eq!(
        kinds(&jobs_of(&app, &t.viewer, &rid).await[before + 2..]),
        ["enable"]
    );

    // A new plan: the profile, the secret on it, and a disconnect so the session takes it.
    let before = jobs_of(&app, &t.viewer, &rid).await.len();
    let (st, v) = app
        .patch(
            &t.operator,
            &format!("/api/v1/subscribers/{sid}"),
            json!({"plan_id": gold, "expires_at": null}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["expires_at"].is_null());
    assert_eq!(v["plan_id"], gold.as_str());
    assert_eq!(
        kinds(&jobs_of(&app, &t.viewer, &rid).await[before..]),
        ["upsert_ppp_secret", "disconnect_session"]
    );
    // A new name: the old account goes, the new one comes.
    let before = jobs_of(&app, &t.viewer, &rid).await.len();
    let (st, v) = app
        .patch(
            &t.operator,
            &format!("/api/v1/subscribers/{sid}"),
            json!({"username": "alice2"}),
        )
        .await;
    assert_eq!(
        (st, v["username"].as_str()),
        (StatusCode::OK, Some("alice2"))
    );
    assert_eq!(
        kinds(&jobs_of(&app, &t.viewer, &rid).await[before..]),
        ["delete_ppp_secret", "upsert_ppp_secret"]
    );
    // Only the expiry: a new generation, no job.
    let before = jobs_of(&app, &t.viewer, &rid).await.len();
    let (_, g0) = app
        .get(&t.viewer, &format!("/api/v1/routers/{rid}/sync"))
        .await;
    let (st, v) = app
        .patch(
            &t.operator,
            &format!("/api/v1/subscribers/{sid}"),
            json!({"expires_at": "2026-07-01T12:00:00+02:00"}),
        )
        .await;
    assert_eq!(
        (st, v["expires_at"].as_str()),
        (StatusCode::OK, Some("2026-07-01T10:00:00Z"))
    );
    assert_eq!(jobs_of(&app, &t.viewer, &rid).await.len(), before);
    let (_, g1) = app
        .get(&t.viewer, &format!("/api/v1/routers/{rid}/sync"))
        .await;
    assert_eq!(
        g1["desired_generation"].as_u64().unwrap(),
        g0["desired_generation"].as_u64().unwrap() + 1
    );
    let (st, v) = app
        .patch(
            &t.operator,
            &format!("/api/v1/subscribers/{sid}"),
            json!({"password": "fresh-pw", "status": "x"}),
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "unknown field"
    );

    let (st, v) = app
        .get(&t.viewer, &format!("/api/v1/subscribers?router_id={rid}"))
        .await;
    assert_eq!(
        (st, v["items"].as_array().unwrap().len()),
        (StatusCode::OK, 3)
    );
    let (st, v) = app
        .get(&t.viewer, &format!("/api/v1/subscribers/{sid}"))
        .await;
    assert_eq!(
        (st, v["username"].as_str()),
        (StatusCode::OK, Some("alice2"))
    );

    // Plans: a new rate limit reaches the router; a plan in use cannot be deleted.
    let before = jobs_of(&app, &t.viewer, &rid).await.len();
    let (st, v) = app
        .patch(
            &t.operator,
            &format!("/api/v1/plans/{pid}"),
            json!({"rate_limit": "20M/20M"}),
        )
        .await;
    assert_eq!(
        (st, v["rate_limit"].as_str()),
        (StatusCode::OK, Some("20M/20M"))
    );
    assert_eq!(
        kinds(&jobs_of(&app, &t.viewer, &rid).await[before..]),
        ["upsert_profile"]
    );
    let (st, v) = app
        .delete(&t.operator, &format!("/api/v1/plans/{pid}"))
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::CONFLICT, "conflict"));
    let (st, v) = app.get(&t.viewer, &format!("/api/v1/plans/{pid}")).await;
    assert_eq!((st, v["name"].as_str()), (StatusCode::OK, Some("basic")));

    let before = jobs_of(&app, &t.viewer, &rid).await.len();
    let (st, _) = app
        .delete(&t.operator, &format!("/api/v1/subscribers/{sid}"))
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(
        kinds(&jobs_of(&app, &t.viewer, &rid).await[before..]),
        ["delete_ppp_secret"]
    );
    let (st, _) = app
        .get(&t.viewer, &format!("/api/v1/subscribers/{sid}"))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = app
        .delete(&t.operator, &format!("/api/v1/plans/{gold}"))
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn every_list_paginates_the_same_way() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    for i in 0..5 {
        app.plan(&t.operator, &format!("p{i}"), "1M/1M").await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/plans?limit=2&cursor={c}"),
            None => "/api/v1/plans?limit=2".to_owned(),
        };
        let (st, v) = app.get(&t.viewer, &path).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(keys(&v), ["items", "next_cursor"]);
        let items = v["items"].as_array().unwrap();
        pages.push(items.len());
        seen.extend(items.iter().map(|p| s(p, "name")));
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, [2, 2, 1]);
    assert_eq!(seen, ["p0", "p1", "p2", "p3", "p4"]);
    for path in [
        "/api/v1/plans",
        "/api/v1/tenants",
        "/api/v1/agents",
        "/api/v1/routers",
        "/api/v1/subscribers",
        "/api/v1/jobs",
        "/api/v1/audit",
        &format!("/api/v1/tenants/{}/tokens", t.id),
    ] {
        let (st, v) = app.get(&app.admin, &format!("{path}?limit=1")).await;
        assert_eq!(st, StatusCode::OK, "{path}: {v}");
        assert!(
            v["items"].is_array() && v.get("next_cursor").is_some(),
            "{path}: {v}"
        );
        for bad in [
            "limit=0",
            "limit=501",
            "limit=x",
            "cursor=garbage",
            "colour=blue",
        ] {
            let (st, v) = app.get(&app.admin, &format!("{path}?{bad}")).await;
            assert_eq!(
                (st, error_code(&v)),
                (StatusCode::BAD_REQUEST, "invalid_request"),
                "{path}?{bad}"
            );
        }
    }
}

#[tokio::test]
async fn jobs_show_requeue_and_cancel() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let a = app.agent(&t, "site-1").await;
    let r = app.router(&t.operator, &a.id, "core-1").await;
    let plan = app.plan(&t.operator, "basic", "10M/10M").await;
    app.subscriber(&t.operator, &s(&r, "id"), &s(&plan, "id"), "alice", "pppoe")
        .await;
    let jobs = jobs_of(&app, &t.viewer, &s(&r, "id")).await;
    let job = &jobs[0];
    for k in ["id", "kind", "status", "attempts", "progress", "error"] {
        assert!(job.get(k).is_some(), "{k} missing in {job}");
    }
    assert_eq!(job["progress"], json!({"done": 0, "total": 1}));
    assert_eq!(job["status"], "queued");
    assert!(job["error"].is_null());
    assert!(
        !jobs.iter().any(|j| j.to_string().contains("sub-secret-pw")),
        "a job never shows its op's password"
    );
    let id = s(job, "id");

    let (st, v) = app.get(&t.viewer, &format!("/api/v1/jobs/{id}")).await;
    assert_eq!(
        (st, v["kind"].as_str()),
        (StatusCode::OK, Some("upsert_ppp_secret"))
    );
    let (st, v) = app
        .get(
            &t.viewer,
            "/api/v1/jobs?status=queued&kind=upsert_ppp_secret",
        )
        .await;
    assert_eq!(
        (st, v["items"].as_array().unwrap().len()),
        (StatusCode::OK, 1)
    );
    let (st, v) = app.get(&t.viewer, "/api/v1/jobs?status=sleeping").await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let (st, v) = app.get(&t.viewer, "/api/v1/jobs?kind=make_coffee").await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );

    let (st, v) = app
        .post_empty(&t.operator, &format!("/api/v1/jobs/{id}/requeue"))
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::CONFLICT, "conflict"),
        "a queued job is not re-queued"
    );
    let (st, v) = app
        .post_empty(&t.viewer, &format!("/api/v1/jobs/{id}/cancel"))
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    let (st, v) = app
        .post_empty(&t.operator, &format!("/api/v1/jobs/{id}/cancel"))
        .await;
    assert_eq!(
        (st, v["status"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let undelivered = app
        .t
        .db
        .undelivered_jobs(a.id.parse().unwrap())
        .await
        .unwrap();
    assert!(undelivered.is_empty(), "a cancelled job is not delivered");
    let (st, v) = app
        .post_empty(&t.operator, &format!("/api/v1/jobs/{id}/cancel"))
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::CONFLICT, "conflict"));
    let (st, v) = app
        .post_empty(&t.operator, &format!("/api/v1/jobs/{id}/requeue"))
        .await;
    assert_eq!(
        (st, v["status"].as_str(), v["attempts"].as_u64()),
        (StatusCode::OK, Some("queued"), Some(0))
    );
    assert_eq!(
        app.t
            .db
            .undelivered_jobs(a.id.parse().unwrap())
            .await
            .unwrap()
            .len(),
        1
    );
    let (st, v) = app
        .get(
            &t.viewer,
            "/api/v1/jobs/00000000-0000-7000-8000-000000000000",
        )
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::NOT_FOUND, "not_found"));
}

#[tokio::test]
async fn audit_filters_csv_and_no_secrets() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let a = app.agent(&t, "site-1").await;
    let r = app.router(&t.operator, &a.id, "core-1").await;
    let rid = s(&r, "id");
    let plan = app.plan(&t.operator, "basic", "10M/10M").await;
    app.t.clock.advance(Duration::from_secs(3600));
    let sub = app
        .subscriber(&t.operator, &rid, &s(&plan, "id"), "alice", "pppoe")
        .await;
    app.post_empty(
        &t.operator,
        &format!("/api/v1/subscribers/{}/suspend", s(&sub, "id")),
    )
    .await;

    let (st, all) = app.get(&t.viewer, "/api/v1/audit?limit=500").await;
    assert_eq!(st, StatusCode::OK);
    let items = all["items"].as_array().unwrap();
    let actions: Vec<String> = items.iter().map(|e| s(e, "action")).collect();
    for want in [
        "staff_token.create",
        "enrollment_token.create",
        "agent.enroll",
        "router.create",
        "plan.create",
        "subscriber.create",
        "subscriber.suspend",
    ] {
        assert!(
            actions.contains(&want.to_owned()),
            "{want} missing: {actions:?}"
        );
    }
    let text = all.to_string();
    assert!(
        !text.contains("sub-secret-pw") && !text.contains("router-secret-pw"),
        "{text}"
    );
    let create = items
        .iter()
        .find(|e| e["action"] == "subscriber.create")
        .unwrap();
    assert_eq!(
        keys(create),
        [
            "action",
            "actor",
            "at",
            "error",
            "id",
            "params",
            "router_id",
            "status",
            "tenant_id"
        ]
    );
    assert_eq!(create["actor"], "acme-operator");
    assert_eq!(create["params"]["password"], "<redacted>");
    assert_eq!(create["params"]["username"], "alice");
    assert_eq!(create["status"], "succeeded");
    assert_eq!(create["router_id"], rid.as_str());
    assert_eq!(create["at"], "2026-01-01T01:00:00Z");

    let count = |v: &Value| v["items"].as_array().unwrap().len();
    let (_, v) = app
        .get(&t.viewer, "/api/v1/audit?action=subscriber.suspend")
        .await;
    assert_eq!(count(&v), 1);
    let (_, v) = app
        .get(&t.viewer, &format!("/api/v1/audit?router_id={rid}"))
        .await;
    assert_eq!(
        count(&v),
        3,
        "router.create, subscriber.create, subscriber.suspend: {v}"
    );
    let (_, v) = app.get(&t.viewer, "/api/v1/audit?status=failed").await;
    assert_eq!(count(&v), 0);
    let (_, v) = app
        .get(
            &t.viewer,
            "/api/v1/audit?from=2026-01-01T00:30:00Z&limit=500",
        )
        .await;
    assert_eq!(count(&v), 2);
    let (_, v) = app
        .get(&t.viewer, "/api/v1/audit?to=2026-01-01T00:30:00Z&limit=500")
        .await;
    assert_eq!(count(&v) + 2, items.len());
    for bad in ["from=yesterday", "status=meh", "format=xml", "router_id=7"] {
        let (st, v) = app.get(&t.viewer, &format!("/api/v1/audit?{bad}")).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{bad}"
        );
    }

    let resp = app
        .http
        .get(app.url("/api/v1/audit?format=csv"))
        .bearer_auth(&t.viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = resp.text().await.unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0],
        "id,at,tenant_id,router_id,actor,action,params,status,error"
    );
    assert_eq!(lines.len(), items.len() + 1);
    assert!(!csv.contains("sub-secret-pw"));
    let suspend = lines
        .iter()
        .find(|l| l.contains("subscriber.suspend"))
        .unwrap();
    assert!(
        suspend.contains(&rid)
            && suspend.contains("acme-operator")
            && suspend.contains(",succeeded,"),
        "{suspend}"
    );
    let resp = app
        .http
        .get(app.url("/api/v1/audit?format=csv&limit=2"))
        .bearer_auth(&t.viewer)
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("x-next-cursor"));
    assert_eq!(
        resp.text()
            .await
            .unwrap()
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .count(),
        3
    );
}

/// Method, path, token, content type, body, expected status and code.
type Case<'a> = (
    Method,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Vec<u8>,
    StatusCode,
    &'a str,
);

#[tokio::test]
async fn bad_requests_get_json_4xx_never_5xx() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let tok = Some(t.operator.as_str());
    let json_ct = Some("application/json");
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/api/v1/plans",
            tok,
            json_ct,
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::POST,
            "/api/v1/plans",
            tok,
            json_ct,
            b"[1,2]".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::POST,
            "/api/v1/plans",
            tok,
            json_ct,
            br#"{"name":"a","rate_limit":"1M","x":1}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::POST,
            "/api/v1/plans",
            tok,
            json_ct,
            br#"{"name":5,"rate_limit":"1M"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::POST,
            "/api/v1/plans",
            tok,
            None,
            br#"{"name":"a","rate_limit":"1M"}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            Method::POST,
            "/api/v1/plans",
            tok,
            json_ct,
            vec![b' '; 2 * 1024 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            Method::POST,
            "/api/v1/agents/enroll",
            None,
            json_ct,
            vec![b' '; 2 * 1024 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            Method::POST,
            "/api/v1/plans",
            tok,
            json_ct,
            "{\"name\":\"\u{0}\",\"rate_limit\":\"1M\"}"
                .as_bytes()
                .to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::GET,
            "/api/v1/nowhere",
            tok,
            None,
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/elsewhere",
            None,
            None,
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::PUT,
            "/api/v1/plans",
            tok,
            None,
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/api/v1/plans",
            None,
            None,
            vec![],
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            Method::GET,
            "/api/v1/plans",
            Some("tfs_wrong"),
            None,
            vec![],
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            Method::GET,
            "/api/v1/routers/not-an-id",
            tok,
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::GET,
            "/api/v1/routers/00000000-0000-7000-8000-000000000000",
            tok,
            None,
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (method, path, token, ct, body, status, code) in cases {
        let (st, text) = app.raw(method.clone(), path, token, ct, body).await;
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
        assert_eq!((st, error_code(&v)), (status, code), "{method} {path}: {v}");
    }
    let resp = app
        .http
        .get(app.url("/api/v1/plans"))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn openapi_document_lists_every_path() {
    let app = spawn_app().await;
    let resp = app
        .http
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = resp.json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/tenants",
        "/api/v1/tenants/{id}/tokens",
        "/api/v1/tenants/{id}/enrollment-tokens",
        "/api/v1/agents",
        "/api/v1/agents/enroll",
        "/api/v1/agents/{id}/keys",
        "/api/v1/agents/{id}/revoke",
        "/api/v1/routers",
        "/api/v1/routers/{id}",
        "/api/v1/routers/{id}/sync",
        "/api/v1/plans",
        "/api/v1/subscribers",
        "/api/v1/subscribers/{id}",
        "/api/v1/subscribers/{id}/suspend",
        "/api/v1/subscribers/{id}/resume",
        "/api/v1/jobs",
        "/api/v1/jobs/{id}",
        "/api/v1/jobs/{id}/requeue",
        "/api/v1/jobs/{id}/cancel",
        "/api/v1/tenants/{id}/drift",
        "/api/v1/routers/{id}/drift-check",
        "/api/v1/drift",
        "/api/v1/drift/{id}",
        "/api/v1/drift/{id}/accept",
        "/api/v1/drift/{id}/enforce",
        "/api/v1/audit",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for s in [
        "RouterDto",
        "CreateRouter",
        "SubscriberDto",
        "CreateSubscriber",
        "JobDto",
        "AuditDto",
        "ErrorBody",
        "TlsDto",
    ] {
        assert!(schemas.contains_key(s), "schema {s} missing");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

/// Another tenant's token gets 404 (and no foreign data) on every endpoint that names an
/// object; a viewer gets 403 on every write.
#[tokio::test]
async fn isolation_matrix() {
    let app = spawn_app().await;
    let a = app.tenant("tenant-a").await;
    let b = app.tenant("tenant-b").await;
    let agent = app.agent(&a, "a-site").await;
    let router = app.router(&a.operator, &agent.id, "a-core").await;
    let plan = app.plan(&a.operator, "a-plan", "10M/10M").await;
    let sub = app
        .subscriber(
            &a.operator,
            &s(&router, "id"),
            &s(&plan, "id"),
            "a-user",
            "pppoe",
        )
        .await;
    let job = jobs_of(&app, &a.viewer, &s(&router, "id")).await[0].clone();
    let (_, tokens) = app
        .get(&a.operator, &format!("/api/v1/tenants/{}/tokens", a.id))
        .await;
    let token_id = s(&tokens["items"][0], "id");
    let (ta, aid, rid, pid, sid, jid) = (
        &a.id,
        &agent.id,
        s(&router, "id"),
        s(&plan, "id"),
        s(&sub, "id"),
        s(&job, "id"),
    );
    let foreign = [
        ta.clone(),
        aid.clone(),
        rid.clone(),
        pid.clone(),
        sid.clone(),
        jid.clone(),
        "a-core".into(),
        "a-plan".into(),
        "a-user".into(),
        "a-site".into(),
    ];

    let b_agent = app.agent(&b, "b-site").await;
    let b_router = app.router(&b.operator, &b_agent.id, "b-core").await;
    let b_plan = app.plan(&b.operator, "b-plan", "1M/1M").await;
    app.subscriber(
        &b.operator,
        &s(&b_router, "id"),
        &s(&b_plan, "id"),
        "b-user",
        "pppoe",
    )
    .await;

    // (method, path, body): every endpoint naming one of tenant A's objects.
    let targeted: Vec<(Method, String, Value)> = vec![
        (Method::GET, format!("/api/v1/tenants/{ta}"), Value::Null),
        (
            Method::GET,
            format!("/api/v1/tenants/{ta}/tokens"),
            Value::Null,
        ),
        (
            Method::POST,
            format!("/api/v1/tenants/{ta}/tokens"),
            json!({"role": "operator", "name": "sneaky"}),
        ),
        (
            Method::DELETE,
            format!("/api/v1/tenants/{ta}/tokens/{token_id}"),
            Value::Null,
        ),
        (
            Method::POST,
            format!("/api/v1/tenants/{ta}/enrollment-tokens"),
            json!({}),
        ),
        (
            Method::GET,
            format!("/api/v1/tenants/{ta}/drift"),
            Value::Null,
        ),
        (
            Method::PUT,
            format!("/api/v1/tenants/{ta}/drift"),
            json!({"policy": "report", "interval_secs": 600}),
        ),
        (Method::GET, format!("/api/v1/agents/{aid}"), Value::Null),
        (
            Method::POST,
            format!("/api/v1/agents/{aid}/revoke"),
            Value::Null,
        ),
        (Method::GET, format!("/api/v1/routers/{rid}"), Value::Null),
        (
            Method::PATCH,
            format!("/api/v1/routers/{rid}"),
            json!({"name": "pwned"}),
        ),
        (
            Method::DELETE,
            format!("/api/v1/routers/{rid}"),
            Value::Null,
        ),
        (
            Method::GET,
            format!("/api/v1/routers/{rid}/sync"),
            Value::Null,
        ),
        (
            Method::POST,
            format!("/api/v1/routers/{rid}/drift-check"),
            Value::Null,
        ),
        (Method::GET, format!("/api/v1/plans/{pid}"), Value::Null),
        (
            Method::PATCH,
            format!("/api/v1/plans/{pid}"),
            json!({"rate_limit": "1k/1k"}),
        ),
        (Method::DELETE, format!("/api/v1/plans/{pid}"), Value::Null),
        (
            Method::GET,
            format!("/api/v1/subscribers/{sid}"),
            Value::Null,
        ),
        (
            Method::PATCH,
            format!("/api/v1/subscribers/{sid}"),
            json!({"password": "pwned-pw"}),
        ),
        (
            Method::DELETE,
            format!("/api/v1/subscribers/{sid}"),
            Value::Null,
        ),
        (
            Method::POST,
            format!("/api/v1/subscribers/{sid}/suspend"),
            Value::Null,
        ),
        (
            Method::POST,
            format!("/api/v1/subscribers/{sid}/resume"),
            Value::Null,
        ),
        (Method::GET, format!("/api/v1/jobs/{jid}"), Value::Null),
        (
            Method::POST,
            format!("/api/v1/jobs/{jid}/requeue"),
            Value::Null,
        ),
        (
            Method::POST,
            format!("/api/v1/jobs/{jid}/cancel"),
            Value::Null,
        ),
        // Creating with references to A's objects.
        (
            Method::POST,
            "/api/v1/routers".into(),
            json!({"agent_id": aid, "name": "x", "address": "10.0.0.9", "username": "u", "password": "p"}),
        ),
        (
            Method::POST,
            "/api/v1/subscribers".into(),
            json!({"username": "x", "password": "p", "plan_id": pid, "router_id": s(&b_router, "id"), "service": "pppoe"}),
        ),
        (
            Method::POST,
            "/api/v1/subscribers".into(),
            json!({"username": "x", "password": "p", "plan_id": s(&b_plan, "id"), "router_id": rid, "service": "pppoe"}),
        ),
        (
            Method::POST,
            "/api/v1/plans".into(),
            json!({"tenant_id": ta, "name": "x", "rate_limit": "1M"}),
        ),
    ];
    for (method, path, body) in &targeted {
        for token in [&b.operator, &b.viewer] {
            let mut req = app
                .http
                .request(method.clone(), app.url(path))
                .bearer_auth(token);
            if !body.is_null() {
                req = req.json(body);
            }
            let resp = req.send().await.unwrap();
            let st = resp.status();
            let text = resp.text().await.unwrap();
            let v: Value = serde_json::from_str(&text).unwrap();
            let expected = if token == &b.viewer && *method != Method::GET {
                (StatusCode::FORBIDDEN, "forbidden")
            } else {
                (StatusCode::NOT_FOUND, "not_found")
            };
            assert_eq!((st, error_code(&v)), expected, "{method} {path}: {v}");
            for f in &foreign {
                assert!(
                    !text.contains(f.as_str()),
                    "{method} {path} leaked {f}: {text}"
                );
            }
        }
    }
    // Lists and the audit log show B nothing of A.
    for path in [
        "/api/v1/tenants",
        "/api/v1/agents",
        "/api/v1/routers",
        "/api/v1/plans",
        "/api/v1/subscribers",
        "/api/v1/jobs",
        "/api/v1/audit?limit=500",
        "/api/v1/audit?format=csv",
    ] {
        let resp = app
            .http
            .get(app.url(path))
            .bearer_auth(&b.viewer)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let text = resp.text().await.unwrap();
        for f in &foreign {
            assert!(!text.contains(f.as_str()), "{path} leaked {f}: {text}");
        }
        let own = if path.contains("jobs") {
            s(&b_router, "id")
        } else if path.contains("tenants") {
            "tenant-b".to_owned()
        } else {
            "b-".to_owned()
        };
        assert!(text.contains(&own), "{path} shows B's own: {text}");
    }
    let (_, jobs) = app
        .get(&b.viewer, &format!("/api/v1/jobs?router_id={rid}"))
        .await;
    assert_eq!(jobs["items"].as_array().unwrap().len(), 0);
    let (_, audit) = app
        .get(&b.viewer, &format!("/api/v1/audit?router_id={rid}"))
        .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 0);

    // A's own viewer may read but not write, on every write endpoint.
    let writes: Vec<(Method, String, Value)> = targeted
        .iter()
        .filter(|(m, _, _)| *m != Method::GET)
        .cloned()
        .chain([
            (Method::POST, "/api/v1/tenants".into(), json!({"name": "x"})),
            (
                Method::POST,
                "/api/v1/plans".into(),
                json!({"name": "x", "rate_limit": "1M"}),
            ),
        ])
        .collect();
    for (method, path, body) in &writes {
        let mut req = app
            .http
            .request(method.clone(), app.url(path))
            .bearer_auth(&a.viewer);
        if !body.is_null() {
            req = req.json(body);
        }
        let resp = req.send().await.unwrap();
        let st = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{method} {path}"
        );
    }
    for (method, path, _) in targeted.iter().filter(|(m, _, _)| *m == Method::GET) {
        let (st, v) = app.get(&a.viewer, path).await;
        assert_eq!(st, StatusCode::OK, "{method} {path}: {v}");
    }
    // Nothing changed for A.
    let (_, r) = app.get(&a.viewer, &format!("/api/v1/routers/{rid}")).await;
    assert_eq!(r["name"], "a-core");
    let (_, sub) = app
        .get(&a.viewer, &format!("/api/v1/subscribers/{sid}"))
        .await;
    assert_eq!(sub["status"], "active");
    let (_, ag) = app.get(&a.viewer, &format!("/api/v1/agents/{aid}")).await;
    assert_eq!(ag["revoked"], false);
}

/// A host telemetry record of `agent`, taken at `at` (ms after the test start).
fn host_record(
    agent: AgentId,
    at: i64,
    outbox_bytes: u64,
    outbox_max_bytes: Option<u64>,
) -> tikfleet_shared::record::OutboxRecord {
    use tikfleet_shared::record::{HostSample, OutboxRecord, Telemetry, TelemetrySample};
    OutboxRecord::Telemetry(Telemetry {
        at: tikfleet_shared::UnixMillis(common::START + at),
        sample: TelemetrySample::Host(HostSample {
            agent_id: agent,
            cpu_load_percent: 12,
            free_memory_bytes: 3 << 30,
            total_memory_bytes: 4 << 30,
            uptime_secs: 86_400,
            free_disk_bytes: 40 << 30,
            total_disk_bytes: 64 << 30,
            outbox_records: 1_500,
            outbox_bytes,
            queued_jobs: 4,
            outbox_max_bytes,
            telemetry_dropped: outbox_max_bytes.map(|_| 7),
        }),
    })
}

#[tokio::test]
async fn agents_show_their_latest_host_sample() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let app = spawn_app().await;
        let t = app.tenant("acme").await;
        let other = app.tenant("globex").await;
        let a = app.agent(&t, "site-1").await;
        let b = app.agent(&other, "site-2").await;
        let (aid, bid): (AgentId, AgentId) = (a.id.parse().unwrap(), b.id.parse().unwrap());
        let show = |token: &str, id: &str| {
            let path = format!("/api/v1/agents/{id}");
            let token = token.to_owned();
            let app = &app;
            async move {
                let (st, v) = app.get(&token, &path).await;
                assert_eq!(st, StatusCode::OK, "{v}");
                v
            }
        };
        // No sample yet: null.
        assert!(show(&t.viewer, &a.id).await["host"].is_null());

        // The batch's newest sample is kept; a sample naming another agent (here, another
        // tenant's) is not taken from this agent's session.
        app.t
            .db
            .commit_records(
                aid,
                &[
                    (1, host_record(aid, 1_000, 100, Some(1_000))),
                    (2, host_record(aid, 31_000, 425, Some(1_000))),
                    (3, host_record(bid, 32_000, 999, Some(1_000))),
                ],
            )
            .await
            .unwrap();
        let host = show(&t.viewer, &a.id).await["host"].clone();
        assert_eq!(
            keys(&host),
            [
                "cpu_load_percent",
                "free_disk_bytes",
                "free_memory_bytes",
                "outbox_bytes",
                "outbox_max_bytes",
                "outbox_percent",
                "outbox_records",
                "queued_jobs",
                "sampled_at",
                "telemetry_dropped",
                "total_disk_bytes",
                "total_memory_bytes",
                "uptime_secs",
            ]
        );
        assert_eq!(host["sampled_at"], "2026-01-01T00:00:31Z");
        assert_eq!(host["cpu_load_percent"], 12);
        assert_eq!(host["free_memory_bytes"], 3u64 << 30);
        assert_eq!(host["total_disk_bytes"], 64u64 << 30);
        assert_eq!(host["uptime_secs"], 86_400);
        assert_eq!(host["outbox_records"], 1_500);
        assert_eq!(host["outbox_bytes"], 425);
        assert_eq!(host["outbox_max_bytes"], 1_000);
        assert_eq!(host["outbox_percent"], 42);
        assert_eq!(host["telemetry_dropped"], 7);
        assert_eq!(host["queued_jobs"], 4);
        assert!(show(&other.viewer, &b.id).await["host"].is_null());
        let (_, list) = app.get(&t.viewer, "/api/v1/agents").await;
        assert_eq!(list["items"][0]["host"], host);

        // An older sample arriving later does not replace it.
        app.t
            .db
            .commit_records(aid, &[(4, host_record(aid, 10_000, 900, Some(1_000)))])
            .await
            .unwrap();
        assert_eq!(show(&t.viewer, &a.id).await["host"], host);

        // An agent that does not report its cap: null, not a guess.
        app.t
            .db
            .commit_records(aid, &[(5, host_record(aid, 61_000, 800, None))])
            .await
            .unwrap();
        let host = show(&t.viewer, &a.id).await["host"].clone();
        assert_eq!(host["outbox_bytes"], 800);
        assert!(host["outbox_max_bytes"].is_null());
        assert!(host["outbox_percent"].is_null());
        assert!(host["telemetry_dropped"].is_null());

        // Another tenant's staff see neither the agent nor its host.
        let (st, v) = app
            .get(&other.viewer, &format!("/api/v1/agents/{}", a.id))
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{v}");

        // The OpenAPI document describes it.
        let doc: Value = app
            .http
            .get(app.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let schemas = &doc["components"]["schemas"];
        assert!(schemas["AgentDto"]["properties"]["host"].is_object());
        let props = schemas["AgentHostDto"]["properties"].as_object().unwrap();
        assert!(props.contains_key("outbox_max_bytes") && props.contains_key("sampled_at"));
    })
    .await
    .expect("test timed out");
}
