//! The conformance scenario of `tests/e2e/py/conformance.py`, step for step, driven by
//! mikrotik-rs. Each step's outcome has the same JSON shape as the Python script's, so the
//! conformance test can require both clients to see the same thing.
//!
//! mikrotik-rs reports only the first `!trap` of a command (it ends the command there) and drops
//! the `=ret=` of an `add`; the scenario reads new ids back with a print, as the agent will.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mikrotik_rs::{CommandBuilder, Event, MikrotikDevice};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

/// How long any one command may take before the scenario gives up on it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// What one command produced: its rows, or the trap messages that ended it.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every `!re`, each as name → value.
    pub rows: Vec<BTreeMap<String, String>>,
    /// `!trap` messages (mikrotik-rs stops at the first).
    pub traps: Vec<String>,
}

impl Outcome {
    fn to_json(&self) -> Value {
        if self.traps.is_empty() {
            json!({ "rows": self.rows })
        } else {
            json!({ "trap": self.traps })
        }
    }

    fn ok_or_trap(&self) -> Value {
        if self.traps.is_empty() {
            json!({ "ok": true })
        } else {
            json!({ "trap": self.traps })
        }
    }
}

/// Sends one command made of a path and raw words (`=name=value`, `?query`, `?#|`) and collects
/// everything it answers.
pub async fn call(device: &MikrotikDevice, path: &str, words: &[&str]) -> anyhow::Result<Outcome> {
    let mut builder = CommandBuilder::new().command(path);
    for word in words {
        builder = if let Some(attr) = word.strip_prefix('=') {
            let (name, value) = attr.split_once('=').unwrap_or((attr, ""));
            builder.attribute(name, Some(value))
        } else if let Some(ops) = word.strip_prefix("?#") {
            let ops: Vec<_> = ops.chars().filter_map(query_operator).collect();
            builder.query_operations(&ops)
        } else if let Some(rest) = word.strip_prefix("?>") {
            let (name, value) = rest.split_once('=').unwrap_or((rest, ""));
            builder.query_gt(name, value)
        } else if let Some(rest) = word.strip_prefix("?<") {
            let (name, value) = rest.split_once('=').unwrap_or((rest, ""));
            builder.query_lt(name, value)
        } else if let Some(name) = word.strip_prefix("?-") {
            builder.query_not_present(name)
        } else if let Some(rest) = word.strip_prefix('?') {
            match rest.split_once('=') {
                Some((name, value)) => builder.query_equal(name, value),
                None => builder.query_is_present(rest),
            }
        } else {
            anyhow::bail!("word {word:?} is neither an attribute nor a query");
        };
    }
    let mut rx = device.send_command(builder.build()).await?;
    let mut outcome = Outcome::default();
    loop {
        let event = tokio::time::timeout(COMMAND_TIMEOUT, rx.recv())
            .await
            .map_err(|_| anyhow::anyhow!("{path}: no reply within {COMMAND_TIMEOUT:?}"))?;
        match event {
            Some(Event::Reply { response, .. }) => {
                let row = response
                    .attributes
                    .into_iter()
                    .map(|(k, v)| (k, v.unwrap_or_default()))
                    .collect();
                outcome.rows.push(row);
            }
            Some(Event::Trap { response, .. }) => {
                outcome.traps.push(response.message);
                return Ok(outcome);
            }
            Some(Event::Done { .. }) | None => return Ok(outcome),
            Some(Event::Empty { .. }) => {}
            Some(Event::Fatal { reason }) => anyhow::bail!("{path}: !fatal {reason}"),
        }
    }
}

fn query_operator(c: char) -> Option<mikrotik_rs::QueryOperator> {
    use mikrotik_rs::QueryOperator as Q;
    match c {
        '|' => Some(Q::Or),
        '&' => Some(Q::And),
        '!' => Some(Q::Not),
        '.' => Some(Q::Dot),
        _ => None,
    }
}

async fn id_of(device: &MikrotikDevice, name: &str) -> anyhow::Result<Value> {
    let query = format!("?name={name}");
    let found = call(device, "/ppp/secret/print", &["=.proplist=.id", &query]).await?;
    let found = if found.rows.is_empty() {
        call(device, "/ppp/profile/print", &["=.proplist=.id", &query]).await?
    } else {
        found
    };
    Ok(match found.rows.first().and_then(|r| r.get(".id")) {
        Some(id) => json!({ "id": id }),
        None => json!({ "trap": ["not found"] }),
    })
}

/// Adds an item; on success reads its id back (mikrotik-rs drops `=ret=`).
async fn add(
    device: &MikrotikDevice,
    path: &str,
    name: &str,
    words: &[&str],
) -> anyhow::Result<Value> {
    let name_word = format!("=name={name}");
    let mut all = vec![name_word.as_str()];
    all.extend_from_slice(words);
    let outcome = call(device, path, &all).await?;
    if outcome.traps.is_empty() {
        id_of(device, name).await
    } else {
        Ok(outcome.to_json())
    }
}

