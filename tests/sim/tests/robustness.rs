//! Bad input over the network: the simulator answers or closes, never panics, never hangs,
//! never allocates what a client merely claims, and loses nothing a client sent correctly.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use tikfleet_sim::router::Router;
use tikfleet_sim::word::{encode_sentence, encode_word};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one connection of the property test may take to be answered or closed.
const DEADLINE: Duration = Duration::from_secs(10);

/// Panics anywhere in this test binary (spawned tasks included: their panics do not propagate).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

fn login_bytes() -> Vec<u8> {
    let mut out = Vec::new();
    encode_sentence(&["/login", "=name=admin", "=password=admin"], &mut out);
    out
}

/// Words a client might plausibly (or maliciously) send: real commands and attributes with
/// huge numbers, multibyte and non-UTF-8 values, odd queries.
fn word() -> impl Strategy<Value = Vec<u8>> {
    let command = prop::sample::select(vec![
        "/ppp/secret/print",
        "/ppp/secret/add",
        "/ppp/secret/set",
        "/ppp/secret/remove",
        "/ppp/secret/listen",
        "/ppp/profile/add",
        "/ppp/active/remove",
        "/ip/firewall/address-list/add",
        "/ip/firewall/address-list/set",
        "/ip/firewall/address-list/print",
        "/queue/simple/add",
        "/ip/hotspot/user/add",
        "/interface/print",
        "/system/resource/print",
        "/system/identity/set",
        "/system/package/update/set",
        "/cancel",
        "/nope/x",
        "//",
        "/",
        "",
    ])
    .prop_map(|c| c.as_bytes().to_vec());
    let name = prop::sample::select(vec![
        "name",
        "password",
        "profile",
        "timeout",
        "rate-limit",
        "max-limit",
        "target",
        "numbers",
        ".id",
        "from",
        "count-only",
        ".proplist",
        "comment",
        "disabled",
        "list",
        "address",
        "channel",
        "tag",
        "",
    ]);
    let value = value();
    let named = (name.clone(), value.clone()).prop_map(|(n, v)| {
        let mut w = format!("={n}=").into_bytes();
        w.extend(v);
        w
    });
    let query = prop_oneof![
        (name, value).prop_map(|(n, v)| {
            let mut w = format!("?>{n}=").into_bytes();
            w.extend(v);
            w
        }),
        "\\?#[!&|.0-9]{0,12}".prop_map(String::into_bytes),
        "\\?[<>=-]?[a-zé.]{0,6}(=[0-9]{0,40})?".prop_map(String::into_bytes),
    ];
    prop_oneof![
        2 => command,
        4 => named,
        2 => query,
        1 => "\\.tag=[a-z0-9é]{0,3}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 1..20),
    ]
}

/// Values a client might send: huge numbers, durations beyond the clock, ids out of range,
/// multibyte and non-UTF-8 text.
fn value() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            "99999999999999999999999w",
            "18446744073709551615",
            "18446744073709551615w",
            "2562047788015215w",
            "9223372036854775807s",
            "*FFFFFFFF",
            "*0",
            "*",
            "é,ü,*1",
            "10.0.0.1/33",
            "1.2.3.4",
            "1e309M/1G",
            "18446744073709551615/18446744073709551615",
            "99999999999999999999G",
            "name,.id,é",
            "",
        ])
        .prop_map(|v| v.as_bytes().to_vec()),
        "\\PC{0,12}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..12),
    ]
    .boxed()
}

fn arg(name: &'static str) -> impl Strategy<Value = Vec<u8>> {
    value().prop_map(move |v| {
        let mut w = format!("={name}=").into_bytes();
        w.extend(v);
        w
    })
}

