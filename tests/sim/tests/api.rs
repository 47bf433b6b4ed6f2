//! API behaviour: login, CRUD, errors, queries, tags and cancel, versions, TLS.

mod common;

use common::*;
use std::sync::Arc;

#[tokio::test]
async fn login_good_and_bad() {
    within(async {
        let sim = start("7.16.2").await;
        let _ok = Client::login(api(&sim)).await;
        let mut c = Client::connect(api(&sim)).await;
        let r = c.cmd(&["/login", "=name=admin", "=password=wrong"]).await;
        assert_eq!(
            trap(&r).as_deref(),
            Some("invalid user name or password (6)")
        );
        assert_eq!(r.last().unwrap()[0], "!done");
        assert!(c.closed().await, "the router closes the session");
        let mut c = Client::connect(api(&sim)).await;
        let r = c.cmd(&["/system/identity/print"]).await;
        assert_eq!(trap(&r).as_deref(), Some("not logged in"));
        let r = c.cmd(&["/quit"]).await;
        assert_eq!(
            r,
            vec![vec![
                "!fatal".to_string(),
                "session terminated on request".to_string()
            ]]
        );
        assert!(c.closed().await);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn crud_and_errors() {
    within(async {
        let sim = start("7.16.2").await;
        let mut c = Client::login(api(&sim)).await;
        let r = c
            .cmd(&["/ppp/profile/add", "=name=10M", "=rate-limit=10M/10M"])
            .await;
        assert_eq!(attr(&r[0], "ret"), Some("*1"));
        let r = c
            .cmd(&[
                "/ppp/secret/add",
                "=name=alice",
                "=password=pw",
                "=profile=10M",
                "=service=pppoe",
            ])
            .await;
        assert_eq!(attr(&r[0], "ret"), Some("*1"));
        let r = c.cmd(&["/ppp/secret/add", "=name=alice"]).await;
        assert_eq!(
            trap(&r).as_deref(),
            Some("failure: secret with the same name already exists")
        );
        let r = c
            .cmd(&["/ppp/secret/add", "=name=bob", "=profile=nope"])
            .await;
        assert_eq!(
            trap(&r).as_deref(),
            Some("input does not match any value of profile")
        );
        let r = c
            .cmd(&["/ppp/secret/add", "=name=bob", "=colour=red"])
            .await;
        assert_eq!(trap(&r).as_deref(), Some("unknown parameter colour"));
        let r = c.cmd(&["/ppp/secret/set", "=.id=*99", "=comment=x"]).await;
        assert_eq!(trap(&r).as_deref(), Some("no such item"));
        let r = c.cmd(&["/ppp/secret/frobnicate"]).await;
        assert_eq!(trap(&r).as_deref(), Some("no such command"));
        let r = c.cmd(&["/ip/adress/print"]).await;
        assert_eq!(
            r[0],
            [
                "!trap",
                "=category=0",
                "=message=no such command or directory (adress)"
            ]
        );
        assert_eq!(r[1], ["!trap", "=message=no such command prefix"]);
        assert_eq!(r[2], ["!done"]);

        let r = c.cmd(&["/ppp/secret/print"]).await;
        let row = &rows(&r)[0];
        assert_eq!(
            &row[..4],
            ["!re", "=.id=*1", "=name=alice", "=service=pppoe"]
        );
        assert_eq!(attr(row, "disabled"), Some("false"));
        assert_eq!(attr(row, "ipv6-routes"), Some(""));
        assert_eq!(
            attr(row, "remote-address"),
            None,
            "unset can-be-absent fields are absent"
        );
        assert_eq!(attr(row, "last-logged-out"), Some("1970-01-01 00:00:00"));

        // set by name via numbers=, yes/no accepted, read back as true/false
        c.cmd(&[
            "/ppp/secret/set",
            "=numbers=alice",
            "=disabled=yes",
            "=comment=managed",
        ])
        .await;
        let r = c.cmd(&["/ppp/secret/print", "?name=alice"]).await;
        assert_eq!(attr(&rows(&r)[0], "disabled"), Some("true"));
        assert_eq!(attr(&rows(&r)[0], "comment"), Some("managed"));
        c.cmd(&["/ppp/secret/enable", "=numbers=*1"]).await;
        let r = c.cmd(&["/ppp/secret/print", "=.proplist=disabled"]).await;
        assert_eq!(rows(&r)[0], ["!re", "=disabled=false"]);
        c.cmd(&["/ppp/secret/disable", "=.id=alice"]).await;
        let r = c
            .cmd(&["/ppp/secret/print", "=count-only=", "?disabled=true"])
            .await;
        assert_eq!(r, vec![vec!["!done".to_string(), "=ret=1".to_string()]]);
        let r = c.cmd(&["/ppp/secret/remove", "=numbers=alice"]).await;
        assert_eq!(r, vec![vec!["!done".to_string()]]);
        let r = c.cmd(&["/ppp/secret/add", "=name=carol"]).await;
        assert_eq!(attr(&r[0], "ret"), Some("*2"), "ids are never reused");

        // built-in profiles
        let r = c
            .cmd(&["/ppp/profile/print", "=.proplist=.id,name,default"])
            .await;
        let names: Vec<_> = rows(&r).iter().map(|r| r[1..].join(" ")).collect();
        assert_eq!(
            names,
            [
                "=.id=*0 =name=default =default=true",
                "=.id=*1 =name=10M =default=false",
                "=.id=*FFFFFFFE =name=default-encryption =default=true"
            ]
        );
        let r = c.cmd(&["/ppp/profile/remove", "=numbers=default"]).await;
        assert!(trap(&r).is_some());

        // queue rates normalise, targets get /32
        c.cmd(&[
            "/queue/simple/add",
            "=name=q1",
            "=target=10.0.0.1",
            "=max-limit=10M/5M",
        ])
        .await;
        let r = c
            .cmd(&["/queue/simple/print", "=.proplist=target,max-limit"])
            .await;
        assert_eq!(
            rows(&r)[0],
            ["!re", "=target=10.0.0.1/32", "=max-limit=10000000/5000000"]
        );
        let r = c
            .cmd(&["/queue/simple/add", "=name=q1", "=target=10.0.0.2"])
            .await;
        assert_eq!(trap(&r).as_deref(), Some("failure: already have such name"));

        // address-list: timeout makes entries dynamic; duplicates refused
        c.cmd(&[
            "/ip/firewall/address-list/add",
            "=list=suspended",
            "=address=10.64.0.9",
        ])
        .await;
        c.cmd(&[
            "/ip/firewall/address-list/add",
            "=list=tmp",
            "=address=10.64.0.9",
            "=timeout=1h",
        ])
        .await;
        let r = c
            .cmd(&[
                "/ip/firewall/address-list/add",
                "=list=suspended",
                "=address=10.64.0.9",
            ])
            .await;
        assert_eq!(
            trap(&r).as_deref(),
            Some("failure: already have such entry")
        );
        let r = c
            .cmd(&["/ip/firewall/address-list/print", "?dynamic=true"])
            .await;
        let row = &rows(&r)[0];
        assert!(attr(row, "timeout").is_some_and(|t| t.starts_with("59m") || t == "1h"));

        // hotspot
        let r = c
            .cmd(&["/ip/hotspot/user/add", "=name=default-trial"])
            .await;
        assert_eq!(
            trap(&r).as_deref(),
            Some("failure: already have user with this name for this server")
        );

        // singletons have no .id
        let r = c.cmd(&["/system/resource/print"]).await;
        let row = &rows(&r)[0];
        assert!(row[1].starts_with("=uptime="));
        assert_eq!(attr(row, "version"), Some("7.16.2 (stable)"));
        assert!(attr(row, ".id").is_none());
        c.cmd(&["/system/identity/set", "=name=core-1"]).await;
        let r = c.cmd(&["/system/identity/print"]).await;
        assert_eq!(rows(&r)[0], ["!re", "=name=core-1"]);

        // /user never prints passwords; /ip/service shows the real ports
        let r = c.cmd(&["/user/print"]).await;
        assert!(rows(&r)[0].iter().all(|w| !w.starts_with("=password=")));
        let r = c.cmd(&["/ip/service/print", "?name=api"]).await;
        assert_eq!(
            attr(&rows(&r)[0], "port"),
            Some(api(&sim).port().to_string().as_str())
        );
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn queries_and_stack_ops() {
    within(async {
        let sim = start("7.16.2").await;
        let mut c = Client::login(api(&sim)).await;
        for (n, s) in [("a", "pppoe"), ("b", "pptp"), ("c", "l2tp")] {
            c.cmd(&[
                "/ppp/secret/add",
                &format!("=name={n}"),
                &format!("=service={s}"),
            ])
            .await;
        }
        c.cmd(&["/ppp/secret/set", "=numbers=c", "=remote-address=10.0.0.3"])
            .await;
        let names = |r: Vec<Vec<String>>| -> Vec<String> {
            rows(&r)
                .iter()
                .map(|r| attr(r, "name").unwrap_or("").to_string())
                .collect()
        };
        let q = |w: &'static [&'static str]| {
            let mut v = vec!["/ppp/secret/print", "=.proplist=name"];
            v.extend_from_slice(w);
            v
        };
        assert_eq!(names(c.cmd(&q(&["?service=pppoe"])).await), ["a"]);
        assert_eq!(names(c.cmd(&q(&["?=service=pptp"])).await), ["b"]);
        assert_eq!(names(c.cmd(&q(&["?remote-address"])).await), ["c"]);
        assert_eq!(names(c.cmd(&q(&["?-remote-address"])).await), ["a", "b"]);
        assert_eq!(names(c.cmd(&q(&["?>name=a"])).await), ["b", "c"]);
        assert_eq!(names(c.cmd(&q(&["?<name=b"])).await), ["a"]);
        assert_eq!(
            names(c.cmd(&q(&["?service=pppoe", "?service=l2tp", "?#|"])).await),
            ["a", "c"]
        );
        assert_eq!(
            names(
                c.cmd(&q(&["?service=pppoe", "?service=l2tp", "?#|!"]))
                    .await
            ),
            ["b"]
        );
        assert_eq!(
            names(c.cmd(&q(&["?service=pppoe", "?name=a", "?#&"])).await),
            ["a"]
        );
        assert_eq!(
            names(c.cmd(&q(&["?service=pppoe", "?#!"])).await),
            ["b", "c"]
        );
        let r = c.cmd(&q(&["?name=zzz"])).await;
        assert_eq!(r, vec![vec!["!done".to_string()]], "7.16 sends no !empty");
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn empty_from_7_18() {
    within(async {
        let sim = start("7.18").await;
        let mut c = Client::login(api(&sim)).await;
        let r = c.cmd(&["/ppp/secret/print", ".tag=5"]).await;
        assert_eq!(r, vec![vec!["!empty", ".tag=5"], vec!["!done", ".tag=5"]]);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn v6_personality() {
    within(async {
        let sim = start("6.49.10").await;
        let mut c = Client::login(api(&sim)).await;
        c.cmd(&["/ppp/secret/add", "=name=a", "=comment=x"]).await;
        let r = c.cmd(&["/ppp/secret/print"]).await;
        let row = &rows(&r)[0];
        assert_eq!(attr(row, "ipv6-routes"), None);
        assert_eq!(attr(row, "last-logged-out"), Some("jan/01/1970 00:00:00"));
        let r = c.cmd(&["/ip/service/print", "?name=api"]).await;
        assert_eq!(attr(&rows(&r)[0], "vrf"), None);
        let r = c.cmd(&["/system/resource/print"]).await;
        assert_eq!(attr(&rows(&r)[0], "version"), Some("6.49.10 (long-term)"));
        assert!(
            tikfleet_sim::start(config("6.42.1")).await.is_err(),
            "pre-6.43 refused"
        );
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn tags_interleave_and_cancel() {
    within(async {
        let sim = start("7.16.2").await;
        let mut c = Client::login(api(&sim)).await;
        c.cmd(&["/ppp/secret/add", "=name=a"]).await;
        c.send(&["/ppp/secret/listen", ".tag=1"]).await;
        c.send(&["/ppp/secret/print", ".tag=2", "=.proplist=name"])
            .await;
        c.send(&["/system/identity/print", ".tag=3"]).await;
        let mut got = Vec::new();
        while got.len() < 4 {
            got.push(c.recv().await.unwrap());
        }
        got.sort();
        assert_eq!(got[0], ["!done", ".tag=2"]);
        assert_eq!(got[1], ["!done", ".tag=3"]);
        assert_eq!(got[2], ["!re", ".tag=2", "=name=a"]);
        assert_eq!(got[3], ["!re", ".tag=3", "=name=sim-1"]);
        let r = c.cmd(&["/cancel", "=tag=1"]).await;
        assert_eq!(
            r,
            vec![
                vec!["!trap", ".tag=1", "=category=2", "=message=interrupted"],
                vec!["!done"]
            ]
        );
        assert_eq!(c.recv().await.unwrap(), ["!done", ".tag=1"]);
        c.send(&["/ppp/secret/listen", ".tag=7"]).await;
        c.send(&["/cancel", "=tag=7", ".tag=8"]).await;
        let seq = [
            c.recv().await.unwrap(),
            c.recv().await.unwrap(),
            c.recv().await.unwrap(),
        ];
        assert_eq!(
            seq[0],
            ["!trap", ".tag=7", "=category=2", "=message=interrupted"]
        );
        assert_eq!(seq[1], ["!done", ".tag=8"]);
        assert_eq!(seq[2], ["!done", ".tag=7"]);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn api_ssl_with_pinned_certificate() {
    within(async {
        let sim = start("7.16.2").await;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(
                sim.cert.der.clone(),
            ))
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(sim.routers[0].api_ssl.unwrap())
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = conn.connect(name, tcp).await.expect("tls handshake");
        let mut c = Client::over(Box::new(tls));
        let r = c.cmd(&["/login", "=name=admin", "=password=admin"]).await;
        assert_eq!(r, vec![vec!["!done".to_string()]]);
        let r = c.cmd(&["/system/identity/print"]).await;
        assert_eq!(rows(&r)[0], ["!re", "=name=sim-1"]);
        assert_eq!(sim.cert.sha256.len(), 64);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn updates_backup_and_export() {
    within(async {
        let sim = start("7.16.2").await;
        let mut c = Client::login(api(&sim)).await;
        let r = c.cmd(&["/system/package/update/print"]).await;
        assert_eq!(
            rows(&r)[0],
            ["!re", "=channel=stable", "=installed-version=7.16.2"]
        );
        json(
            control(&sim),
            "PUT",
            "/routers/0/update",
            Some(r#"{"latest_version":"7.17"}"#),
        )
        .await;
        let r = c
            .cmd(&["/system/package/update/check-for-updates", ".tag=4"])
            .await;
        let rs = rows(&r);
        assert_eq!(rs.len(), 3);
        assert_eq!(&rs[0][..3], ["!re", ".tag=4", "=.section=0"]);
        assert_eq!(attr(&rs[2], "status"), Some("New version is available"));
        assert_eq!(attr(&rs[2], "latest-version"), Some("7.17"));

        c.cmd(&["/ppp/secret/add", "=name=keep", "=password=s3cret"])
            .await;
        let r = c
            .cmd(&["/system/backup/save", "=name=b1", "=password=pw"])
            .await;
        assert_eq!(r, vec![vec!["!done".to_string()]]);
        c.cmd(&["/export", "=file=cfg"]).await;
        let r = c.cmd(&["/file/print", "=.proplist=name,type"]).await;
        let files: Vec<_> = rows(&r).iter().map(|r| r[1..].join(" ")).collect();
        assert_eq!(
            files,
            ["=name=b1.backup =type=backup", "=name=cfg.rsc =type=script"]
        );
        let text =
            String::from_utf8(sim.router(0).device.lock().unwrap().file_data["cfg.rsc"].clone())
                .unwrap();
        assert!(text.contains("by RouterOS 7.16.2"));
        assert!(
            text.contains("/ppp secret\nadd name=keep\n"),
            "v7 hides passwords: {text}"
        );

        c.cmd(&["/ppp/secret/remove", "=numbers=keep"]).await;
        c.cmd(&["/ppp/secret/add", "=name=after"]).await;
        let r = c
            .cmd(&["/system/backup/load", "=name=b1.backup", "=password=wrong"])
            .await;
        assert_eq!(trap(&r).as_deref(), Some("failure: wrong password"));
        let r = c
            .cmd(&["/system/backup/load", "=name=b1.backup", "=password=pw"])
            .await;
        assert_eq!(r, vec![vec!["!done".to_string()]]);
        assert!(c.closed().await, "load reboots");
        let addr = api(&sim);
        let mut c = poll(|| async move {
            let mut c = Client::connect(addr).await;
            c.send(&["/login", "=name=admin", "=password=admin"]).await;
            match c.recv().await {
                Some(s) if s[0] == "!done" => Some(c),
                _ => None,
            }
        })
        .await;
        let r = c.cmd(&["/ppp/secret/print", "=.proplist=name"]).await;
        let names: Vec<_> = rows(&r).iter().map(|r| r[1].clone()).collect();
        assert_eq!(names, ["=name=keep"]);
        sim.shutdown().await;
    })
    .await;
}