/// Adds an item with the given words; on success finds its id with `print ?query`.
async fn add_then_id(
    device: &MikrotikDevice,
    path: &str,
    words: &[&str],
    print: &str,
    query: &str,
) -> anyhow::Result<Value> {
    let outcome = call(device, path, words).await?;
    if !outcome.traps.is_empty() {
        return Ok(outcome.to_json());
    }
    let found = call(device, print, &["=.proplist=.id", query]).await?;
    Ok(match found.rows.first().and_then(|r| r.get(".id")) {
        Some(id) => json!({ "id": id }),
        None => json!({ "trap": ["not found"] }),
    })
}

/// Runs the whole scenario over plain API at `api` (an untouched router) and then API-SSL at
/// `tls`, verifying the router's certificate against `ca_pem`.
pub async fn run(
    api: SocketAddr,
    tls: SocketAddr,
    ca_pem: &str,
    user: &str,
    password: &str,
) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    let wrong = format!("{password}-wrong");
    let bad = MikrotikDevice::connect(api, user, Some(&wrong)).await;
    out.insert(
        "login_bad".to_owned(),
        match bad {
            Ok(_) => json!({ "ok": true }),
            Err(
                mikrotik_rs::DeviceError::Authentication { response }
                | mikrotik_rs::DeviceError::Login(mikrotik_rs::LoginError::Authentication(response)),
            ) => {
                json!({ "trap": [response.message] })
            }
            Err(other) => json!({ "trap": [other.to_string()] }),
        },
    );

    let device = MikrotikDevice::connect(api, user, Some(password)).await?;
    out.insert("login_good".to_owned(), json!({ "ok": true }));
    scenario(&device, &mut out).await?;
    drop(device);

    let device = MikrotikDevice::builder(tls)
        .credentials(user, Some(password))
        .tls_config(Arc::new(verifying_config(ca_pem)?), "localhost".try_into()?)
        .connect()
        .await?;
    out.insert(
        "tls_identity".to_owned(),
        call(&device, "/system/identity/print", &[])
            .await?
            .to_json(),
    );
    out.insert(
        "tls_secret_names".to_owned(),
        call(&device, "/ppp/secret/print", &["=.proplist=name"])
            .await?
            .to_json(),
    );
    Ok(out)
}

/// A rustls client config that trusts exactly the router's certificate.
fn verifying_config(ca_pem: &str) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

