//! Conformance: tikfleet-sim is a RouterOS peer that independent clients accept.
//!
//! One simulator runs two identical routers. Python's librouteros (from the venv that
//! `scripts/test` prepares; its path comes in `TIKFLEET_PYTHON`) plays the scenario of
//! `tests/e2e/py/conformance.py` against router 0; mikrotik-rs plays the same scenario
//! (`tikfleet_e2e::mikrotik_scenario`) against router 1. Both must see the same results, and
//! those results must be what RouterOS answers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tikfleet_e2e::mikrotik_scenario;

const TEST_TIMEOUT: Duration = Duration::from_secs(90);
const USER: &str = "admin";
const PASSWORD: &str = "conformance-pw";

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("TIKFLEET_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with librouteros: run the tests with scripts/test (it creates .venv), \
         or set TIKFLEET_PYTHON to a python that has librouteros"
    );
    venv
}

/// Runs the Python scenario and returns its JSON object.
async fn run_librouteros(
    api: std::net::SocketAddr,
    tls: std::net::SocketAddr,
    cafile: &std::path::Path,
) -> BTreeMap<String, Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py/conformance.py");
    let output = tokio::process::Command::new(python())
        .arg(script)
        .args(["--host", "127.0.0.1", "--port", &api.port().to_string()])
        .args(["--tls-port", &tls.port().to_string()])
        .arg("--cafile")
        .arg(cafile)
        .args(["--user", USER, "--password", PASSWORD])
        .kill_on_drop(true)
        .output()
        .await
        .expect("python runs");
    assert!(
        output.status.success(),
        "librouteros scenario failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the scenario prints one JSON object")
}

