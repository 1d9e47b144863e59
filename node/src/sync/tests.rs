//! The state machine against lying peers, with no network and no sleeps: peers are
//! numbers, honest ones answer from a real chain, the clock is a value the test moves.

use std::collections::{HashMap, HashSet, VecDeque};

use raclette_protocol::header::HEADER_VERSION;
use raclette_protocol::{CompactTarget, Target};

use super::*;
use crate::store::MemoryStore;
use crate::testkit::{easy_params, keypair, linear_blocks};

type Peer = u32;

/// A node's sync with the peers around it: honest peers answer from their chains at
/// once, liars never answer; the node imports what sync hands it.
struct Net<C> {
    chain: C,
    sync: Sync<Peer>,
    honest: HashMap<Peer, Chain<MemoryStore>>,
    /// Peers among `honest` that send every block with another body.
    forgers: HashSet<Peer>,
    start: Instant,
    now: Instant,
    answers: VecDeque<Input<Peer>>,
    penalties: Vec<(Peer, Penalty, String)>,
    block_requests: usize,
    imports: usize,
}

impl<C: ChainView> Net<C> {
    fn new(chain: C) -> Self {
        let now = Instant::now();
        Self {
            chain,
            sync: Sync::with_seed(Duration::from_secs(10), 7),
            honest: HashMap::new(),
            forgers: HashSet::new(),
            start: now,
            now,
            answers: VecDeque::new(),
            penalties: Vec::new(),
            block_requests: 0,
            imports: 0,
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Feeds `input`, then every answer it leads to, until quiet.
    fn input(
        &mut self,
        input: Input<Peer>,
        import: &mut impl FnMut(&mut C, Vec<Block>) -> Option<ImportFailure>,
    ) {
        self.answers.push_back(input);
        while let Some(input) = self.answers.pop_front() {
            let now_ms = crate::node::now_ms() + self.elapsed().as_millis() as u64;
            let actions = self.sync.handle(input, &self.chain, self.now, now_ms).expect("store");
            for action in actions {
                match action {
                    Action::Send { peer, id, request } => {
                        if matches!(request, SyncRequest::Blocks { .. }) {
                            self.block_requests += 1;
                        }
                        if let Some(chain) = self.honest.get(&peer) {
                            let mut response = serve(chain, request);
                            if let (true, SyncResponse::Blocks(blocks)) =
                                (self.forgers.contains(&peer), &mut response)
                            {
                                for block in blocks {
                                    block.transactions.clear();
                                }
                            }
                            let bytes = response.encode();
                            self.answers.push_back(Input::Answer { peer, id, result: Ok(bytes) });
                        }
                    }
                    Action::Import(blocks) => {
                        self.imports += 1;
                        let failure = import(&mut self.chain, blocks);
                        self.answers.push_back(Input::Imported(failure));
                    }
                    Action::Penalize { peer, penalty, reason } => {
                        self.penalties.push((peer, penalty, reason))
                    }
                    Action::Disconnect(_) | Action::Progress { .. } | Action::CaughtUp { .. } => {}
                }
            }
        }
    }
}

/// What an honest peer answers.
fn serve(chain: &Chain<MemoryStore>, request: SyncRequest) -> SyncResponse {
    match request {
        SyncRequest::Status(_) => SyncResponse::Status(chain.status()),
        SyncRequest::Headers { locator, limit } => {
            SyncResponse::Headers(chain.headers_after(&locator, limit as usize).expect("store"))
        }
        SyncRequest::Blocks { hashes } => {
            SyncResponse::Blocks(chain.blocks_by_hash(&hashes).expect("store"))
        }
    }
}

fn import_into(chain: &mut Chain<MemoryStore>, blocks: Vec<Block>) -> Option<ImportFailure> {
    let (_, failure) = chain.import_blocks(blocks, u64::MAX / 2);
    failure.map(|(index, error)| ImportFailure {
        index,
        penalty: crate::verdict::verdict(crate::verdict::Refusal::Import(&error)).penalty,
        forged_body: matches!(
            error,
            crate::chain::ImportError::Block(crate::chain::validate::BlockError::BadMerkleRoot)
        ),
        reason: error.to_string(),
    })
}

fn chain_with(blocks: &[Block]) -> Chain<MemoryStore> {
    let mut chain = Chain::open(MemoryStore::new(), easy_params(), None).expect("opens");
    assert!(import_into(&mut chain, blocks.to_vec()).is_none());
    chain
}

#[test]
fn given_16_identities_claiming_huge_work_and_one_honest_peer_then_synced_and_mining_resumes_within_a_minute()
 {
    let params = easy_params();
    let blocks = linear_blocks(&params, &keypair("miner"), 300, |_| Vec::new());
    let honest_tip = blocks.last().expect("blocks").hash();
    let mut net = Net::new(chain_with(&[]));
    let mut import = import_into;
    let network = params.network_id();
    let huge = Work::from_be_bytes([0x7f; 32]);
    for liar in 1..=16 {
        net.input(Input::Connected(liar), &mut import);
        let status = ChainStatus {
            network,
            height: 1_000_000,
            tip: BlockHash::from_bytes([liar as u8; 32]),
            work: huge,
        };
        net.input(Input::Status { peer: liar, status }, &mut import);
    }
    let honest = 100;
    net.honest.insert(honest, chain_with(&blocks));
    net.input(Input::Connected(honest), &mut import);
    while net.chain.tip().hash() != honest_tip || net.sync.is_downloading() {
        assert!(net.elapsed() <= Duration::from_secs(60), "not synced within a minute");
        net.now += Duration::from_secs(1);
        net.input(Input::Tick, &mut import);
    }
    assert!(!net.sync.is_downloading(), "the miner may go on");
    eprintln!("synced in {:?} of simulated time", net.elapsed());
}

/// A chain's worth of headers at one target, on `base`, as a liar serves them.
fn header_branch(base: &BlockHeader, count: usize, bits: CompactTarget) -> Vec<BlockHeader> {
    let mut headers = Vec::with_capacity(count);
    let mut parent = *base;
    for _ in 0..count {
        let header = BlockHeader {
            version: HEADER_VERSION,
            bits,
            height: parent.height + 1,
            prev: parent.hash(),
            merkle_root: [0; 32],
            time_ms: parent.time_ms + 1,
            nonce: 0,
        };
        headers.push(header);
        parent = header;
    }
    headers
}

/// A node whose chain has `tip_work`, on a genesis of its own; the header rules are
/// taken as met (the machine's policy is under test, not the rules).
struct FakeChain {
    genesis: BlockHeader,
    tip_work: Work,
}

impl ChainView for FakeChain {
    fn status(&self) -> ChainStatus {
        ChainStatus {
            network: NetworkId::from_bytes([1; 32]),
            height: 1000,
            tip: BlockHash::from_bytes([9; 32]),
            work: self.tip_work,
        }
    }
    fn locator(&self) -> Result<Vec<BlockHash>, StoreError> {
        Ok(vec![self.genesis.hash()])
    }
    fn knows(&self, hash: &BlockHash) -> Result<bool, StoreError> {
        Ok(*hash == self.genesis.hash())
    }
    fn check_header_chain(
        &self,
        headers: &[BlockHeader],
        from: usize,
        _now_ms: u64,
    ) -> Result<Result<(), (usize, HeaderChainError)>, StoreError> {
        let first = headers[0];
        if first.prev != self.genesis.hash() && from < self.header_context_len() {
            return Ok(Err((0, HeaderChainError::UnknownParent(first.prev))));
        }
        Ok(Ok(()))
    }
    fn work_of_headers(&self, headers: &[BlockHeader]) -> Result<Option<Work>, StoreError> {
        let mut work = Work::ZERO;
        for header in headers {
            work = work + header.bits.to_target().expect("valid").work();
        }
        Ok(Some(work))
    }
    fn header_context_len(&self) -> usize {
        12
    }
}

/// Serves `branch` (each header's hash with the index after it in `position`) to
/// headers requests, as a liar would, and nothing else.
fn serve_branch(
    branch: &[BlockHeader],
    position: &HashMap<BlockHash, usize>,
    genesis: &BlockHeader,
    request: &SyncRequest,
) -> Option<SyncResponse> {
    let SyncRequest::Headers { locator, limit } = request else { return None };
    let start = locator
        .iter()
        .find_map(
            |hash| if *hash == genesis.hash() { Some(0) } else { position.get(hash).copied() },
        )
        .unwrap_or(0);
    let end = (start + *limit as usize).min(branch.len());
    Some(SyncResponse::Headers(branch[start..end].to_vec()))
}

/// Runs sync against one peer serving `branch`; returns the net once quiet.
fn run_against_branch(
    branch: &[BlockHeader],
    genesis: BlockHeader,
    tip_work: Work,
    claimed: Work,
) -> Net<FakeChain> {
    let mut net = Net::new(FakeChain { genesis, tip_work });
    let liar = 1;
    net.sync.peers.insert(liar, None); // connected; its handshake follows
    let status = ChainStatus {
        network: NetworkId::from_bytes([1; 32]),
        height: branch.len() as u64,
        tip: branch.last().expect("headers").hash(),
        work: claimed,
    };
    let position: HashMap<BlockHash, usize> =
        branch.iter().enumerate().map(|(at, header)| (header.hash(), at + 1)).collect();
    let mut pending: VecDeque<(u64, SyncRequest)> = VecDeque::new();
    let input = Input::Status { peer: liar, status };
    let mut actions = net.sync.handle(input, &net.chain, net.now, 0).expect("store");
    let mut most_kept = 0;
    loop {
        for action in actions.drain(..) {
            match action {
                Action::Send { id, request, .. } => {
                    if matches!(request, SyncRequest::Blocks { .. }) {
                        net.block_requests += 1;
                    }
                    pending.push_back((id, request));
                }
                Action::Penalize { peer, penalty, reason } => {
                    net.penalties.push((peer, penalty, reason))
                }
                _ => {}
            }
        }
        if let Phase::Headers(sync) = &net.sync.phase {
            let kept = sync.collected.len() + sync.beyond.as_ref().map_or(0, |b| b.window.len());
            most_kept = most_kept.max(kept);
        }
        let Some((id, request)) = pending.pop_front() else { break };
        let Some(response) = serve_branch(branch, &position, &net.chain.genesis, &request) else {
            continue;
        };
        let input = Input::Answer { peer: liar, id, result: Ok(response.encode()) };
        actions = net.sync.handle(input, &net.chain, net.now, 0).expect("store");
    }
    assert!(
        most_kept <= MAX_COLLECTED_HEADERS + MAX_HEADERS_PER_RESPONSE,
        "headers held: {most_kept}"
    );
    net
}

fn genesis_header() -> BlockHeader {
    BlockHeader {
        version: HEADER_VERSION,
        bits: CompactTarget(0x2000_ffff),
        height: 0,
        prev: BlockHash::from_bytes([0; 32]),
        merkle_root: [0; 32],
        time_ms: 0,
        nonce: 0,
    }
}

fn work_of(count: usize, bits: CompactTarget) -> Work {
    let one = bits.to_target().expect("valid").work();
    (0..count).fold(Work::ZERO, |sum, _| sum + one)
}

#[test]
fn given_a_200000_header_branch_with_less_work_than_ours_then_no_block_of_it_is_fetched() {
    let cheap = Target::from_expected_hashes_log2(1).to_compact();
    let genesis = genesis_header();
    let branch = header_branch(&genesis, 200_000, cheap);
    // Our chain has the work of 250,000 such headers; the liar claims far more.
    let net = run_against_branch(
        &branch,
        genesis,
        work_of(250_000, cheap),
        Work::from_be_bytes([0x7f; 32]),
    );
    assert_eq!(net.block_requests, 0, "no block of a low-work branch is asked for");
    assert!(
        net.penalties.iter().any(|(peer, _, reason)| *peer == 1 && reason.contains("more work")),
        "the liar pays for its claim: {:?}",
        net.penalties
    );
}

#[test]
fn given_a_branch_longer_than_memory_with_more_work_then_its_first_part_is_fetched_once_proven() {
    let cheap = Target::from_expected_hashes_log2(1).to_compact();
    let genesis = genesis_header();
    let branch = header_branch(&genesis, 200_000, cheap);
    // Ours has the work of 150,000: the branch beats it, but only past what is kept.
    let net =
        run_against_branch(&branch, genesis, work_of(150_000, cheap), work_of(200_000, cheap));
    assert!(net.block_requests > 0, "the proven branch is downloaded");
    let Phase::Blocks(download) = &net.sync.phase else { panic!("downloading") };
    assert_eq!(download.order.len(), MAX_COLLECTED_HEADERS, "the part kept, the rest after");
}

#[test]
fn given_an_honest_peer_ahead_then_a_tip_announcement_alone_brings_the_node_to_its_tip() {
    let params = easy_params();
    let blocks = linear_blocks(&params, &keypair("miner"), 5, |_| Vec::new());
    let mut net = Net::new(chain_with(&blocks[..3]));
    let mut import = import_into;
    let peer = 2;
    net.honest.insert(peer, chain_with(&blocks[..3]));
    net.input(Input::Connected(peer), &mut import);
    assert!(!net.sync.is_active(), "level: nothing to do");
    // The peer gets two blocks (its gossip reached it, not us) and announces its tip.
    net.honest.insert(peer, chain_with(&blocks));
    let status = net.honest[&peer].status();
    net.input(Input::Status { peer, status }, &mut import);
    assert_eq!(net.chain.tip().hash(), blocks[4].hash());
    assert!(!net.sync.is_active());
}

#[test]
fn given_a_peer_that_never_answers_headers_then_another_is_asked_after_the_patience() {
    let params = easy_params();
    let blocks = linear_blocks(&params, &keypair("miner"), 20, |_| Vec::new());
    let mut net = Net::new(chain_with(&[]));
    let mut import = import_into;
    let network = params.network_id();
    let silent: HashSet<Peer> = (1..=5).collect();
    for peer in &silent {
        net.input(Input::Connected(*peer), &mut import);
        let status = ChainStatus {
            network,
            height: 20,
            tip: blocks[19].hash(),
            work: Work::from_be_bytes([1; 32]),
        };
        net.input(Input::Status { peer: *peer, status }, &mut import);
    }
    assert!(net.sync.is_active(), "probing the silent ones");
    assert!(!net.sync.is_downloading(), "a claim alone does not stop the miner");
    net.honest.insert(9, chain_with(&blocks));
    net.input(Input::Connected(9), &mut import);
    while net.chain.tip().height() < 20 {
        assert!(net.elapsed() < Duration::from_secs(40), "stuck on silent peers");
        net.now += Duration::from_secs(1);
        net.input(Input::Tick, &mut import);
    }
}

#[test]
fn given_a_helper_sending_forged_bodies_then_it_pays_and_the_blocks_come_from_another() {
    let params = easy_params();
    let blocks = linear_blocks(&params, &keypair("miner"), 100, |_| Vec::new());
    let mut net = Net::new(chain_with(&[]));
    let mut import = import_into;
    let (honest, forger) = (100, 101);
    net.honest.insert(honest, chain_with(&blocks));
    net.honest.insert(forger, chain_with(&blocks));
    net.forgers.insert(forger);
    net.input(Input::Connected(forger), &mut import);
    net.input(Input::Connected(honest), &mut import);
    while net.chain.tip().height() < 100 {
        assert!(net.elapsed() < Duration::from_secs(60), "stuck behind the forger");
        net.now += Duration::from_secs(1);
        net.input(Input::Tick, &mut import);
    }
    assert!(
        net.penalties.iter().any(|(peer, penalty, reason)| *peer == forger
            && *penalty == Penalty::LowTolerance
            && reason.contains("forged block body")),
        "{:?}",
        net.penalties
    );
    assert!(net.penalties.iter().all(|(peer, _, _)| *peer == forger), "{:?}", net.penalties);
}
