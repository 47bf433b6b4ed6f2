//! The `api_hung` fault: the API answers nothing (new and open connections), SSH still works,
//! and a reboot — over SSH, or through the control endpoint — cures it.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;

/// How long a test waits to conclude that no answer is coming.
const SILENCE: Duration = Duration::from_millis(300);

async fn login_when_up(addr: SocketAddr) -> Client {
    poll(|| async move {
        let mut c = Client::connect(addr).await;
        c.send(&["/login", "=name=admin", "=password=admin"]).await;
        match tokio::time::timeout(SILENCE, c.recv()).await {
            Ok(Some(s)) if s[0] == "!done" => Some(c),
            _ => None,
        }
    })
    .await
}

/// Runs `/system reboot` over SSH as admin (libssh2, in the blocking pool); the output.
async fn ssh_reboot(addr: SocketAddr) -> String {
    tokio::task::spawn_blocking(move || {
        let tcp = std::net::TcpStream::connect(addr).expect("tcp connect");
        let mut session = ssh2::Session::new().unwrap();
        session.set_timeout(10_000);
        session.set_tcp_stream(tcp);
        session.handshake().expect("handshake");
        session.userauth_password("admin", "admin").expect("login");
        let mut channel = session.channel_session().unwrap();
        channel.exec("/system reboot").unwrap();
        let mut out = String::new();
        channel.read_to_string(&mut out).unwrap();
        let _ = channel.wait_close();
        out
    })
    .await
    .expect("ssh client")
}

#[tokio::test]
async fn a_hung_api_answers_nothing_until_a_reboot_over_ssh() {
    within(async {
        let sim = start("7.16.2").await;
        let ctl = control(&sim);
        let mut open = Client::login(api(&sim)).await;
        let f = json(
            ctl,
            "PUT",
            "/routers/0/faults",
            Some(r#"{"api_hung":true}"#),
        )
        .await;
        assert_eq!(f["api_hung"], true);

        // An open connection gets no answer; a new one is accepted but its login hangs.
        open.send(&["/system/identity/print"]).await;
        assert!(tokio::time::timeout(SILENCE, open.recv()).await.is_err());
        let before = json(ctl, "GET", "/routers/0/stats", None).await["connections"]
            .as_u64()
            .unwrap();
        let mut fresh = Client::connect(api(&sim)).await;
        fresh
            .send(&["/login", "=name=admin", "=password=admin"])
            .await;
        assert!(tokio::time::timeout(SILENCE, fresh.recv()).await.is_err());
        let st = json(ctl, "GET", "/routers/0/stats", None).await;
        assert_eq!(st["connections"].as_u64(), Some(before + 1));

        // SSH works, and its reboot closes the hung connections and cures the API.
        let ssh = sim.routers[0].ssh.expect("ssh");
        ssh_reboot(ssh).await;
        assert!(open.closed().await, "the reboot closes hung connections");
        assert!(fresh.closed().await);
        let f = json(ctl, "GET", "/routers/0/faults", None).await;
        assert_eq!(f["api_hung"], false);
        let mut c = login_when_up(api(&sim)).await;
        let r = c.cmd(&["/system/identity/print"]).await;
        assert_eq!(rows(&r).len(), 1);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_control_reboot_cures_a_hung_api_too() {
    within(async {
        let sim = start("6.49.10").await;
        let ctl = control(&sim);
        json(
            ctl,
            "PUT",
            "/routers/0/faults",
            Some(r#"{"api_hung":true}"#),
        )
        .await;
        let mut c = Client::connect(api(&sim)).await;
        c.send(&["/login", "=name=admin", "=password=admin"]).await;
        assert!(tokio::time::timeout(SILENCE, c.recv()).await.is_err());
        json(ctl, "POST", "/routers/0/reboot", Some(r#"{"down_ms":50}"#)).await;
        assert!(c.closed().await);
        let _c = login_when_up(api(&sim)).await;
        // Setting it and clearing it by hand works as well.
        json(
            ctl,
            "PUT",
            "/routers/0/faults",
            Some(r#"{"api_hung":true}"#),
        )
        .await;
        let f = json(
            ctl,
            "PUT",
            "/routers/0/faults",
            Some(r#"{"api_hung":false}"#),
        )
        .await;
        assert_eq!(f["api_hung"], false);
        let _c = login_when_up(api(&sim)).await;
        sim.shutdown().await;
    })
    .await;
}
