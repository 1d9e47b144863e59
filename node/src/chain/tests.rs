//! Consensus rules one by one, fork choice, deep reorgs, and import order independence.

use std::sync::atomic::{AtomicBool, AtomicU64};

use proptest::prelude::*;
use raclette_protocol::encryption::{EncryptedMessage, MAX_CIPHERTEXT_BYTES};
use raclette_protocol::transaction::TransferError;
use raclette_protocol::{
    Amount, Block, BlockHash, BlockHeader, Coinbase, CompactTarget, Keypair, NetworkId, Target,
    Transaction, Transfer,
};

use super::*;
use crate::chain::state::StateError;
use crate::mempool::Mempool;
use crate::store::MemoryStore;
use crate::store::ReadTables;
use crate::testkit::{easy_params, keypair, mine_on, remine, transfer};

type TestChain = Chain<MemoryStore>;

const NOW: u64 = raclette_protocol::params::GENESIS_TIME_MS + 1_000_000;

fn new_chain() -> TestChain {
    Chain::open(MemoryStore::new(), easy_params(), None).unwrap()
}

fn tip_hash(chain: &TestChain) -> BlockHash {
    chain.tip().hash()
}

/// Mines `n` blocks to `miner` on the tip.
fn extend(chain: &mut TestChain, miner: &Keypair, n: usize) {
    for _ in 0..n {
        let block = mine_on(chain, &tip_hash(chain), miner, vec![], 0);
        chain.import_block(block, NOW).unwrap();
    }
}

fn reward() -> u64 {
    easy_params().block_reward.units()
}

/// Recomputes the merkle root after a test changed the transactions, then remines.
fn refresh(mut block: Block) -> Block {
    block.header.merkle_root = block.compute_merkle_root();
    remine(block)
}

/// A block on the tip whose header hash does not meet its target.
fn with_bad_pow(mut block: Block) -> Block {
    let target = block.header.bits.to_target().unwrap();
    while target.is_met_by(&block.hash()) {
        block.header.nonce += 1;
    }
    block
}

#[test]
fn given_each_broken_rule_when_importing_then_its_own_error_and_state_unchanged() {
    let params = easy_params();
    let (alice, bob) = (keypair("alice"), keypair("bob"));
    let mut chain = new_chain();
    extend(&mut chain, &alice, 2);
    let tip = tip_hash(&chain);
    let alice_balance = 2 * reward();
    let good =
        |chain: &TestChain, transfers: Vec<Transfer>| mine_on(chain, &tip, &bob, transfers, 0);

    type Check = fn(&ImportError) -> bool;
    let mut cases: Vec<(&str, Block, Check)> = Vec::new();

    cases.push(("bad proof of work", with_bad_pow(good(&chain, vec![])), |e| {
        matches!(e, ImportError::Header(HeaderError::BadPow))
    }));

    let mut wrong_target = good(&chain, vec![]);
    wrong_target.header.bits = Target::from_expected_hashes_log2(5).to_compact();
    cases.push(("wrong target", remine(wrong_target), |e| {
        matches!(e, ImportError::Header(HeaderError::WrongTarget { .. }))
    }));

    let mut old = good(&chain, vec![]);
    old.header.time_ms = chain.next_block().unwrap().median_time_ms;
    cases.push(("time not above the median", remine(old), |e| {
        matches!(e, ImportError::Header(HeaderError::TimeTooOld { .. }))
    }));

    let mut future = good(&chain, vec![]);
    future.header.time_ms = NOW + params.max_future_block_time_ms + 1;
    cases.push(("time too far ahead", remine(future), |e| {
        matches!(e, ImportError::Header(HeaderError::TimeTooNew { .. }))
    }));

    let mut bad_root = good(&chain, vec![]);
    bad_root.header.merkle_root[0] ^= 1;
    cases.push(("bad merkle root", remine(bad_root), |e| {
        matches!(e, ImportError::Block(BlockError::BadMerkleRoot))
    }));

    let mut no_coinbase = good(&chain, vec![transfer(&params, &alice, &bob, 1, 0, 0)]);
    no_coinbase.transactions.remove(0);
    cases.push(("missing coinbase", refresh(no_coinbase), |e| {
        matches!(e, ImportError::Block(BlockError::MissingCoinbase))
    }));

    let mut two_coinbases = good(&chain, vec![]);
    two_coinbases.transactions.push(two_coinbases.transactions[0].clone());
    cases.push(("second coinbase", refresh(two_coinbases), |e| {
        matches!(e, ImportError::Block(BlockError::ExtraCoinbase { index: 1 }))
    }));

    let mut overpaying = good(&chain, vec![transfer(&params, &alice, &bob, 5, 3, 0)]);
    if let Transaction::Coinbase(coinbase) = &mut overpaying.transactions[0] {
        coinbase.amount = Amount::from_units(reward() + 3 + 1);
    }
    cases.push(("coinbase overpays", refresh(overpaying), |e| {
        matches!(e, ImportError::State(BlockStateError::CoinbaseOverpays { .. }))
    }));

    let mut forged = transfer(&params, &alice, &bob, 5, 0, 0);
    forged.amount = Amount::from_units(6);
    cases.push(("bad signature", good(&chain, vec![forged]), |e| {
        matches!(
            e,
            ImportError::Block(BlockError::Transfer {
                index: 1,
                error: TransferError::BadSignature
            })
        )
    }));

    let foreign = Transfer::sign(
        &alice,
        NetworkId::from_bytes([9; 32]),
        bob.public(),
        Amount::from_units(1),
        Amount::ZERO,
        0,
        transfer(&params, &alice, &bob, 1, 0, 0).message,
    );
    cases.push(("other network", good(&chain, vec![foreign]), |e| {
        matches!(
            e,
            ImportError::Block(BlockError::Transfer {
                error: TransferError::WrongNetwork { .. },
                ..
            })
        )
    }));

    cases.push(("nonce gap", good(&chain, vec![transfer(&params, &alice, &bob, 1, 0, 1)]), |e| {
        matches!(
            e,
            ImportError::State(BlockStateError::Transfer {
                error: StateError::NonceGap { expected: 0, found: 1 },
                ..
            })
        )
    }));

    cases.push((
        "replayed nonce",
        good(
            &chain,
            vec![
                transfer(&params, &alice, &bob, 1, 0, 0),
                transfer(&params, &alice, &bob, 2, 0, 0),
            ],
        ),
        |e| {
            matches!(
                e,
                ImportError::State(BlockStateError::Transfer {
                    index: 2,
                    error: StateError::NonceReplayed { expected: 1, found: 0 }
                })
            )
        },
    ));

    cases.push((
        "overspend",
        good(&chain, vec![transfer(&params, &alice, &bob, alice_balance, 1, 0)]),
        |e| {
            matches!(
                e,
                ImportError::State(BlockStateError::Transfer {
                    error: StateError::Overspend { .. },
                    ..
                })
            )
        },
    ));

    cases.push((
        "amount plus fee overflows",
        good(&chain, vec![transfer(&params, &alice, &bob, u64::MAX, 1, 0)]),
        |e| {
            matches!(
                e,
                ImportError::Block(BlockError::Transfer {
                    error: TransferError::AmountOverflow { .. },
                    ..
                })
            )
        },
    ));

    let oversized_message =
        EncryptedMessage { salt: [0; 16], ciphertext: vec![0; MAX_CIPHERTEXT_BYTES + 1] };
    let oversized = Transfer::sign(
        &alice,
        params.network_id(),
        bob.public(),
        Amount::ZERO,
        Amount::ZERO,
        0,
        oversized_message,
    );
    cases.push(("oversized payload", good(&chain, vec![oversized]), |e| {
        matches!(
            e,
            ImportError::Block(BlockError::Transfer {
                error: TransferError::PayloadTooLarge { .. },
                ..
            })
        )
    }));

    let big_message = EncryptedMessage { salt: [0; 16], ciphertext: vec![7; MAX_CIPHERTEXT_BYTES] };
    let many: Vec<Transfer> = (0..900)
        .map(|nonce| {
            Transfer::sign(
                &alice,
                params.network_id(),
                bob.public(),
                Amount::ZERO,
                Amount::ZERO,
                nonce,
                big_message.clone(),
            )
        })
        .collect();
    cases.push(("oversized block", good(&chain, many), |e| {
        matches!(e, ImportError::Block(BlockError::TooLarge { .. }))
    }));

    let mut wrong_height = good(&chain, vec![]);
    if let Transaction::Coinbase(coinbase) = &mut wrong_height.transactions[0] {
        coinbase.height += 1;
    }
    cases.push(("coinbase height", refresh(wrong_height), |e| {
        matches!(e, ImportError::Block(BlockError::CoinbaseHeight { .. }))
    }));

    let mut version = good(&chain, vec![]);
    version.header.version = 2;
    cases.push(("header version", remine(version), |e| {
        matches!(e, ImportError::Header(HeaderError::BadVersion(2)))
    }));

    let before = (
        tip_hash(&chain),
        chain.account(&alice.public()).unwrap(),
        chain.account(&bob.public()).unwrap(),
    );
    for (name, block, expected) in cases {
        let error = chain.import_block(block, NOW).expect_err(name);
        assert!(expected(&error), "{name}: got {error:?}");
        let after = (
            tip_hash(&chain),
            chain.account(&alice.public()).unwrap(),
            chain.account(&bob.public()).unwrap(),
        );
        assert_eq!(after, before, "{name}: state changed");
    }
    // The valid block still goes in after all that.
    let valid = good(&chain, vec![transfer(&params, &alice, &bob, 5, 3, 0)]);
    assert_eq!(chain.import_block(valid, NOW).unwrap().placement, Placement::BestChain);
    assert_eq!(chain.account(&bob.public()).unwrap().balance, Amount::from_units(reward() + 5 + 3));
}

