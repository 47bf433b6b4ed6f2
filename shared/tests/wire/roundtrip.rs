//! Every message variant survives encode → decode, in MessagePack and in JSON.

use proptest::prelude::*;
use tikfleet_shared::Secret;
use tikfleet_shared::codec::{decode, encode};
use tikfleet_shared::job::JobOp;
use tikfleet_shared::protocol::{Envelope, Message};
use tikfleet_shared::record::OutboxRecord;

use crate::strategies;

/// The externally tagged variant name of a serialized enum value.
fn json_tag(value: &impl serde::Serialize) -> String {
    let json = serde_json::to_value(value).unwrap();
    let object = json
        .as_object()
        .expect("externally tagged enums are objects");
    assert_eq!(object.len(), 1, "{json}");
    object.keys().next().unwrap().clone()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn msgpack_round_trip(envelope in strategies::envelope()) {
        let bytes = encode(&envelope).unwrap();
        prop_assert_eq!(decode(&bytes).unwrap(), envelope);
    }

    #[test]
    fn json_round_trip(envelope in strategies::envelope()) {
        let json = serde_json::to_string(&envelope).unwrap();
        let back: Envelope = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, envelope);
    }

    #[test]
    fn names_match_serialized_tags(msg in strategies::message()) {
        prop_assert_eq!(json_tag(&msg), msg.name());
        prop_assert!(Message::NAMES.contains(&msg.name()));
        match &msg {
            Message::Job(job) => {
                prop_assert_eq!(json_tag(&job.op), job.op.name());
                prop_assert!(JobOp::NAMES.contains(&job.op.name()));
            }
            Message::Record(record) => {
                prop_assert_eq!(json_tag(record), record.name());
                prop_assert!(OutboxRecord::NAMES.contains(&record.name()));
            }
            _ => {}
        }
    }

    #[test]
    fn ids_are_strings_in_json_and_bytes_in_msgpack(id in strategies::router_id()) {
        prop_assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{id}\""));
        let bytes = rmp_serde::to_vec(&id).unwrap();
        prop_assert_eq!(&bytes[2..], id.as_bytes());
    }

    #[test]
    fn secrets_never_show_in_debug(mut state in strategies::desired_state(), n in any::<u64>()) {
        let marker = format!("pw\u{1F512}{n}");
        for secret in &mut state.ppp_secrets {
            secret.password = Secret::new(marker.clone());
        }
        for user in &mut state.hotspot_users {
            user.password = Secret::new(marker.clone());
        }
        let debug = format!("{:?}", Message::DesiredState(state));
        prop_assert!(!debug.contains(&marker), "{debug}");
    }
}
