//! One verdict for whatever a peer sends that does not hold up: every decode, header,
//! block, state, import and mempool error maps here, in one exhaustive match, to what
//! becomes of the message (relayed, dropped quietly, or rejected) and what it costs the
//! sender. A new error variant does not compile until it is given its verdict here.
//!
//! The scale of penalties (PROTOCOL.md §11.2):
//! - [`Penalty::Fatal`]: a block or transaction rule broken under valid proof of work.
//!   Making it cost real work and honest nodes never relay one: only a broken or hostile
//!   node sends it.
//! - [`Penalty::LowTolerance`]: clearly invalid data that costs nothing to make (a bad
//!   signature, a malformed message, a header that breaks a rule).
//! - No penalty: what may be valid elsewhere or later (a nonce gap on this branch, a
//!   header slightly ahead of our clock), what we knew already, and our own policy.

use raclette_protocol::encoding::DecodeError;
use raclette_protocol::transaction::TransferError;

use crate::chain::ImportError;
use crate::chain::state::{BlockStateError, StateError};
use crate::chain::validate::{BlockError, HeaderError};
use crate::mempool::MempoolError;
use crate::network::Penalty;

/// What becomes of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Taken (and relayed, if gossip).
    Accept,
    /// Not taken, not relayed, nobody blamed.
    Ignore,
    /// Invalid: not relayed, and gossip counts it against the sender.
    Reject,
}

/// An outcome and what it costs the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// What becomes of the message.
    pub outcome: Outcome,
    /// The sender's penalty, if it is at fault.
    pub penalty: Option<Penalty>,
}

impl Verdict {
    const IGNORE: Verdict = Verdict { outcome: Outcome::Ignore, penalty: None };
    const INVALID: Verdict =
        Verdict { outcome: Outcome::Reject, penalty: Some(Penalty::LowTolerance) };
    const COSTLY: Verdict = Verdict { outcome: Outcome::Reject, penalty: Some(Penalty::Fatal) };

    /// Whether the sender is to blame.
    pub fn is_fault(&self) -> bool {
        self.penalty.is_some()
    }

    /// `rejected` or `ignored`, for metrics.
    pub fn label(&self) -> &'static str {
        match self.outcome {
            Outcome::Accept => "accepted",
            Outcome::Ignore => "ignored",
            Outcome::Reject => "rejected",
        }
    }
}

/// Anything a peer's message can be refused for.
#[derive(Debug, Clone, Copy)]
pub enum Refusal<'a> {
    /// It does not decode.
    Malformed(&'a DecodeError),
    /// A header rule.
    Header(&'a HeaderError),
    /// A block rule (the header passed, so under valid proof of work).
    Block(&'a BlockError),
    /// The block's transactions do not apply (under valid proof of work).
    BlockState(&'a BlockStateError),
    /// Importing a block failed.
    Import(&'a ImportError),
    /// A transfer breaks a rule that holds on every chain.
    Transfer(&'a TransferError),
    /// A transfer does not fit the current state.
    State(&'a StateError),
    /// The mempool did not take a transfer.
    Mempool(&'a MempoolError),
}

/// The verdict on a refusal.
pub fn verdict(refusal: Refusal<'_>) -> Verdict {
    match refusal {
        Refusal::Malformed(_) => Verdict::INVALID,
        Refusal::Header(error) => match error {
            HeaderError::BadVersion(_)
            | HeaderError::BadHeight { .. }
            | HeaderError::BadTarget(_)
            | HeaderError::WrongTarget { .. }
            | HeaderError::BadPow
            | HeaderError::TimeTooOld { .. }
            | HeaderError::TimeBeforeWindow { .. } => Verdict::INVALID,
            // Our clock may be behind: it may become valid.
            HeaderError::TimeTooNew { .. } => Verdict::IGNORE,
        },
        Refusal::Block(error) => match error {
            // The body is not the one its header commits to: the sender swapped it (the
            // header's work says nothing about it).
            BlockError::BadMerkleRoot => Verdict::INVALID,
            BlockError::TooLarge { .. }
            | BlockError::MissingCoinbase
            | BlockError::ExtraCoinbase { .. }
            | BlockError::CoinbaseHeight { .. }
            | BlockError::CoinbaseMemoTooLong { .. }
            | BlockError::Transfer { .. } => Verdict::COSTLY,
        },
        Refusal::BlockState(error) => match error {
            BlockStateError::Transfer { .. }
            | BlockStateError::CoinbaseOverpays { .. }
            | BlockStateError::CoinbaseOverflow => Verdict::COSTLY,
        },
        Refusal::Import(error) => match error {
            ImportError::Header(error) => verdict(Refusal::Header(error)),
            ImportError::Block(error) => verdict(Refusal::Block(error)),
            ImportError::State(error) => verdict(Refusal::BlockState(error)),
            // Relaying what is known to be invalid, or builds on it: cheap to repeat.
            ImportError::KnownInvalid(_) | ImportError::InvalidAncestor(_) => Verdict::INVALID,
            // Our store failed: nobody else's fault.
            ImportError::Store(_) => Verdict::IGNORE,
        },
        Refusal::Transfer(error) => match error {
            TransferError::WrongNetwork { .. }
            | TransferError::BadSignature
            | TransferError::PayloadTooLarge { .. }
            | TransferError::AmountOverflow { .. } => Verdict::INVALID,
        },
        // Valid on another branch, or later: a nonce gap, a balance not yet received.
        Refusal::State(error) => match error {
            StateError::NonceReplayed { .. }
            | StateError::NonceGap { .. }
            | StateError::Overspend { .. }
            | StateError::BalanceOverflow
            | StateError::AmountOverflow => Verdict::IGNORE,
        },
        Refusal::Mempool(error) => match error {
            MempoolError::Invalid(error) => verdict(Refusal::Transfer(error)),
            MempoolError::State(error) => verdict(Refusal::State(error)),
            // Known already, or our own policy and limits: not the sender's fault.
            MempoolError::AlreadyKnown
            | MempoolError::AlreadyMined
            | MempoolError::NonceTaken { .. }
            | MempoolError::SenderFull
            | MempoolError::Full
            | MempoolError::FeeTooLow { .. }
            | MempoolError::Unavailable(_) => Verdict::IGNORE,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raclette_protocol::Amount;

    #[test]
    fn given_each_kind_of_refusal_then_its_verdict_follows_the_scale() {
        let costly = verdict(Refusal::Block(&BlockError::MissingCoinbase));
        assert_eq!(costly, Verdict { outcome: Outcome::Reject, penalty: Some(Penalty::Fatal) });
        let forged = verdict(Refusal::Import(&ImportError::Block(BlockError::BadMerkleRoot)));
        assert_eq!(forged.penalty, Some(Penalty::LowTolerance), "a swapped body costs no work");
        let early = HeaderError::TimeTooNew { time_ms: 2, limit_ms: 1 };
        assert_eq!(verdict(Refusal::Header(&early)), Verdict::IGNORE, "our clock may be late");
        let gap = MempoolError::State(StateError::NonceGap { expected: 0, found: 1 });
        assert!(!verdict(Refusal::Mempool(&gap)).is_fault(), "valid on another branch");
        let cheap = MempoolError::FeeTooLow { fee: Amount::ZERO, min: Amount::from_units(1) };
        assert!(!verdict(Refusal::Mempool(&cheap)).is_fault(), "policy, not a rule");
        let forged = MempoolError::Invalid(TransferError::BadSignature);
        assert_eq!(verdict(Refusal::Mempool(&forged)), Verdict::INVALID);
    }
}
