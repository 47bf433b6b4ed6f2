//! The decoder never panics: not on arbitrary bytes, not on mutated valid frames. Whatever
//! it accepts is a valid envelope that re-encodes and decodes to itself.

use proptest::prelude::*;
use tikfleet_shared::ProtocolError;
use tikfleet_shared::codec::{decode, encode};

use crate::strategies;

#[derive(Clone, Debug)]
enum Mutation {
    /// XOR the byte at this index (mod len) with this mask.
    Flip(usize, u8),
    /// Set the byte at this index to this value.
    Set(usize, u8),
    /// Insert a byte.
    Insert(usize, u8),
    /// Remove a byte.
    Remove(usize),
    /// Cut the frame at this index.
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=u8::MAX).prop_map(|(i, m)| Mutation::Flip(i, m)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    if len == 0 {
        return;
    }
    match *mutation {
        Mutation::Flip(i, m) => bytes[i % len] ^= m,
        Mutation::Set(i, b) => bytes[i % len] = b,
        Mutation::Insert(i, b) => bytes.insert(i % (len + 1), b),
        Mutation::Remove(i) => {
            bytes.remove(i % len);
        }
        Mutation::Truncate(i) => bytes.truncate(i % len),
    }
}

/// Whatever decodes must be valid and stable through another round trip.
fn check_accepted(bytes: &[u8]) -> Result<(), TestCaseError> {
    match decode(bytes) {
        Ok(envelope) => {
            let again = encode(&envelope).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decode(&again).unwrap(), envelope);
        }
        Err(e) => {
            // Errors are typed and printable.
            prop_assert!(!e.to_string().is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_accepted(&bytes)?;
    }

    #[test]
    fn mutated_frames_never_panic(
        envelope in strategies::envelope(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = encode(&envelope).unwrap();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        check_accepted(&bytes)?;
    }

    #[test]
    fn every_proper_prefix_is_rejected(envelope in strategies::envelope(), cut in any::<usize>()) {
        let bytes = encode(&envelope).unwrap();
        let prefix = &bytes[..cut % bytes.len()];
        prop_assert!(decode(prefix).is_err());
    }

    #[test]
    fn trailing_bytes_are_rejected(envelope in strategies::envelope(), tail in proptest::collection::vec(any::<u8>(), 1..8)) {
        let mut bytes = encode(&envelope).unwrap();
        bytes.extend_from_slice(&tail);
        let result = decode(&bytes);
        prop_assert!(
            matches!(result, Err(ProtocolError::TrailingBytes { extra }) if extra == tail.len()),
            "{result:?}"
        );
    }
}
