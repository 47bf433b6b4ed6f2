//! Golden frames: wire compatibility with deployed agents.
//!
//! `shared/tests/golden/frames-v1.txt` holds one encoded frame per message shape (see
//! `fixtures.rs`), as `<name> <hex>` lines. This test checks, for every line, that
//!
//! 1. the committed bytes still decode to exactly the fixture value (a build can read what
//!    deployed peers send and what the agent stored in sled), and
//! 2. encoding the fixture today gives exactly the committed bytes (the encoder did not
//!    silently change the wire), and that every fixture has a line and vice versa.
//!
//! Re-blessing after an intended, compatible change (say, a new `Option` field):
//!
//! ```text
//! TIKFLEET_BLESS=1 cargo test -p tikfleet-shared --test wire golden
//! ```
//!
//! Blessing rewrites the file from the fixtures, but only after check 1 passes for every
//! frame already in the file: it cannot paper over a breaking change. A breaking change
//! needs a new protocol version and a new `frames-v2.txt`, with v1 frames kept.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tikfleet_shared::codec::{decode, encode};
use tikfleet_shared::job::JobOp;
use tikfleet_shared::protocol::{Message, RouterTls};
use tikfleet_shared::record::{DropReason, OutboxRecord};

use crate::fixtures;

const HEADER: &str = "\
# tikfleet protocol v1 golden frames: one MessagePack envelope per line, as `<name> <hex>`.
# Generated from shared/tests/wire/fixtures.rs; do not edit by hand.
# Re-bless: TIKFLEET_BLESS=1 cargo test -p tikfleet-shared --test wire golden
";

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/frames-v1.txt")
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn parse(file: &str) -> BTreeMap<String, Vec<u8>> {
    let mut frames = BTreeMap::new();
    for line in file
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, hex) = line.split_once(' ').expect("`<name> <hex>` line");
        let previous = frames.insert(name.to_owned(), from_hex(hex.trim()));
        assert!(previous.is_none(), "duplicate golden frame {name}");
    }
    frames
}

fn render(fixtures: &[(String, tikfleet_shared::Envelope)]) -> String {
    let mut out = HEADER.to_owned();
    for (name, envelope) in fixtures {
        let bytes = encode(envelope).unwrap_or_else(|e| panic!("{name}: {e}"));
        out.push_str(&format!("{name} {}\n", to_hex(&bytes)));
    }
    out
}

#[test]
fn fixtures_cover_every_variant() {
    let fixtures = fixtures::all();
    let mut messages = Vec::new();
    let mut ops = Vec::new();
    let mut records = Vec::new();
    let mut drop_reasons = Vec::new();
    let mut router_tls = Vec::new();
    for (_, envelope) in &fixtures {
        messages.push(envelope.msg.name());
        match &envelope.msg {
            Message::RouterConfig(config) => router_tls.push(match config.tls {
                RouterTls::Plain {} => "plain",
                RouterTls::Verify { .. } => "verify",
                RouterTls::Pin { .. } => "pin",
            }),
            Message::Job(job) => ops.push(job.op.name()),
            Message::Record(record) => {
                records.push(record.name());
                if let OutboxRecord::Dropped { reason } = record {
                    drop_reasons.push(*reason);
                }
            }
            _ => {}
        }
    }
    for name in Message::NAMES {
        assert!(
            messages.contains(&name),
            "no golden fixture for message {name}"
        );
    }
    for name in JobOp::NAMES {
        assert!(ops.contains(&name), "no golden fixture for job op {name}");
    }
    for name in OutboxRecord::NAMES {
        assert!(
            records.contains(&name),
            "no golden fixture for record {name}"
        );
    }
    for tls in ["plain", "verify", "pin"] {
        assert!(
            router_tls.contains(&tls),
            "no golden fixture for router tls {tls}"
        );
    }
    for reason in DropReason::ALL {
        assert!(
            drop_reasons.contains(&reason),
            "no golden fixture for tombstone reason {}",
            reason.name()
        );
    }
}