#[test]
fn given_rejected_block_when_offered_again_then_known_invalid_without_revalidation() {
    let mut chain = new_chain();
    let bob = keypair("bob");
    let bad = with_bad_pow(mine_on(&chain, &tip_hash(&chain), &bob, vec![], 0));
    assert!(matches!(
        chain.import_block(bad.clone(), NOW),
        Err(ImportError::Header(HeaderError::BadPow))
    ));
    assert!(matches!(chain.import_block(bad, NOW), Err(ImportError::KnownInvalid(_))));
}

#[test]
fn given_block_from_the_future_when_time_passes_then_accepted() {
    let mut chain = new_chain();
    let mut block = mine_on(&chain, &tip_hash(&chain), &keypair("bob"), vec![], 0);
    block.header.time_ms = NOW + chain.params().max_future_block_time_ms + 1;
    let block = remine(block);
    assert!(matches!(
        chain.import_block(block.clone(), NOW),
        Err(ImportError::Header(HeaderError::TimeTooNew { .. }))
    ));
    assert_eq!(chain.import_block(block, NOW + 10).unwrap().placement, Placement::BestChain);
}

#[test]
fn given_unknown_parent_when_importing_then_held_and_connected_when_parent_arrives() {
    let mut builder = new_chain();
    let carol = keypair("carol");
    let first = mine_on(&builder, &tip_hash(&builder), &carol, vec![], 0);
    builder.import_block(first.clone(), NOW).unwrap();
    let second = mine_on(&builder, &first.hash(), &carol, vec![], 0);
    builder.import_block(second.clone(), NOW).unwrap();
    let third = mine_on(&builder, &second.hash(), &carol, vec![], 0);

    let mut chain = new_chain();
    let imported = chain.import_block(third.clone(), NOW).unwrap();
    assert_eq!(imported.placement, Placement::Orphan { missing: second.hash() });
    let imported = chain.import_block(second.clone(), NOW).unwrap();
    assert_eq!(
        imported.placement,
        Placement::Orphan { missing: first.hash() },
        "asks for the oldest missing"
    );
    assert_eq!(chain.orphan_count(), 2);
    let imported = chain.import_block(first.clone(), NOW).unwrap();
    assert_eq!(imported.placement, Placement::BestChain);
    let change = imported.tip_change.unwrap();
    assert_eq!(
        change.connected.iter().map(Block::hash).collect::<Vec<_>>(),
        vec![first.hash(), second.hash(), third.hash()]
    );
    assert_eq!(tip_hash(&chain), third.hash());
    assert_eq!(chain.orphan_count(), 0);
}

