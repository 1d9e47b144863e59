//! Catching up: a status handshake on every connection, then headers first from the
//! peer with the most work, then blocks in pages from every peer that has them, imported
//! in order, one store transaction per batch.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use raclette_protocol::wire::{
    ChainStatus, MAX_BLOCKS_PER_REQUEST, MAX_HEADERS_PER_RESPONSE, MAX_SYNC_REQUESTS_IN_FLIGHT,
    SyncRequest, SyncResponse,
};
use raclette_protocol::{Block, BlockHash, BlockHeader, WireMessage, Work};
use rand::seq::SliceRandom;
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::{Internal, Node, Notice, now_ms};
use crate::chain::validate::{BlockError, check_commitment};
use crate::chain::{HeaderChainError, ImportError};
use crate::network::{InboundRequest, Penalty, Protocol, RequestError};
use crate::store::Store;

/// Block requests in flight per peer.
const REQUESTS_PER_PEER: usize = 2;
// Block pages, a headers request and a status must fit what peers serve at once.
const _: () = assert!(REQUESTS_PER_PEER + 2 <= MAX_SYNC_REQUESTS_IN_FLIGHT);
/// A block request older than this is given to another peer.
const BLOCK_REQUEST_PATIENCE: Duration = Duration::from_secs(30);
/// A download that imports nothing for this long is abandoned (and retried if a peer
/// is still ahead).
const DOWNLOAD_STALL: Duration = Duration::from_secs(90);
/// The most headers gathered before downloading their blocks; the rest come after.
const MAX_COLLECTED_HEADERS: usize = 50 * MAX_HEADERS_PER_RESPONSE;
/// Blocks are asked for only this far ahead of the next one to import, which bounds the
/// blocks held (in flight or waiting for their turn) to this many.
const DOWNLOAD_WINDOW: usize = 16 * MAX_BLOCKS_PER_REQUEST;
/// After an attempt to catch up from a peer led nowhere (no headers, headers that do not
/// link or add up, blocks it could not deliver, a stall), that peer is not tried again
/// for this long, doubling with each further failure up to [`RETRY_AT_MOST_EVERY`]; so a
/// peer that claims more work than it has cannot keep the node catching up (and not
/// mining) for ever.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// The longest wait before trying a failing peer again.
const RETRY_AT_MOST_EVERY: Duration = Duration::from_secs(300);
/// A peer whose block requests fail (time out, are refused) this many times in one
/// download is not asked again in it; one that answers without the blocks, at once.
const MAX_PAGE_FAILURES: u32 = 3;

/// What a sync request was, to interpret its answer. Headers and blocks requests carry
/// the attempt they belong to: an answer that comes after its attempt ended is ignored.
#[derive(Debug, Clone)]
pub(super) enum SentRequest {
    /// The handshake.
    Status,
    /// Headers after our locator.
    Headers { attempt: u64 },
    /// These blocks.
    Blocks { attempt: u64, hashes: Vec<BlockHash> },
}

/// Where catching up stands.
#[derive(Debug)]
pub(super) struct SyncState {
    /// The last status each connected peer announced.
    statuses: HashMap<PeerId, ChainStatus>,
    phase: Phase,
    /// Peers whose last attempt led nowhere, and when they may be tried again.
    retry: Backoff,
    /// Attempts to catch up started so far (numbers them).
    attempts: u64,
    /// When a random peer was last asked for its status (the safety net under tip
    /// announcements).
    last_poll: Option<Instant>,
}

impl Default for SyncState {
    fn default() -> Self {
        Self {
            statuses: HashMap::new(),
            phase: Phase::default(),
            retry: Backoff::new(RETRY_AFTER, RETRY_AT_MOST_EVERY),
            attempts: 0,
            last_poll: None,
        }
    }
}

