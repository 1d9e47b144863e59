//! A small chain on an easy network, built the same way on every run so that a crash
//! found on one machine replays on another: a main branch of three blocks with transfers
//! between alice, bob and carol, and a side branch of two blocks by dave that forks after
//! block 1 (so a block on its tip makes the chain reorganise).

use std::sync::OnceLock;

use raclette_node::chain::Chain;
use raclette_node::store::MemoryStore;
use raclette_node::testkit::{easy_params, keypair, mine_on, transfer};
use raclette_protocol::params::GENESIS_TIME_MS;
use raclette_protocol::{
    Block, BlockHash, Keypair, NetworkId, NetworkParams, Transaction, Transfer,
};

/// The clock every target reads: an hour after genesis. The fixture's blocks are a few
/// milliseconds after genesis, so a block time can fall on either side of the two-hour
/// limit into the future.
pub const NOW_MS: u64 = GENESIS_TIME_MS + 60 * 60 * 1000;

/// Units in one coin.
const COIN: u64 = 100_000_000;

/// The fixture's blocks and the keys behind them.
pub struct Fixture {
    /// The network's parameters: [`params`].
    pub params: NetworkParams,
    /// Blocks in import order: the main branch (heights 1, 2, 3), then the side branch
    /// (heights 2, 3 on block 1).
    pub blocks: Vec<Block>,
    /// alice, bob, carol and dave: the keys of every account the fixture touches.
    pub keys: Vec<Keypair>,
}

impl Fixture {
    /// The network id of the fixture's chain.
    pub fn network(&self) -> NetworkId {
        self.params.network_id()
    }

    /// Blocks an input block may build on: genesis, then the fixture's blocks in import
    /// order (index 3 is the main tip, index 5 the side branch's).
    pub fn parents(&self) -> Vec<BlockHash> {
        std::iter::once(self.params.genesis().hash())
            .chain(self.blocks.iter().map(Block::hash))
            .collect()
    }

    /// A fresh chain in memory holding every fixture block, the main branch best.
    pub fn chain(&self) -> Chain<MemoryStore> {
        let mut chain = Chain::open(MemoryStore::new(), self.params.clone(), None)
            .expect("a memory store does not fail");
        for block in &self.blocks {
            // Their signatures were checked when the fixture was built: a node that had
            // them in its mempool would not check them again either.
            for tx in &block.transactions {
                if let Transaction::Transfer(transfer) = tx {
                    chain.note_verified(transfer.txid());
                }
            }
            chain.import_block(block.clone(), NOW_MS).expect("the fixture's blocks are valid");
        }
        chain
    }
}

/// The fixture, built on first use.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build)
}

/// One chain holding the fixture, for targets that only read it.
pub fn shared_chain() -> &'static Chain<MemoryStore> {
    static CHAIN: OnceLock<Chain<MemoryStore>> = OnceLock::new();
    CHAIN.get_or_init(|| fixture().chain())
}

/// The testkit's easy network, retargeted every two blocks so that the retarget rules are
/// on the ladder too. Blocks a millisecond apart make each window four times harder than
/// the last: a block at height 4 takes about 256 hashes.
pub fn params() -> NetworkParams {
    NetworkParams { name: "fuzz".into(), retarget_interval: 2, ..easy_params() }
}

fn build() -> Fixture {
    let params = params();
    let [alice, bob, carol, dave] = ["alice", "bob", "carol", "dave"].map(keypair);
    let mut chain = Chain::open(MemoryStore::new(), params.clone(), None)
        .expect("a memory store does not fail");
    let mut blocks = Vec::new();
    let mut add = |chain: &mut Chain<MemoryStore>,
                   parent: usize,
                   miner: &Keypair,
                   transfers: Vec<Transfer>,
                   offset: u64| {
        let parent = match parent {
            0 => params.genesis().hash(),
            index => Block::hash(&blocks[index - 1]),
        };
        let block = mine_on(chain, &parent, miner, transfers, offset);
        chain.import_block(block.clone(), NOW_MS).expect("the fixture's blocks are valid");
        blocks.push(block);
    };
    add(&mut chain, 0, &alice, vec![], 0);
    add(&mut chain, 1, &bob, vec![transfer(&params, &alice, &bob, 10 * COIN, 1_000, 0)], 0);
    let to_carol = vec![
        transfer(&params, &alice, &carol, 5 * COIN, 2_000, 1),
        transfer(&params, &bob, &carol, COIN, 1_000, 0),
    ];
    add(&mut chain, 2, &carol, to_carol, 0);
    add(&mut chain, 1, &dave, vec![transfer(&params, &alice, &dave, 2 * COIN, 500, 0)], 7);
    add(&mut chain, 4, &dave, vec![], 0);
    Fixture { params, blocks, keys: vec![alice, bob, carol, dave] }
}
