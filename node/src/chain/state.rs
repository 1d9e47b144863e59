//! Applying transfers and blocks to account state: pure functions over a map of the
//! accounts involved, which the caller loads beforehand.

use std::collections::{BTreeSet, HashMap};

use raclette_protocol::{Amount, Block, NetworkParams, PublicKey, Transaction, Transfer};

use crate::store::Account;

/// A transfer that cannot be applied to the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The nonce was already used.
    #[error("nonce {found} was already used (next is {expected})")]
    NonceReplayed {
        /// The sender's next nonce.
        expected: u64,
        /// The transfer's.
        found: u64,
    },
    /// The nonce skips ahead.
    #[error("nonce {found} skips ahead (next is {expected})")]
    NonceGap {
        /// The sender's next nonce.
        expected: u64,
        /// The transfer's.
        found: u64,
    },
    /// The sender cannot pay amount plus fee.
    #[error("balance {balance} cannot pay {needed}")]
    Overspend {
        /// The sender's balance.
        balance: Amount,
        /// Amount plus fee.
        needed: Amount,
    },
    /// The receiver's balance would overflow.
    #[error("the receiver's balance would overflow")]
    BalanceOverflow,
    /// Amount plus fee overflows.
    #[error("amount plus fee overflows")]
    AmountOverflow,
}

/// A block whose transactions cannot be applied in order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockStateError {
    /// A transfer fails against the state left by the ones before it.
    #[error("transaction {index}: {error}")]
    Transfer {
        /// Its position in the block.
        index: usize,
        /// The rule.
        error: StateError,
    },
    /// The coinbase pays more than reward plus fees.
    #[error("coinbase pays {paid}, at most {allowed} is allowed")]
    CoinbaseOverpays {
        /// What it pays.
        paid: Amount,
        /// Reward plus fees.
        allowed: Amount,
    },
    /// Reward plus fees overflow, or the miner's balance would.
    #[error("coinbase amounts overflow")]
    CoinbaseOverflow,
}

/// The accounts a block or transfer touches, loaded by the caller. A key missing from
/// the map is read as an empty account, so callers load every key of
/// [`touched_keys`] first.
pub type Accounts = HashMap<PublicKey, Account>;

/// Every account a block reads or writes, in key order.
pub fn touched_keys(block: &Block) -> BTreeSet<PublicKey> {
    block
        .transactions
        .iter()
        .flat_map(|tx| match tx {
            Transaction::Coinbase(coinbase) => vec![coinbase.to],
            Transaction::Transfer(transfer) => vec![transfer.from, transfer.to],
        })
        .collect()
}

/// Applies one transfer: sender pays amount + fee and its nonce advances; the receiver
/// gets the amount. On error nothing changes.
pub fn apply_transfer(accounts: &mut Accounts, transfer: &Transfer) -> Result<(), StateError> {
    let mut sender = accounts.get(&transfer.from).copied().unwrap_or_default();
    if transfer.nonce < sender.nonce {
        return Err(StateError::NonceReplayed { expected: sender.nonce, found: transfer.nonce });
    }
    if transfer.nonce > sender.nonce {
        return Err(StateError::NonceGap { expected: sender.nonce, found: transfer.nonce });
    }
    let needed = transfer.total_cost().map_err(|_| StateError::AmountOverflow)?;
    sender.balance = sender
        .balance
        .checked_sub(needed)
        .ok_or(StateError::Overspend { balance: sender.balance, needed })?;
    sender.nonce += 1;
    let self_transfer = transfer.to == transfer.from;
    let mut receiver = if self_transfer {
        sender
    } else {
        accounts.get(&transfer.to).copied().unwrap_or_default()
    };
    receiver.balance =
        receiver.balance.checked_add(transfer.amount).ok_or(StateError::BalanceOverflow)?;
    if !self_transfer {
        accounts.insert(transfer.from, sender);
    }
    accounts.insert(transfer.to, receiver);
    Ok(())
}

/// Applies a block's transactions in order, then its coinbase. Returns the total fees.
/// On error `accounts` may be partly updated; callers discard it.
pub fn apply_block(
    params: &NetworkParams,
    block: &Block,
    accounts: &mut Accounts,
) -> Result<Amount, BlockStateError> {
    let mut fees = Amount::ZERO;
    for (index, tx) in block.transactions.iter().enumerate().skip(1) {
        let transfer = tx.as_transfer().expect("checked: only the first transaction is a coinbase");
        apply_transfer(accounts, transfer)
            .map_err(|error| BlockStateError::Transfer { index, error })?;
        fees = fees.checked_add(transfer.fee).ok_or(BlockStateError::CoinbaseOverflow)?;
    }
    let coinbase = block.coinbase().expect("checked: a block starts with its coinbase");
    let allowed = params
        .reward_at(block.header.height)
        .checked_add(fees)
        .ok_or(BlockStateError::CoinbaseOverflow)?;
    if coinbase.amount > allowed {
        return Err(BlockStateError::CoinbaseOverpays { paid: coinbase.amount, allowed });
    }
    let miner = accounts.entry(coinbase.to).or_default();
    miner.balance =
        miner.balance.checked_add(coinbase.amount).ok_or(BlockStateError::CoinbaseOverflow)?;
    Ok(fees)
}

#[cfg(test)]
mod tests {
    use raclette_protocol::encryption::encrypt;
    use raclette_protocol::{Keypair, NetworkId};

    use super::*;

    fn key(n: u8) -> Keypair {
        let mut secret = [0u8; 32];
        secret[31] = n;
        Keypair::from_secret_bytes(secret).unwrap()
    }

    fn transfer(from: &Keypair, to: &Keypair, amount: u64, fee: u64, nonce: u64) -> Transfer {
        let message = encrypt(from, &to.public(), [0; 16], b"").unwrap();
        Transfer::sign(
            from,
            NetworkId::ZERO,
            to.public(),
            Amount::from_units(amount),
            Amount::from_units(fee),
            nonce,
            message,
        )
    }

    #[test]
    fn given_self_transfer_when_applied_then_only_fee_leaves() {
        let alice = key(1);
        let mut accounts = Accounts::new();
        accounts.insert(alice.public(), Account { balance: Amount::from_units(100), nonce: 0 });
        apply_transfer(&mut accounts, &transfer(&alice, &alice, 40, 3, 0)).unwrap();
        assert_eq!(
            accounts[&alice.public()],
            Account { balance: Amount::from_units(97), nonce: 1 }
        );
    }

    #[test]
    fn given_failing_transfer_when_applied_then_accounts_unchanged() {
        let (alice, bob) = (key(1), key(2));
        let mut accounts = Accounts::new();
        accounts.insert(alice.public(), Account { balance: Amount::from_units(10), nonce: 0 });
        accounts.insert(bob.public(), Account { balance: Amount::MAX, nonce: 0 });
        let before = accounts.clone();
        assert_eq!(
            apply_transfer(&mut accounts, &transfer(&alice, &bob, 5, 0, 0)),
            Err(StateError::BalanceOverflow)
        );
        assert_eq!(accounts, before);
    }

    #[test]
    fn given_zero_amount_message_when_sender_has_nothing_then_valid() {
        let (alice, bob) = (key(1), key(2));
        let mut accounts = Accounts::new();
        apply_transfer(&mut accounts, &transfer(&alice, &bob, 0, 0, 0)).unwrap();
        assert_eq!(accounts[&alice.public()].nonce, 1);
    }
}