#[derive(Debug, Default)]
enum Phase {
    /// Nothing to catch up.
    #[default]
    Idle,
    /// Asking `peer` for headers; `headers` continue our chain.
    Headers { peer: PeerId, headers: Vec<BlockHeader>, attempt: u64 },
    /// Downloading the blocks of a header chain.
    Blocks(Box<Download>),
}

#[derive(Debug)]
struct Download {
    /// The attempt this download belongs to.
    attempt: u64,
    /// Every block to get, in chain order.
    order: Vec<BlockHash>,
    /// Each block's index in `order`.
    position: HashMap<BlockHash, usize>,
    /// Index in `order` of the next block to import.
    next: usize,
    /// Not yet asked for.
    queue: VecDeque<BlockHash>,
    /// Asked for, by whom, when.
    in_flight: HashMap<BlockHash, (PeerId, Instant)>,
    /// Arrived, waiting for their turn, with who sent them.
    received: HashMap<BlockHash, (Block, PeerId)>,
    /// Block requests waiting for an answer, per peer.
    requests: HashMap<PeerId, usize>,
    /// Failed block requests, per peer.
    failures: HashMap<PeerId, u32>,
    /// Peers that cannot deliver (answered without blocks they were asked for, sent a
    /// body that is not its header's, or failed too often): not asked again.
    unhelpful: HashSet<PeerId>,
    /// Height of the last header.
    target_height: u64,
    /// The peer whose headers these are: it has every block.
    source: PeerId,
    /// When the last block was imported (or the download began).
    progress_at: Instant,
}

impl SyncState {
    /// Whether the node knows it is behind and is catching up.
    pub(super) fn is_active(&self) -> bool {
        !matches!(self.phase, Phase::Idle)
    }

    /// The highest height any peer announced.
    pub(super) fn best_known_height(&self) -> u64 {
        let announced = self.statuses.values().map(|s| s.height).max().unwrap_or(0);
        match &self.phase {
            Phase::Blocks(download) => announced.max(download.target_height),
            _ => announced,
        }
    }

    /// The peer to catch up from: the one announcing the most work above `tip_work`,
    /// among those not waiting out a failed attempt.
    fn candidate(&self, tip_work: Work, now: Instant) -> Option<PeerId> {
        self.statuses
            .iter()
            .filter(|(peer, status)| status.work > tip_work && self.retry.due(peer, now))
            .max_by_key(|(_, status)| status.work)
            .map(|(peer, _)| *peer)
    }

    /// Numbers a new attempt to catch up.
    fn next_attempt(&mut self) -> u64 {
        self.attempts += 1;
        self.attempts
    }

    /// Whether an answer to `request` belongs to the attempt under way.
    fn is_current(&self, request: &SentRequest) -> bool {
        let current = match &self.phase {
            Phase::Idle => None,
            Phase::Headers { attempt, .. } => Some(*attempt),
            Phase::Blocks(download) => Some(download.attempt),
        };
        match request {
            SentRequest::Status => true,
            SentRequest::Headers { attempt } | SentRequest::Blocks { attempt, .. } => {
                current == Some(*attempt)
            }
        }
    }

    /// An attempt to catch up from `peer` led nowhere: wait before the next.
    fn failed(&mut self, peer: PeerId) {
        self.retry.tried(peer, Instant::now());
        self.phase = Phase::Idle;
    }

    /// Forgets a peer that left; its requests go back in the queue.
    pub(super) fn peer_gone(&mut self, peer: &PeerId) {
        self.statuses.remove(peer);
        match &mut self.phase {
            Phase::Headers { peer: from, .. } if from == peer => self.phase = Phase::Idle,
            // (Its requests still end, each with a failure: that brings its count down.)
            Phase::Blocks(download) => download.requeue_from(peer),
            _ => {}
        }
    }
}

impl Download {
    fn requeue_from(&mut self, peer: &PeerId) {
        let lost: Vec<BlockHash> =
            self.in_flight.iter().filter(|(_, (p, _))| p == peer).map(|(h, _)| *h).collect();
        self.requeue(peer, &lost);
    }