/// A sentence: a command with the arguments it needs and hostile values, or random words.
fn sentence() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let fixed = |w: &str| Just(w.as_bytes().to_vec());
    prop_oneof![
        prop::collection::vec(word(), 1..8),
        (arg("timeout"), arg("address")).prop_map(|(t, a)| vec![
            b"/ip/firewall/address-list/add".to_vec(),
            b"=list=l".to_vec(),
            b"=address=1.2.3.4".to_vec(),
            t,
            a,
        ]),
        (arg("timeout"), arg("numbers")).prop_map(|(t, n)| vec![
            b"/ip/firewall/address-list/set".to_vec(),
            n,
            t,
        ]),
        (arg("name"), arg("rate-limit")).prop_map(|(n, r)| vec![
            b"/ppp/profile/add".to_vec(),
            n,
            r,
        ]),
        (arg("target"), arg("max-limit")).prop_map(|(t, m)| vec![
            b"/queue/simple/add".to_vec(),
            t,
            m,
        ]),
        (
            prop::sample::select(vec![
                "/ppp/secret/print",
                "/interface/print",
                "/ip/firewall/address-list/print"
            ]),
            prop::collection::vec(
                prop_oneof![
                    word(),
                    arg("from"),
                    arg(".proplist"),
                    fixed("=count-only="),
                    value().prop_map(|v| [b"?>name=".to_vec(), v].concat()),
                    value().prop_map(|v| [b"?<.id=".to_vec(), v].concat()),
                    "\\?#[!&|.0-9]{0,12}".prop_map(String::into_bytes),
                ],
                0..6
            )
        )
            .prop_map(|(c, mut w)| {
                w.insert(0, c.as_bytes().to_vec());
                w
            }),
        (arg("numbers"), arg("name"), arg("comment")).prop_map(|(n, m, c)| vec![
            b"/ppp/secret/set".to_vec(),
            n,
            m,
            c,
        ]),
        (arg("name"), arg("password")).prop_map(|(n, p)| vec![b"/ppp/secret/add".to_vec(), n, p,]),
    ]
}

/// Runs one connection through `api::connection` over an in-memory stream: the login, then
/// `body`, then (if `probe`) a tagged identity print, then end of stream. Returns everything
/// the server wrote, or a failure message if it panicked or missed the deadline.
async fn drive(router: Arc<Router>, body: Vec<u8>, probe: bool) -> Result<Vec<u8>, String> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let conn = tokio::spawn(tikfleet_sim::api::connection(server, router, stop_rx));
    let (mut rd, mut wr) = tokio::io::split(client);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if probe && ends_with_probe_done(&got) {
                        return got;
                    }
                }
            }
        }
    });
    let mut input = login_bytes();
    input.extend(body);
    if probe {
        encode_sentence(&["/system/identity/print", ".tag=probe"], &mut input);
    }
    // The server may close first (a bad stream): later writes may fail, that is fine.
    let _ = wr.write_all(&input).await;
    if !probe {
        // End of stream: whatever the bytes were, the server must now finish.
        let _ = wr.shutdown().await;
    }
    let got = tokio::time::timeout(DEADLINE, reader)
        .await
        .map_err(|_| "no answer and no close within the deadline".to_string())?
        .map_err(|e| format!("reader: {e}"))?;
    let _ = wr.shutdown().await;
    drop(wr);
    tokio::time::timeout(DEADLINE, conn)
        .await
        .map_err(|_| "connection task still running after end of stream".to_string())?
        .map_err(|e| format!("connection task: {e}"))?;
    Ok(got)
}

fn ends_with_probe_done(got: &[u8]) -> bool {
    let mut done = Vec::new();
    encode_sentence(&["!done", ".tag=probe"], &mut done);
    got.windows(done.len()).any(|w| w == done.as_slice())
}

/// Sets up a runtime and a simulator once for many cases.
fn with_router(f: impl FnOnce(&tokio::runtime::Runtime, Arc<Router>)) {
    count_panics();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let sim = rt.block_on(start("7.18"));
    f(&rt, sim.router(0).clone());
    rt.block_on(sim.shutdown());
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

#[test]
fn arbitrary_bytes_after_login_are_answered_or_closed() {
    with_router(|rt, router| {
        let bytes = prop::collection::vec(any::<u8>(), 0..2048);
        runner(128)
            .run(&bytes, |body| {
                let r = rt.block_on(drive(router.clone(), body, false));
                prop_assert!(r.is_ok(), "{r:?}");
                prop_assert_eq!(PANICS.load(Ordering::SeqCst), 0);
                Ok(())
            })
            .expect("property");
    });
}

#[test]
fn well_framed_nonsense_is_answered_and_loses_nothing() {
    with_router(|rt, router| {
        let sentences = prop::collection::vec(sentence(), 0..12);
        runner(256)
            .run(&sentences, |sentences| {
                let mut body = Vec::new();
                for s in &sentences {
                    for w in s {
                        encode_word(w, &mut body);
                    }
                    body.push(0);
                }
                let got = rt.block_on(drive(router.clone(), body, true));
                prop_assert!(got.is_ok(), "{got:?}");
                prop_assert!(
                    ends_with_probe_done(&got.unwrap_or_default()),
                    "the probe after the nonsense was answered"
                );
                prop_assert_eq!(PANICS.load(Ordering::SeqCst), 0);
                Ok(())
            })
            .expect("property");
    });
}

/// Reads until the peer closes; returns the sentences it sent.
async fn rest(c: &mut Client) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    while let Some(s) = c.recv().await {
        out.push(s);
    }
    out
}

