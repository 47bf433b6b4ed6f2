//! The RouterOS driver against the in-process simulator: plain API and API-SSL (verify, pin),
//! version detection, error classification with injected faults, reconnection, pipelining,
//! the command observer and the update check.

mod routeros_common;

use std::collections::BTreeMap;
use std::time::Duration;

use routeros_common::*;
use tikfleet_agent::router::TlsMode;
use tikfleet_agent::routeros::{Cmd, DriverConfig};
use tikfleet_shared::ErrorCode;
use tikfleet_shared::record::AuditStatus;
use tikfleet_shared::secret::REDACTED;
use tikfleet_sim::faults::FaultsPatch;
use tikfleet_sim::router::lock;

#[tokio::test]
async fn detects_v7_and_v6_and_their_capabilities() {
    within(async {
        for (version, major, channel) in [("7.16.2", 7, "stable"), ("6.49.10", 6, "long-term")] {
            let sim = sim(version).await;
            let (client, _) = client(&sim).await;
            let v = client.version();
            assert_eq!(v.number(), version);
            assert_eq!(v.major, major);
            assert_eq!(v.channel, channel);
            let caps = client.caps();
            assert_eq!(caps.v7, major == 7);
            assert_eq!(caps.ppp_comment_on_add, major == 7);
            let rows = client
                .run(Cmd::new("/system/identity/print"))
                .await
                .unwrap();
            assert_eq!(rows[0]["name"], "sim-1");
            sim.shutdown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn api_ssl_verifies_the_certificate_against_the_ca() {
    within(async {
        let sim = sim("7.16.2").await;
        let addr = sim.routers[0].api_ssl.unwrap();
        for name in ["localhost", "127.0.0.1"] {
            let tls = TlsMode::Verify {
                ca_pem: sim.cert.pem.clone(),
                server_name: name.into(),
            };
            let (c, _) = connect_with(endpoint(addr, tls, "admin"), quick()).await;
            let c = c.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(c.version().major, 7);
        }
        // Another simulator's certificate is not a CA for this one.
        let other = routeros_common::sim("7.16.2").await;
        let tls = TlsMode::Verify {
            ca_pem: other.cert.pem.clone(),
            server_name: "localhost".into(),
        };
        let (c, _) = connect_with(endpoint(addr, tls, "admin"), quick()).await;
        let e = c.unwrap_err();
        assert_eq!(e.code(), ErrorCode::AuthenticationFailed, "{e}");
        // The right CA, the wrong name.
        let tls = TlsMode::Verify {
            ca_pem: sim.cert.pem.clone(),
            server_name: "router.example".into(),
        };
        let (c, _) = connect_with(endpoint(addr, tls, "admin"), quick()).await;
        assert_eq!(c.unwrap_err().code(), ErrorCode::AuthenticationFailed);
        other.shutdown().await;
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn api_ssl_pins_the_certificate() {
    within(async {
        let sim = sim("6.49.10").await;
        let addr = sim.routers[0].api_ssl.unwrap();
        let pin = TlsMode::Pin {
            sha256: sim.cert.sha256.to_uppercase(),
        };
        let (c, _) = connect_with(endpoint(addr, pin, "admin"), quick()).await;
        assert_eq!(c.expect("pinned certificate accepted").version().major, 6);

        let wrong = TlsMode::Pin {
            sha256: "00".repeat(32),
        };
        let (c, _) = connect_with(endpoint(addr, wrong, "admin"), quick()).await;
        let e = c.unwrap_err();
        assert_eq!(e.code(), ErrorCode::AuthenticationFailed);
        assert!(e.message().contains("does not match the pinned"), "{e}");
        assert!(e.message().contains(&sim.cert.sha256), "{e}");

        let malformed = TlsMode::Pin {
            sha256: "abc".into(),
        };
        let (c, _) = connect_with(endpoint(addr, malformed, "admin"), quick()).await;
        assert_eq!(c.unwrap_err().code(), ErrorCode::InvalidRequest);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn connection_failures_are_classified() {
    within(async {
        // Nothing listens: the TCP connection is refused.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let (c, observer) = connect_with(endpoint(addr, TlsMode::Plain, "admin"), quick()).await;
        let e = c.unwrap_err();
        assert_eq!(e.code(), ErrorCode::ConnectionRefused, "{e}");
        assert!(e.retryable());
        assert!(e.message().contains("core-1"), "{e}");
        let login = &observer.events()[0];
        assert_eq!(login.action, "/login");
        assert_eq!(login.status, AuditStatus::Failed);

        let sim = sim("7.16.2").await;
        let api = sim.routers[0].api.unwrap();
        // The router accepts and closes at once (API service disabled / address not allowed).
        faults(
            &sim,
            FaultsPatch {
                refuse: Some(true),
                ..FaultsPatch::default()
            },
        );
        let (c, _) = connect_with(endpoint(api, TlsMode::Plain, "admin"), quick()).await;
        assert_eq!(c.unwrap_err().code(), ErrorCode::ConnectionRefused);
        clear_faults(&sim);

        // Wrong password.
        let (c, observer) = connect_with(endpoint(api, TlsMode::Plain, "wrong-pw"), quick()).await;
        let e = c.unwrap_err();
        assert_eq!(e.code(), ErrorCode::AuthenticationFailed, "{e}");
        assert!(e.message().contains("invalid user name or password"), "{e}");
        assert!(!e.to_string().contains("wrong-pw"));
        let events = observer.events();
        assert_eq!(events[0].params.get("password"), Some(REDACTED));
        assert_eq!(
            events[0].error.as_ref().map(|e| e.code),
            Some(ErrorCode::AuthenticationFailed)
        );
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn traps_map_to_codes() {
    within(async {
        let sim = sim("7.16.2").await;
        let (client, _) = client(&sim).await;
        let cases = [
            (
                "/ppp/secret/add",
                "failure: secret with the same name already exists",
                ErrorCode::DuplicateName,
            ),
            ("/ppp/secret/set", "no such item", ErrorCode::NoSuchItem),
            (
                "/ppp/secret/remove",
                "input does not match any value of profile",
                ErrorCode::InvalidValue,
            ),
            (
                "/ppp/profile/add",
                "not enough permissions (9)",
                ErrorCode::PermissionDenied,
            ),
            (
                "/ppp/profile/set",
                "no such command",
                ErrorCode::UnknownCommand,
            ),
            (
                "/ppp/profile/remove",
                "failure: can not remove default item",
                ErrorCode::RouterError,
            ),
        ];
        let traps: BTreeMap<String, String> = cases
            .iter()
            .map(|(p, m, _)| ((*p).to_owned(), (*m).to_owned()))
            .collect();
        faults(
            &sim,
            FaultsPatch {
                traps: Some(traps),
                ..FaultsPatch::default()
            },
        );
        for (path, message, code) in cases {
            let e = client
                .run(Cmd::new(path).attr("name", "x"))
                .await
                .unwrap_err();
            assert_eq!(e.code(), code, "{path}: {e}");
            assert!(e.message().contains(message), "{e}");
        }
        clear_faults(&sim);
        // Real traps of the simulator, not injected ones.
        let e = client
            .run(Cmd::new("/routing/bgp/peer/print"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnknownCommand, "{e}");
        let e = client
            .run(
                Cmd::new("/ppp/secret/add")
                    .attr("name", "bob")
                    .attr("profile", "missing"),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidValue, "{e}");
        let e = client
            .run(Cmd::new("/ppp/secret/remove").attr(".id", "*99"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::NoSuchItem, "{e}");
        // The connection survived every trap.
        assert_eq!(client.connections_opened(), 1);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_dropped_connection_is_a_reset_and_the_pool_reconnects() {
    within(async {
        let sim = sim("7.16.2").await;
        let addr = sim.routers[0].api.unwrap();
        let config = DriverConfig {
            pool_size: 1,
            ..quick()
        };
        let (client, _) = connect_with(endpoint(addr, TlsMode::Plain, "admin"), config).await;
        let client = client.unwrap();
        // Commands after login on this connection so far: the version check (1).
        faults(
            &sim,
            FaultsPatch {
                drop_after: Some(3),
                ..FaultsPatch::default()
            },
        );
        let print = || Cmd::new("/system/identity/print");
        client.run(print()).await.unwrap(); // 2
        client.run(print()).await.unwrap(); // 3
        let e = client.run(print()).await.unwrap_err(); // 4: dropped
        assert_eq!(e.code(), ErrorCode::ConnectionReset, "{e}");
        assert!(e.retryable());
        clear_faults(&sim);
        let rows = client.run(print()).await.expect("reconnected");
        assert_eq!(rows[0]["name"], "sim-1");
        assert_eq!(client.connections_opened(), 2);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_slow_router_times_out() {
    within(async {
        let sim = sim("7.16.2").await;
        let addr = sim.routers[0].api.unwrap();
        let config = DriverConfig {
            command_timeout: Duration::from_millis(200),
            pool_size: 1,
            ..quick()
        };
        let (client, observer) =
            connect_with(endpoint(addr, TlsMode::Plain, "admin"), config).await;
        let client = client.unwrap();
        faults(
            &sim,
            FaultsPatch {
                delay_ms: Some(5_000),
                ..FaultsPatch::default()
            },
        );
        let e = client
            .run(Cmd::new("/system/identity/print"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
        assert!(e.retryable());
        let last = observer.events().pop().unwrap();
        assert_eq!(last.error.map(|e| e.code), Some(ErrorCode::Timeout));
        clear_faults(&sim);
        client
            .run(Cmd::new("/system/identity/print"))
            .await
            .expect("works again");
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn pipelined_commands_share_one_connection() {
    within(async {
        let sim = sim("7.16.2").await;
        let (client, _) = client(&sim).await;
        faults(
            &sim,
            FaultsPatch {
                delay_ms: Some(50),
                ..FaultsPatch::default()
            },
        );
        let cmds: Vec<Cmd> = (0..40)
            .map(|i| {
                Cmd::new("/ip/firewall/address-list/add")
                    .attr("list", "bulk")
                    .attr("address", format!("10.1.0.{i}"))
            })
            .collect();
        let results = client.run_many(cmds).await;
        assert_eq!(results.len(), 40);
        for r in &results {
            r.as_ref().unwrap();
        }
        // One duplicate among new ones: results keep the input order.
        let results = client
            .run_many(vec![
                Cmd::new("/ip/firewall/address-list/add")
                    .attr("list", "bulk")
                    .attr("address", "10.1.0.200"),
                Cmd::new("/ip/firewall/address-list/add")
                    .attr("list", "bulk")
                    .attr("address", "10.1.0.5"),
            ])
            .await;
        assert!(results[0].is_ok());
        assert_eq!(
            results[1].as_ref().unwrap_err().code(),
            ErrorCode::DuplicateName
        );
        assert_eq!(
            menu(&sim, "/ip/firewall/address-list")
                .iter()
                .filter(|r| r["list"] == "bulk")
                .count(),
            41
        );
        assert_eq!(client.connections_opened(), 1);
        let stats = lock(&sim.router(0).stats).view(None, std::time::Instant::now());
        assert!(stats.max_in_flight > 1, "commands overlapped: {stats:?}");
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn the_observer_sees_every_command_with_secrets_redacted() {
    within(async {
        let sim = sim("7.16.2").await;
        let (client, observer) = client(&sim).await;
        client
            .run(
                Cmd::new("/ppp/secret/add")
                    .attr("name", "alice")
                    .secret("password", &tikfleet_shared::Secret::new("s3cr3t-pw")),
            )
            .await
            .unwrap();
        client
            .run(Cmd::new("/ppp/secret/add").attr("name", "alice"))
            .await
            .unwrap_err();
        let events = observer.events();
        let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "/login",
                "/system/resource/print",
                "/ppp/secret/add",
                "/ppp/secret/add"
            ]
        );
        for e in &events {
            assert_eq!(e.router_id, client.endpoint().id);
            assert_eq!(e.tenant_id, client.endpoint().tenant);
            assert_eq!(e.started_at, T0);
            let text = format!("{e:?}");
            assert!(!text.contains("s3cr3t-pw"), "{text}");
            assert!(!text.contains("\"admin\"") || e.action == "/login");
        }
        assert_eq!(events[0].params.get("password"), Some(REDACTED));
        assert_eq!(events[2].params.get("name"), Some("alice"));
        assert_eq!(events[2].params.get("password"), Some(REDACTED));
        assert_eq!(events[2].status, AuditStatus::Succeeded);
        assert_eq!(events[3].status, AuditStatus::Failed);
        let err = events[3].error.as_ref().unwrap();
        assert_eq!(err.code, ErrorCode::DuplicateName);
        assert!(!err.retryable);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn reports_whether_an_update_is_available() {
    within(async {
        let sim = sim("7.16.2").await;
        let (client, _) = client(&sim).await;
        let check = client.check_for_updates().await;
        assert_eq!(check.installed.as_deref(), Some("7.16.2"));
        assert!(!check.available, "{check:?}");
        assert_eq!(check.error, None);

        lock(&sim.router(0).device).update.latest = "7.17.1".into();
        let check = client.check_for_updates().await;
        assert!(check.available, "{check:?}");
        assert_eq!(check.latest.as_deref(), Some("7.17.1"));
        assert_eq!(check.status.as_deref(), Some("New version is available"));

        // A router that cannot check is not an error.
        let traps = BTreeMap::from([(
            "/system/package/update/check-for-updates".to_owned(),
            "ERROR: could not resolve dns name".to_owned(),
        )]);
        faults(
            &sim,
            FaultsPatch {
                traps: Some(traps),
                ..FaultsPatch::default()
            },
        );
        let check = client.check_for_updates().await;
        assert!(check.error.is_some(), "{check:?}");
        sim.shutdown().await;
    })
    .await;
}
