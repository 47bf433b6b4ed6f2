//! Session rules without I/O: sequence numbers, acks, duplicates, gaps, resending.
//!
//! Each side owns one outgoing durable stream (the agent's outbox records; the controller's
//! desired states, jobs and cancels) and tracks the peer's. [`DurableStream`] is the state
//! for one side: it assigns outgoing seqs (from 1), keeps unacked items for resending, trims
//! them when the peer's cumulative ack arrives, and classifies incoming seqs as next,
//! duplicate (already stored: ignore, still ack) or gap (the peer resumed from the wrong
//! place: close with `protocol_error`). [`Session`] wraps it for [`Envelope`]s.
//!
//! The receiver acks only what it has stored: [`DurableStream::classify`] looks, and
//! [`DurableStream::commit`] is called after the durable write, so [`DurableStream::ack`]
//! never runs ahead of storage. On reconnect, a side [`resume`](DurableStream::resume)s from
//! its stored positions and resends everything above the peer's ack.

use std::collections::VecDeque;

use crate::protocol::{Envelope, Message, ProtocolError};

/// What to do with an incoming envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// Not a durable message: handle it, nothing to store.
    Control,
    /// The next durable message: store it, then [`commit`](DurableStream::commit) its seq.
    Next {
        /// Its seq.
        seq: u64,
    },
    /// Already stored: ignore it (its effect happened once already).
    Duplicate {
        /// Its seq.
        seq: u64,
    },
    /// Seqs were skipped; the stream is broken. Close with `protocol_error`.
    Gap {
        /// The seq that should have come.
        expected: u64,
        /// The seq that came.
        got: u64,
    },
}

/// One side's durable stream state: outgoing seqs and resend buffer, incoming position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurableStream<T> {
    /// Seq the next outgoing item gets.
    next_seq: u64,
    /// Highest of our seqs the peer acked.
    peer_acked: u64,
    /// Unacked outgoing items, ascending and contiguous up to `next_seq - 1`.
    unacked: VecDeque<(u64, T)>,
    /// Highest contiguous incoming seq stored.
    received: u64,
}

impl<T> Default for DurableStream<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> DurableStream<T> {
    /// A fresh stream: nothing sent, nothing received.
    #[must_use]
    pub fn new() -> Self {
        Self {
            next_seq: 1,
            peer_acked: 0,
            unacked: VecDeque::new(),
            received: 0,
        }
    }

    /// Rebuilds a stream from stored positions after a restart.
    ///
    /// `unacked` must be the stored items not yet acked by the peer, with ascending,
    /// contiguous seqs ending at `next_seq - 1`; `received` is the highest contiguous peer
    /// seq stored.
    pub fn resume(
        next_seq: u64,
        received: u64,
        unacked: impl IntoIterator<Item = (u64, T)>,
    ) -> Result<Self, ProtocolError> {
        if next_seq == 0 {
            return Err(ProtocolError::InvalidResume {
                reason: "next seq must be at least 1",
            });
        }
        let unacked: VecDeque<(u64, T)> = unacked.into_iter().collect();
        let first = unacked.front().map_or(next_seq, |(seq, _)| *seq);
        let len = u64::try_from(unacked.len()).unwrap_or(u64::MAX);
        let contiguous = first >= 1
            && first.checked_add(len) == Some(next_seq)
            && unacked
                .iter()
                .zip(first..)
                .all(|((seq, _), expected)| *seq == expected);
        if !contiguous {
            return Err(ProtocolError::InvalidResume {
                reason: "unacked items must have contiguous seqs ending just below next seq",
            });
        }
        Ok(Self {
            next_seq,
            peer_acked: first - 1,
            unacked,
            received,
        })
    }

    /// Assigns the next seq to `item` and keeps it until acked.
    pub fn push(&mut self, item: T) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unacked.push_back((seq, item));
        seq
    }

    /// Applies the peer's cumulative ack: drops items up to `ack`, returns how many.
    /// A stale (lower) ack changes nothing; an ack beyond what we sent is an error.
    pub fn on_ack(&mut self, ack: u64) -> Result<usize, ProtocolError> {
        let last_sent = self.next_seq - 1;
        if ack > last_sent {
            return Err(ProtocolError::AckBeyondSent { ack, last_sent });
        }
        if ack <= self.peer_acked {
            return Ok(0);
        }
        self.peer_acked = ack;
        let before = self.unacked.len();
        while self.unacked.front().is_some_and(|(seq, _)| *seq <= ack) {
            self.unacked.pop_front();
        }
        Ok(before - self.unacked.len())
    }

    /// Classifies an incoming durable seq without changing anything.
    #[must_use]
    pub fn classify(&self, seq: u64) -> Incoming {
        if seq <= self.received {
            Incoming::Duplicate { seq }
        } else if seq == self.received + 1 {
            Incoming::Next { seq }
        } else {
            Incoming::Gap {
                expected: self.received + 1,
                got: seq,
            }
        }
    }

    /// Records that the incoming item `seq` is stored; it must be the next one.
    pub fn commit(&mut self, seq: u64) -> Result<(), ProtocolError> {
        let expected = self.received + 1;
        if seq != expected {
            return Err(ProtocolError::OutOfOrder { expected, got: seq });
        }
        self.received = seq;
        Ok(())
    }

    /// The cumulative ack to send: highest contiguous incoming seq stored.
    #[must_use]
    pub fn ack(&self) -> u64 {
        self.received
    }

    /// The seq the next pushed item will get.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The highest of our seqs the peer acked.
    #[must_use]
    pub fn peer_acked(&self) -> u64 {
        self.peer_acked
    }

    /// Unacked outgoing items, oldest first: what to resend after a reconnect.
    pub fn unacked(&self) -> impl ExactSizeIterator<Item = (u64, &T)> {
        self.unacked.iter().map(|(seq, item)| (*seq, item))
    }
}

