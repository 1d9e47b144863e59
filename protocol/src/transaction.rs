//! Transactions: transfers between accounts, each carrying an encrypted message, and the
//! coinbase that pays a block's miner.
//!
//! A transfer is signed by its sender over the tagged SHA-256d of the canonical CBOR of
//! every field but the signature. Its id is the SHA-256d of the canonical CBOR of the
//! whole transaction, signature included, so a block's merkle root commits to the exact
//! bytes that were validated.

use serde::{Deserialize, Serialize};

use crate::amount::Amount;
use crate::encoding::to_canonical_cbor;
use crate::encryption::{EncryptedMessage, MAX_CIPHERTEXT_BYTES};
use crate::hash::{NetworkId, TxId, sha256d, tagged_hash};
use crate::keys::{Keypair, PublicKey, Signature};

/// Domain tag of the transfer signature hash.
pub const TRANSFER_SIGHASH_TAG: &[u8] = b"raclette/transfer/v1";
/// The longest coinbase memo, in bytes.
pub const MAX_COINBASE_MEMO_BYTES: usize = 100;

/// Money and a message from one account to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The network this transaction is for (its genesis hash): it cannot be replayed on
    /// another network.
    pub network: NetworkId,
    /// The paying account; its key signs.
    pub from: PublicKey,
    /// The receiving account.
    pub to: PublicKey,
    /// What `to` receives.
    pub amount: Amount,
    /// What the miner of the including block receives.
    pub fee: Amount,
    /// The sender's transaction count before this one: 0, 1, 2, ...
    pub nonce: u64,
    /// The text, readable by sender and receiver only.
    pub message: EncryptedMessage,
    /// `from`'s signature over [`Transfer::sighash`].
    pub signature: Signature,
}

/// The fields a signature covers, borrowed, in the same order as [`Transfer`].
#[derive(Serialize)]
struct UnsignedTransfer<'a> {
    network: &'a NetworkId,
    from: &'a PublicKey,
    to: &'a PublicKey,
    amount: Amount,
    fee: Amount,
    nonce: u64,
    message: &'a EncryptedMessage,
}

/// What a transfer must satisfy regardless of chain state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Signed for another network.
    #[error("transaction is for network {found}, this is {expected}")]
    WrongNetwork {
        /// This node's network.
        expected: NetworkId,
        /// The one the transaction names.
        found: NetworkId,
    },
    /// The signature does not verify against `from` (or is high-S).
    #[error("transaction signature does not verify")]
    BadSignature,
    /// The encrypted message is larger than allowed.
    #[error("message payload is {len} bytes, the limit is {MAX_CIPHERTEXT_BYTES}")]
    PayloadTooLarge {
        /// Ciphertext length.
        len: usize,
    },
    /// `amount + fee` does not fit in an amount.
    #[error("amount {amount} plus fee {fee} overflows")]
    AmountOverflow {
        /// The amount.
        amount: Amount,
        /// The fee.
        fee: Amount,
    },
}

impl Transfer {
    /// Builds and signs a transfer.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        sender: &Keypair,
        network: NetworkId,
        to: PublicKey,
        amount: Amount,
        fee: Amount,
        nonce: u64,
        message: EncryptedMessage,
    ) -> Self {
        let unsigned = UnsignedTransfer {
            network: &network,
            from: &sender.public(),
            to: &to,
            amount,
            fee,
            nonce,
            message: &message,
        };
        let signature = sender.sign(&sighash_of(&unsigned));
        Self { network, from: sender.public(), to, amount, fee, nonce, message, signature }
    }

    /// The digest the sender signs.
    pub fn sighash(&self) -> [u8; 32] {
        sighash_of(&UnsignedTransfer {
            network: &self.network,
            from: &self.from,
            to: &self.to,
            amount: self.amount,
            fee: self.fee,
            nonce: self.nonce,
            message: &self.message,
        })
    }

    /// The transaction id.
    pub fn txid(&self) -> TxId {
        TransactionRef::Transfer(self).txid()
    }

    /// What the sender pays in all: amount plus fee.
    pub fn total_cost(&self) -> Result<Amount, TransferError> {
        self.amount
            .checked_add(self.fee)
            .ok_or(TransferError::AmountOverflow { amount: self.amount, fee: self.fee })
    }

    /// Every rule that does not depend on balances and nonces: network, payload size,
    /// overflow, and last (the expensive one) the signature.
    pub fn check_stateless(&self, network: &NetworkId) -> Result<(), TransferError> {
        self.check_form(network)?;
        self.verify_signature()
    }

    /// The cheap stateless rules: network, payload size, overflow (all but the
    /// signature).
    pub fn check_form(&self, network: &NetworkId) -> Result<(), TransferError> {
        if self.network != *network {
            return Err(TransferError::WrongNetwork { expected: *network, found: self.network });
        }
        if self.message.ciphertext.len() > MAX_CIPHERTEXT_BYTES {
            return Err(TransferError::PayloadTooLarge { len: self.message.ciphertext.len() });
        }
        self.total_cost()?;
        Ok(())
    }

    /// Checks the sender's signature.
    pub fn verify_signature(&self) -> Result<(), TransferError> {
        self.from.verify(&self.sighash(), &self.signature).map_err(|_| TransferError::BadSignature)
    }
}

