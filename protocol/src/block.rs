//! Blocks: a header and the transactions it commits to through a merkle root.

use serde::{Deserialize, Serialize};

use crate::encoding::to_canonical_cbor;
use crate::hash::{BlockHash, TxId, sha256};
use crate::header::BlockHeader;
use crate::transaction::{Coinbase, Transaction};

/// The largest block, in bytes of its canonical CBOR encoding.
pub const MAX_BLOCK_BYTES: usize = 1_000_000;

/// A block: the header and its transactions, coinbase first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The header (a 96-byte byte string on the wire).
    pub header: BlockHeader,
    /// The transactions, in the order they are applied.
    pub transactions: Vec<Transaction>,
}

impl Block {
    /// The block's hash: its header's hash.
    pub fn hash(&self) -> BlockHash {
        self.header.hash()
    }

    /// The merkle root of this block's transactions as they are (to compare with the
    /// header's).
    pub fn compute_merkle_root(&self) -> [u8; 32] {
        let ids: Vec<TxId> = self.transactions.iter().map(Transaction::txid).collect();
        merkle_root(&ids)
    }

    /// The coinbase, if the first transaction is one.
    pub fn coinbase(&self) -> Option<&Coinbase> {
        match self.transactions.first() {
            Some(Transaction::Coinbase(coinbase)) => Some(coinbase),
            _ => None,
        }
    }

    /// Size of the canonical encoding, the quantity [`MAX_BLOCK_BYTES`] limits.
    pub fn encoded_size(&self) -> usize {
        to_canonical_cbor(self).len()
    }

    /// The canonical encoding assembled from the header and each transaction's canonical
    /// encoding, for callers that already encoded the transactions (to hash them).
    pub fn encode_from_parts(header: &BlockHeader, transactions: &[Vec<u8>]) -> Vec<u8> {
        let size = Self::encoded_size_from(transactions.iter().map(Vec::len));
        let mut out = Vec::with_capacity(size);
        out.push(0xa2); // map of two entries
        out.extend_from_slice(b"\x66header");
        out.extend_from_slice(&[0x58, BlockHeader::SIZE as u8]);
        out.extend_from_slice(&header.to_bytes());
        out.extend_from_slice(b"\x6ctransactions");
        let count = transactions.len();
        match count {
            0..24 => out.push(0x80 | count as u8),
            24..256 => out.extend_from_slice(&[0x98, count as u8]),
            256..65_536 => {
                out.push(0x99);
                out.extend_from_slice(&(count as u16).to_be_bytes());
            }
            _ => {
                out.push(0x9a);
                out.extend_from_slice(&(count as u32).to_be_bytes());
            }
        }
        for tx in transactions {
            out.extend_from_slice(tx);
        }
        out
    }

    /// Size of the canonical encoding given the encoded size of each transaction, for
    /// callers that already encoded them (to hash them) and need not do it again.
    pub fn encoded_size_from(transaction_sizes: impl IntoIterator<Item = usize>) -> usize {
        let (count, sum) =
            transaction_sizes.into_iter().fold((0usize, 0usize), |(n, s), size| (n + 1, s + size));
        EMPTY_BLOCK_BYTES - 1 + cbor_length_prefix(count) + sum
    }
}

/// Bytes of a block with no transactions: `{"header": h'96 bytes', "transactions": []}`.
const EMPTY_BLOCK_BYTES: usize = 1 + (1 + 6) + (2 + 96) + (1 + 12) + 1;

/// Bytes CBOR uses to announce an array of `count` items.
fn cbor_length_prefix(count: usize) -> usize {
    match count {
        0..24 => 1,
        24..256 => 2,
        256..65_536 => 3,
        _ => 5,
    }
}

/// The merkle root of a list of transaction ids.
///
/// Leaves are `SHA-256(0x00 ‖ txid)` and inner nodes `SHA-256(0x01 ‖ left ‖ right)`; on
/// a level with an odd number of nodes the last one moves up unchanged. This is the
/// RFC 6962 (Certificate Transparency) tree. It avoids Bitcoin's ambiguity
/// (CVE-2012-2459: duplicating the last node makes `[a, b, c]` and `[a, b, c, c]` share a
/// root) because nothing is ever duplicated, and the distinct leaf and node prefixes keep
/// an inner node from passing for a leaf. The root of an empty list is `SHA-256("")`.
pub fn merkle_root(ids: &[TxId]) -> [u8; 32] {
    if ids.is_empty() {
        return sha256(&[]);
    }
    let mut level: Vec<[u8; 32]> = ids
        .iter()
        .map(|id| {
            let mut leaf = [0u8; 33];
            leaf[1..].copy_from_slice(id.as_bytes());
            sha256(&leaf)
        })
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => {
                    let mut node = [0u8; 65];
                    node[0] = 1;
                    node[1..33].copy_from_slice(left);
                    node[33..].copy_from_slice(right);
                    sha256(&node)
                }
                [single] => *single,
                _ => unreachable!("chunks(2) yields one or two items"),
            })
            .collect();
    }
    level[0]
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn ids(n: u8) -> Vec<TxId> {
        (0..n).map(|i| TxId::from_bytes([i; 32])).collect()
    }

    #[test]
    fn given_transaction_sizes_then_block_size_matches_the_encoding() {
        use crate::keys::tests::keypair;
        let coinbase = |height| {
            Transaction::Coinbase(Coinbase {
                height,
                to: keypair(1).public(),
                amount: crate::Amount::ZERO,
                memo: vec![],
            })
        };
        for count in [0usize, 1, 23, 24, 255, 256, 300] {
            let block = Block {
                header: crate::params::NetworkParams::dev().genesis().header,
                transactions: (0..count as u64).map(coinbase).collect(),
            };
            let sizes = block.transactions.iter().map(|tx| to_canonical_cbor(tx).len());
            assert_eq!(
                Block::encoded_size_from(sizes),
                block.encoded_size(),
                "{count} transactions"
            );
        }
    }

    #[test]
    fn given_duplicated_last_leaf_when_rooted_then_root_differs() {
        let three = ids(3);
        let mut four = three.clone();
        four.push(three[2]);
        assert_ne!(merkle_root(&three), merkle_root(&four));
    }

    #[test]
    fn given_lists_of_every_length_up_to_40_then_all_roots_distinct() {
        let roots: HashSet<[u8; 32]> = (0..40).map(|n| merkle_root(&ids(n))).collect();
        assert_eq!(roots.len(), 40);
    }

    #[test]
    fn given_single_id_when_rooted_then_root_is_leaf_hash_not_the_id() {
        let one = ids(1);
        assert_ne!(merkle_root(&one), one[0].to_bytes());
    }

    #[test]
    fn given_inner_node_presented_as_leaf_then_root_differs() {
        // Two leaves a, b give node(a, b). A "transaction id" equal to that node's
        // preimage halves cannot reproduce the root because leaves are prefixed 0x00.
        let pair = ids(2);
        let root = merkle_root(&pair);
        assert_ne!(merkle_root(&[TxId::from_bytes(root)]), root);
    }
}