async fn scenario(d: &MikrotikDevice, out: &mut BTreeMap<String, Value>) -> anyhow::Result<()> {
    let mut put = |k: &str, v: Value| {
        out.insert(k.to_owned(), v);
    };
    let secret = "/ppp/secret/add";
    put(
        "add_profile",
        add(d, "/ppp/profile/add", "plan-10m", &["=rate-limit=10M/10M"]).await?,
    );
    put(
        "add_alice",
        add(
            d,
            secret,
            "alice",
            &["=password=a1", "=profile=plan-10m", "=service=pppoe"],
        )
        .await?,
    );
    put(
        "add_bob",
        add(d, secret, "bob", &["=password=b1", "=service=pppoe"]).await?,
    );
    put(
        "add_carol",
        add(d, secret, "carol", &["=password=c1", "=disabled=yes"]).await?,
    );
    put(
        "add_duplicate",
        add(d, secret, "alice", &["=password=x"]).await?,
    );
    put(
        "add_bad_profile",
        add(d, secret, "dave", &["=password=d", "=profile=nope"]).await?,
    );

    let print = "/ppp/secret/print";
    let proplist = "=.proplist=name,profile,disabled,service";
    put(
        "print_proplist",
        call(d, print, &[proplist]).await?.to_json(),
    );
    put(
        "print_empty",
        call(d, print, &["=.proplist=name", "?name=nobody"])
            .await?
            .to_json(),
    );
    put(
        "print_all_names",
        call(d, print, &["=.proplist=name"]).await?.to_json(),
    );
    put(
        "query_equal",
        call(d, print, &[proplist, "?profile=plan-10m"])
            .await?
            .to_json(),
    );
    put(
        "query_disabled",
        call(d, print, &["=.proplist=name", "?disabled=true"])
            .await?
            .to_json(),
    );
    put(
        "query_or",
        call(
            d,
            print,
            &["=.proplist=name", "?name=alice", "?name=carol", "?#|"],
        )
        .await?
        .to_json(),
    );
    put(
        "query_not",
        call(d, print, &["=.proplist=name", "?name=alice", "?#!"])
            .await?
            .to_json(),
    );
    put(
        "query_and_or_stack",
        call(
            d,
            print,
            &[
                "=.proplist=name",
                "?service=pppoe",
                "?name=bob",
                "?name=carol",
                "?#|&",
            ],
        )
        .await?
        .to_json(),
    );

    let bob = call(d, print, &["=.proplist=.id", "?name=bob"]).await?;
    let bob_id = bob
        .rows
        .first()
        .and_then(|r| r.get(".id"))
        .cloned()
        .unwrap_or_default();
    let id_word = format!("=.id={bob_id}");
    let set = "/ppp/secret/set";
    put(
        "set_by_id",
        call(
            d,
            set,
            &[&id_word, "=profile=plan-10m", "=limit-bytes-in=1000"],
        )
        .await?
        .ok_or_trap(),
    );
    put(
        "set_by_numbers",
        call(d, set, &["=numbers=carol", "=disabled=no"])
            .await?
            .ok_or_trap(),
    );
    put(
        "set_remote_address",
        call(d, set, &["=numbers=alice", "=remote-address=10.9.0.2"])
            .await?
            .ok_or_trap(),
    );
    put(
        "query_gt",
        call(d, print, &["=.proplist=name", "?>limit-bytes-in=500"])
            .await?
            .to_json(),
    );
    put(
        "query_lt",
        call(d, print, &["=.proplist=name", "?<limit-bytes-in=500"])
            .await?
            .to_json(),
    );
    put(
        "query_has",
        call(d, print, &["=.proplist=name", "?remote-address"])
            .await?
            .to_json(),
    );
    put(
        "query_lacks",
        call(d, print, &["=.proplist=name", "?-remote-address"])
            .await?
            .to_json(),
    );
    put(
        "print_after_set",
        call(
            d,
            print,
            &["=.proplist=name,profile,disabled,limit-bytes-in,remote-address"],
        )
        .await?
        .to_json(),
    );
    put(
        "set_bad_value",
        call(d, set, &["=numbers=bob", "=profile=missing"])
            .await?
            .ok_or_trap(),
    );

    let alice = call(d, print, &["=.proplist=.id", "?name=alice"]).await?;
    let alice_id = alice
        .rows
        .first()
        .and_then(|r| r.get(".id"))
        .cloned()
        .unwrap_or_default();
    let remove = "/ppp/secret/remove";
    put(
        "remove_by_id",
        call(d, remove, &[&format!("=.id={alice_id}")])
            .await?
            .ok_or_trap(),
    );
    put(
        "remove_missing",
        call(d, remove, &["=.id=*FFFF"]).await?.ok_or_trap(),
    );
    put(
        "print_after_remove",
        call(d, print, &["=.proplist=.id,name"]).await?.to_json(),
    );
    put(
        "unknown_verb",
        call(d, "/ppp/secret/frobnicate", &[]).await?.to_json(),
    );
    put(
        "unknown_path",
        call(d, "/ip/adress/print", &[]).await?.to_json(),
    );
    put(
        "builtin_profiles",
        call(d, "/ppp/profile/print", &["=.proplist=.id,name,default"])
            .await?
            .to_json(),
    );

    // Two commands in flight on one connection; mikrotik-rs tags and demultiplexes them.
    let (a, b) = tokio::join!(
        call(d, print, &["=.proplist=name"]),
        call(d, "/ppp/profile/print", &["=.proplist=name"])
    );
    let (a, b) = (a?, b?);
    put("tagged_concurrent", json!({ "a": a.rows, "b": b.rows }));

    // Hotspot users and firewall address lists: their own duplicate messages and fields.
    let hs_add = "/ip/hotspot/user/add";
    put(
        "hs_add",
        add_then_id(
            d,
            hs_add,
            &["=name=guest1", "=password=g1"],
            "/ip/hotspot/user/print",
            "?name=guest1",
        )
        .await?,
    );
    put(
        "hs_duplicate",
        add_then_id(
            d,
            hs_add,
            &["=name=guest1", "=password=g2"],
            "/ip/hotspot/user/print",
            "?name=guest1",
        )
        .await?,
    );
    put(
        "hs_print",
        call(
            d,
            "/ip/hotspot/user/print",
            &["=.proplist=name,profile,disabled", "?name=guest1"],
        )
        .await?
        .to_json(),
    );
    let al_add = "/ip/firewall/address-list/add";
    let al_print = "/ip/firewall/address-list/print";
    put(
        "al_add",
        add_then_id(
            d,
            al_add,
            &["=list=suspended", "=address=10.64.0.9", "=comment=tikfleet"],
            al_print,
            "?address=10.64.0.9",
        )
        .await?,
    );
    put(
        "al_duplicate",
        add_then_id(
            d,
            al_add,
            &["=list=suspended", "=address=10.64.0.9"],
            al_print,
            "?address=10.64.0.9",
        )
        .await?,
    );
    put(
        "al_print",
        call(
            d,
            al_print,
            &["=.proplist=list,address,comment,dynamic,disabled"],
        )
        .await?
        .to_json(),
    );
    // mikrotik-rs drops the `=ret=` of `!done`, so it cannot read a count-only answer; count
    // the rows of a print instead (librouteros reads `ret`, and both must agree).
    let all = call(d, print, &["=.proplist=.id"]).await?;
    put(
        "count_only",
        json!({ "rows": [{ "count": all.rows.len().to_string() }] }),
    );
    Ok(())
}
