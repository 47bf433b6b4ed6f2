//! Notifications end to end on loopback: a real SMTP server (aiosmtpd, from the venv
//! `scripts/test` prepares) and a real HTTP receiver stand in for the tenant's mail server,
//! SMS gateway and alert webhook. Expiry notices go out once per notice moment (also across
//! a restart, and only the last one after downtime), retries back off on the injectable
//! clock, a refusal fails at once with an admin alert, alerts go once per key (signed with
//! the tenant's webhook secret when it set one), and the settings API never shows a secret.
//! Runs on SQLite, or on PostgreSQL when `TIKFLEET_TEST_DATABASE_URL` is set.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{START, Tenant, TestApp, error_code, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tikfleet_controller::api::validate::format_time;
use tikfleet_controller::clock::Clock;
use tikfleet_controller::db::Db;
use tikfleet_controller::notify::Notifier;
use tikfleet_peers::{Receiver, SmtpServer, until};
use tikfleet_shared::{TenantId, UnixMillis};

const DAY: i64 = 86_400_000;
const MINUTE: i64 = 60_000;
const TEST_TIMEOUT: Duration = Duration::from_secs(100);
const SMTP_PASSWORD: &str = "smtp-secret-pw-1";
const API_KEY: &str = "k-secret-gateway-key";
const WEBHOOK_SECRET: &str = "whsec-tikfleet-test-0123456789";

/// A tenant with a router and a plan, its notification settings pointing at local peers.
struct Env {
    app: TestApp,
    smtp: SmtpServer,
    hook: Receiver,
    tenant: Tenant,
    router: String,
    plan: String,
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
        .to_owned()
}

/// The settings the tests use: plain SMTP without AUTH to aiosmtpd, the receiver's `/sms` as
/// gateway and `/alerts` as webhook, and an expiry template that shows every variable.
fn settings(smtp: &SmtpServer, hook: &Receiver) -> Value {
    json!({
        "smtp": {
            "host": "127.0.0.1", "port": smtp.port, "tls": "none",
            "from": "Acme ISP <billing@acme.example>",
        },
        "sms": {
            "url": hook.url("/sms"),
            "headers": {"X-Api-Key": API_KEY},
        },
        "templates": {
            "expiry_notice": {
                "subject": "{{ plan }} for {{ username }} ends {{ expires_date }} [notice {{ days_before }}]",
                "email_body": "Dear {{ name }},\nyour {{ plan }} account {{ username }} ({{ email }}, {{ phone }}) expires at {{ expires_at }}; {{ days_left }} day(s) left.\n{{ tenant }}\n",
                "sms_body": "{{ tenant }}: {{ username }} expires {{ expires_date }} [{{ days_before }}]",
            },
        },
        "alerts": {"emails": ["noc@acme.example", "ops@acme.example"], "webhook_url": hook.url("/alerts")},
    })
}

