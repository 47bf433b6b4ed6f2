//! The technician's command line, run as a person runs it: the real binary, a fresh data
//! folder, passwords on standard input, a simulated router on loopback.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

const LIMIT: Duration = Duration::from_secs(60);
const TENANT: &str = "0190f5d2-7a4b-7cc1-8d1e-1234567890ab";

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `tikfleet-agent --data-dir DIR ARGS…` with `stdin` piped in.
async fn agent(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tikfleet-agent"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("TIKFLEET_VAULT_KEY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("TIKFLEET_AGENT_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the agent binary runs");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .expect("the command finished in time")
        .expect("output");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every file under `dir`, searched for `needle`'s bytes.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_technician_adds_tests_and_removes_routers() {
    tokio::time::timeout(LIMIT * 4, async {
        let password = "Sim-Pa55-for-cli";
        let mut config = tikfleet_sim::Config::local();
        config.password = password.to_owned();
        let sim = tikfleet_sim::start(config).await.expect("simulator");
        let tls = sim.routers[0].api_ssl.expect("api-ssl");
        let pin = sim.cert.sha256.clone();
        let port = tls.port().to_string();
        let ssh_port = sim.routers[0].ssh.expect("ssh").port().to_string();
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();

        let none = agent(d, &["router", "list"], "").await;
        assert_eq!(none.code, 0, "{}", none.stderr);
        assert!(none.stdout.contains("no routers"), "{}", none.stdout);

        let common = [
            "--host",
            "127.0.0.1",
            "--api-port",
            &port,
            "--user",
            "admin",
            "--tls",
            "pin",
            "--pin",
            &pin,
            "--tenant",
            TENANT,
            "--ssh-port",
            &ssh_port,
        ];
        let mut add = vec!["router", "add", "--name", "edge"];
        add.extend(common);
        let added = agent(d, &add, &format!("{password}\n")).await;
        assert_eq!(added.code, 0, "{}", added.stderr);
        assert!(
            added.stdout.starts_with("added router edge"),
            "{}",
            added.stdout
        );

        let dup = agent(d, &add, &format!("{password}\n")).await;
        assert_eq!(dup.code, 1);
        assert!(dup.stderr.contains("[duplicate_name]"), "{}", dup.stderr);

        let mut bad = vec!["router", "add", "--name", "edge-bad"];
        bad.extend(common);
        assert_eq!(agent(d, &bad, "not-the-password\n").await.code, 0);

        let empty = agent(
            d,
            &[
                "router", "add", "--name", "x", "--host", "h", "--user", "u", "--tls", "plain",
                "--tenant", TENANT,
            ],
            "\n",
        )
        .await;
        assert_eq!(empty.code, 1);
        assert!(
            empty.stderr.contains("the password is empty"),
            "{}",
            empty.stderr
        );

        let listed = agent(d, &["router", "list"], "").await;
        assert_eq!(listed.code, 0, "{}", listed.stderr);
        assert!(
            listed.stdout.contains("edge ") && listed.stdout.contains("pin"),
            "{}",
            listed.stdout
        );

        let test = agent(d, &["router", "test", "edge"], "").await;
        assert_eq!(test.code, 0, "{}", test.stderr);
        assert!(test.stdout.contains("edge: reachable"), "{}", test.stdout);
        assert!(test.stdout.contains("7.16.2 (stable)"), "{}", test.stdout);
        assert!(test.stdout.contains("identity:  sim-1"), "{}", test.stdout);
        assert!(test.stdout.contains("ssh:       ok"), "{}", test.stdout);
        assert!(test.stdout.contains("host key SHA256:"), "{}", test.stdout);
        let again = agent(d, &["router", "test", "edge"], "").await;
        assert!(
            again.stdout.contains("ssh:       ok"),
            "the pinned key is accepted again: {}",
            again.stdout
        );

        let refused = agent(d, &["router", "test", "edge-bad"], "").await;
        assert_eq!(refused.code, 1);
        assert!(
            refused.stderr.contains("[authentication_failed]"),
            "{}",
            refused.stderr
        );
        assert!(refused.stderr.contains("hint:"), "{}", refused.stderr);

        let status = agent(d, &["status"], "").await;
        assert_eq!(status.code, 0, "{}", status.stderr);
        assert!(status.stdout.contains("routers: 2"), "{}", status.stdout);
        assert!(
            status.stdout.contains("queue: 0 queued"),
            "{}",
            status.stdout
        );

        let removed = agent(d, &["router", "remove", "edge-bad"], "").await;
        assert_eq!(removed.code, 0, "{}", removed.stderr);
        let missing = agent(d, &["router", "test", "edge-bad"], "").await;
        assert!(missing.stderr.contains("[not_found]"), "{}", missing.stderr);

        // The password was typed in, used and stored; it is nowhere a person or a disk shows it.
        for out in [&added, &listed, &test, &refused, &status] {
            assert!(!out.stdout.contains(password) && !out.stderr.contains(password));
        }
        assert_eq!(
            files_containing(d, password.as_bytes()),
            Vec::<String>::new()
        );
        sim.shutdown().await;
    })
    .await
    .expect("finished in time");
}

#[tokio::test]
async fn bad_input_gets_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let cfg = d.join("agent.toml");
    std::fs::write(&cfg, "[limits]\nrouter_brust = 7\n").expect("write");
    let cfg = cfg.to_string_lossy().into_owned();

    let typo = agent(d, &["--config", &cfg, "status"], "").await;
    assert_eq!(typo.code, 1);
    assert!(
        typo.stderr.contains("router_brust") && typo.stderr.contains("line 2"),
        "{}",
        typo.stderr
    );

    let no_tenant = agent(
        d,
        &[
            "router", "add", "--name", "a", "--host", "h", "--user", "u", "--tls", "plain",
        ],
        "pw\n",
    )
    .await;
    assert_eq!(no_tenant.code, 1);
    assert!(
        no_tenant.stderr.contains("no tenant"),
        "{}",
        no_tenant.stderr
    );

    let bad_pin = agent(
        d,
        &[
            "router", "add", "--name", "a", "--host", "h", "--user", "u", "--pin", "abc",
            "--tenant", TENANT,
        ],
        "pw\n",
    )
    .await;
    assert_eq!(bad_pin.code, 1);
    assert!(
        bad_pin.stderr.contains("64 hex digits"),
        "{}",
        bad_pin.stderr
    );

    let unknown_job = agent(d, &["queue", "show", TENANT], "").await;
    assert_eq!(unknown_job.code, 1);
    assert!(
        unknown_job.stderr.contains("[not_found]"),
        "{}",
        unknown_job.stderr
    );

    let empty = agent(d, &["queue", "list"], "").await;
    assert_eq!(empty.code, 0, "{}", empty.stderr);
    assert!(empty.stdout.contains("no jobs"));

    let not_an_id = agent(d, &["queue", "show", "nope"], "").await;
    assert_eq!(not_an_id.code, 2, "clap's usage error");
    assert!(
        not_an_id.stderr.contains("invalid value 'nope'"),
        "{}",
        not_an_id.stderr
    );
}
