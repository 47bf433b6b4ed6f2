//! Every router operation against the simulator's v6 and v7 personalities, each run twice to
//! prove idempotency, checked against the simulator's own state.

mod routeros_common;

use std::time::Instant;

use routeros_common::*;
use tikfleet_agent::ops::{Change, OpOutcome, Ownership, execute, execute_with};
use tikfleet_agent::routeros::{Cmd, RouterOsClient};
use tikfleet_shared::domain::{
    AccountKind, AccountRef, AddressListEntry, HotspotProfile, HotspotUser, PppProfile, PppSecret,
    PppService, Profile,
};
use tikfleet_shared::job::JobOp;
use tikfleet_shared::{ErrorCode, Secret};
use tikfleet_sim::router::lock;
use tikfleet_sim::sessions::Service;

const VERSIONS: [&str; 2] = ["6.49.10", "7.16.2"];

/// Runs `op` twice: the first outcome is `first`, the second changes nothing.
async fn twice(client: &RouterOsClient, op: &JobOp, first: Change, again: Change) -> OpOutcome {
    let one = execute(client, op)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", op.name()));
    assert_eq!(one.change, first, "{} (first)", op.name());
    let two = execute(client, op)
        .await
        .unwrap_or_else(|e| panic!("{} again: {e}", op.name()));
    assert_eq!(two.change, again, "{} (again)", op.name());
    one
}

fn ppp_profile(rate: &str) -> JobOp {
    JobOp::UpsertProfile {
        profile: Profile::Ppp(PppProfile {
            name: "plan-10m".into(),
            rate_limit: Some(rate.into()),
            address_list: None,
            local_address: None,
            remote_address: None,
            dns_server: None,
            only_one: Some(true),
            comment: Some("10 Mbit plan".into()),
        }),
    }
}

fn secret(profile: &str, remote: Option<&str>) -> PppSecret {
    PppSecret {
        subscriber_id: None,
        name: "alice".into(),
        password: Secret::new("alice-pw"),
        service: PppService::Pppoe,
        profile: profile.into(),
        disabled: false,
        remote_address: remote.map(Into::into),
        comment: Some("Alice".into()),
    }
}

fn ppp(name: &str) -> AccountRef {
    AccountRef {
        kind: AccountKind::Ppp,
        name: name.into(),
    }
}

fn hs(name: &str) -> AccountRef {
    AccountRef {
        kind: AccountKind::Hotspot,
        name: name.into(),
    }
}

fn updated(fields: &[&str]) -> Change {
    Change::Updated {
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
    }
}