#[test]
fn given_orphan_with_bad_pow_when_importing_then_rejected_not_held() {
    let mut chain = new_chain();
    let mut block = mine_on(&chain, &tip_hash(&chain), &keypair("x"), vec![], 0);
    block.header.prev = BlockHash::from_bytes([5; 32]);
    let block = with_bad_pow(block);
    assert!(chain.import_block(block, NOW).is_err());
    assert_eq!(chain.orphan_count(), 0);
}

#[test]
fn given_heavier_branch_when_imported_then_it_wins() {
    let (alice, bob) = (keypair("alice"), keypair("bob"));
    let mut chain = new_chain();
    let genesis = tip_hash(&chain);
    extend(&mut chain, &alice, 2);
    let a_tip = tip_hash(&chain);
    let b1 = mine_on(&chain, &genesis, &bob, vec![], 0);
    assert_eq!(chain.import_block(b1.clone(), NOW).unwrap().placement, Placement::SideChain);
    let b2 = mine_on(&chain, &b1.hash(), &bob, vec![], 0);
    assert_eq!(
        chain.import_block(b2.clone(), NOW).unwrap().placement,
        Placement::SideChain,
        "equal work: first seen stays"
    );
    assert_eq!(tip_hash(&chain), a_tip);
    let b3 = mine_on(&chain, &b2.hash(), &bob, vec![], 0);
    let imported = chain.import_block(b3.clone(), NOW).unwrap();
    assert_eq!(imported.placement, Placement::BestChain);
    let change = imported.tip_change.unwrap();
    assert_eq!(change.disconnected.len(), 2);
    assert_eq!(change.connected.len(), 3);
    assert_eq!(tip_hash(&chain), b3.hash());
    assert_eq!(chain.account(&alice.public()).unwrap(), Account::default());
    assert_eq!(chain.account(&bob.public()).unwrap().balance, Amount::from_units(3 * reward()));
}

#[test]
fn given_harder_block_on_shorter_branch_when_imported_then_work_decides_not_length() {
    let mut params = easy_params();
    params.retarget_interval = 2;
    params.max_retarget_factor = 4;
    params.pow_limit_bits = Target::from_expected_hashes_log2(2).to_compact();
    params.initial_bits = Target::from_expected_hashes_log2(3).to_compact();
    let mut chain = Chain::open(MemoryStore::new(), params, None).unwrap();
    let (alice, bob) = (keypair("alice"), keypair("bob"));
    let genesis = tip_hash(&chain);
    // Branch A: blocks 1 s apart, so at height 2 the target eases (less work per block).
    let a1 = mine_on(&chain, &genesis, &alice, vec![], 1_000_000);
    chain.import_block(a1.clone(), NOW + 2_000_000).unwrap();
    let a2 = mine_on(&chain, &a1.hash(), &alice, vec![], 10_000_000);
    chain.import_block(a2.clone(), NOW + 20_000_000).unwrap();
    let a3 = mine_on(&chain, &a2.hash(), &alice, vec![], 0);
    chain.import_block(a3.clone(), NOW + 20_000_000).unwrap();
    // Branch B: fast blocks, so its retarget makes the target harder.
    let b1 = mine_on(&chain, &genesis, &bob, vec![], 0);
    chain.import_block(b1.clone(), NOW).unwrap();
    let b2 = mine_on(&chain, &b1.hash(), &bob, vec![], 0);
    assert!(b2.header.bits.to_target().unwrap() < a2.header.bits.to_target().unwrap());
    let imported = chain.import_block(b2.clone(), NOW).unwrap();
    let work = |chain: &Chain<MemoryStore>, h: &BlockHash| chain.block(h).unwrap().unwrap().0.work;
    let expected = if work(&chain, &b2.hash()) > work(&chain, &a3.hash()) {
        Placement::BestChain
    } else {
        Placement::SideChain
    };
    assert_eq!(imported.placement, expected);
    assert_eq!(chain.tip().work, work(&chain, &a3.hash()).max(work(&chain, &b2.hash())));
}

