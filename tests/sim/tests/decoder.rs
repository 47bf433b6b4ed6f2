//! The decoder never panics on arbitrary bytes, and encode→decode round-trips.

use proptest::prelude::*;
use tikfleet_sim::word::{Decoder, encode_sentence};

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
        let mut d = Decoder::new();
        for c in chunks {
            d.push(&c);
            while let Ok(Some(_)) = d.next_sentence() {}
        }
    }

    #[test]
    fn sentences_round_trip(words in proptest::collection::vec("[a-z=/.?!]{1,300}", 1..6), split in 1usize..50) {
        let mut bytes = Vec::new();
        encode_sentence(&words, &mut bytes);
        let mut d = Decoder::new();
        let mut got = None;
        for c in bytes.chunks(split) {
            d.push(c);
            if let Some(s) = d.next_sentence().unwrap() {
                got = Some(s);
            }
        }
        prop_assert_eq!(got, Some(words));
    }
}