#[tokio::test]
async fn ppp_operations_are_idempotent_on_v6_and_v7() {
    within(async {
        for version in VERSIONS {
            let sim = sim(version).await;
            let (client, observer) = client(&sim).await;
            let s =
                |k: &str| row(&sim, "/ppp/secret", "name", "alice").and_then(|r| r.get(k).cloned());

            twice(
                &client,
                &ppp_profile("10M/10M"),
                Change::Created,
                Change::Unchanged,
            )
            .await;
            let p = row(&sim, "/ppp/profile", "name", "plan-10m").unwrap();
            assert_eq!(p["rate-limit"], "10M/10M");
            assert_eq!(p["only-one"], "yes");
            assert_eq!(p["comment"], "tikfleet: 10 Mbit plan");
            // The same rate written in bits per second is no change.
            twice(
                &client,
                &ppp_profile("10000000/10000000"),
                Change::Unchanged,
                Change::Unchanged,
            )
            .await;
            twice(
                &client,
                &ppp_profile("20M/20M"),
                updated(&["rate-limit"]),
                Change::Unchanged,
            )
            .await;
            let slow = JobOp::UpsertProfile {
                profile: Profile::Ppp(PppProfile {
                    name: "slow".into(),
                    rate_limit: Some("1M/1M".into()),
                    address_list: Some("grace".into()),
                    local_address: None,
                    remote_address: None,
                    dns_server: None,
                    only_one: None,
                    comment: None,
                }),
            };
            twice(&client, &slow, Change::Created, Change::Unchanged).await;
            let slow_row = row(&sim, "/ppp/profile", "name", "slow").unwrap();
            assert_eq!(
                slow_row.get("comment").map(String::as_str),
                Some("tikfleet:"),
                "{slow_row:?}"
            );

            let upsert = JobOp::UpsertPppSecret {
                secret: secret("plan-10m", Some("10.9.0.2")),
                profile: None,
            };
            twice(&client, &upsert, Change::Created, Change::Unchanged).await;
            assert_eq!(s("password").unwrap(), "alice-pw");
            assert_eq!(s("service").unwrap(), "pppoe");
            assert_eq!(s("profile").unwrap(), "plan-10m");
            assert_eq!(s("remote-address").unwrap(), "10.9.0.2");
            assert_eq!(s("comment").unwrap(), "tikfleet: Alice");
            // Before 7.15 the comment goes through the `comment` verb (Capabilities).
            let by_verb = observer
                .events()
                .iter()
                .any(|e| e.action == "/ppp/secret/comment");
            assert_eq!(by_verb, version.starts_with('6'), "{version}");

            // Dropping the fixed address unsets it.
            let upsert = JobOp::UpsertPppSecret {
                secret: secret("plan-10m", None),
                profile: None,
            };
            twice(
                &client,
                &upsert,
                updated(&["remote-address"]),
                Change::Unchanged,
            )
            .await;
            assert_eq!(s("remote-address"), None);

            // A live session is disconnected when the profile changes.
            lock(&sim.router(0).device)
                .start_client(Service::Pppoe, "alice", "alice-pw", None, Instant::now())
                .expect("alice dials");
            assert_eq!(menu(&sim, "/ppp/active").len(), 1);
            let set = JobOp::SetProfile {
                account: ppp("alice"),
                profile: "slow".into(),
            };
            let out = twice(&client, &set, updated(&["profile"]), Change::Unchanged).await;
            assert_eq!(out.sessions_disconnected, 1);
            assert_eq!(s("profile").unwrap(), "slow");
            assert!(menu(&sim, "/ppp/active").is_empty());

            let disable = JobOp::Disable {
                account: ppp("alice"),
            };
            twice(&client, &disable, updated(&["disabled"]), Change::Unchanged).await;
            assert_eq!(s("disabled").unwrap(), "true");
            let enable = JobOp::Enable {
                account: ppp("alice"),
            };
            twice(&client, &enable, updated(&["disabled"]), Change::Unchanged).await;
            assert_eq!(s("disabled").unwrap(), "false");

            let disconnect = JobOp::DisconnectSession {
                account: ppp("alice"),
            };
            twice(&client, &disconnect, Change::Absent, Change::Absent).await;
            lock(&sim.router(0).device)
                .start_client(Service::Pppoe, "alice", "alice-pw", None, Instant::now())
                .expect("alice dials");
            let out = twice(&client, &disconnect, Change::Deleted, Change::Absent).await;
            assert_eq!(out.sessions_disconnected, 1);

            let missing = execute(
                &client,
                &JobOp::Enable {
                    account: ppp("nobody"),
                },
            )
            .await
            .unwrap_err();
            assert_eq!(missing.code(), ErrorCode::NoSuchItem);

            let delete = JobOp::DeletePppSecret {
                name: "alice".into(),
            };
            twice(&client, &delete, Change::Deleted, Change::Absent).await;
            assert_eq!(s("name"), None);
            let delete = JobOp::DeleteProfile {
                kind: AccountKind::Ppp,
                name: "slow".into(),
            };
            twice(&client, &delete, Change::Deleted, Change::Absent).await;
            assert!(row(&sim, "/ppp/profile", "name", "slow").is_none());
            sim.shutdown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn hotspot_operations_are_idempotent_on_v6_and_v7() {
    within(async {
        for version in VERSIONS {
            let sim = sim(version).await;
            let (client, _) = client(&sim).await;
            let profile = |rate: &str| JobOp::UpsertProfile {
                profile: Profile::Hotspot(HotspotProfile {
                    name: "day-pass".into(),
                    rate_limit: Some(rate.into()),
                    address_list: None,
                    shared_users: Some(2),
                    session_timeout_secs: Some(3600),
                    idle_timeout_secs: None,
                    comment: None,
                }),
            };
            twice(
                &client,
                &profile("5M/5M"),
                Change::Created,
                Change::Unchanged,
            )
            .await;
            let p = row(&sim, "/ip/hotspot/user/profile", "name", "day-pass").unwrap();
            assert_eq!(p["shared-users"], "2");
            assert_eq!(p["session-timeout"], "1h");
            twice(
                &client,
                &profile("6M/6M"),
                updated(&["rate-limit"]),
                Change::Unchanged,
            )
            .await;

            let user = |disabled: bool| JobOp::UpsertHotspotUser {
                user: HotspotUser {
                    subscriber_id: None,
                    name: "guest-1".into(),
                    password: Secret::new("guest-pw"),
                    profile: "day-pass".into(),
                    server: None,
                    mac_address: Some("02:00:00:00:00:01".into()),
                    disabled,
                    comment: Some("room 12".into()),
                },
                profile: None,
            };
            twice(&client, &user(false), Change::Created, Change::Unchanged).await;
            let u = row(&sim, "/ip/hotspot/user", "name", "guest-1").unwrap();
            assert_eq!(u["profile"], "day-pass");
            assert_eq!(u["password"], "guest-pw");
            assert_eq!(u["mac-address"], "02:00:00:00:00:01");
            assert_eq!(u["comment"], "tikfleet: room 12");

            lock(&sim.router(0).device)
                .start_client(
                    Service::Hotspot,
                    "guest-1",
                    "guest-pw",
                    Some("02:00:00:00:00:01"),
                    Instant::now(),
                )
                .expect("guest logs in");
            assert_eq!(menu(&sim, "/ip/hotspot/active").len(), 1);
            let out = twice(
                &client,
                &user(true),
                updated(&["disabled"]),
                Change::Unchanged,
            )
            .await;
            assert_eq!(out.sessions_disconnected, 1);
            assert!(menu(&sim, "/ip/hotspot/active").is_empty());

            let set = JobOp::SetProfile {
                account: hs("guest-1"),
                profile: "default".into(),
            };
            twice(&client, &set, updated(&["profile"]), Change::Unchanged).await;
            twice(
                &client,
                &JobOp::Enable {
                    account: hs("guest-1"),
                },
                updated(&["disabled"]),
                Change::Unchanged,
            )
            .await;
            twice(
                &client,
                &JobOp::DisconnectSession {
                    account: hs("guest-1"),
                },
                Change::Absent,
                Change::Absent,
            )
            .await;

            let delete = JobOp::DeleteHotspotUser {
                name: "guest-1".into(),
            };
            twice(&client, &delete, Change::Deleted, Change::Absent).await;
            assert!(row(&sim, "/ip/hotspot/user", "name", "guest-1").is_none());
            let delete = JobOp::DeleteProfile {
                kind: AccountKind::Hotspot,
                name: "day-pass".into(),
            };
            twice(&client, &delete, Change::Deleted, Change::Absent).await;
            sim.shutdown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn address_list_operations_are_idempotent_on_v6_and_v7() {
    within(async {
        for version in VERSIONS {
            let sim = sim(version).await;
            let (client, _) = client(&sim).await;
            let add = JobOp::AddAddressListEntry {
                entry: AddressListEntry {
                    list: "suspended".into(),
                    address: "10.9.0.2".into(),
                    comment: Some("alice".into()),
                },
            };
            twice(&client, &add, Change::Created, Change::Unchanged).await;
            let rows: Vec<_> = menu(&sim, "/ip/firewall/address-list")
                .into_iter()
                .filter(|r| r["list"] == "suspended")
                .collect();
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0]["address"], "10.9.0.2");
            assert_eq!(rows[0]["comment"], "tikfleet: alice");
            let remove = JobOp::RemoveAddressListEntry {
                list: "suspended".into(),
                address: "10.9.0.2".into(),
            };
            twice(&client, &remove, Change::Deleted, Change::Absent).await;
            assert!(row(&sim, "/ip/firewall/address-list", "list", "suspended").is_none());
            sim.shutdown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn items_made_by_hand_are_not_touched_unless_adopted() {
    within(async {
        for version in VERSIONS {
            let sim = sim(version).await;
            let (client, _) = client(&sim).await;
            client
                .run(
                    Cmd::new("/ppp/secret/add")
                        .attr("name", "alice")
                        .attr("password", "by-hand"),
                )
                .await
                .unwrap();
            client
                .run(
                    Cmd::new("/ip/firewall/address-list/add")
                        .attr("list", "vip")
                        .attr("address", "10.0.0.9"),
                )
                .await
                .unwrap();
            let upsert = JobOp::UpsertPppSecret {
                secret: secret("default", None),
                profile: None,
            };
            for op in [
                upsert.clone(),
                JobOp::DeletePppSecret {
                    name: "alice".into(),
                },
                JobOp::Disable {
                    account: ppp("alice"),
                },
                JobOp::RemoveAddressListEntry {
                    list: "vip".into(),
                    address: "10.0.0.9".into(),
                },
            ] {
                let e = execute(&client, &op).await.unwrap_err();
                assert_eq!(e.code(), ErrorCode::Conflict, "{}: {e}", op.name());
                assert!(e.message().contains("not made by tikfleet"), "{e}");
            }
            let r = row(&sim, "/ppp/secret", "name", "alice").unwrap();
            assert_eq!(r["password"], "by-hand");
            assert_eq!(r["disabled"], "false");

            let out = execute_with(&client, &upsert, Ownership::Adopt)
                .await
                .unwrap();
            assert_eq!(out.change, updated(&["password", "service", "comment"]));
            assert_eq!(
                row(&sim, "/ppp/secret", "name", "alice").unwrap()["comment"],
                "tikfleet: Alice"
            );
            // Now ours: plain execute works and changes nothing.
            let again = execute(&client, &upsert).await.unwrap();
            assert_eq!(again.change, Change::Unchanged);
            sim.shutdown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn operations_for_the_executor_are_refused_clearly() {
    within(async {
        let sim = sim("7.16.2").await;
        let (client, _) = client(&sim).await;
        for op in [
            JobOp::Reboot {},
            JobOp::BackupNow { name: None },
            JobOp::Restore {
                name: "b".into(),
                backup_id: None,
                data: Vec::new(),
                sha256: Vec::new(),
                size: None,
            },
            JobOp::RotateCredentials {},
            JobOp::DriftCheck {},
        ] {
            let e = execute(&client, &op).await.unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidRequest);
            assert!(e.message().contains("not handled by ops"), "{e}");
        }
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn an_account_job_makes_its_profile_first() {
    within(async {
        for version in VERSIONS {
            let sim = sim(version).await;
            let (client, _) = client(&sim).await;
            let JobOp::UpsertProfile {
                profile: Profile::Ppp(plan),
            } = ppp_profile("20M/20M")
            else {
                unreachable!("ppp_profile makes a PPP profile")
            };
            // Without its profile the router refuses the secret (the profile does not exist).
            let bare = JobOp::UpsertPppSecret {
                secret: secret("plan-10m", None),
                profile: None,
            };
            let e = execute(&client, &bare).await.unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidValue, "{version}: {e}");
            assert!(row(&sim, "/ppp/secret", "name", "alice").is_none());

            // Carrying it, the job makes the profile, then the secret; twice changes nothing.
            let carried = JobOp::UpsertPppSecret {
                secret: secret("plan-10m", None),
                profile: Some(Box::new(plan)),
            };
            twice(&client, &carried, Change::Created, Change::Unchanged).await;
            let p = row(&sim, "/ppp/profile", "name", "plan-10m").unwrap();
            assert_eq!(p["rate-limit"], "20M/20M", "{version}");
            let s = row(&sim, "/ppp/secret", "name", "alice").unwrap();
            assert_eq!(s["profile"], "plan-10m", "{version}");

            // Accounts on a new plan, at once: each sees no profile and adds it; all but one
            // hear "already exists" — the profile is there, and every account is made.
            let JobOp::UpsertProfile {
                profile: Profile::Ppp(mut fresh),
            } = ppp_profile("30M/30M")
            else {
                unreachable!("ppp_profile makes a PPP profile")
            };
            fresh.name = "plan-30m".into();
            let ops: Vec<JobOp> = (0..8)
                .map(|i| {
                    let mut s = secret("plan-30m", None);
                    s.name = format!("burst-{i}");
                    JobOp::UpsertPppSecret {
                        secret: s,
                        profile: Some(Box::new(fresh.clone())),
                    }
                })
                .collect();
            let results =
                futures_util::future::join_all(ops.iter().map(|op| execute(&client, op))).await;
            for r in results {
                r.unwrap_or_else(|e| panic!("{version}: {e}"));
            }
            for i in 0..8 {
                assert!(row(&sim, "/ppp/secret", "name", &format!("burst-{i}")).is_some());
            }

            // A profile that exists but is not ours (the built-in `default`) is left alone and
            // the account still goes on it.
            let builtin = JobOp::UpsertHotspotUser {
                user: HotspotUser {
                    subscriber_id: None,
                    name: "guest-9".into(),
                    password: Secret::new("guest-pw"),
                    profile: "default".into(),
                    server: None,
                    mac_address: None,
                    disabled: false,
                    comment: None,
                },
                profile: Some(Box::new(HotspotProfile {
                    name: "default".into(),
                    rate_limit: Some("1M/1M".into()),
                    address_list: None,
                    shared_users: None,
                    session_timeout_secs: None,
                    idle_timeout_secs: None,
                    comment: None,
                })),
            };
            execute(&client, &builtin)
                .await
                .unwrap_or_else(|e| panic!("{version}: {e}"));
            let d = row(&sim, "/ip/hotspot/user/profile", "name", "default").unwrap();
            assert_ne!(d.get("rate-limit").map(String::as_str), Some("1M/1M"));
            assert!(row(&sim, "/ip/hotspot/user", "name", "guest-9").is_some());
            sim.shutdown().await;
        }
    })
    .await;
}