/// All accounts in a store, for comparing two stores.
fn accounts_of(chain: &TestChain) -> Vec<(Vec<u8>, Vec<u8>)> {
    let reader = chain.store().reader().unwrap();
    let mut all = Vec::new();
    reader
        .scan(
            Table::Accounts,
            (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
            false,
            &mut |k, v| {
                all.push((k.to_vec(), v.to_vec()));
                true
            },
        )
        .unwrap();
    all
}

fn mempool_ids(pool: &Mempool) -> Vec<raclette_protocol::TxId> {
    let mut ids: Vec<_> = pool.iter().map(|(id, _)| *id).collect();
    ids.sort();
    ids
}

#[test]
fn given_reorg_twelve_deep_when_done_then_state_and_mempool_equal_importing_winner_alone() {
    let params = easy_params();
    let (alice, bob, carol, dave) =
        (keypair("alice"), keypair("bob"), keypair("carol"), keypair("dave"));
    let mut chain = new_chain();
    extend(&mut chain, &alice, 3);
    extend(&mut chain, &carol, 1);
    let fork = tip_hash(&chain);

    // Branch A (12 blocks): alice pays bob in every block; carol pays dave in some.
    let mut a_blocks = Vec::new();
    let mut a_transfers = Vec::new();
    let mut parent = fork;
    for i in 0..12u64 {
        let mut txs = vec![transfer(&params, &alice, &bob, 100 + i, 1, i)];
        if i % 4 == 0 {
            txs.push(transfer(&params, &carol, &dave, 7, 2, i / 4));
        }
        a_transfers.extend(txs.clone());
        let block = mine_on(&chain, &parent, &bob, txs, 0);
        chain.import_block(block.clone(), NOW).unwrap();
        parent = block.hash();
        a_blocks.push(block);
    }
    let mut pool = Mempool::new(params.network_id());

    // Branch B (14 blocks) has only carol's first two payments, mined by dave; built on
    // a separate node that shares the prefix.
    let mut builder = new_chain();
    extend(&mut builder, &alice, 3);
    extend(&mut builder, &carol, 1);
    assert_eq!(tip_hash(&builder), fork);
    let mut b_blocks = Vec::new();
    for i in 0..14u64 {
        let txs = if i < 2 { vec![transfer(&params, &carol, &dave, 7, 2, i)] } else { vec![] };
        let block = mine_on(&builder, &tip_hash(&builder), &dave, txs, 1);
        builder.import_block(block.clone(), NOW).unwrap();
        b_blocks.push(block);
    }
    let mut changes = Vec::new();
    for block in &b_blocks {
        let imported = chain.import_block(block.clone(), NOW).unwrap();
        if let Some(change) = imported.tip_change {
            pool.apply_tip_change(&change, &chain.store().reader().unwrap(), NOW).unwrap();
            changes.push(change);
        }
    }
    assert_eq!(changes.len(), 2, "the 13th block switches branches, the 14th extends");
    assert_eq!(changes[0].disconnected.len(), 12);
    assert_eq!(changes[0].connected.len(), 13);
    assert!(!changes[1].is_reorg());

    // A fresh node that saw the same transfers and only branch B.
    let mut fresh = new_chain();
    extend(&mut fresh, &alice, 3);
    extend(&mut fresh, &carol, 1);
    let mut fresh_pool = Mempool::new(params.network_id());
    for t in &a_transfers {
        fresh_pool.add(&fresh.store().reader().unwrap(), t.clone(), NOW).unwrap();
    }
    for block in &b_blocks {
        let imported = fresh.import_block(block.clone(), NOW).unwrap();
        if let Some(change) = imported.tip_change {
            fresh_pool.apply_tip_change(&change, &fresh.store().reader().unwrap(), NOW).unwrap();
        }
    }
    assert_eq!(tip_hash(&chain), tip_hash(&fresh));
    assert_eq!(accounts_of(&chain), accounts_of(&fresh));
    assert_eq!(mempool_ids(&pool), mempool_ids(&fresh_pool));
    // Alice's 12 payments are pending again; carol's third payment (nonce 2) too; her
    // first two are in branch B.
    assert_eq!(pool.len(), 13);
    assert_eq!(
        chain
            .store()
            .reader()
            .unwrap()
            .values::<crate::store::MempoolRecord>(Table::Mempool)
            .unwrap()
            .len(),
        13
    );
}

#[test]
fn given_invalid_block_deep_in_heavier_side_branch_when_switching_then_stays_and_marks_branch_invalid()
 {
    let params = easy_params();
    let (alice, bob) = (keypair("alice"), keypair("bob"));
    let mut chain = new_chain();
    let genesis = tip_hash(&chain);
    extend(&mut chain, &alice, 2);
    let a_tip = tip_hash(&chain);
    // Branch B: its first block spends money bob does not have: fine as a side chain
    // (state is not checked there), invalid when the branch would become best.
    let b1 = mine_on(
        &chain,
        &genesis,
        &bob,
        vec![transfer(&params, &bob, &alice, 10 * reward(), 0, 0)],
        0,
    );
    assert_eq!(chain.import_block(b1.clone(), NOW).unwrap().placement, Placement::SideChain);
    let b2 = mine_on(&chain, &b1.hash(), &bob, vec![], 0);
    chain.import_block(b2.clone(), NOW).unwrap();
    let b3 = mine_on(&chain, &b2.hash(), &bob, vec![], 0);
    let error = chain.import_block(b3.clone(), NOW).unwrap_err();
    assert!(matches!(error, ImportError::InvalidAncestor(hash) if hash == b1.hash()), "{error:?}");
    assert_eq!(tip_hash(&chain), a_tip);
    assert_eq!(chain.account(&alice.public()).unwrap().balance, Amount::from_units(2 * reward()));
    let b4 = mine_on(&chain, &b3.hash(), &bob, vec![], 0);
    assert!(matches!(chain.import_block(b4, NOW), Err(ImportError::InvalidAncestor(_))));
}

/// A generated block tree: each block has a random parent among the earlier ones, a
/// random miner, and transfers valid on its own branch.
fn block_tree(shape: &[(usize, usize, bool)]) -> (Vec<Block>, TestChain) {
    let params = easy_params();
    let keys = [keypair("k0"), keypair("k1"), keypair("k2")];
    let mut builder = new_chain();
    let genesis = tip_hash(&builder);
    // Per block: its hash and the branch's (balance, nonce) per key.
    let mut nodes: Vec<(BlockHash, Vec<(u64, u64)>)> = vec![(genesis, vec![(0, 0); 3])];
    let mut blocks = Vec::new();
    for (i, &(parent_pick, miner, pay)) in shape.iter().enumerate() {
        let (parent, mut state) = nodes[parent_pick % nodes.len()].clone();
        let mut txs = Vec::new();
        if pay {
            let from = miner % 3;
            let to = (miner + 1) % 3;
            let (balance, nonce) = state[from];
            let amount = balance / 2;
            if balance > amount {
                txs.push(transfer(&params, &keys[from], &keys[to], amount, 1, nonce));
                state[from] = (balance - amount - 1, nonce + 1);
                state[to].0 += amount;
                state[miner].0 += 1;
            }
        }
        state[miner].0 += reward();
        let block = mine_on(&builder, &parent, &keys[miner], txs, i as u64);
        builder.import_block(block.clone(), NOW).unwrap();
        nodes.push((block.hash(), state));
        blocks.push(block);
    }
    (blocks, builder)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_import_order_ends_in_the_state_of_replaying_the_best_chain(
        shape in proptest::collection::vec((0usize..100, 0usize..3, any::<bool>()), 1..14),
        order_seed in any::<u64>(),
    ) {
        let (blocks, _) = block_tree(&shape);
        let mut shuffled = blocks.clone();
        // A deterministic shuffle from the seed.
        let mut seed = order_seed | 1;
        for i in (1..shuffled.len()).rev() {
            seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
            shuffled.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        let mut chain = new_chain();
        for block in shuffled {
            chain.import_block(block, NOW).unwrap();
        }
        prop_assert_eq!(chain.orphan_count(), 0);
        // The tip has the most work of all blocks.
        let max_work = blocks.iter().map(|b| chain.block(&b.hash()).unwrap().unwrap().0.work).max().unwrap();
        prop_assert_eq!(chain.tip().work, max_work);
        // Replaying just the best chain, in order, into a fresh store gives the same state.
        let mut best = chain.blocks_down_from(chain.tip().height(), usize::MAX).unwrap();
        best.reverse();
        let mut replay = new_chain();
        for (_, block) in best.into_iter().skip(1) {
            prop_assert_eq!(replay.import_block(block, NOW).unwrap().placement, Placement::BestChain);
        }
        prop_assert_eq!(tip_hash(&replay), tip_hash(&chain));
        prop_assert_eq!(accounts_of(&replay), accounts_of(&chain));
    }
}

#[test]
fn given_genesis_when_opening_then_network_checked() {
    let store = MemoryStore::new();
    let chain = Chain::open(store, easy_params(), None).unwrap();
    assert_eq!(chain.tip().height(), 0);
    assert_eq!(chain.tip().hash(), easy_params().genesis().hash());
    let store = MemoryStore::new();
    {
        let mut writer = store.writer().unwrap();
        writer.set_network(&NetworkId::from_bytes([1; 32])).unwrap();
        writer.commit().unwrap();
    }
    assert!(matches!(
        Chain::open(store, easy_params(), None),
        Err(StoreError::WrongNetwork { .. })
    ));
}

#[test]
fn given_transfer_to_wallet_when_mined_then_in_inbox() {
    let params = easy_params();
    let (alice, bob) = (keypair("alice"), keypair("bob"));
    let mut chain = Chain::open(MemoryStore::new(), params.clone(), Some(bob.public())).unwrap();
    let tip = tip_hash(&chain);
    let b1 = mine_on(&chain, &tip, &alice, vec![], 0);
    chain.import_block(b1.clone(), NOW).unwrap();
    let t = transfer(&params, &alice, &bob, 5, 0, 0);
    let b2 = mine_on(&chain, &b1.hash(), &alice, vec![t.clone()], 0);
    chain.import_block(b2, NOW).unwrap();
    let inbox = chain.store().reader().unwrap().values::<InboxRecord>(Table::Inbox).unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].transfer, t);
    assert_eq!(chain.confirmation_height(&t.txid()).unwrap(), Some(2));
}

