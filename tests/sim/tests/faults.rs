//! Faults, reboots, sessions, stats and the control endpoint.

mod common;

use common::*;

async fn login_when_up(addr: std::net::SocketAddr) -> Client {
    poll(|| async move {
        let mut c = Client::connect(addr).await;
        c.send(&["/login", "=name=admin", "=password=admin"]).await;
        match c.recv().await {
            Some(s) if s[0] == "!done" => Some(c),
            _ => None,
        }
    })
    .await
}

#[tokio::test]
async fn delay_service_time_drop_and_traps() {
    within(async {
        let sim = start("7.16.2").await;
        let ctl = control(&sim);
        let mut c = Client::login(api(&sim)).await;
        json(
            ctl,
            "PUT",
            "/routers/0/faults",
            Some(r#"{"delay_ms":30,"service_ms":20}"#),
        )
        .await;
        // Service time: commands are served in arrival order, one at a time.
        for t in 1..=3 {
            c.send(&["/system/identity/print", &format!(".tag={t}")])
                .await;
        }
        let mut dones = Vec::new();
        while dones.len() < 3 {
            let s = c.recv().await.unwrap();
            if s[0] == "!done" {
                dones.push(s[1].clone());
            }
        }
        assert_eq!(dones, [".tag=1", ".tag=2", ".tag=3"]);
        let st = json(ctl, "GET", "/routers/0/stats", None).await;
        assert_eq!(st["max_in_flight"].as_u64().map(|n| n >= 1), Some(true));

        json(
            ctl,
            "PUT",
            "/routers/0/faults",
            Some(
                r#"{"delay_ms":0,"service_ms":0,"traps":{"/ppp/secret/add":"failure: injected"}}"#,
            ),
        )
        .await;
        let r = c.cmd(&["/ppp/secret/add", "=name=x"]).await;
        assert_eq!(trap(&r).as_deref(), Some("failure: injected"));
        json(ctl, "DELETE", "/routers/0/faults", None).await;

        json(ctl, "PUT", "/routers/0/faults", Some(r#"{"drop_after":2}"#)).await;
        let mut d = Client::login(api(&sim)).await;
        d.cmd(&["/system/identity/print"]).await;
        d.cmd(&["/system/identity/print"]).await;
        d.send(&["/system/identity/print"]).await;
        assert!(d.closed().await, "third command drops the connection");

        json(
            ctl,
            "PUT",
            "/routers/0/faults",
            Some(r#"{"drop_after":0,"refuse":true}"#),
        )
        .await;
        let mut r = Client::connect(api(&sim)).await;
        assert!(r.closed().await, "refused connections close at once");
        json(
            ctl,
            "PUT",
            "/routers/0/faults",
            Some(r#"{"refuse":false,"cpu_load":77}"#),
        )
        .await;
        let r = c
            .cmd(&["/system/resource/print", "=.proplist=cpu-load"])
            .await;
        assert_eq!(rows(&r)[0], ["!re", "=cpu-load=77"]);

        let st = json(ctl, "GET", "/routers/0/stats?window_ms=60000", None).await;
        assert!(st["total"].as_u64().unwrap() >= 8);
        assert_eq!(st["by_path"]["/ppp/secret/add"], 1);
        assert!(st["in_window"].as_u64().unwrap() >= 8);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn reboot_goes_down_and_keeps_config() {
    within(async {
        let sim = start("7.16.2").await;
        let mut c = Client::login(api(&sim)).await;
        c.cmd(&["/ppp/secret/add", "=name=kept"]).await;
        c.send(&["/system/reboot"]).await;
        assert!(c.closed().await, "reboot closes without a reply");
        assert!(!sim.router(0).is_up());
        let mut c = login_when_up(api(&sim)).await;
        let r = c.cmd(&["/ppp/secret/print", "=.proplist=name"]).await;
        assert_eq!(rows(&r)[0], ["!re", "=name=kept"]);
        // via the control endpoint too
        json(
            control(&sim),
            "POST",
            "/routers/0/reboot",
            Some(r#"{"down_ms":100}"#),
        )
        .await;
        assert!(c.closed().await);
        let _c = login_when_up(api(&sim)).await;
        sim.shutdown().await;
    })
    .await;
}

fn session<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .expect("client listed")
}

#[tokio::test]
async fn sessions_redial_under_current_rules() {
    within(async {
        let sim = start("7.16.2").await;
        let ctl = control(&sim);
        let mut c = Client::login(api(&sim)).await;
        c.cmd(&["/ppp/profile/add", "=name=fast", "=rate-limit=20M/20M"])
            .await;
        c.cmd(&["/ppp/profile/add", "=name=grace", "=rate-limit=1M/1M"])
            .await;
        c.cmd(&[
            "/ppp/secret/add",
            "=name=alice",
            "=password=pw",
            "=profile=fast",
            "=service=pppoe",
        ])
        .await;
        c.cmd(&[
            "/ppp/secret/add",
            "=name=off",
            "=password=pw",
            "=disabled=yes",
        ])
        .await;

        let (st, _) = http(
            ctl,
            "POST",
            "/routers/0/sessions",
            Some(r#"{"service":"pppoe","name":"alice","password":"bad"}"#),
        )
        .await;
        assert_eq!(st, 409);
        let (st, _) = http(
            ctl,
            "POST",
            "/routers/0/sessions",
            Some(r#"{"service":"pppoe","name":"off","password":"pw"}"#),
        )
        .await;
        assert_eq!(st, 409);
        json(
            ctl,
            "POST",
            "/routers/0/sessions",
            Some(r#"{"service":"pppoe","name":"alice","password":"pw"}"#),
        )
        .await;

        let r = c.cmd(&["/ppp/active/print"]).await;
        let row = &rows(&r)[0];
        assert_eq!(attr(row, "name"), Some("alice"));
        assert!(attr(row, "address").unwrap().starts_with("10.64."));
        // counters grow on <pppoe-alice>
        let first = {
            let r = c
                .cmd(&[
                    "/interface/print",
                    "?name=<pppoe-alice>",
                    "=.proplist=rx-byte",
                ])
                .await;
            attr(&rows(&r)[0], "rx-byte")
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        let addr = api(&sim);
        poll(|| async move {
            let mut c = Client::login(addr).await;
            let r = c
                .cmd(&[
                    "/interface/print",
                    "?name=<pppoe-alice>",
                    "=.proplist=rx-byte",
                ])
                .await;
            let now: u64 = attr(&rows(&r)[0], "rx-byte")?.parse().ok()?;
            (now > first).then_some(())
        })
        .await;

        // change the profile: the live session keeps the old one until disconnected
        c.cmd(&["/ppp/secret/set", "=numbers=alice", "=profile=grace"])
            .await;
        let v = json(ctl, "GET", "/routers/0/sessions", None).await;
        assert_eq!(session(&v, "alice")["profile"], "fast");
        c.cmd(&["/ppp/active/remove", "=numbers=alice"]).await;
        poll(|| async move {
            let v = json(ctl, "GET", "/routers/0/sessions", None).await;
            (session(&v, "alice")["profile"] == "grace").then_some(())
        })
        .await;
        let r = c
            .cmd(&[
                "/ppp/secret/print",
                "?name=alice",
                "=.proplist=last-disconnect-reason",
            ])
            .await;
        assert_eq!(rows(&r)[0], ["!re", "=last-disconnect-reason=hung-up"]);

        // disabled: redial refused, keeps retrying; enabled again: back online
        c.cmd(&["/ppp/secret/disable", "=numbers=alice"]).await;
        c.cmd(&["/ppp/active/remove", "=numbers=alice"]).await;
        poll(|| async move {
            let v = json(ctl, "GET", "/routers/0/sessions", None).await;
            let s = session(&v, "alice");
            (s["state"] == "waiting" && s["last_error"] == "user is disabled").then_some(())
        })
        .await;
        let r = c.cmd(&["/ppp/active/print", "=count-only="]).await;
        assert_eq!(attr(&r[0], "ret"), Some("0"));
        c.cmd(&["/ppp/secret/enable", "=numbers=alice"]).await;
        poll(|| async move {
            let v = json(ctl, "GET", "/routers/0/sessions", None).await;
            (session(&v, "alice")["state"] == "online").then_some(())
        })
        .await;

        // hotspot
        c.cmd(&["/ip/hotspot/user/add", "=name=h1", "=password=x"])
            .await;
        json(
            ctl,
            "POST",
            "/routers/0/sessions",
            Some(r#"{"service":"hotspot","name":"h1","password":"x","mac":"02:00:00:00:00:AA"}"#),
        )
        .await;
        let r = c
            .cmd(&["/ip/hotspot/active/print", "=.proplist=user,mac-address"])
            .await;
        assert_eq!(
            rows(&r)[0],
            ["!re", "=user=h1", "=mac-address=02:00:00:00:00:AA"]
        );

        // reboot drops all sessions; they come back after the router is up
        json(ctl, "POST", "/routers/0/reboot", Some(r#"{"down_ms":100}"#)).await;
        poll(|| async move {
            let v = json(ctl, "GET", "/routers/0/sessions", None).await;
            let all = v.as_array()?;
            all.iter()
                .all(|s| s["state"] == "online" && s["dials"].as_u64() >= Some(2))
                .then_some(())
        })
        .await;
        let menu = json(ctl, "GET", "/routers/0/menu?path=/ppp/secret", None).await;
        assert_eq!(menu[0]["name"], "alice");
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn many_routers_have_their_own_state() {
    within(async {
        let mut cfg = config("7.16.2");
        cfg.routers = 3;
        let sim = tikfleet_sim::start(cfg).await.unwrap();
        assert_eq!(
            sim.lines().iter().filter(|l| l.starts_with("api ")).count(),
            3
        );
        let v = json(control(&sim), "GET", "/routers", None).await;
        assert_eq!(v.as_array().unwrap().len(), 3);
        let mut c = Client::login(sim.routers[2].api.unwrap()).await;
        let r = c.cmd(&["/system/identity/print"]).await;
        assert_eq!(rows(&r)[0], ["!re", "=name=sim-3"]);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn print_100k_secrets() {
    within(async {
        let mut cfg = config("7.16.2");
        cfg.seed_secrets = 100_000;
        let sim = tikfleet_sim::start(cfg).await.unwrap();
        let mut c = Client::login(api(&sim)).await;
        let t = std::time::Instant::now();
        c.send(&["/ppp/secret/print", "=.proplist=name,profile"])
            .await;
        let mut n = 0;
        loop {
            let s = c.recv().await.unwrap();
            if s[0] == "!done" {
                break;
            }
            n += 1;
        }
        println!(
            "printed {n} secrets with .proplist=name,profile in {:?}",
            t.elapsed()
        );
        assert_eq!(n, 100_000);
        sim.shutdown().await;
    })
    .await;
}