#[tokio::test]
async fn a_4_gib_word_closes_the_connection_with_fatal() {
    within(async {
        let sim = start("7.16.2").await;
        for login in [true, false] {
            let mut c = if login {
                Client::login(api(&sim)).await
            } else {
                Client::connect(api(&sim)).await
            };
            // A command word, then a word claiming 0xFFFFFFFF bytes, then a few of them.
            let mut raw = Vec::new();
            encode_word(b"/ppp/secret/add", &mut raw);
            raw.extend_from_slice(&[0xF0, 0xFF, 0xFF, 0xFF, 0xFF, b'a', b'b']);
            let mut s = TcpStream::connect(api(&sim)).await.expect("connect");
            if login {
                s.write_all(&login_bytes()).await.expect("write");
            }
            s.write_all(&raw).await.expect("write");
            let mut c2 = Client::over(Box::new(s));
            let got = rest(&mut c2).await;
            let fatal = got.last().expect("a reply before the close");
            assert_eq!(fatal[0], "!fatal", "{got:?}");
            assert_eq!(fatal[1], "word of 4294967295 bytes is too long");
            // The router is unharmed.
            if login {
                let r = c.cmd(&["/system/identity/print"]).await;
                assert_eq!(attr(&r[0], "name"), Some("sim-1"));
            }
        }
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn thousands_of_pipelined_tagged_commands_all_get_answers() {
    within(async {
        let sim = start("7.16.2").await;
        let mut c = Client::login(api(&sim)).await;
        let n = tikfleet_sim::api::MAX_IN_FLIGHT + 904;
        let mut out = Vec::new();
        for i in 0..n {
            let tag = format!(".tag={i}");
            encode_sentence(&["/system/identity/print", tag.as_str()], &mut out);
        }
        let mut s = TcpStream::connect(api(&sim)).await.expect("connect");
        s.write_all(&login_bytes()).await.expect("write");
        let (rd, mut wr) = s.into_split();
        let writer = tokio::spawn(async move { wr.write_all(&out).await.map(|_| wr) });
        let mut c2 = Client::over(Box::new(tokio::io::join(rd, tokio::io::sink())));
        assert_eq!(c2.recv().await.expect("login")[0], "!done");
        let mut done = vec![false; n];
        let mut left = n;
        while left > 0 {
            let s = c2.recv().await.expect("reply");
            if s[0] == "!done" {
                let i: usize = s[1].strip_prefix(".tag=").unwrap().parse().unwrap();
                assert!(!std::mem::replace(&mut done[i], true), "one reply per tag");
                left -= 1;
            }
        }
        let _wr = writer.await.expect("writer").expect("write");
        // The first connection is still served.
        let r = c.cmd(&["/system/identity/print"]).await;
        assert_eq!(r.last().unwrap()[0], "!done");
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_reused_tag_loses_no_reply_and_cancel_finds_it() {
    within(async {
        let sim = start("7.16.2").await;
        let mut c = Client::login(api(&sim)).await;
        c.send(&["/ppp/secret/listen", ".tag=x"]).await;
        c.send(&["/system/identity/print", ".tag=x"]).await;
        assert_eq!(c.recv().await.unwrap(), ["!re", ".tag=x", "=name=sim-1"]);
        assert_eq!(c.recv().await.unwrap(), ["!done", ".tag=x"]);
        // The listen still runs under tag x and can be cancelled.
        let r = c.cmd(&["/cancel", "=tag=x"]).await;
        assert_eq!(
            r,
            vec![
                vec!["!trap", ".tag=x", "=category=2", "=message=interrupted"],
                vec!["!done"]
            ]
        );
        assert_eq!(c.recv().await.unwrap(), ["!done", ".tag=x"]);
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn corrupt_or_truncated_backups_trap_and_change_nothing() {
    within(async {
        let sim = start("7.16.2").await;
        let mut c = Client::login(api(&sim)).await;
        c.cmd(&["/ppp/secret/add", "=name=keep", "=password=p"])
            .await;
        c.cmd(&["/system/backup/save", "=name=good", "=dont-encrypt=yes"])
            .await;
        c.cmd(&["/system/backup/save", "=name=sealed"]).await;
        let (plain, sealed) = {
            let dev = tikfleet_sim::router::lock(&sim.router(0).device);
            (
                dev.file_data["good.backup"].clone(),
                dev.file_data["sealed.backup"].clone(),
            )
        };
        c.cmd(&["/system/identity/set", "=name=changed"]).await;
        // A duplicate secret name inside a well-formed snapshot.
        let text = String::from_utf8(plain.clone()).unwrap();
        let dup = text.replacen(
            "[\"name\",\"keep\"]",
            "[\"name\",\"keep\"]]},{\"id\":99,\"builtin\":false,\"fields\":[[\"name\",\"keep\"]",
            1,
        );
        assert_ne!(dup, text, "the snapshot layout changed; update this test");
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "garbage",
                b"\xff\xfe not a backup \xc3".to_vec(),
                "failure: not a backup file",
            ),
            ("empty", Vec::new(), "failure: not a backup file"),
            (
                "plain-cut",
                plain[..plain.len() / 2].to_vec(),
                "failure: not a backup file",
            ),
            (
                "plain-magic",
                plain[..10].to_vec(),
                "failure: not a backup file",
            ),
            (
                "sealed-cut",
                sealed[..sealed.len() - 1].to_vec(),
                "failure: wrong password",
            ),
            (
                "sealed-short",
                sealed[..40].to_vec(),
                "failure: not a backup file",
            ),
            ("dup", dup.into_bytes(), "failure: not a backup file"),
        ];
        for (name, data, message) in cases {
            tikfleet_sim::router::lock(&sim.router(0).device).put_file(
                &format!("{name}.backup"),
                data,
                std::time::Instant::now(),
            );
            let r = c
                .cmd(&["/system/backup/load", &format!("=name={name}")])
                .await;
            assert_eq!(trap(&r).as_deref(), Some(message), "{name}");
            assert_eq!(r.last().unwrap()[0], "!done", "{name}");
        }
        // No reboot happened (the connection is alive) and the configuration is intact.
        let r = c.cmd(&["/system/identity/print"]).await;
        assert_eq!(attr(&r[0], "name"), Some("changed"));
        let r = c
            .cmd(&["/ppp/secret/print", "?name=keep", "=count-only="])
            .await;
        assert_eq!(attr(&r[0], "ret"), Some("1"));
        sim.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn bad_values_are_refused_whole() {
    within(async {
        let sim = start("7.16.2").await;
        let mut c = Client::login(api(&sim)).await;
        // A timeout beyond the clock: a trap, not a panic.
        for t in ["2562047788015215w", "18446744073709551615"] {
            let r = c
                .cmd(&[
                    "/ip/firewall/address-list/add",
                    "=list=l",
                    "=address=1.2.3.4",
                    &format!("=timeout={t}"),
                ])
                .await;
            assert_eq!(
                trap(&r).as_deref(),
                Some("invalid value for argument timeout"),
                "{t}"
            );
        }
        // Setting one name on two rows changes neither.
        c.cmd(&["/ppp/secret/add", "=name=a"]).await;
        c.cmd(&["/ppp/secret/add", "=name=b"]).await;
        let r = c
            .cmd(&["/ppp/secret/set", "=numbers=a,b", "=name=c", "=comment=x"])
            .await;
        assert_eq!(
            trap(&r).as_deref(),
            Some("failure: secret with the same name already exists")
        );
        let r = c
            .cmd(&["/ppp/secret/print", "=.proplist=name,comment"])
            .await;
        assert_eq!(
            rows(&r),
            vec![vec!["!re", "=name=a"], vec!["!re", "=name=b"]]
        );
        // Two rows may swap into each other's old key space without a false duplicate.
        let r = c
            .cmd(&["/ppp/secret/set", "=numbers=a,b", "=comment=y"])
            .await;
        assert_eq!(r, vec![vec!["!done"]]);
        // An unknown argument refuses the whole command: nothing is half-applied.
        let r = c
            .cmd(&["/system/identity/set", "=name=half", "=bogus=1"])
            .await;
        assert_eq!(trap(&r).as_deref(), Some("unknown parameter bogus"));
        let r = c
            .cmd(&["/system/package/update/set", "=channel=testing", "=bogus=1"])
            .await;
        assert_eq!(trap(&r).as_deref(), Some("unknown parameter bogus"));
        let r = c.cmd(&["/system/identity/print"]).await;
        assert_eq!(attr(&r[0], "name"), Some("sim-1"));
        let r = c.cmd(&["/system/package/update/print"]).await;
        assert_eq!(attr(&r[0], "channel"), Some("stable"));
        sim.shutdown().await;
    })
    .await;
}

/// A raw HTTP request with the given headers; returns (status, body as JSON).
async fn raw_http(
    sim: &tikfleet_sim::Running,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(control(sim)).await.expect("connect");
    let ct = content_type
        .map(|t| format!("Content-Type: {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.expect("read");
    let text = String::from_utf8_lossy(&resp).to_string();
    let status = text.get(9..12).and_then(|x| x.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let json =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
    (status, json)
}

#[tokio::test]
async fn control_errors_are_json_with_4xx() {
    within(async {
        let sim = start("7.16.2").await;
        let json_ct = Some("application/json");
        for (method, path, ct, body, want) in [
            (
                "PUT",
                "/routers/0/faults",
                json_ct,
                r#"{"delay_msec":5}"#,
                422,
            ),
            ("PUT", "/routers/0/faults", json_ct, r#"{"delay_ms":"#, 400),
            (
                "PUT",
                "/routers/0/faults",
                json_ct,
                r#"{"delay_ms":-1}"#,
                422,
            ),
            (
                "PUT",
                "/routers/0/faults",
                Some("text/plain"),
                r#"{"delay_ms":5}"#,
                415,
            ),
            ("PUT", "/routers/0/faults", None, r#"{"delay_ms":5}"#, 415),
            (
                "PUT",
                "/routers/0/faults",
                json_ct,
                r#"{"reboot_down_ms":18446744073709551615}"#,
                400,
            ),
            ("POST", "/routers/0/reboot", json_ct, r#"{"down":5}"#, 422),
            (
                "POST",
                "/routers/0/reboot",
                json_ct,
                r#"{"down_ms":18446744073709551615}"#,
                400,
            ),
            (
                "POST",
                "/routers/0/seed",
                json_ct,
                r#"{"secrets":18446744073709551615}"#,
                400,
            ),
            (
                "POST",
                "/routers/0/sessions",
                json_ct,
                r#"{"service":"pppoe","name":"a","password":"b","mac2":"x"}"#,
                422,
            ),
            ("GET", "/routers/abc/faults", None, "", 400),
            (
                "GET",
                "/routers/99999999999999999999999/faults",
                None,
                "",
                400,
            ),
            ("GET", "/routers/7/faults", None, "", 404),
            ("GET", "/routers/0/menu", None, "", 400),
            (
                "GET",
                "/routers/0/menu?path=/ppp/secret&pth=x",
                None,
                "",
                400,
            ),
            ("GET", "/routers/0/stats?window_ms=abc", None, "", 400),
            ("GET", "/nowhere", None, "", 404),
            ("PATCH", "/routers/0/faults", None, "", 405),
        ] {
            let (status, v) = raw_http(&sim, method, path, ct, body).await;
            assert_eq!(status, want, "{method} {path} {body}: {v}");
            let error = v["error"].as_str().unwrap_or_default();
            assert!(!error.is_empty(), "{method} {path}: {v}");
            assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{v}");
        }
        // Nothing changed, and valid requests still work (a reboot needs no body).
        let v = json(control(&sim), "GET", "/routers/0/faults", None).await;
        assert_eq!(v["delay_ms"], 0);
        assert_eq!(v["reboot_down_ms"], serde_json::Value::Null);
        let (status, v) = raw_http(&sim, "POST", "/routers/0/reboot", None, "").await;
        assert_eq!(status, 200, "{v}");
        sim.shutdown().await;
    })
    .await;
}