#[test]
fn given_coinbase_claiming_less_than_allowed_then_valid_and_only_that_is_credited() {
    let mut chain = new_chain();
    let miner = keypair("m");
    let mut block = mine_on(&chain, &tip_hash(&chain), &miner, vec![], 0);
    block.transactions[0] = Transaction::Coinbase(Coinbase {
        amount: Amount::from_units(1),
        ..block.coinbase().unwrap().clone()
    });
    chain.import_block(refresh(block), NOW).unwrap();
    assert_eq!(chain.account(&miner.public()).unwrap().balance, Amount::from_units(1));
}

#[test]
fn given_compact_of_target_then_fixed_difficulty_network_keeps_bits() {
    let chain = new_chain();
    assert_eq!(chain.next_block().unwrap().bits, easy_params().initial_bits);
    let _: CompactTarget = chain.next_block().unwrap().bits;
}

#[test]
fn given_batch_with_invalid_block_in_the_middle_then_prefix_kept_and_index_reported() {
    let mut builder = new_chain();
    let miner = keypair("m");
    let mut blocks = Vec::new();
    for _ in 0..5 {
        let block = mine_on(&builder, &tip_hash(&builder), &miner, vec![], 0);
        builder.import_block(block.clone(), NOW).unwrap();
        blocks.push(block);
    }
    blocks[3] = with_bad_pow(blocks[3].clone());
    let mut chain = new_chain();
    let (imported, failure) = chain.import_blocks(blocks.clone(), NOW);
    assert_eq!(imported.len(), 3);
    let (index, error) = failure.unwrap();
    assert_eq!(index, 3);
    assert!(matches!(error, ImportError::Header(HeaderError::BadPow)));
    assert_eq!(tip_hash(&chain), blocks[2].hash());
    assert!(imported.iter().all(|i| i.placement == Placement::BestChain && i.tip_change.is_some()));
}

/// `block` with its first transfer's fee changed after signing (its merkle root
/// recomputed and its proof of work redone): only the signature is wrong.
fn with_bad_signature(mut block: Block) -> Block {
    let Transaction::Transfer(transfer) = &mut block.transactions[1] else {
        panic!("a block with a transfer")
    };
    transfer.fee = Amount::from_units(1);
    refresh(block)
}

/// Forty blocks of two transfers each: more than two of the chunks that are checked
/// ahead of the writes.
fn pipelined_batch() -> Vec<Block> {
    let blocks = crate::testkit::message_blocks(&easy_params(), 40, 2);
    assert!(blocks.len() > 2 * PIPELINE_CHUNK);
    blocks
}

#[test]
fn given_a_bad_signature_in_a_chunk_checked_ahead_then_the_blocks_before_it_are_kept() {
    let mut blocks = pipelined_batch();
    let bad = PIPELINE_CHUNK + 4;
    blocks[bad] = with_bad_signature(blocks[bad].clone());
    // A later block, checked ahead too, is never reached.
    blocks[2 * PIPELINE_CHUNK + 1] = with_bad_pow(blocks[2 * PIPELINE_CHUNK + 1].clone());
    let mut chain = new_chain();
    let (imported, failure) = chain.import_blocks(blocks.clone(), NOW);
    assert_eq!(imported.len(), bad);
    let (index, error) = failure.unwrap();
    assert_eq!(index, bad);
    assert!(
        matches!(
            error,
            ImportError::Block(BlockError::Transfer {
                index: 1,
                error: TransferError::BadSignature
            })
        ),
        "{error:?}"
    );
    assert_eq!(tip_hash(&chain), blocks[bad - 1].hash());
    assert_eq!(chain.block_at(bad as u64).unwrap().unwrap().1.hash(), blocks[bad - 1].hash());
    // Each block's own checks, not a neighbour's: the rest import once the bad one is
    // replaced by the real one.
    let good = pipelined_batch();
    let (imported, failure) = chain.import_blocks(good[bad..].to_vec(), NOW);
    assert!(failure.is_none(), "{failure:?}");
    assert_eq!(imported.len(), good.len() - bad);
    assert_eq!(tip_hash(&chain), good.last().unwrap().hash());
}