    fn requests_of(&self, peer: &PeerId) -> usize {
        self.requests.get(peer).copied().unwrap_or(0)
    }

    /// A block request to `peer` was answered or failed.
    fn request_ended(&mut self, peer: &PeerId) {
        if let Some(count) = self.requests.get_mut(peer) {
            *count = count.saturating_sub(1);
        }
    }

    /// Whether `hash` is still to be imported and has not arrived yet.
    fn wants(&self, hash: &BlockHash) -> bool {
        self.position.get(hash).is_some_and(|at| *at >= self.next)
            && !self.received.contains_key(hash)
    }

    /// Whether `hash` is in flight from `peer`.
    fn asked_of(&self, hash: &BlockHash, peer: &PeerId) -> bool {
        self.in_flight.get(hash).is_some_and(|(owner, _)| owner == peer)
    }

    /// Puts `hashes` that were in flight from `peer` back at the front of the queue, in
    /// order; returns whether there were any.
    fn requeue(&mut self, peer: &PeerId, hashes: &[BlockHash]) -> bool {
        let mut any = false;
        for hash in hashes.iter().rev() {
            if self.asked_of(hash, peer) {
                self.in_flight.remove(hash);
                self.queue.push_front(*hash);
                any = true;
            }
        }
        any
    }

    /// The next page to ask for: up to a request's worth from the front of the queue,
    /// within the window ahead of the next block to import.
    fn next_page(&mut self) -> Vec<BlockHash> {
        let mut page = Vec::new();
        while page.len() < MAX_BLOCKS_PER_REQUEST
            && let Some(hash) = self.queue.front()
            && self.position.get(hash).is_some_and(|at| *at < self.next + DOWNLOAD_WINDOW)
        {
            let hash = *hash;
            self.queue.pop_front();
            // (A late answer may have brought it meanwhile.)
            if self.wants(&hash) && !self.in_flight.contains_key(&hash) {
                page.push(hash);
            }
        }
        page
    }
}

