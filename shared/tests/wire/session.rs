//! A model test of the session rules: a sender and a receiver over a link that loses,
//! duplicates and reorders deliveries and reconnects. Every pushed item must reach the
//! receiver's store exactly once and in order, and acks must only ever trim stored items.

use proptest::prelude::*;
use tikfleet_shared::session::{DurableStream, Incoming};

#[derive(Clone, Debug)]
enum Step {
    /// The sender pushes a new item and sends it (the send may be lost).
    Push { lost: bool },
    /// The link delivers some unacked item again (duplicate or out of order).
    Redeliver(usize),
    /// The receiver's ack reaches the sender.
    Ack,
    /// The connection drops; on reconnect the sender resends everything unacked.
    Reconnect,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => any::<bool>().prop_map(|lost| Step::Push { lost }),
        2 => any::<usize>().prop_map(Step::Redeliver),
        2 => Just(Step::Ack),
        1 => Just(Step::Reconnect),
    ]
}

struct Receiver {
    stream: DurableStream<()>,
    stored: Vec<u32>,
    broken: bool,
}

impl Receiver {
    /// Handles one delivery; a gap breaks the connection until the next reconnect.
    fn deliver(&mut self, seq: u64, item: u32) {
        if self.broken {
            return;
        }
        match self.stream.classify(seq) {
            Incoming::Next { seq } => {
                self.stored.push(item);
                self.stream.commit(seq).unwrap();
            }
            Incoming::Duplicate { .. } => {}
            Incoming::Gap { .. } => self.broken = true,
            Incoming::Control => unreachable!("classify never says control"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn exactly_once_in_order(steps in proptest::collection::vec(step(), 0..60)) {
        let mut sender = DurableStream::<u32>::new();
        let mut receiver = Receiver { stream: DurableStream::new(), stored: Vec::new(), broken: false };
        let mut pushed = 0u32;

        for step in &steps {
            match *step {
                Step::Push { lost } => {
                    let seq = sender.push(pushed);
                    prop_assert_eq!(seq, u64::from(pushed) + 1);
                    if !lost {
                        receiver.deliver(seq, pushed);
                    }
                    pushed += 1;
                }
                Step::Redeliver(i) => {
                    let unacked: Vec<_> = sender.unacked().map(|(s, v)| (s, *v)).collect();
                    if !unacked.is_empty() {
                        let (seq, item) = unacked[i % unacked.len()];
                        receiver.deliver(seq, item);
                    }
                }
                Step::Ack => {
                    sender.on_ack(receiver.stream.ack()).unwrap();
                }
                Step::Reconnect => {
                    receiver.broken = false;
                    sender.on_ack(receiver.stream.ack()).unwrap();
                    let resend: Vec<_> = sender.unacked().map(|(s, v)| (s, *v)).collect();
                    for (seq, item) in resend {
                        receiver.deliver(seq, item);
                    }
                }
            }
            // Invariants after every step.
            let expected: Vec<u32> = (0..receiver.stored.len() as u32).collect();
            prop_assert_eq!(&receiver.stored, &expected, "stored in order, exactly once");
            prop_assert!(sender.peer_acked() <= receiver.stream.ack());
            prop_assert!(sender.unacked().all(|(seq, _)| seq > sender.peer_acked()));
        }

        // A final clean reconnect delivers everything.
        receiver.broken = false;
        sender.on_ack(receiver.stream.ack()).unwrap();
        let resend: Vec<_> = sender.unacked().map(|(s, v)| (s, *v)).collect();
        for (seq, item) in resend {
            receiver.deliver(seq, item);
        }
        sender.on_ack(receiver.stream.ack()).unwrap();
        prop_assert_eq!(receiver.stored, (0..pushed).collect::<Vec<_>>());
        prop_assert_eq!(sender.unacked().len(), 0);
    }
}
