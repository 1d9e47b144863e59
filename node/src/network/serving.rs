//! The inbound requests each peer has waiting for an answer, counted per protocol, so that
//! the node can refuse a peer that asks for more at once than an honest one ever does.
//!
//! A request counts from its arrival until its answer has gone out or failed: that span
//! is what holds the answer's bytes in memory. The bytes of the answers handed over and
//! not yet sent are counted too, across all peers ([`AnswerBytes`]): past a budget, the
//! node answers `busy` instead of reading more blocks into memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use libp2p::PeerId;

use super::InboundProtocol;

/// Requests being answered, keyed by the request-response behaviour's own id type (each
/// protocol numbers its requests separately).
#[derive(Debug)]
pub(super) struct Serving<Id> {
    requests: HashMap<(InboundProtocol, Id), PeerId>,
    per_peer: HashMap<(PeerId, InboundProtocol), usize>,
    /// The size of each answer handed over and not yet sent.
    answers: HashMap<(InboundProtocol, Id), usize>,
    answer_bytes: AnswerBytes,
}

impl<Id> Default for Serving<Id> {
    fn default() -> Self {
        Self {
            requests: HashMap::new(),
            per_peer: HashMap::new(),
            answers: HashMap::new(),
            answer_bytes: AnswerBytes::default(),
        }
    }
}

/// The bytes of answers on their way out, shared with the node (through
/// [`super::Client::answer_bytes`]).
#[derive(Debug, Clone, Default)]
pub struct AnswerBytes(Arc<AtomicUsize>);

impl AnswerBytes {
    /// The bytes now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl<Id: Copy + Eq + Hash> Serving<Id> {
    /// A request arrived; returns how many of the peer's requests on that protocol are
    /// now being answered, this one included.
    pub(super) fn begin(&mut self, peer: PeerId, protocol: InboundProtocol, id: Id) -> usize {
        if self.requests.insert((protocol, id), peer).is_some() {
            // The same id twice would be a bug in the behaviour; never count it twice.
            return self.per_peer.get(&(peer, protocol)).copied().unwrap_or(0);
        }
        let count = self.per_peer.entry((peer, protocol)).or_default();
        *count += 1;
        *count
    }

    /// The shared count of answer bytes on their way out.
    pub(super) fn answer_bytes(&self) -> AnswerBytes {
        self.answer_bytes.clone()
    }

    /// The answer to request `id`, `bytes` long, was handed to the network.
    pub(super) fn answering(&mut self, protocol: InboundProtocol, id: Id, bytes: usize) {
        if self.requests.contains_key(&(protocol, id))
            && self.answers.insert((protocol, id), bytes).is_none()
        {
            self.answer_bytes.0.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// The answer went out, or the request failed (timeout, connection closed, no
    /// answer). Unknown ids (a request that failed before it was read) are ignored.
    pub(super) fn end(&mut self, protocol: InboundProtocol, id: Id) {
        if let Some(bytes) = self.answers.remove(&(protocol, id)) {
            self.answer_bytes.0.fetch_sub(bytes, Ordering::Relaxed);
        }
        let Some(peer) = self.requests.remove(&(protocol, id)) else {
            return;
        };
        if let Some(count) = self.per_peer.get_mut(&(peer, protocol)) {
            *count -= 1;
            if *count == 0 {
                self.per_peer.remove(&(peer, protocol));
            }
        }
    }

    /// How many of the peer's requests on `protocol` are being answered.
    #[cfg(test)]
    fn of(&self, peer: &PeerId, protocol: InboundProtocol) -> usize {
        self.per_peer.get(&(*peer, protocol)).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_requests_when_answered_then_counts_go_back_to_zero_and_entries_are_dropped() {
        let mut serving = Serving::<u64>::default();
        let alice = PeerId::random();
        let bob = PeerId::random();

        assert_eq!(serving.begin(alice, InboundProtocol::Sync, 1), 1);
        assert_eq!(serving.begin(alice, InboundProtocol::Sync, 2), 2);
        assert_eq!(serving.begin(alice, InboundProtocol::Direct, 1), 1, "per protocol");
        assert_eq!(serving.begin(bob, InboundProtocol::Sync, 3), 1, "per peer");

        serving.end(InboundProtocol::Sync, 1);
        assert_eq!(serving.of(&alice, InboundProtocol::Sync), 1);
        assert_eq!(serving.of(&alice, InboundProtocol::Direct), 1, "same id, other protocol");
        serving.end(InboundProtocol::Sync, 2);
        serving.end(InboundProtocol::Direct, 1);
        serving.end(InboundProtocol::Sync, 3);

        assert_eq!(serving.of(&alice, InboundProtocol::Sync), 0);
        assert!(serving.requests.is_empty() && serving.per_peer.is_empty());
    }

    #[test]
    fn given_unknown_or_repeated_ids_then_counts_never_drift() {
        let mut serving = Serving::<u64>::default();
        let alice = PeerId::random();

        serving.end(InboundProtocol::Sync, 9);
        assert_eq!(serving.begin(alice, InboundProtocol::Sync, 1), 1);
        assert_eq!(serving.begin(alice, InboundProtocol::Sync, 1), 1, "a repeat is not counted");
        serving.end(InboundProtocol::Sync, 1);
        serving.end(InboundProtocol::Sync, 1);

        assert_eq!(serving.of(&alice, InboundProtocol::Sync), 0);
        assert!(serving.per_peer.is_empty());
    }

    #[test]
    fn given_answers_on_their_way_then_their_bytes_are_counted_until_sent_or_failed() {
        let mut serving = Serving::<u64>::default();
        let shared = serving.answer_bytes();
        let (alice, bob) = (PeerId::random(), PeerId::random());
        serving.begin(alice, InboundProtocol::Sync, 1);
        serving.begin(bob, InboundProtocol::Sync, 2);
        serving.answering(InboundProtocol::Sync, 1, 1000);
        serving.answering(InboundProtocol::Sync, 2, 500);
        serving.answering(InboundProtocol::Sync, 2, 500); // once per answer
        serving.answering(InboundProtocol::Sync, 9, 700); // no such request
        assert_eq!(shared.get(), 1500, "seen by the node");
        serving.end(InboundProtocol::Sync, 1); // sent
        assert_eq!(shared.get(), 500);
        serving.end(InboundProtocol::Sync, 2); // failed
        assert_eq!(shared.get(), 0);
        assert!(serving.answers.is_empty());
    }
}