#[test]
fn given_a_block_with_bad_work_and_a_bad_signature_in_a_batch_then_the_header_verdict_wins() {
    let mut blocks = pipelined_batch();
    let bad = PIPELINE_CHUNK + 1;
    blocks[bad] = with_bad_pow(with_bad_signature(blocks[bad].clone()));
    let mut chain = new_chain();
    let (imported, failure) = chain.import_blocks(blocks, NOW);
    assert_eq!(imported.len(), bad);
    let (index, error) = failure.unwrap();
    assert_eq!(index, bad);
    // The cheap header check comes first, whatever the checks run ahead found.
    assert!(matches!(error, ImportError::Header(HeaderError::BadPow)), "{error:?}");
}

#[test]
fn given_batch_whose_reorg_hits_an_invalid_block_then_prefix_redone_and_branch_marked() {
    let params = easy_params();
    let (alice, bob) = (keypair("alice"), keypair("bob"));
    let mut chain = new_chain();
    let genesis = tip_hash(&chain);
    extend(&mut chain, &alice, 2);
    let a_tip = tip_hash(&chain);
    // A side branch whose first block overspends (not checked while it is a side chain).
    let bad_start =
        mine_on(&chain, &genesis, &bob, vec![transfer(&params, &bob, &alice, 1, 0, 0)], 0);
    chain.import_block(bad_start.clone(), NOW).unwrap();
    let b2 = mine_on(&chain, &bad_start.hash(), &bob, vec![], 0);
    chain.import_block(b2.clone(), NOW).unwrap();
    // Built elsewhere: main3 on the main tip, b3 and b4 on the side branch.
    let mut builder = new_chain();
    extend(&mut builder, &alice, 2);
    let main3 = mine_on(&builder, &a_tip, &alice, vec![], 0);
    builder.import_block(main3.clone(), NOW).unwrap();
    builder.import_block(bad_start, NOW).unwrap();
    builder.import_block(b2.clone(), NOW).unwrap();
    let b3 = mine_on(&builder, &b2.hash(), &bob, vec![], 0);
    builder.import_block(b3.clone(), NOW).unwrap();
    let b4 = mine_on(&builder, &b3.hash(), &bob, vec![], 0);
    builder.import_block(b4.clone(), NOW).unwrap_err();
    // In one batch: main3 extends; b3 ties (side chain); b4 would switch branches and
    // finds the overspend: the batch is redone up to b3 and the branch marked invalid.
    let (imported, failure) = chain.import_blocks(vec![main3.clone(), b3.clone(), b4.clone()], NOW);
    assert_eq!(
        imported.iter().map(|i| i.placement.clone()).collect::<Vec<_>>(),
        vec![Placement::BestChain, Placement::SideChain]
    );
    assert_eq!(tip_hash(&chain), main3.hash());
    let (index, error) = failure.unwrap();
    assert_eq!(index, 2);
    assert!(matches!(error, ImportError::InvalidAncestor(_)), "{error:?}");
    assert!(matches!(
        chain.block(&b3.hash()).unwrap().unwrap().0.status,
        BlockStatus::Invalid { .. }
    ));
    assert_eq!(chain.account(&alice.public()).unwrap().balance, Amount::from_units(3 * reward()));
}

#[test]
fn given_long_chain_when_locating_then_dense_near_tip_sparse_below_and_genesis_last() {
    let mut chain = new_chain();
    extend(&mut chain, &keypair("m"), 100);
    let locator = chain.locator().unwrap();
    let heights: Vec<u64> =
        locator.iter().map(|h| chain.block(h).unwrap().unwrap().0.height()).collect();
    assert_eq!(&heights[..10], &[100, 99, 98, 97, 96, 95, 94, 93, 92, 91]);
    assert_eq!(*heights.last().unwrap(), 0);
    assert!(heights.windows(2).all(|w| w[0] > w[1]));
    assert!(heights.len() < 30);
}

#[test]
fn given_peer_locator_on_a_fork_when_serving_headers_then_from_the_fork_point() {
    let mut chain = new_chain();
    extend(&mut chain, &keypair("m"), 20);
    let fork_point = chain.block_at(12).unwrap().unwrap().1.hash();
    let unknown = BlockHash::from_bytes([7; 32]);
    let headers = chain.headers_after(&[unknown, fork_point], 5).unwrap();
    assert_eq!(headers.iter().map(|h| h.height).collect::<Vec<_>>(), vec![13, 14, 15, 16, 17]);
    assert_eq!(headers[0].prev, fork_point);
    assert_eq!(chain.headers_after(&[tip_hash(&chain)], 5).unwrap(), vec![]);
}

#[test]
fn given_verified_cache_then_only_those_exact_transactions_skip_the_signature_check() {
    let params = easy_params();
    let (alice, bob) = (keypair("alice"), keypair("bob"));
    let mut chain = new_chain();
    extend(&mut chain, &alice, 1);
    let genuine = transfer(&params, &alice, &bob, 5, 0, 0);
    let mut forged = genuine.clone();
    forged.amount = Amount::from_units(6); // a different txid, a signature that fails
    chain.note_verified(genuine.txid());
    let block = mine_on(&chain, &tip_hash(&chain), &bob, vec![forged], 0);
    assert!(matches!(
        chain.import_block(block, NOW),
        Err(ImportError::Block(BlockError::Transfer { error: TransferError::BadSignature, .. }))
    ));
    let block = mine_on(&chain, &tip_hash(&chain), &bob, vec![genuine], 0);
    assert_eq!(chain.import_block(block, NOW).unwrap().placement, Placement::BestChain);
}

#[test]
fn given_recent_set_over_capacity_then_oldest_forgotten_first() {
    let mut set = RecentSet::new(2);
    for item in [1u8, 2, 1, 3] {
        set.insert(item);
    }
    assert!(!set.contains(&1) && set.contains(&2) && set.contains(&3));
}