#[test]
fn golden_frames() {
    let fixtures = fixtures::all();
    let expected: BTreeMap<&str, _> = fixtures.iter().map(|(n, e)| (n.as_str(), e)).collect();
    assert_eq!(
        expected.len(),
        fixtures.len(),
        "fixture names must be unique"
    );

    let committed = std::fs::read_to_string(path()).unwrap_or_default();
    let golden = parse(&committed);

    // 1. Committed frames still decode to their fixtures (also required before blessing).
    for (name, bytes) in &golden {
        let fixture = expected.get(name.as_str()).unwrap_or_else(|| {
            panic!(
                "golden frame {name} has no fixture: removing a message shape breaks deployed peers"
            )
        });
        let decoded = decode(bytes).unwrap_or_else(|e| {
            panic!("golden frame {name} no longer decodes: {e}; this breaks deployed peers")
        });
        assert_eq!(
            &&decoded, fixture,
            "golden frame {name} decodes to a different value"
        );
    }

    let rendered = render(&fixtures);
    if std::env::var_os("TIKFLEET_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path().parent().unwrap()).unwrap();
        std::fs::write(path(), &rendered).unwrap();
        return;
    }

    // 2. Today's encoder produces the committed bytes, for every fixture.
    for (name, envelope) in &fixtures {
        let bytes = golden.get(name).unwrap_or_else(|| {
            panic!("no golden frame for {name}; run with TIKFLEET_BLESS=1 to add it")
        });
        assert_eq!(
            to_hex(&encode(envelope).unwrap()),
            to_hex(bytes),
            "encoding of {name} changed; if the change is compatible, re-bless (see file header)"
        );
    }
    assert_eq!(
        committed, rendered,
        "golden file is not in canonical form; re-bless"
    );
}

#[test]
fn secrets_are_on_the_wire_only_where_the_agent_needs_them() {
    // The audit fixture's password is redacted in its frame; the PPP secret's password is on
    // the wire on purpose (TLS, and the agent configures the router with it). The frames
    // checked here equal the committed ones (see `golden_frames`).
    let frames: BTreeMap<String, String> = fixtures::all()
        .into_iter()
        .map(|(name, e)| {
            (
                name,
                String::from_utf8_lossy(&encode(&e).unwrap()).into_owned(),
            )
        })
        .collect();
    let audit = &frames["record/audit"];
    assert!(audit.contains("<redacted>") && !audit.contains("correct horse"));
    assert!(frames["job/upsert_ppp_secret"].contains("correct horse"));
}

#[test]
fn host_sample_fields_added_later_decode_as_none_from_older_agents() {
    use tikfleet_shared::record::{Telemetry, TelemetrySample};

    fn host(envelope: &tikfleet_shared::Envelope) -> &tikfleet_shared::record::HostSample {
        match &envelope.msg {
            Message::Record(OutboxRecord::Telemetry(Telemetry {
                sample: TelemetrySample::Host(h),
                ..
            })) => h,
            other => panic!("not a host sample: {other:?}"),
        }
    }
    // `record/telemetry/host` was committed before `outbox_max_bytes` and
    // `telemetry_dropped` existed: its bytes are an older agent's frame.
    let golden = parse(&std::fs::read_to_string(path()).unwrap());
    let old = &golden["record/telemetry/host"];
    assert!(!String::from_utf8_lossy(old).contains("outbox_max_bytes"));
    let decoded = decode(old).unwrap();
    let h = host(&decoded);
    assert_eq!(h.outbox_bytes, 2_000_000);
    assert_eq!((h.outbox_max_bytes, h.telemetry_dropped), (None, None));
    // A new agent's frame carries both; `None` is left out of the frame, not sent as nil.
    let new = &golden["record/telemetry/host_with_cap"];
    let text = String::from_utf8_lossy(new);
    assert!(text.contains("outbox_max_bytes") && text.contains("telemetry_dropped"));
    let decoded = decode(new).unwrap();
    let h = host(&decoded);
    assert_eq!(h.outbox_max_bytes, Some(512 << 20));
    assert_eq!(h.telemetry_dropped, Some(1_234));
}