fn sighash_of(unsigned: &UnsignedTransfer<'_>) -> [u8; 32] {
    tagged_hash(TRANSFER_SIGHASH_TAG, &to_canonical_cbor(unsigned))
}

/// The first transaction of every block: pays the block reward and the fees to the miner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coinbase {
    /// The block's height; makes every coinbase id unique.
    pub height: u64,
    /// The miner's account.
    pub to: PublicKey,
    /// Reward plus fees (at most that).
    pub amount: Amount,
    /// Free text chosen by the miner (the genesis block's says `RacletteCheese`).
    #[serde(with = "serde_bytes")]
    pub memo: Vec<u8>,
}

/// A transaction inside a block.
// Nearly every transaction in a block is a transfer; boxing it would cost an allocation
// each for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transaction {
    /// Creates the block reward; only valid as a block's first transaction.
    Coinbase(Coinbase),
    /// Moves money and a message between accounts.
    Transfer(Transfer),
}

/// Borrowed twin of [`Transaction`] with the identical encoding, so an id can be
/// computed without cloning.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum TransactionRef<'a> {
    Coinbase(&'a Coinbase),
    Transfer(&'a Transfer),
}

impl TransactionRef<'_> {
    fn txid(&self) -> TxId {
        TxId::from_bytes(sha256d(&to_canonical_cbor(self)))
    }
}

impl Coinbase {
    /// The transaction id.
    pub fn txid(&self) -> TxId {
        TransactionRef::Coinbase(self).txid()
    }
}

impl Transaction {
    /// The transaction id.
    pub fn txid(&self) -> TxId {
        match self {
            Transaction::Coinbase(coinbase) => coinbase.txid(),
            Transaction::Transfer(transfer) => transfer.txid(),
        }
    }

    /// The transfer inside, if this is one.
    pub fn as_transfer(&self) -> Option<&Transfer> {
        match self {
            Transaction::Transfer(transfer) => Some(transfer),
            Transaction::Coinbase(_) => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::encryption::encrypt;
    use crate::keys::tests::keypair;

    /// A signed transfer between test keys `from` and `to` with fixed salt.
    pub(crate) fn transfer(from: u8, to: u8, amount: u64, fee: u64, nonce: u64) -> Transfer {
        let (sender, receiver) = (keypair(from), keypair(to));
        let message = encrypt(&sender, &receiver.public(), [7; 16], b"hi").unwrap();
        Transfer::sign(
            &sender,
            NetworkId::from_bytes([1; 32]),
            receiver.public(),
            Amount::from_units(amount),
            Amount::from_units(fee),
            nonce,
            message,
        )
    }

    #[test]
    fn given_signed_transfer_when_checked_then_valid() {
        let tx = transfer(1, 2, 10, 1, 0);
        assert_eq!(tx.check_stateless(&NetworkId::from_bytes([1; 32])), Ok(()));
    }

    #[test]
    fn given_each_stateless_fault_when_checked_then_its_own_error() {
        let network = NetworkId::from_bytes([1; 32]);
        let other = NetworkId::from_bytes([2; 32]);
        assert_eq!(
            transfer(1, 2, 10, 1, 0).check_stateless(&other),
            Err(TransferError::WrongNetwork { expected: other, found: network })
        );

        let mut tampered = transfer(1, 2, 10, 1, 0);
        tampered.amount = Amount::from_units(11);
        assert_eq!(tampered.check_stateless(&network), Err(TransferError::BadSignature));

        let mut oversized = transfer(1, 2, 10, 1, 0);
        oversized.message.ciphertext = vec![0; MAX_CIPHERTEXT_BYTES + 1];
        assert_eq!(
            oversized.check_stateless(&network),
            Err(TransferError::PayloadTooLarge { len: MAX_CIPHERTEXT_BYTES + 1 })
        );

        let overflow = transfer(1, 2, u64::MAX, 1, 0);
        assert!(matches!(
            overflow.check_stateless(&network),
            Err(TransferError::AmountOverflow { .. })
        ));
    }

    #[test]
    fn given_two_transfers_differing_only_in_nonce_then_ids_differ() {
        assert_ne!(transfer(1, 2, 10, 1, 0).txid(), transfer(1, 2, 10, 1, 1).txid());
    }
}