#[test]
fn given_a_block_with_a_swapped_body_then_refused_without_poisoning_the_real_one() {
    let params = easy_params();
    let (alice, bob) = (keypair("alice"), keypair("bob"));
    let mut chain = new_chain();
    extend(&mut chain, &alice, 1);
    let real =
        mine_on(&chain, &tip_hash(&chain), &bob, vec![transfer(&params, &alice, &bob, 5, 0, 0)], 0);
    // Same header (same hash, valid PoW), other transactions; and an oversized body.
    let mut swapped = real.clone();
    swapped.transactions.truncate(1);
    let mut stuffed = real.clone();
    let message = EncryptedMessage { salt: [0; 16], ciphertext: vec![0; MAX_CIPHERTEXT_BYTES] };
    stuffed.transactions.extend((0..900).map(|nonce| {
        Transaction::Transfer(Transfer::sign(
            &bob,
            params.network_id(),
            alice.public(),
            Amount::ZERO,
            Amount::ZERO,
            nonce,
            message.clone(),
        ))
    }));
    for fake in [swapped, stuffed] {
        assert_eq!(fake.hash(), real.hash());
        assert!(matches!(
            chain.import_block(fake, NOW),
            Err(ImportError::Block(BlockError::BadMerkleRoot))
        ));
    }
    assert_eq!(chain.import_block(real, NOW).unwrap().placement, Placement::BestChain);
}

#[test]
fn given_an_orphan_with_a_swapped_body_then_not_held_and_the_real_orphan_connects() {
    let params = easy_params();
    let (alice, bob) = (keypair("alice"), keypair("bob"));
    let mut builder = new_chain();
    extend(&mut builder, &alice, 1);
    let parent = mine_on(&builder, &tip_hash(&builder), &alice, vec![], 0);
    builder.import_block(parent.clone(), NOW).unwrap();
    let child =
        mine_on(&builder, &parent.hash(), &bob, vec![transfer(&params, &alice, &bob, 5, 0, 0)], 0);
    let mut swapped = child.clone();
    swapped.transactions.truncate(1);

    let mut chain = new_chain();
    extend(&mut chain, &alice, 1);
    assert!(matches!(
        chain.import_block(swapped, NOW),
        Err(ImportError::Block(BlockError::BadMerkleRoot))
    ));
    assert_eq!(chain.orphan_count(), 0);
    assert!(matches!(
        chain.import_block(child.clone(), NOW).unwrap().placement,
        Placement::Orphan { .. }
    ));
    chain.import_block(parent, NOW).unwrap();
    assert_eq!(tip_hash(&chain), child.hash());
}

#[test]
fn given_side_branch_then_fork_depth_counts_from_the_tip_and_stops_at_the_limit() {
    let (alice, bob) = (keypair("alice"), keypair("bob"));
    let mut chain = new_chain();
    extend(&mut chain, &alice, 3);
    let fork_point = chain.block_at(1).unwrap().unwrap().1.hash();
    let side = mine_on(&chain, &fork_point, &bob, vec![], 0);
    chain.import_block(side.clone(), NOW).unwrap();
    extend(&mut chain, &alice, 2);
    assert_eq!(chain.fork_depth(&tip_hash(&chain), 10).unwrap(), ForkDepth::Within(0));
    assert_eq!(chain.fork_depth(&side.hash(), 10).unwrap(), ForkDepth::Within(4), "tip 5, fork 1");
    assert_eq!(chain.fork_depth(&side.hash(), 0).unwrap(), ForkDepth::Deeper, "past the limit");
    assert_eq!(chain.fork_depth(&fork_point, 3).unwrap(), ForkDepth::Deeper, "best chain, deep");
    assert_eq!(chain.fork_depth(&fork_point, 4).unwrap(), ForkDepth::Within(4));
    let unknown = BlockHash::from_bytes([7; 32]);
    assert_eq!(chain.fork_depth(&unknown, 10).unwrap(), ForkDepth::Unknown);

    // An orphan is known but not stored: a child of it is an orphan too, not a deep fork.
    let builder_parent = mine_on(&chain, &tip_hash(&chain), &bob, vec![], 0);
    let mut builder = new_chain();
    for height in 1..=chain.tip().height() {
        builder.import_block(chain.block_at(height).unwrap().unwrap().1, NOW).unwrap();
    }
    builder.import_block(builder_parent.clone(), NOW).unwrap();
    let orphan = mine_on(&builder, &builder_parent.hash(), &bob, vec![], 0);
    chain.import_block(orphan.clone(), NOW).unwrap();
    assert!(chain.knows(&orphan.hash()).unwrap());
    assert_eq!(chain.fork_depth(&orphan.hash(), 10).unwrap(), ForkDepth::Unknown);
}

#[test]
fn given_headers_of_a_branch_then_their_work_continues_the_fork_point() {
    let (alice, bob) = (keypair("alice"), keypair("bob"));
    let mut chain = new_chain();
    let genesis = tip_hash(&chain);
    extend(&mut chain, &alice, 2);
    let b1 = mine_on(&chain, &genesis, &bob, vec![], 0);
    chain.import_block(b1.clone(), NOW).unwrap();
    let b2 = mine_on(&chain, &b1.hash(), &bob, vec![], 0);
    let tip_work = chain.tip().work;
    let equal = chain.work_of_headers(&[b1.header, b2.header]).unwrap();
    assert_eq!(equal, Some(tip_work), "two blocks of the same target on genesis each side");
    let shorter = chain.work_of_headers(std::slice::from_ref(&b1.header)).unwrap().unwrap();
    assert!(shorter < tip_work);
    let mut stray = b2.header;
    stray.prev = BlockHash::from_bytes([7; 32]);
    assert_eq!(chain.work_of_headers(&[stray]).unwrap(), None, "unknown base");
}

/// A builder chain on `params` of `n` blocks, and a chain holding only its first `held`.
fn header_chains(params: &NetworkParams, n: u64, held: u64) -> (Vec<BlockHeader>, TestChain) {
    let alice = keypair("alice");
    let mut builder = Chain::open(MemoryStore::new(), params.clone(), None).unwrap();
    let mut follower = Chain::open(MemoryStore::new(), params.clone(), None).unwrap();
    let mut headers = Vec::new();
    for height in 1..=n {
        // Uneven spacing, so that each retarget gives a different target.
        let block = mine_on(&builder, &tip_hash(&builder), &alice, vec![], height * height * 7);
        builder.import_block(block.clone(), NOW).unwrap();
        if height <= held {
            follower.import_block(block, NOW).unwrap();
        } else {
            headers.push(block.header);
        }
    }
    (headers, follower)
}