async fn env(name: &str) -> Env {
    let app = spawn_app().await;
    let smtp = SmtpServer::start().await;
    let hook = Receiver::start().await;
    let tenant = app.tenant(name).await;
    let agent = app.agent(&tenant, &format!("{name}-site")).await;
    let router = s(
        &app.router(&tenant.operator, &agent.id, &format!("{name}-core"))
            .await,
        "id",
    );
    let plan = s(
        &app.plan(&tenant.operator, "home-10M", "10M/10M").await,
        "id",
    );
    let (st, v) = app
        .put(
            &tenant.operator,
            &format!("/api/v1/tenants/{}/notifications", tenant.id),
            settings(&smtp, &hook),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    Env {
        app,
        smtp,
        hook,
        tenant,
        router,
        plan,
    }
}

impl Env {
    fn notifier(&self, db: &Db) -> Notifier {
        Notifier::start(db.clone(), Arc::new(self.app.t.clock.clone())).unwrap()
    }

    fn set_clock(&self, at: i64) {
        self.app.t.clock.set(UnixMillis(START + at));
    }

    /// A subscriber expiring `in_ms` after START.
    async fn subscriber(
        &self,
        username: &str,
        in_ms: i64,
        email: Option<&str>,
        phone: Option<&str>,
    ) -> String {
        let (st, v) = self
            .app
            .post(
                &self.tenant.operator,
                "/api/v1/subscribers",
                json!({
                    "username": username, "password": "sub-secret-pw", "plan_id": self.plan,
                    "router_id": self.router, "service": "pppoe",
                    "expires_at": format_time(UnixMillis(START + in_ms)),
                    "name": format!("{username} Example"), "email": email, "phone": phone,
                }),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        s(&v, "id")
    }

    /// The subscriber's notification log, newest first.
    async fn log(&self, sub: &str) -> Vec<Value> {
        let (st, v) = self
            .app
            .get(
                &self.tenant.viewer,
                &format!("/api/v1/subscribers/{sub}/notifications"),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v["items"].as_array().unwrap().clone()
    }

    fn sms_to(&self, phone: &str) -> Vec<Value> {
        self.hook
            .requests("/sms")
            .iter()
            .map(tikfleet_peers::Recorded::json)
            .filter(|j| j["to"] == phone)
            .collect()
    }
}

/// Two passes of the sender that began after this call: whatever was due is done.
async fn settle(notifier: &Notifier, db: &Db) {
    let mut passes = notifier.passes();
    for _ in 0..2 {
        let target = *passes.borrow() + 1;
        db.wake_notifier();
        tokio::time::timeout(Duration::from_secs(20), passes.wait_for(|p| *p >= target))
            .await
            .expect("a sender pass within 20 s")
            .unwrap();
    }
}

async fn mails_to(smtp: &SmtpServer, to: &str, n: usize) -> Vec<tikfleet_peers::Mail> {
    until(&format!("{n} mails to {to}"), || async {
        let m = smtp.to(to);
        (m.len() >= n).then_some(m)
    })
    .await
}

/// Every tenant's stored notification settings (the JSON as kept in the database).
async fn stored_settings(app: &TestApp) -> Vec<String> {
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&app.t.url)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT notifications FROM tenants WHERE notifications IS NOT NULL")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn expiry_notices_go_out_once_per_moment_also_across_a_restart() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let e = env("notices").await;
        let alice = e
            .subscriber("alice", 3 * DAY, Some("alice@example.net"), Some("+254700000001"))
            .await;
        let bob = e
            .subscriber("bob", 3 * DAY, Some("bob@example.net"), Some("+254700000002"))
            .await;
        // Neither reachable: nothing to send, nothing queued.
        let mute = e.subscriber("mute", 3 * DAY, None, None).await;
        let notifier = e.notifier(&e.app.t.db);
        settle(&notifier, &e.app.t.db).await;
        assert!(e.smtp.messages().is_empty(), "nothing is due 3 days ahead");
        assert!(e.hook.requests("/sms").is_empty());

        // The 2-day moment.
        e.set_clock(DAY + MINUTE);
        let mails = mails_to(&e.smtp, "alice@example.net", 1).await;
        let sms = until("2 SMS", || async {
            let r = e.hook.requests("/sms");
            (r.len() >= 2).then_some(r)
        })
        .await;
        let expires = format_time(UnixMillis(START + 3 * DAY));
        let m = &mails[0];
        assert_eq!(
            m.header("Subject"),
            "home-10M for alice ends 2026-01-04 [notice 2]"
        );
        assert!(m.header("From").contains("billing@acme.example"), "{m:?}");
        assert!(m.header("To").contains("alice@example.net"), "{m:?}");
        assert!(
            m.body.contains(&format!(
                "Dear alice Example,\nyour home-10M account alice (alice@example.net, +254700000001) expires at {expires}; 2 day(s) left.\nnotices"
            )),
            "{}",
            m.body
        );
        let req = sms.iter().find(|r| r.json()["to"] == "+254700000001").unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.headers["x-api-key"], API_KEY);
        assert_eq!(req.headers["content-type"], "application/json");
        assert_eq!(
            req.json()["text"],
            "notices: alice expires 2026-01-04 [2]"
        );
        // The log: one email and one SMS, sent on the first attempt; the Message-ID is the
        // email notification's id.
        let log = until("alice's log shows both sent", || async {
            let log = e.log(&alice).await;
            (log.len() == 2 && log.iter().all(|n| n["status"] == "sent")).then_some(log)
        })
        .await;
        let email = log.iter().find(|n| n["channel"] == "email").unwrap();
        assert_eq!(email["kind"], "expiry_notice");
        assert_eq!(email["recipient"], "alice@example.net");
        assert_eq!(email["attempts"], 1);
        assert!(email["sent_at"].is_string() && email["last_error"].is_null());
        assert_eq!(
            m.header("Message-ID"),
            format!("<{}@acme.example>", s(email, "id"))
        );
        let sms_row = log.iter().find(|n| n["channel"] == "sms").unwrap();
        assert_eq!(sms_row["recipient"], "+254700000001");
        mails_to(&e.smtp, "bob@example.net", 1).await;

        // The 1-day moment.
        e.set_clock(2 * DAY + MINUTE);
        let mails = mails_to(&e.smtp, "alice@example.net", 2).await;
        mails_to(&e.smtp, "bob@example.net", 2).await;
        assert!(mails.iter().any(|m| m.header("Subject").ends_with("[notice 1]")
            && m.body.contains("; 1 day(s) left.")));
        until("4 SMS", || async { (e.hook.requests("/sms").len() >= 4).then_some(()) }).await;
        assert_eq!(e.sms_to("+254700000002").len(), 2);
        assert_eq!(e.sms_to("+254700000002")[1]["text"], "notices: bob expires 2026-01-04 [1]");
        settle(&notifier, &e.app.t.db).await;
        e.app.t.clock.advance(Duration::from_secs(120));
        settle(&notifier, &e.app.t.db).await;

        // A restart: a new database handle and sender over the same database rescan.
        notifier.shutdown().await;
        let db = Db::open(
            &e.app.t.url,
            e.app.t.key.clone(),
            Arc::new(e.app.t.clock.clone()) as Arc<dyn Clock>,
        )
        .await
        .unwrap();
        let notifier = e.notifier(&db);
        settle(&notifier, &db).await;
        e.app.t.clock.advance(Duration::from_secs(120));
        settle(&notifier, &db).await;
        assert_eq!(e.smtp.messages().len(), 4, "two notices to two subscribers, by email");
        assert_eq!(e.hook.requests("/sms").len(), 4, "and by SMS, none twice");
        let log = e.log(&alice).await;
        assert_eq!(log.len(), 4);
        assert!(log.iter().all(|n| n["status"] == "sent"));
        assert!(
            log[0]["created_at"].as_str() >= log[3]["created_at"].as_str(),
            "newest first"
        );
        assert_eq!(e.log(&bob).await.len(), 4);
        assert!(e.log(&mute).await.is_empty());
        // Paging.
        let (_, page) = e
            .app
            .get(
                &e.tenant.viewer,
                &format!("/api/v1/subscribers/{alice}/notifications?limit=3"),
            )
            .await;
        assert_eq!(page["items"].as_array().unwrap().len(), 3);
        let (_, rest) = e
            .app
            .get(
                &e.tenant.viewer,
                &format!(
                    "/api/v1/subscribers/{alice}/notifications?limit=3&cursor={}",
                    s(&page, "next_cursor")
                ),
            )
            .await;
        assert_eq!(rest["items"].as_array().unwrap().len(), 1);
        assert_eq!(rest["items"][0]["id"], log[3]["id"]);
        assert!(rest["next_cursor"].is_null());
        notifier.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_controller_down_across_both_moments_sends_only_the_last_notice() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let e = env("downtime").await;
        let carol = e
            .subscriber(
                "carol",
                3 * DAY,
                Some("carol@example.net"),
                Some("+254700000003"),
            )
            .await;
        // Down from now until after the 1-day moment.
        e.set_clock(2 * DAY + 5 * MINUTE);
        let notifier = e.notifier(&e.app.t.db);
        let mails = mails_to(&e.smtp, "carol@example.net", 1).await;
        until("the SMS", || async {
            (!e.sms_to("+254700000003").is_empty()).then_some(())
        })
        .await;
        settle(&notifier, &e.app.t.db).await;
        e.app.t.clock.advance(Duration::from_secs(120));
        settle(&notifier, &e.app.t.db).await;
        assert_eq!(e.smtp.messages().len(), 1, "only the 1-day notice");
        assert!(mails[0].header("Subject").ends_with("[notice 1]"));
        let sms = e.sms_to("+254700000003");
        assert_eq!(sms.len(), 1);
        assert_eq!(sms[0]["text"], "downtime: carol expires 2026-01-04 [1]");
        let log = e.log(&carol).await;
        assert_eq!(log.len(), 2);
        assert!(
            log.iter()
                .all(|n| n["status"] == "sent" && n["kind"] == "expiry_notice")
        );
        notifier.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn sms_retries_back_off_and_a_refusal_fails_at_once_with_an_admin_alert() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let e = env("retries").await;
        e.hook.answer("/sms", &[500, 500]);
        let carol = e
            .subscriber("carol", 3 * DAY, None, Some("+254700000003"))
            .await;
        let notifier = e.notifier(&e.app.t.db);
        e.set_clock(DAY + MINUTE);
        let row = |attempts: u64, status: &'static str| {
            let e = &e;
            let carol = carol.clone();
            async move {
                until(&format!("attempt {attempts} {status}"), || async {
                    let log = e.log(&carol).await;
                    let n = log.first()?.clone();
                    (log.len() == 1 && n["attempts"] == attempts && n["status"] == status)
                        .then_some(n)
                })
                .await
            }
        };
        let first = row(1, "pending").await;
        assert!(
            first["last_error"].as_str().unwrap().contains("500"),
            "{first}"
        );
        let retry_at = first["next_attempt_at"].as_str().unwrap().to_owned();
        assert_eq!(
            retry_at,
            format_time(UnixMillis(START + DAY + MINUTE + 30_000)),
            "the first retry 30 s later"
        );
        assert!(
            !first["last_error"].as_str().unwrap().contains("/sms"),
            "no URL path in errors"
        );
        // Not before its time.
        e.app.t.clock.advance(Duration::from_secs(29));
        settle(&notifier, &e.app.t.db).await;
        assert_eq!(e.hook.requests("/sms").len(), 1);
        e.app.t.clock.advance(Duration::from_secs(1));
        let second = row(2, "pending").await;
        assert_eq!(
            second["next_attempt_at"],
            format_time(UnixMillis(START + DAY + MINUTE + 30_000 + 60_000)),
            "the second retry 1 min later"
        );
        e.app.t.clock.advance(Duration::from_secs(60));
        let sent = row(3, "sent").await;
        assert!(sent["last_error"].is_null());
        assert_eq!(e.hook.requests("/sms").len(), 3);
        assert!(
            e.hook.requests("/alerts").is_empty(),
            "retries raise no alert"
        );

        // A 400 is final: failed at once, and the admins hear of it.
        e.hook.answer("/sms", &[400]);
        let dave = e
            .subscriber("dave", 3 * DAY + 3_600_000, None, Some("+254700000004"))
            .await;
        e.set_clock(DAY + 3_600_000 + MINUTE);
        let failed = until("dave's notice failed", || async {
            let log = e.log(&dave).await;
            let n = log.first()?.clone();
            (n["status"] == "failed").then_some(n)
        })
        .await;
        assert_eq!(failed["attempts"], 1);
        assert!(
            failed["last_error"].as_str().unwrap().contains("400"),
            "{failed}"
        );
        let alerts = mails_to(&e.smtp, "noc@acme.example", 1).await;
        assert!(
            alerts[0].header("Subject").contains("+254700000004")
                && alerts[0].header("Subject").starts_with("[tikfleet] "),
            "{:?}",
            alerts[0].headers
        );
        assert!(alerts[0].body.contains("400"), "{}", alerts[0].body);
        mails_to(&e.smtp, "ops@acme.example", 1).await;
        let hook = until("the alert webhook", || async {
            e.hook.requests("/alerts").first().cloned()
        })
        .await;
        let j = hook.json();
        assert_eq!(
            j["key"],
            format!("notification_failed:{}", s(&failed, "id"))
        );
        assert_eq!(j["tenant"], e.tenant.id);
        settle(&notifier, &e.app.t.db).await;
        assert_eq!(e.hook.requests("/alerts").len(), 1);
        assert_eq!(e.smtp.messages().len(), 2);
        notifier.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn admin_alerts_go_by_email_and_webhook_once_per_key() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let e = env("alerts").await;
        let notifier = e.notifier(&e.app.t.db);
        let tenant: TenantId = e.tenant.id.parse().unwrap();
        let router = e.router.parse().unwrap();
        let db = &e.app.t.db;
        let queued = db
            .send_alert(
                tenant,
                Some(router),
                "disk-full:core",
                "Router core disk full",
                "The router's disk is 99% full.",
            )
            .await
            .unwrap();
        assert_eq!(queued, 3, "two addresses and the webhook");
        let again = db
            .send_alert(
                tenant,
                Some(router),
                "disk-full:core",
                "Router core disk full",
                "again",
            )
            .await
            .unwrap();
        assert_eq!(again, 0, "the same key is one alert");
        let noc = mails_to(&e.smtp, "noc@acme.example", 1).await;
        mails_to(&e.smtp, "ops@acme.example", 1).await;
        assert_eq!(noc[0].header("Subject"), "[tikfleet] Router core disk full");
        assert!(
            noc[0].body.contains("The router's disk is 99% full."),
            "{}",
            noc[0].body
        );
        let hook = until("the webhook", || async {
            e.hook.requests("/alerts").first().cloned()
        })
        .await;
        assert_eq!(hook.method, "POST");
        assert_eq!(hook.headers["content-type"], "application/json");
        let j = hook.json();
        assert_eq!(j["subject"], "Router core disk full");
        assert_eq!(j["body"], "The router's disk is 99% full.");
        assert_eq!(j["tenant"], e.tenant.id);
        assert_eq!(j["tenant_name"], "alerts");
        assert_eq!(j["router"], e.router);
        assert_eq!(j["key"], "disk-full:core");
        assert_eq!(j["at"], format_time(UnixMillis(START)));
        settle(&notifier, db).await;
        assert_eq!(e.smtp.messages().len(), 2);
        assert_eq!(e.hook.requests("/alerts").len(), 1);
        notifier.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// The lowercase hex HMAC-SHA256 of `"{timestamp}.{body}"` under `secret`, as a receiver
/// computes it.
fn expected_signature(secret: &str, timestamp: &str, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{timestamp}.{body}").as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_webhook_secret_signs_alerts_and_is_never_shown() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let e = env("signed").await;
        let app = &e.app;
        let db = &app.t.db;
        let path = format!("/api/v1/tenants/{}/notifications", e.tenant.id);
        let tenant: TenantId = e.tenant.id.parse().unwrap();
        let (_, unsigned) = app.get(&e.tenant.viewer, &path).await;
        assert_eq!(unsigned["alerts"]["webhook_secret_set"], false);

        // Invalid secrets: 400 naming the field.
        for (secret, url) in [
            (
                json!("too-short-secret"[..15]),
                json!(e.hook.url("/alerts")),
            ),
            (json!("x".repeat(257)), json!(e.hook.url("/alerts"))),
            (json!(WEBHOOK_SECRET), Value::Null),
        ] {
            let mut bad = unsigned.clone();
            bad["alerts"]["webhook_secret"] = secret.clone();
            bad["alerts"]["webhook_url"] = url;
            let (st, err) = app.put(&e.tenant.operator, &path, bad).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{secret}: {err}");
            assert_eq!(error_code(&err), "invalid_request");
            assert!(
                err["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("alerts.webhook_secret"),
                "{err}"
            );
        }
        // 256 characters are fine (not kept: the real one follows).
        let mut longest = unsigned.clone();
        longest["alerts"]["webhook_secret"] = json!("é".repeat(256));
        let (st, v) = app.put(&e.tenant.operator, &path, longest).await;
        assert_eq!(st, StatusCode::OK, "{v}");

        let mut signed = unsigned.clone();
        signed["alerts"]["webhook_secret"] = json!(WEBHOOK_SECRET);
        let (st, v) = app.put(&e.tenant.operator, &path, signed).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["alerts"]["webhook_secret_set"], true);
        // Shown only as set, also to viewers; what GET answers goes back with the secret kept.
        let (st, shown) = app.get(&e.tenant.viewer, &path).await;
        assert_eq!(st, StatusCode::OK, "{shown}");
        assert_eq!(shown["alerts"]["webhook_secret_set"], true);
        assert!(shown["alerts"].get("webhook_secret").is_none(), "{shown}");
        assert!(!shown.to_string().contains(WEBHOOK_SECRET), "{shown}");
        let (st, back) = app.put(&e.tenant.operator, &path, shown.clone()).await;
        assert_eq!(st, StatusCode::OK, "{back}");
        assert_eq!(back, shown);
        let mut null_keeps = shown.clone();
        null_keeps["alerts"]["webhook_secret"] = Value::Null;
        let (st, back) = app.put(&e.tenant.operator, &path, null_keeps).await;
        assert_eq!(st, StatusCode::OK, "{back}");
        assert_eq!(back["alerts"]["webhook_secret_set"], true);

        // Sealed in storage; not in the audit rows, which say only whether one is set.
        let stored = stored_settings(app).await;
        assert_eq!(stored.len(), 1);
        assert!(stored[0].contains("webhook_secret_sealed"), "{stored:?}");
        assert!(!stored[0].contains(WEBHOOK_SECRET), "{stored:?}");
        let (_, audit) = app
            .get(
                &app.admin,
                "/api/v1/audit?action=tenant.notification_settings",
            )
            .await;
        let items = audit["items"].as_array().unwrap();
        assert_eq!(items.len(), 5, "{audit}");
        assert!(!audit.to_string().contains(WEBHOOK_SECRET), "{audit}");
        assert_eq!(
            items[0]["params"]["alert_webhook_signing"], "none",
            "oldest first"
        );
        assert_eq!(items[4]["params"]["alert_webhook_signing"], "set");

        // An alert queued now and sent 90 s later: signed with the time of the send.
        db.send_alert(tenant, None, "signed:1", "Signed alert", "One.")
            .await
            .unwrap();
        e.app.t.clock.advance(Duration::from_secs(90));
        let notifier = e.notifier(db);
        let hook = until("the signed webhook", || async {
            e.hook.requests("/alerts").first().cloned()
        })
        .await;
        assert_eq!(hook.json()["key"], "signed:1");
        assert_eq!(hook.json()["at"], format_time(UnixMillis(START)));
        let timestamp = hook.headers["x-tikfleet-timestamp"].clone();
        assert_eq!(timestamp, ((START + 90_000) / 1000).to_string());
        assert_eq!(
            timestamp,
            (app.t.clock.now().as_millis() / 1000).to_string()
        );
        let signature = hook.headers["x-tikfleet-signature"].clone();
        let hex = signature.strip_prefix("sha256=").expect("sha256= prefix");
        assert_eq!(
            hex,
            expected_signature(WEBHOOK_SECRET, &timestamp, &hook.body)
        );
        let tag: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, WEBHOOK_SECRET.as_bytes());
        ring::hmac::verify(&key, format!("{timestamp}.{}", hook.body).as_bytes(), &tag)
            .expect("the signature verifies");
        assert!(
            !hook.headers.values().any(|v| v.contains(WEBHOOK_SECRET)),
            "{:?}",
            hook.headers
        );

        // "" removes it: unsigned again.
        let mut removed = shown.clone();
        removed["alerts"]["webhook_secret"] = json!("");
        let (st, v) = app.put(&e.tenant.operator, &path, removed).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["alerts"]["webhook_secret_set"], false);
        db.send_alert(tenant, None, "signed:2", "Unsigned alert", "Two.")
            .await
            .unwrap();
        let hook = until("the unsigned webhook", || async {
            e.hook
                .requests("/alerts")
                .into_iter()
                .find(|r| r.json()["key"] == "signed:2")
        })
        .await;
        assert!(
            !hook.headers.contains_key("x-tikfleet-timestamp")
                && !hook.headers.contains_key("x-tikfleet-signature"),
            "{:?}",
            hook.headers
        );
        notifier.shutdown().await;

        // Removing the webhook removes its secret.
        let mut signed = unsigned.clone();
        signed["alerts"]["webhook_secret"] = json!(WEBHOOK_SECRET);
        let (st, v) = app.put(&e.tenant.operator, &path, signed).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let mut no_hook = v.clone();
        no_hook["alerts"]["webhook_url"] = Value::Null;
        let (st, v) = app.put(&e.tenant.operator, &path, no_hook).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["alerts"]["webhook_secret_set"], false);
        let mut back = v.clone();
        back["alerts"]["webhook_url"] = json!(e.hook.url("/alerts"));
        let (st, v) = app.put(&e.tenant.operator, &path, back).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["alerts"]["webhook_secret_set"], false);
        let (_, audit) = app
            .get(
                &app.admin,
                "/api/v1/audit?action=tenant.notification_settings",
            )
            .await;
        assert!(!audit.to_string().contains(WEBHOOK_SECRET), "{audit}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn the_settings_api_hides_secrets_checks_templates_and_keeps_tenants_apart() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let e = env("settings").await;
        let app = &e.app;
        let path = format!("/api/v1/tenants/{}/notifications", e.tenant.id);
        let mut with_auth = settings(&e.smtp, &e.hook);
        with_auth["smtp"]["username"] = json!("mailer");
        with_auth["smtp"]["password"] = json!(SMTP_PASSWORD);
        let (st, v) = app.put(&e.tenant.operator, &path, with_auth).await;
        assert_eq!(st, StatusCode::OK, "{v}");

        // Viewers read; no secret is shown.
        let (st, v) = app.get(&e.tenant.viewer, &path).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let text = v.to_string();
        assert!(
            !text.contains(SMTP_PASSWORD) && !text.contains(API_KEY),
            "{text}"
        );
        assert_eq!(v["smtp"]["password_set"], true);
        assert!(v["smtp"].get("password").is_none());
        assert_eq!(v["smtp"]["from"], "Acme ISP <billing@acme.example>");
        assert_eq!(v["sms"]["headers"], json!({"X-Api-Key": null}));
        assert_eq!(v["sms"]["method"], "POST");
        assert_eq!(v["sms"]["content_type"], "application/json");
        assert_eq!(v["templates"]["custom"], json!(["expiry_notice"]));
        assert!(
            v["templates"]["grace"]["subject"]
                .as_str()
                .unwrap()
                .contains("{{ plan }}")
        );

        // Nor in storage or in the audit log.
        let stored = stored_settings(app).await;
        assert_eq!(stored.len(), 1);
        assert!(!stored[0].contains(SMTP_PASSWORD) && !stored[0].contains(API_KEY));
        let (_, audit) = app
            .get(
                &app.admin,
                "/api/v1/audit?action=tenant.notification_settings",
            )
            .await;
        let items = audit["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{audit}");
        let text = audit.to_string();
        assert!(
            !text.contains(SMTP_PASSWORD) && !text.contains(API_KEY),
            "{text}"
        );
        assert_eq!(items[0]["params"]["sms_headers"], "X-Api-Key");
        assert_eq!(items[1]["params"]["smtp_auth"], "set");

        // What GET answers goes back as it is, secrets kept.
        let (st, back) = app.put(&e.tenant.operator, &path, v.clone()).await;
        assert_eq!(st, StatusCode::OK, "{back}");
        assert_eq!(back, v);
        let mut changed = v.clone();
        changed["smtp"]["password"] = Value::Null;
        // aiosmtpd offers no AUTH: the test message below goes without.
        changed["smtp"]["username"] = Value::Null;
        changed["sms"]["headers"] = json!({"Authorization": "Bearer other-secret"});
        let (st, after) = app.put(&app.admin, &path, changed).await;
        assert_eq!(st, StatusCode::OK, "{after}");
        assert_eq!(after["smtp"]["password_set"], false);
        assert_eq!(after["sms"]["headers"], json!({"Authorization": null}));
        // A kept header must exist.
        let mut keep_missing = after.clone();
        keep_missing["sms"]["headers"] = json!({"X-Other": null});
        let (st, err) = app.put(&e.tenant.operator, &path, keep_missing).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{err}");

        // A template that does not render: 422 naming the field.
        let mut bad = after.clone();
        bad["templates"]["grace"]["sms_body"] = json!("{{ tenant }} {% if %}");
        let (st, err) = app.put(&e.tenant.operator, &path, bad).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
        assert_eq!(error_code(&err), "invalid_template");
        assert_eq!(err["error"]["field"], "templates.grace.sms_body");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("templates.grace.sms_body: ")
        );
        let mut typo = after.clone();
        typo["templates"]["renewed"]["subject"] = json!("Renewed until {{ expires_daet }}");
        let (st, err) = app.put(&e.tenant.operator, &path, typo).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
        assert_eq!(err["error"]["field"], "templates.renewed.subject");
        let mut body = after.clone();
        body["sms"]["body_template"] = json!("{\"to\": {{ phone|nosuchfilter }}}");
        let (st, err) = app.put(&e.tenant.operator, &path, body).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
        assert_eq!(err["error"]["field"], "sms.body_template");

        // Other invalid values: 400.
        for (field, value) in [
            ("/sms/url", json!("ftp://sms.example.com/send")),
            ("/alerts/webhook_url", json!("not a url")),
            ("/alerts/emails", json!(["not-an-address"])),
            ("/smtp/from", json!("nobody")),
            ("/smtp/tls", json!("ssl")),
            ("/sms/method", json!("DELETE")),
        ] {
            let mut bad = after.clone();
            *bad.pointer_mut(field).unwrap() = value;
            let (st, err) = app.put(&e.tenant.operator, &path, bad).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{field}: {err}");
            assert_eq!(error_code(&err), "invalid_request");
        }
        let (st, err) = app
            .put(&e.tenant.operator, &path, json!({"smtp": null, "bogus": 1}))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{err}");

        // Viewers cannot change them; other tenants cannot see or change them.
        let (st, err) = app.put(&e.tenant.viewer, &path, after.clone()).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{err}");
        let other = app.tenant("other").await;
        let (st, _) = app.get(&other.operator, &path).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, _) = app.put(&other.operator, &path, after.clone()).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, _) = app
            .post(
                &other.operator,
                &format!("{path}/test"),
                json!({"channel": "email", "recipient": "x@example.net"}),
            )
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let sub = e
            .subscriber("erin", 10 * DAY, Some("erin@example.net"), None)
            .await;
        let (st, _) = app
            .get(
                &other.viewer,
                &format!("/api/v1/subscribers/{sub}/notifications"),
            )
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, v) = app
            .get(
                &e.tenant.viewer,
                &format!("/api/v1/subscribers/{sub}/notifications"),
            )
            .await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v, json!({"items": [], "next_cursor": null}));

        // A test message goes out like any other.
        let notifier = e.notifier(&app.t.db);
        let (st, v) = app
            .post(
                &e.tenant.viewer,
                &format!("{path}/test"),
                json!({"channel": "email", "recipient": "staff@acme.example"}),
            )
            .await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
        let (st, v) = app
            .post(
                &e.tenant.operator,
                &format!("{path}/test"),
                json!({"channel": "email", "recipient": "staff@acme.example"}),
            )
            .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["ids"].as_array().unwrap().len(), 1);
        let m = mails_to(&e.smtp, "staff@acme.example", 1).await;
        assert_eq!(m[0].header("Subject"), "Test message from settings");
        let (st, v) = app
            .post(
                &e.tenant.operator,
                &format!("{path}/test"),
                json!({"channel": "sms", "recipient": "+254700000009"}),
            )
            .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        let sms = until("the test SMS", || async {
            e.hook.requests("/sms").first().cloned()
        })
        .await;
        assert_eq!(sms.headers["authorization"], "Bearer other-secret");
        assert_eq!(sms.json()["to"], "+254700000009");
        notifier.shutdown().await;

        // Removing everything: null sections, built-in templates.
        let (st, v) = app.put(&e.tenant.operator, &path, json!({})).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert!(v["smtp"].is_null() && v["sms"].is_null());
        assert_eq!(v["templates"]["custom"], json!([]));
        assert_eq!(
            v["alerts"],
            json!({"emails": [], "webhook_url": null, "webhook_secret_set": false})
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn two_senders_over_one_database_send_each_notice_once() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let e = env("replicas").await;
        for i in 0..6 {
            e.subscriber(
                &format!("user{i}"),
                3 * DAY,
                Some(&format!("user{i}@example.net")),
                Some(&format!("+25470000010{i}")),
            )
            .await;
        }
        // A second controller: its own database handle over the same database.
        let other = Db::open(
            &e.app.t.url,
            e.app.t.key.clone(),
            Arc::new(e.app.t.clock.clone()) as Arc<dyn Clock>,
        )
        .await
        .unwrap();
        let a = e.notifier(&e.app.t.db);
        let b = e.notifier(&other);
        e.set_clock(DAY + MINUTE);
        until("6 mails and 6 SMS", || async {
            (e.smtp.messages().len() >= 6 && e.hook.requests("/sms").len() >= 6).then_some(())
        })
        .await;
        settle(&a, &e.app.t.db).await;
        settle(&b, &other).await;
        assert_eq!(e.smtp.messages().len(), 6);
        assert_eq!(e.hook.requests("/sms").len(), 6);
        a.shutdown().await;
        b.shutdown().await;
    })
    .await
    .expect("test timed out");
}