fn names(outcome: &Value) -> Vec<String> {
    let rows = outcome["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("rows expected, got {outcome}"));
    rows.iter()
        .map(|r| r["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn first_trap(outcome: &Value) -> String {
    outcome["trap"][0]
        .as_str()
        .unwrap_or_else(|| panic!("a trap expected, got {outcome}"))
        .to_owned()
}

/// Runs the scenario against a simulator of RouterOS `version`.
async fn check(version: &str) {
    tokio::time::timeout(TEST_TIMEOUT, conformance(version))
        .await
        .expect("conformance scenario finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_agree_on_routeros_v6() {
    check("6.49.10").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_agree_on_routeros_v7() {
    check("7.16.2").await;
}

/// 7.18 and later answer a print without rows with `!empty` before `!done`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_agree_on_routeros_v7_with_empty_replies() {
    check("7.20.4").await;
}

async fn conformance(version: &str) {
    let mut config = tikfleet_sim::Config::local();
    config.version = version.to_owned();
    config.routers = 2;
    config.ssh = None;
    config.password = PASSWORD.to_owned();
    let sim = tikfleet_sim::start(config).await.expect("simulator starts");
    let (py_router, rs_router) = (&sim.routers[0], &sim.routers[1]);
    let (py_api, rs_api) = (
        py_router.api.expect("api listener"),
        rs_router.api.expect("api listener"),
    );
    let py_tls = py_router.api_ssl.expect("api-ssl listener");
    let rs_tls = rs_router.api_ssl.expect("api-ssl listener");

    let cafile = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "conformance-ca-{}-{version}.pem",
        std::process::id()
    ));
    std::fs::write(&cafile, &sim.cert.pem).expect("write the CA file");

    let (py, rs) = tokio::join!(
        run_librouteros(py_api, py_tls, &cafile),
        mikrotik_scenario::run(rs_api, rs_tls, &sim.cert.pem, USER, PASSWORD)
    );
    let rs = rs.expect("mikrotik-rs scenario runs");
    let _ = std::fs::remove_file(&cafile);

    // Both clients ran every step.
    assert_eq!(
        py.keys().collect::<Vec<_>>(),
        rs.keys().collect::<Vec<_>>(),
        "both clients ran the same steps"
    );

    // Both saw the same thing. mikrotik-rs stops at the first `!trap` of a command, so traps
    // compare by their first message; the routers' identities differ by design.
    for (step, py_outcome) in &py {
        if step == "tls_identity" {
            continue;
        }
        let rs_outcome = &rs[step];
        if py_outcome.get("trap").is_some() {
            assert_eq!(
                first_trap(py_outcome),
                first_trap(rs_outcome),
                "step {step}: librouteros {py_outcome} vs mikrotik-rs {rs_outcome}"
            );
        } else {
            assert_eq!(
                py_outcome, rs_outcome,
                "step {step}: librouteros vs mikrotik-rs"
            );
        }
    }

    // And what they saw is what RouterOS answers.
    let expect_trap = |step: &str, message: &str| {
        assert_eq!(first_trap(&py[step]), message, "step {step}: {}", py[step]);
    };
    expect_trap("login_bad", "invalid user name or password (6)");
    expect_trap(
        "add_duplicate",
        "failure: secret with the same name already exists",
    );
    expect_trap(
        "add_bad_profile",
        "input does not match any value of profile",
    );
    expect_trap("set_bad_value", "input does not match any value of profile");
    expect_trap("remove_missing", "no such item");
    expect_trap("unknown_verb", "no such command");
    assert_eq!(
        py["unknown_path"]["trap"],
        json!([
            "no such command or directory (adress)",
            "no such command prefix"
        ]),
        "an unknown path gets RouterOS's two traps"
    );

    for step in [
        "login_good",
        "set_by_id",
        "set_by_numbers",
        "set_remote_address",
        "remove_by_id",
    ] {
        assert_eq!(py[step], json!({ "ok": true }), "step {step}");
    }
    for step in ["add_profile", "add_alice", "add_bob", "add_carol"] {
        let id = py[step]["id"].as_str().unwrap_or_default();
        assert!(
            id.starts_with('*') && u64::from_str_radix(&id[1..], 16).is_ok(),
            "step {step}: an add answers the new .id, got {}",
            py[step]
        );
    }

    let rows = py["print_proplist"]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 3, "three secrets: {rows:?}");
    for row in rows {
        let mut keys: Vec<_> = row.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["disabled", "name", "profile", "service"],
            ".proplist is honoured"
        );
    }
    assert_eq!(
        rows[0],
        json!({"name": "alice", "profile": "plan-10m", "disabled": "false", "service": "pppoe"})
    );
    assert_eq!(
        rows[2],
        json!({"name": "carol", "profile": "default", "disabled": "true", "service": "any"}),
        "defaults are filled in and booleans read back as true/false"
    );

    assert_eq!(
        py["print_empty"],
        json!({ "rows": [] }),
        "a print without rows"
    );
    assert_eq!(names(&py["print_all_names"]), ["alice", "bob", "carol"]);
    assert_eq!(names(&py["query_equal"]), ["alice"]);
    assert_eq!(names(&py["query_disabled"]), ["carol"]);
    assert_eq!(names(&py["query_or"]), ["alice", "carol"]);
    assert_eq!(names(&py["query_not"]), ["bob", "carol"]);
    assert_eq!(names(&py["query_and_or_stack"]), ["bob"]);
    assert_eq!(names(&py["query_gt"]), ["bob"]);
    assert_eq!(names(&py["query_lt"]), ["alice", "carol"]);
    assert_eq!(names(&py["query_has"]), ["alice"]);
    assert_eq!(names(&py["query_lacks"]), ["bob", "carol"]);

    let after_set = &py["print_after_set"]["rows"];
    assert_eq!(after_set[0]["remote-address"], "10.9.0.2");
    assert_eq!(after_set[1]["profile"], "plan-10m");
    assert_eq!(after_set[1]["limit-bytes-in"], "1000");
    assert_eq!(after_set[2]["disabled"], "false");

    assert_eq!(names(&py["print_after_remove"]), ["bob", "carol"]);

    let profiles = py["builtin_profiles"]["rows"].as_array().expect("rows");
    assert!(
        profiles.contains(&json!({".id": "*0", "name": "default", "default": "true"})),
        "built-in profile `default` is *0: {profiles:?}"
    );
    assert!(
        profiles.contains(
            &json!({".id": "*FFFFFFFE", "name": "default-encryption", "default": "true"})
        ),
        "built-in profile `default-encryption` is *FFFFFFFE: {profiles:?}"
    );

    let tagged = &py["tagged_concurrent"];
    assert_eq!(tagged["a"].as_array().map(Vec::len), Some(2), "{tagged}");
    assert_eq!(tagged["b"].as_array().map(Vec::len), Some(3), "{tagged}");

    expect_trap(
        "hs_duplicate",
        "failure: already have user with this name for this server",
    );
    expect_trap("al_duplicate", "failure: already have such entry");
    assert_eq!(
        py["hs_print"],
        json!({"rows": [{"name": "guest1", "profile": "default", "disabled": "false"}]})
    );
    assert_eq!(
        py["al_print"],
        json!({"rows": [{"list": "suspended", "address": "10.64.0.9", "comment": "tikfleet", "dynamic": "false", "disabled": "false"}]}),
        "a static address-list entry"
    );
    assert_eq!(
        py["count_only"],
        json!({"rows": [{"count": "2"}]}),
        "count-only answers =ret=N"
    );

    for outcome in [&py["tls_identity"], &rs["tls_identity"]] {
        let name = outcome["rows"][0]["name"].as_str().unwrap_or_default();
        assert!(!name.is_empty(), "identity over API-SSL: {outcome}");
    }
    assert_eq!(names(&py["tls_secret_names"]), ["bob", "carol"]);

    sim.shutdown().await;
}