#[test]
fn given_headers_across_retargets_then_the_chain_check_agrees_with_block_import() {
    let params = NetworkParams { retarget_interval: 4, ..easy_params() };
    let (headers, follower) = header_chains(&params, 14, 2);
    let bits: HashSet<CompactTarget> = headers.iter().map(|h| h.bits).collect();
    assert!(bits.len() >= 3, "the retargets moved the target: {bits:?}");

    assert_eq!(follower.check_header_chain(&headers, 0, NOW).unwrap(), Ok(()));
    // Page by page, each page checked with the earlier ones as its context.
    for from in [1, 5, 11] {
        assert_eq!(follower.check_header_chain(&headers, from, NOW).unwrap(), Ok(()));
    }
}

#[test]
fn given_a_header_breaking_a_rule_then_the_chain_check_names_it_and_the_rule() {
    let params = NetworkParams { retarget_interval: 4, ..easy_params() };
    let (headers, follower) = header_chains(&params, 10, 2);
    let check = |tampered: &[BlockHeader]| follower.check_header_chain(tampered, 0, NOW).unwrap();
    let solve_again = |header: BlockHeader| {
        crate::miner::solve(&header, 1, &AtomicBool::new(false), &AtomicU64::new(0)).unwrap()
    };
    // Relinks everything after `at` to the tampered header, so only it breaks a rule.
    let tamper = |at: usize, change: &dyn Fn(&mut BlockHeader)| {
        let mut tampered = headers.clone();
        change(&mut tampered[at]);
        tampered[at] = solve_again(tampered[at]);
        for index in at + 1..tampered.len() {
            tampered[index].prev = tampered[index - 1].hash();
            tampered[index] = solve_again(tampered[index]);
        }
        tampered
    };
    let harder = Target::from_expected_hashes_log2(9).to_compact();

    // headers[i] is at height 3 + i; heights 4 and 8 retarget.
    let wrong_target = check(&tamper(3, &|h| h.bits = harder));
    assert!(
        matches!(wrong_target, Err((3, HeaderChainError::Header(HeaderError::WrongTarget { .. })))),
        "{wrong_target:?}"
    );
    assert!(params.is_retarget_height(headers[1].height));
    assert_ne!(headers[1].bits, headers[0].bits, "the retarget moved the target");
    let no_retarget = check(&tamper(1, &|h| h.bits = headers[0].bits));
    assert!(
        matches!(no_retarget, Err((1, HeaderChainError::Header(HeaderError::WrongTarget { .. })))),
        "{no_retarget:?}"
    );
    let old = check(&tamper(4, &|h| h.time_ms = 1));
    assert!(
        matches!(old, Err((4, HeaderChainError::Header(HeaderError::TimeTooOld { .. })))),
        "{old:?}"
    );
    let height = check(&tamper(2, &|h| h.height += 1));
    assert!(
        matches!(height, Err((2, HeaderChainError::Header(HeaderError::BadHeight { .. })))),
        "{height:?}"
    );
    let mut unsolved = headers.clone();
    while unsolved[6].bits.to_target().unwrap().is_met_by(&unsolved[6].hash()) {
        unsolved[6].nonce += 1;
    }
    assert!(matches!(check(&unsolved), Err((6, HeaderChainError::Header(HeaderError::BadPow)))));
    assert!(matches!(check(&headers[1..]), Err((0, HeaderChainError::UnknownParent(_)))));

    // Across a page boundary the median takes in the earlier page: headers[5]'s median
    // (of heights 0..=7) is headers[1]'s time; the stored blocks alone would allow it.
    let boundary = tamper(5, &|h| h.time_ms = headers[1].time_ms);
    let verdict = follower.check_header_chain(&boundary, 5, NOW).unwrap();
    assert!(
        matches!(verdict, Err((5, HeaderChainError::Header(HeaderError::TimeTooOld { .. })))),
        "{verdict:?}"
    );
}

#[test]
fn given_a_window_whose_first_block_goes_back_past_the_last_then_the_timewarp_rule_refuses_it() {
    // Windows of 4: heights 4 and 8 retarget. The last block of the window 4..7 is dated
    // far ahead (as a timewarping miner does to make its window look slow); the first
    // block of the next window then tries to go back to just above the median time.
    let params = NetworkParams { retarget_interval: 4, ..easy_params() };
    let alice = keypair("alice");
    let mut chain = Chain::open(MemoryStore::new(), params.clone(), None).unwrap();
    for _ in 1..=6 {
        let block = mine_on(&chain, &tip_hash(&chain), &alice, vec![], 1000);
        chain.import_block(block, NOW).unwrap();
    }
    let late = mine_on(&chain, &tip_hash(&chain), &alice, vec![], 8_000_000);
    chain.import_block(late.clone(), NOW).unwrap();
    let next = chain.next_block().unwrap();
    assert!(params.is_retarget_height(next.height));
    let floor = late.header.time_ms - params.max_future_block_time_ms;
    assert_eq!(next.window_floor_ms, floor);
    assert!(next.median_time_ms + 1 < floor, "the median alone would allow going back");

    let mut warped = mine_on(&chain, &tip_hash(&chain), &alice, vec![], 0);
    warped.header.time_ms = next.median_time_ms + 1;
    let warped = remine(warped);
    let verdict = chain.import_block(warped.clone(), NOW);
    assert!(
        matches!(verdict, Err(ImportError::Header(HeaderError::TimeBeforeWindow { .. }))),
        "{verdict:?}"
    );
    assert!(HeaderError::TimeBeforeWindow { time_ms: 0, floor_ms: 1 }.is_peer_fault());
    // The header-chain check (sync) applies the same rule.
    let headers = [warped.header];
    let verdict = chain.check_header_chain(&headers, 0, NOW).unwrap();
    assert!(
        matches!(verdict, Err((0, HeaderChainError::Header(HeaderError::TimeBeforeWindow { .. })))),
        "{verdict:?}"
    );

    // At the floor exactly it is valid, and the miner never goes below it.
    let mut honest = mine_on(&chain, &tip_hash(&chain), &alice, vec![], 0);
    assert!(honest.header.time_ms >= floor);
    honest.header.time_ms = floor;
    chain.import_block(remine(honest), NOW).unwrap();
    assert_eq!(chain.tip().height(), 8);
}