/// A negotiated session: a [`DurableStream`] of messages plus the protocol version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    version: u16,
    stream: DurableStream<Message>,
}

impl Session {
    /// A session speaking `version` over `stream`.
    #[must_use]
    pub fn new(version: u16, stream: DurableStream<Message>) -> Self {
        Self { version, stream }
    }

    /// The negotiated version.
    #[must_use]
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The stream state.
    #[must_use]
    pub fn stream(&self) -> &DurableStream<Message> {
        &self.stream
    }

    /// Wraps a message for sending; durable messages get a seq and are kept until acked.
    pub fn send(&mut self, msg: Message) -> Envelope {
        let seq = msg.is_durable().then(|| self.stream.push(msg.clone()));
        Envelope {
            version: self.version,
            seq,
            ack: self.stream.ack(),
            msg,
        }
    }

    /// A standalone ack envelope.
    #[must_use]
    pub fn ack(&self) -> Envelope {
        Envelope {
            version: self.version,
            seq: None,
            ack: self.stream.ack(),
            msg: Message::Ack(crate::protocol::Ack {}),
        }
    }

    /// Applies an incoming envelope's ack and classifies it.
    pub fn receive(&mut self, envelope: &Envelope) -> Result<Incoming, ProtocolError> {
        if envelope.version != self.version {
            return Err(ProtocolError::VersionMismatch {
                expected: self.version,
                got: envelope.version,
            });
        }
        envelope.validate()?;
        self.stream.on_ack(envelope.ack)?;
        Ok(match envelope.seq {
            None => Incoming::Control,
            Some(seq) => self.stream.classify(seq),
        })
    }

    /// Records that the incoming durable message `seq` is stored.
    pub fn commit(&mut self, seq: u64) -> Result<(), ProtocolError> {
        self.stream.commit(seq)
    }

    /// Envelopes for every unacked durable message, oldest first, with the current ack.
    #[must_use]
    pub fn resend(&self) -> Vec<Envelope> {
        self.stream
            .unacked()
            .map(|(seq, msg)| Envelope {
                version: self.version,
                seq: Some(seq),
                ack: self.stream.ack(),
                msg: msg.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigns_seqs_from_one_and_trims_on_ack() {
        let mut s = DurableStream::new();
        assert_eq!(s.push("a"), 1);
        assert_eq!(s.push("b"), 2);
        assert_eq!(s.push("c"), 3);
        assert_eq!(s.on_ack(2), Ok(2));
        assert_eq!(s.unacked().collect::<Vec<_>>(), [(3, &"c")]);
        assert_eq!(s.on_ack(1), Ok(0), "stale ack changes nothing");
        assert_eq!(s.peer_acked(), 2);
        assert_eq!(
            s.on_ack(4),
            Err(ProtocolError::AckBeyondSent {
                ack: 4,
                last_sent: 3
            })
        );
        assert_eq!(s.on_ack(3), Ok(1));
        assert_eq!(s.unacked().len(), 0);
    }

    #[test]
    fn classify_and_commit() {
        let mut s = DurableStream::<()>::new();
        assert_eq!(s.classify(1), Incoming::Next { seq: 1 });
        assert_eq!(
            s.classify(3),
            Incoming::Gap {
                expected: 1,
                got: 3
            }
        );
        assert_eq!(s.ack(), 0, "classify alone does not ack");
        s.commit(1).unwrap();
        assert_eq!(s.ack(), 1);
        assert_eq!(s.classify(1), Incoming::Duplicate { seq: 1 });
        assert_eq!(s.classify(0), Incoming::Duplicate { seq: 0 });
        assert_eq!(
            s.commit(3),
            Err(ProtocolError::OutOfOrder {
                expected: 2,
                got: 3
            })
        );
        assert_eq!(
            s.commit(1),
            Err(ProtocolError::OutOfOrder {
                expected: 2,
                got: 1
            })
        );
    }

    #[test]
    fn resume_checks_positions() {
        let s = DurableStream::resume(5, 9, [(3, 'x'), (4, 'y')]).unwrap();
        assert_eq!(s.next_seq(), 5);
        assert_eq!(s.peer_acked(), 2);
        assert_eq!(s.ack(), 9);
        assert_eq!(s.unacked().map(|(seq, _)| seq).collect::<Vec<_>>(), [3, 4]);

        let empty = DurableStream::<char>::resume(1, 0, []).unwrap();
        assert_eq!(empty, DurableStream::new());

        let bad = |next, items: Vec<(u64, char)>| {
            assert!(
                DurableStream::resume(next, 0, items.clone()).is_err(),
                "next={next} items={items:?}"
            );
        };
        bad(0, vec![]);
        bad(5, vec![(2, 'a'), (4, 'b')]);
        bad(5, vec![(3, 'a')]);
        bad(2, vec![(1, 'a'), (2, 'b')]);
        bad(3, vec![(0, 'a'), (1, 'b'), (2, 'c')]);
    }
}
