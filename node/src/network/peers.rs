//! A small peer manager: a score per peer, lowered by named penalties and recovering
//! over time; a peer whose score falls to the ban threshold is disconnected and refused
//! for a while. The node's own trackers are never banned: they are its way into the
//! network, chosen by its user, and a ban would cut it off the directory until it ends.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// The score at which a peer is banned.
pub const BAN_THRESHOLD: f64 = -100.0;
/// How long a ban lasts.
pub const BAN_DURATION: Duration = Duration::from_secs(600);
/// Scores move halfway back to zero in this time.
pub const SCORE_HALF_LIFE: Duration = Duration::from_secs(300);

/// How bad a peer's fault was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Penalty {
    /// Proof of bad intent or a broken implementation (an invalid block with valid proof
    /// of work, a forged card): banned at once.
    Fatal,
    /// Clearly invalid data (bad signature, malformed message): banned after two.
    LowTolerance,
    /// Invalid but cheap to produce by mistake (a wrong-network message): about nine.
    MidTolerance,
    /// Possibly honest (a timeout, an unhelpful answer): about forty.
    HighTolerance,
}

impl Penalty {
    /// The points it takes off. Each tier has headroom over an exact fraction of the
    /// threshold, so that "banned after two" still holds after the score has decayed a
    /// little between the faults.
    pub fn points(self) -> f64 {
        match self {
            Penalty::Fatal => 100.0,
            Penalty::LowTolerance => 60.0,
            Penalty::MidTolerance => 12.0,
            Penalty::HighTolerance => 2.5,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Score {
    value: f64,
    updated: Instant,
}

/// Scores and bans, with time passed in so tests can pin it.
#[derive(Debug, Default)]
pub struct PeerScores {
    scores: HashMap<PeerId, Score>,
    banned: HashMap<PeerId, Instant>,
    /// Scored but never banned.
    protected: HashSet<PeerId>,
}

impl PeerScores {
    /// Scores that never ban `protected` (the node's trackers).
    pub fn protecting(protected: impl IntoIterator<Item = PeerId>) -> Self {
        Self { protected: protected.into_iter().collect(), ..Self::default() }
    }

    /// Whether `peer` is never banned.
    pub fn is_protected(&self, peer: &PeerId) -> bool {
        self.protected.contains(peer)
    }

    /// Applies a penalty; returns true when it makes the peer banned.
    pub fn penalize(&mut self, peer: PeerId, penalty: Penalty, now: Instant) -> bool {
        let value = self.score(&peer, now) - penalty.points();
        self.scores.insert(peer, Score { value, updated: now });
        if value <= BAN_THRESHOLD && !self.banned.contains_key(&peer) && !self.is_protected(&peer) {
            self.banned.insert(peer, now + BAN_DURATION);
            return true;
        }
        false
    }

    /// The current score (0 for a peer never penalised), decayed to `now`.
    pub fn score(&self, peer: &PeerId, now: Instant) -> f64 {
        self.scores.get(peer).map_or(0.0, |score| {
            let elapsed = now.saturating_duration_since(score.updated).as_secs_f64();
            score.value * 0.5f64.powf(elapsed / SCORE_HALF_LIFE.as_secs_f64())
        })
    }

    /// Whether the peer is banned at `now`.
    pub fn is_banned(&self, peer: &PeerId, now: Instant) -> bool {
        self.banned.get(peer).is_some_and(|until| *until > now)
    }

    /// Lifts expired bans; returns the peers to let back in.
    pub fn expire_bans(&mut self, now: Instant) -> Vec<PeerId> {
        let expired: Vec<PeerId> =
            self.banned.iter().filter(|(_, until)| **until <= now).map(|(p, _)| *p).collect();
        for peer in &expired {
            self.banned.remove(peer);
            self.scores.remove(peer);
        }
        // Forget scores that have decayed to almost nothing, so the table does not grow
        // with every peer ever penalised.
        let faded: Vec<PeerId> = self
            .scores
            .keys()
            .filter(|peer| !self.banned.contains_key(peer) && self.score(peer, now).abs() < 1.0)
            .copied()
            .collect();
        for peer in faded {
            self.scores.remove(&peer);
        }
        expired
    }

    /// Peers with a score on record.
    pub fn tracked(&self) -> usize {
        self.scores.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_two_low_tolerance_faults_then_banned_and_ban_expires() {
        let mut scores = PeerScores::default();
        let peer = PeerId::random();
        let now = Instant::now();
        assert!(!scores.penalize(peer, Penalty::LowTolerance, now));
        assert!(scores.penalize(peer, Penalty::LowTolerance, now));
        assert!(scores.is_banned(&peer, now));
        assert!(scores.expire_bans(now + BAN_DURATION / 2).is_empty());
        assert_eq!(scores.expire_bans(now + BAN_DURATION), vec![peer]);
        assert!(!scores.is_banned(&peer, now + BAN_DURATION));
    }

    #[test]
    fn given_two_low_tolerance_faults_a_while_apart_then_still_banned() {
        let mut scores = PeerScores::default();
        let peer = PeerId::random();
        let now = Instant::now();
        assert!(!scores.penalize(peer, Penalty::LowTolerance, now));
        assert!(scores.penalize(peer, Penalty::LowTolerance, now + Duration::from_secs(30)));
    }

    #[test]
    fn given_old_small_faults_then_forgotten() {
        let mut scores = PeerScores::default();
        let now = Instant::now();
        scores.penalize(PeerId::random(), Penalty::HighTolerance, now);
        assert_eq!(scores.tracked(), 1);
        scores.expire_bans(now + SCORE_HALF_LIFE * 4);
        assert_eq!(scores.tracked(), 0);
    }

    #[test]
    fn given_faults_spread_over_time_then_score_recovers_and_no_ban() {
        let mut scores = PeerScores::default();
        let peer = PeerId::random();
        let mut now = Instant::now();
        for _ in 0..10 {
            assert!(!scores.penalize(peer, Penalty::LowTolerance, now));
            now += SCORE_HALF_LIFE * 2;
        }
        assert!(scores.score(&peer, now) > BAN_THRESHOLD);
    }

    #[test]
    fn given_a_tracker_at_fault_again_and_again_then_it_is_scored_but_never_banned() {
        let (tracker, other) = (PeerId::random(), PeerId::random());
        let mut scores = PeerScores::protecting([tracker]);
        let now = Instant::now();
        for _ in 0..5 {
            assert!(!scores.penalize(tracker, Penalty::Fatal, now));
        }
        assert!(!scores.is_banned(&tracker, now));
        assert!(scores.score(&tracker, now) <= BAN_THRESHOLD);
        assert!(scores.penalize(other, Penalty::Fatal, now), "anyone else still is");
    }
}