impl<S: Store> Node<S> {
    fn sync_request(&self, peer: PeerId, sent: SentRequest, message: SyncRequest) {
        let client = self.client.clone();
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let result = client.request(peer, Protocol::Sync, message.encode()).await;
            let _ = internal.send(Internal::SyncAnswer { peer, request: sent, result }).await;
        });
    }

    /// The handshake: tell a newly connected peer our chain, learn theirs.
    pub(super) async fn request_status(&mut self, peer: PeerId) {
        self.sync_request(peer, SentRequest::Status, SyncRequest::Status(self.chain.status()));
    }

    /// Tells every connected peer our new best tip with a `status` request (§13.1). A
    /// peer whose gossip missed the block hears of more work and syncs; its answer tells
    /// us its own tip in turn.
    pub(super) fn announce_tip(&mut self) {
        let status = self.chain.status();
        let peers: Vec<PeerId> = self.connected.keys().copied().collect();
        for peer in peers {
            self.sync_request(peer, SentRequest::Status, SyncRequest::Status(status.clone()));
        }
    }

    /// The safety net under announcements: now and then, one random connected peer is
    /// asked for its status, so a node whose announcements were all lost still catches
    /// up.
    fn poll_a_peer(&mut self, now: Instant) {
        if self.sync.last_poll.is_some_and(|at| now.duration_since(at) < self.config.status_poll) {
            return;
        }
        self.sync.last_poll = Some(now);
        let peers: Vec<PeerId> = self.connected.keys().copied().collect();
        if let Some(peer) = peers.choose(&mut rand::thread_rng()) {
            self.sync_request(*peer, SentRequest::Status, SyncRequest::Status(self.chain.status()));
        }
    }

    /// A peer's status, from its answer or its own handshake. Returns false if the peer
    /// is on another network (and has been dropped).
    async fn take_status(&mut self, peer: PeerId, status: ChainStatus) -> bool {
        if status.network != self.chain.network() {
            warn!(%peer, theirs = %status.network, "peer is on another network: disconnecting");
            self.client.penalize(peer, Penalty::MidTolerance, "wrong network").await;
            self.client.disconnect(peer).await;
            return false;
        }
        if !self.connected.contains_key(&peer) {
            // Its answer came after it left: a status of nobody to sync from.
            return true;
        }
        let ahead = status.work > self.chain.tip().work;
        self.sync.statuses.insert(peer, status);
        if ahead && !self.sync.is_active() && self.sync.retry.due(&peer, Instant::now()) {
            self.start_headers(peer);
        }
        true
    }

    /// Catch up from `peer` (it sent a block whose ancestors are missing).
    pub(super) async fn sync_from(&mut self, peer: PeerId) {
        if !self.sync.is_active() && self.sync.retry.due(&peer, Instant::now()) {
            self.start_headers(peer);
        }
    }

    fn start_headers(&mut self, peer: PeerId) {
        let locator = match self.chain.locator() {
            Ok(locator) => locator,
            Err(error) => self.fatal(error),
        };
        debug!(%peer, "asking for headers");
        let attempt = self.sync.next_attempt();
        self.sync.phase = Phase::Headers { peer, headers: Vec::new(), attempt };
        self.sync_request(
            peer,
            SentRequest::Headers { attempt },
            SyncRequest::Headers { locator, limit: MAX_HEADERS_PER_RESPONSE as u32 },
        );
    }

    pub(super) async fn on_sync_answer(
        &mut self,
        peer: PeerId,
        request: SentRequest,
        result: Result<Vec<u8>, RequestError>,
    ) {
        if !self.sync.is_current(&request) {
            debug!(%peer, ?request, "an answer for an attempt that has ended: ignored");
            return;
        }
        if let Ok(bytes) = &result {
            self.metrics.sync_bytes.inc_by(bytes.len() as u64);
            let kind = match request {
                SentRequest::Status => "status",
                SentRequest::Headers { .. } => "headers",
                SentRequest::Blocks { .. } => "blocks",
            };
            self.metrics.sync_pages.get_or_create(&crate::metrics::Kind { kind }).inc();
        }
        let response = match result {
            Ok(bytes) => match SyncResponse::decode(&bytes) {
                Ok(response) => response,
                Err(error) => {
                    self.client
                        .penalize(
                            peer,
                            Penalty::LowTolerance,
                            format!("malformed sync answer: {error}"),
                        )
                        .await;
                    self.sync_failed(peer, request);
                    return;
                }
            },
            Err(error) => {
                debug!(%peer, %error, ?request, "sync request failed");
                self.sync_failed(peer, request);
                return;
            }
        };
        match (request, response) {
            (SentRequest::Status, SyncResponse::Status(status)) => {
                self.take_status(peer, status).await;
            }
            (SentRequest::Headers { .. }, SyncResponse::Headers(headers)) => {
                self.on_headers(peer, headers).await
            }
            (SentRequest::Blocks { hashes, .. }, SyncResponse::Blocks(blocks)) => {
                self.on_blocks(peer, hashes, blocks).await
            }
            (request, SyncResponse::Refused { reason }) => {
                debug!(%peer, %reason, ?request, "sync request refused");
                self.sync_failed(peer, request);
            }
            (request, _) => {
                self.client
                    .penalize(
                        peer,
                        Penalty::LowTolerance,
                        "answered a sync request with the wrong message",
                    )
                    .await;
                self.sync_failed(peer, request);
            }
        }
    }

    fn sync_failed(&mut self, peer: PeerId, request: SentRequest) {
        match (request, &mut self.sync.phase) {
            (SentRequest::Headers { .. }, Phase::Headers { peer: from, .. }) if *from == peer => {
                self.sync.failed(peer)
            }
            (SentRequest::Blocks { hashes, .. }, Phase::Blocks(download)) => {
                download.request_ended(&peer);
                download.requeue(&peer, &hashes);
                // A slow link times out now and then: only a peer that keeps failing is
                // left out (and the page goes to whoever is free first). A peer that left
                // is not at fault.
                if self.connected.contains_key(&peer) {
                    let failures = download.failures.entry(peer).or_default();
                    *failures += 1;
                    if *failures >= MAX_PAGE_FAILURES {
                        debug!(%peer, "block requests keep failing: not asking this peer again");
                        download.unhelpful.insert(peer);
                    }
                }
                self.request_blocks();
            }
            _ => {}
        }
    }

    async fn on_headers(&mut self, peer: PeerId, headers: Vec<BlockHeader>) {
        let Phase::Headers { peer: from, headers: collected, attempt } = &mut self.sync.phase
        else {
            return;
        };
        let attempt = *attempt;
        if *from != peer {
            return;
        }
        let full_page = headers.len() >= MAX_HEADERS_PER_RESPONSE;
        let checked = collected.len();
        let mut previous = collected.last().map(BlockHeader::hash);
        for header in headers {
            // (The first page's first header must build on a stored block: the check
            // below says so if it does not.)
            if previous.is_some_and(|hash| header.prev != hash) {
                // An honest peer whose chain moved between two pages answers this way
                // too: try again later rather than blame it.
                debug!(%peer, height = header.height, "headers do not link; starting over");
                self.sync.failed(peer);
                return;
            }
            previous = Some(header.hash());
            collected.push(header);
        }
        // The header rules, each new header in the context of those before it: a branch
        // whose targets or times break them is not downloaded, however much work it
        // claims.
        let verdict = match self.chain.check_header_chain(collected, checked, now_ms()) {
            Ok(verdict) => verdict,
            Err(error) => self.fatal(error),
        };
        if let Err((index, error)) = verdict {
            let height = collected.get(index).map_or(0, |header| header.height);
            self.sync.failed(peer);
            match error {
                HeaderChainError::Header(error) if error.is_peer_fault() => {
                    warn!(%peer, height, %error, "invalid headers");
                    self.client
                        .penalize(peer, Penalty::LowTolerance, format!("invalid headers: {error}"))
                        .await;
                }
                error => debug!(%peer, height, %error, "headers not usable now; starting over"),
            }
            return;
        }
        if full_page && collected.len() < MAX_COLLECTED_HEADERS {
            // Continue after what we have, and give our own chain as a fallback in case
            // the peer's best chain no longer holds our last header.
            let mut locator: Vec<BlockHash> =
                collected.iter().rev().take(16).map(BlockHeader::hash).collect();
            locator.extend(self.chain.locator().unwrap_or_else(|error| self.fatal(error)));
            locator.truncate(raclette_protocol::wire::MAX_LOCATOR_HASHES);
            self.sync_request(
                peer,
                SentRequest::Headers { attempt },
                SyncRequest::Headers { locator, limit: MAX_HEADERS_PER_RESPONSE as u32 },
            );
            return;
        }
        let capped = collected.len() >= MAX_COLLECTED_HEADERS;
        let collected = std::mem::take(collected);
        let mut order = Vec::with_capacity(collected.len());
        for header in &collected {
            let hash = header.hash();
            if !self.chain.knows(&hash).unwrap_or_else(|error| self.fatal(error)) {
                order.push(hash);
            }
        }
        let target_height = collected.last().map_or(0, |h| h.height);
        if order.is_empty() {
            // No headers, or only blocks we hold (and did not switch to): nothing this
            // peer can give us now, whatever its status said.
            if collected.is_empty() {
                warn!(%peer, "it announced more work than ours but sent no headers");
            } else {
                debug!(%peer, "its headers hold no block we lack");
            }
            self.sync.failed(peer);
            return;
        }
        // Headers first means blocks only for a branch that beats ours. A peer whose
        // headers add up to less work than its status announced said more than it had;
        // one whose branch merely no longer beats ours (our tip moved meanwhile) is
        // honest, and just not useful now. (A capped collection is only a prefix of its
        // branch: its blocks come anyway.)
        let work = self.chain.work_of_headers(&collected).unwrap_or_else(|error| self.fatal(error));
        let announced = self.sync.statuses.get(&peer).map(|status| status.work);
        if !capped && work.is_none_or(|work| announced.is_some_and(|claim| work < claim)) {
            warn!(%peer, "its headers do not lead to the work it announced: not fetching blocks");
            self.sync.failed(peer);
            self.sync.statuses.remove(&peer);
            self.client
                .penalize(peer, Penalty::HighTolerance, "announced more work than its headers have")
                .await;
            return;
        }
        if !capped && work.is_some_and(|work| work <= self.chain.tip().work) {
            debug!(%peer, "its branch no longer has more work than ours");
            self.sync.failed(peer);
            return;
        }
        info!(%peer, blocks = order.len(), target_height, "catching up");
        self.sync.phase = Phase::Blocks(Box::new(Download {
            attempt,
            queue: order.iter().copied().collect(),
            position: order.iter().enumerate().map(|(at, hash)| (*hash, at)).collect(),
            order,
            next: 0,
            in_flight: HashMap::new(),
            received: HashMap::new(),
            requests: HashMap::new(),
            failures: HashMap::new(),
            unhelpful: HashSet::new(),
            target_height,
            source: peer,
            progress_at: Instant::now(),
        }));
        self.request_blocks();
    }

    /// Hands out block pages to the peer the headers came from and every other peer that
    /// announced more work than ours, leaving out those that lacked blocks before. With
    /// nobody left to ask, the download ends.
    fn request_blocks(&mut self) {
        let tip_work = self.chain.tip().work;
        let (statuses, connected) = (&self.sync.statuses, &self.connected);
        let Phase::Blocks(download) = &mut self.sync.phase else { return };
        let mut helpers: Vec<PeerId> = statuses
            .iter()
            .filter(|(_, status)| status.work > tip_work)
            .map(|(peer, _)| *peer)
            .collect();
        // The source has every block (whatever its status said, or if it gave none) as
        // long as it is connected.
        if connected.contains_key(&download.source) && !helpers.contains(&download.source) {
            helpers.push(download.source);
        }
        helpers.retain(|peer| !download.unhelpful.contains(peer));
        let mut pages = Vec::new();
        for peer in &helpers {
            while download.requests_of(peer) < REQUESTS_PER_PEER {
                let page = download.next_page();
                if page.is_empty() {
                    break;
                }
                for hash in &page {
                    download.in_flight.insert(*hash, (*peer, Instant::now()));
                }
                *download.requests.entry(*peer).or_default() += 1;
                pages.push((*peer, page));
            }
        }
        let attempt = download.attempt;
        if helpers.is_empty() && download.in_flight.is_empty() {
            let source = download.source;
            warn!(
                missing = download.queue.len(),
                "no peer can deliver the blocks: catching up stopped"
            );
            self.sync.failed(source);
            return;
        }
        for (peer, page) in pages {
            self.sync_request(
                peer,
                SentRequest::Blocks { attempt, hashes: page.clone() },
                SyncRequest::Blocks { hashes: page },
            );
        }
    }

    async fn on_blocks(&mut self, peer: PeerId, asked: Vec<BlockHash>, blocks: Vec<Block>) {
        let Phase::Blocks(download) = &mut self.sync.phase else { return };
        download.request_ended(&peer);
        let (mut unasked, mut forged) = (false, None);
        for block in blocks {
            let hash = block.hash();
            if !asked.contains(&hash) {
                unasked = true;
                continue;
            }
            if !download.wants(&hash) {
                continue; // arrived from someone else meanwhile
            }
            // The hash covers the header only: a body that is not the one the header
            // commits to is this sender's fault, not the branch's. (A body that matches
            // but breaks a rule, too large say, is the branch's: import finds it.)
            if let Err(error @ BlockError::BadMerkleRoot) = check_commitment(&block) {
                forged = Some(error);
                continue;
            }
            // Whoever else it was asked of meanwhile (a slow page given to another peer)
            // is no longer waited for.
            download.in_flight.remove(&hash);
            download.received.insert(hash, (block, peer));
        }
        // What it was asked for and did not deliver: someone else, first thing.
        let lacked = download.requeue(&peer, &asked);
        if lacked {
            debug!(%peer, "peer lacks blocks of the branch: not asking it again");
            download.unhelpful.insert(peer);
        } else {
            download.failures.remove(&peer);
        }
        if unasked {
            self.client.penalize(peer, Penalty::MidTolerance, "sent blocks nobody asked for").await;
        }
        if let Some(error) = forged {
            if let Phase::Blocks(download) = &mut self.sync.phase {
                download.unhelpful.insert(peer);
            }
            warn!(%peer, %error, "a block body that is not its header's");
            self.client
                .penalize(peer, Penalty::LowTolerance, format!("forged block body: {error}"))
                .await;
        }
        self.import_downloaded().await;
        self.request_blocks();
    }

    /// Imports the downloaded blocks that are next in line, in batches.
    async fn import_downloaded(&mut self) {
        loop {
            let Phase::Blocks(download) = &mut self.sync.phase else { return };
            let mut batch = Vec::new();
            let mut senders = Vec::new();
            while let Some(hash) = download.order.get(download.next) {
                let Some((block, sender)) = download.received.remove(hash) else { break };
                batch.push(block);
                senders.push(sender);
                download.next += 1;
                download.progress_at = Instant::now();
                if batch.len() >= 4 * MAX_BLOCKS_PER_REQUEST {
                    break;
                }
            }
            if batch.is_empty() {
                return;
            }
            let done = download.next == download.order.len();
            let target = download.target_height;
            let source = download.source;
            let (imported, failure) = self.chain.import_blocks(batch, now_ms());
            for _ in &imported {
                self.metrics.block("sync", "accepted", "imported");
            }
            let changes: Vec<_> = imported.into_iter().filter_map(|i| i.tip_change).collect();
            if let Some(change) = crate::chain::merge_changes(changes) {
                self.on_tip_change(change).await;
            }
            if let Some((index, error)) = failure {
                if let ImportError::Store(error) = error {
                    self.fatal(error);
                }
                let sender = senders[index];
                warn!(peer = %sender, %error, "invalid block while catching up");
                let outcome = if error.is_peer_fault() { "rejected" } else { "ignored" };
                self.metrics.block("sync", outcome, crate::metrics::reason(&error));
                if error.is_peer_fault() {
                    self.client
                        .penalize(sender, Penalty::LowTolerance, format!("invalid block: {error}"))
                        .await;
                }
                // The branch its headers promised does not hold up.
                self.sync.failed(source);
                return;
            }
            // Progress: the source's branch holds up so far.
            self.sync.retry.forget(&source);
            let height = self.chain.tip().height();
            self.notify(Notice::Syncing { height, target });
            if done {
                info!(height, "caught up");
                self.sync.phase = Phase::Idle;
                self.notify(Notice::Synced { height });
                self.after_sync();
                return;
            }
        }
    }

    /// After catching up: more to get from someone? Else resume what waited.
    fn after_sync(&mut self) {
        match self.sync.candidate(self.chain.tip().work, Instant::now()) {
            Some(peer) => self.start_headers(peer),
            None => self.resume_mining(),
        }
    }

    /// Once a second: give slow requests to others; start catching up if a peer is ahead.
    pub(super) async fn sync_housekeeping(&mut self) {
        if !self.sync.is_active() {
            self.poll_a_peer(Instant::now());
        }
        if let Phase::Blocks(download) = &mut self.sync.phase {
            let now = Instant::now();
            let slow: Vec<BlockHash> = download
                .in_flight
                .iter()
                .filter(|(_, (_, at))| now.duration_since(*at) > BLOCK_REQUEST_PATIENCE)
                .map(|(hash, _)| *hash)
                .collect();
            for hash in slow {
                download.in_flight.remove(&hash);
                download.queue.push_front(hash);
            }
            if download.in_flight.is_empty() && !download.queue.is_empty() {
                self.request_blocks();
            }
            if let Phase::Blocks(download) = &self.sync.phase {
                let drained = download.in_flight.is_empty()
                    && download.queue.is_empty()
                    && download.received.is_empty();
                if now.duration_since(download.progress_at) > DOWNLOAD_STALL {
                    warn!("catching up stalled; starting over");
                    self.sync.failed(download.source);
                } else if drained {
                    self.sync.phase = Phase::Idle;
                }
            }
        }
        if !self.sync.is_active() {
            // Whatever ended the last attempt: try again if a peer is ahead, and let a
            // `mine` that waited for the sync go on otherwise.
            self.after_sync_if_behind();
            if !self.sync.is_active() {
                self.resume_mining();
            }
        }
    }

    fn after_sync_if_behind(&mut self) {
        if let Some(peer) = self.sync.candidate(self.chain.tip().work, Instant::now()) {
            self.start_headers(peer);
        }
    }

    /// Serves a peer's sync request.
    pub(super) async fn on_sync_request(&mut self, request: InboundRequest) {
        let mut fault = None;
        let response = match SyncRequest::decode(&request.bytes) {
            // Each answer may hold up to 16 blocks in memory until it has gone out: a peer
            // that asks for more at once than an honest one ever does is refused, not
            // served, and it costs the peer a little.
            _ if request.in_flight > MAX_SYNC_REQUESTS_IN_FLIGHT => {
                let reason = format!(
                    "too many sync requests at once (at most {MAX_SYNC_REQUESTS_IN_FLIGHT})"
                );
                fault = Some((Penalty::HighTolerance, reason.clone()));
                SyncResponse::Refused { reason }
            }
            Err(error) => {
                fault = Some((Penalty::LowTolerance, format!("malformed sync request: {error}")));
                SyncResponse::Refused { reason: format!("malformed request: {error}") }
            }
            Ok(SyncRequest::Status(status)) => {
                let ours = self.chain.status();
                self.client.respond(request.token, SyncResponse::Status(ours).encode()).await;
                self.take_status(request.peer, status).await;
                return;
            }
            Ok(SyncRequest::Headers { locator, limit }) => {
                let limit = (limit as usize).min(MAX_HEADERS_PER_RESPONSE);
                SyncResponse::Headers(
                    self.chain
                        .headers_after(&locator, limit)
                        .unwrap_or_else(|error| self.fatal(error)),
                )
            }
            Ok(SyncRequest::Blocks { hashes }) if hashes.len() > MAX_BLOCKS_PER_REQUEST => {
                fault = Some((Penalty::MidTolerance, "asked for too many blocks".to_string()));
                SyncResponse::Refused {
                    reason: format!("at most {MAX_BLOCKS_PER_REQUEST} blocks per request"),
                }
            }
            Ok(SyncRequest::Blocks { hashes })
                if hashes.iter().collect::<HashSet<_>>().len() < hashes.len() =>
            {
                // Each copy would be sent again: an answer many times the block's size.
                fault = Some((Penalty::MidTolerance, "asked for a block twice".to_string()));
                SyncResponse::Refused { reason: "the same block asked for twice".to_string() }
            }
            Ok(SyncRequest::Blocks { hashes }) => SyncResponse::Blocks(
                self.chain.blocks_by_hash(&hashes).unwrap_or_else(|error| self.fatal(error)),
            ),
        };
        self.client.respond(request.token, response.encode()).await;
        if let Some((penalty, reason)) = fault {
            self.client.penalize(request.peer, penalty, reason).await;
        }
    }
}
