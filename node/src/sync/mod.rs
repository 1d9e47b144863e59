//! Catching up, as a state machine with no I/O (the rendezvous server's lesson, STYLE.md).
//!
//! [`Sync::handle`] takes one [`Input`] (a peer came or went, a status, the answer to a
//! request, a batch imported, a tip announced, a tick) with a read-only [`ChainView`] and
//! the time, and returns [`Action`]s as plain values: send a request, penalise a peer,
//! import a batch, report progress. The node routes inputs and carries out actions; this
//! module has no tasks, no sockets and no clock of its own, so each case, lying peers
//! included, is a unit test that runs in milliseconds.
//!
//! The rules (PROTOCOL.md §13):
//! - **Peers are hints.** A status only says where to look. Candidates are probed a few
//!   at a time, in random order (those whose headers proved work before first); each
//!   request has [`REQUEST_PATIENCE`]; a candidate that does not deliver waits
//!   ([`RETRY_AFTER`], doubling). So identities that claim much and send nothing cost a
//!   node seconds, not its sync, and mining pauses only while blocks download.
//! - **Headers first, and blocks only for more work.** A branch's headers are checked in
//!   context as they come. Its blocks are fetched only once the headers add up to more
//!   work than our tip. A branch longer than [`MAX_COLLECTED_HEADERS`] is checked on in
//!   bounded memory (a window of context and a running total of work), then the blocks
//!   of its first part are fetched, and the rest on the next attempt. A long branch of
//!   cheap headers is never downloaded, and blocks stored on a side branch always come
//!   with proof of more work than the best chain.

mod download;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fmt::{Debug, Display};
use std::hash::Hash;
use std::time::{Duration, Instant};

use raclette_protocol::wire::{
    ChainStatus, MAX_BLOCKS_PER_REQUEST, MAX_HEADERS_PER_RESPONSE, MAX_LOCATOR_HASHES,
    MAX_SYNC_REQUESTS_IN_FLIGHT, SyncRequest, SyncResponse,
};
use raclette_protocol::{Block, BlockHash, BlockHeader, NetworkId, WireMessage, Work};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::chain::{Chain, HeaderChainError};
use crate::network::Penalty;
use crate::store::{Store, StoreError};
use crate::verdict::{Refusal, verdict};
use download::Download;

/// Block requests in flight per peer.
const REQUESTS_PER_PEER: usize = 2;
// Block pages, a headers request and a status must fit what peers serve at once.
const _: () = assert!(REQUESTS_PER_PEER + 2 <= MAX_SYNC_REQUESTS_IN_FLIGHT);
/// A request unanswered for this long has failed (the network gives up at the same
/// time; whichever says so first counts).
pub const REQUEST_PATIENCE: Duration = Duration::from_secs(10);
/// A headers request unanswered for this long has failed: a page of headers is small,
/// and a candidate that sits on it must not hold up catching up for long.
pub const HEADERS_PATIENCE: Duration = Duration::from_secs(5);
/// A download that imports nothing for this long is abandoned (and retried if a peer
/// is still ahead).
const DOWNLOAD_STALL: Duration = Duration::from_secs(90);
/// The most headers kept before downloading their blocks; past it a branch is checked
/// on in bounded memory, and the rest come after.
pub const MAX_COLLECTED_HEADERS: usize = 50 * MAX_HEADERS_PER_RESPONSE;
/// After an attempt to catch up from a peer led nowhere (no headers, headers that do not
/// link or add up, blocks it could not deliver, a stall), that peer is not tried again
/// for this long, doubling with each further failure up to [`RETRY_AT_MOST_EVERY`].
pub const RETRY_AFTER: Duration = Duration::from_secs(10);
/// The longest wait before trying a failing peer again.
const RETRY_AT_MOST_EVERY: Duration = Duration::from_secs(300);
/// A source whose block requests fail (time out, are refused) this many times in one
/// download is not asked again in it; another helper, after its first failure; one that
/// answers without the blocks, at once.
const MAX_PAGE_FAILURES: u32 = 3;
/// Candidates asked for headers at once when an attempt starts: the first to send a
/// usable page is followed. With [`HEADERS_PATIENCE`], sixteen liars that never answer
/// delay an honest peer by 20 s at most.
pub const PROBES: usize = 4;
/// How much goes into one import, one store transaction.
#[derive(Clone, Copy, Debug)]
pub struct ImportLimit {
    /// Most blocks.
    pub blocks: usize,
    /// Most transactions, whatever the block count; a block larger than this goes alone.
    pub transactions: usize,
}

impl ImportLimit {
    /// Whether a block of `transactions` transactions joins a batch of `blocks` blocks
    /// that hold `held` transactions.
    pub fn admits(&self, blocks: usize, held: usize, transactions: usize) -> bool {
        blocks == 0 || (blocks < self.blocks && held + transactions <= self.transactions)
    }
}

/// What sync hands the node at once: whatever has arrived in line when the last import
/// ends, up to the whole download window. Commits rewrite the pages of every table the
/// blocks touch, so a batch of 256 costs about what one of 16 does; a kill loses at most
/// the batch being imported, which is then fetched again. The node answers nothing while
/// it imports, and 8,192 transactions are about a tenth of a second of signature checks
/// on two cores.
pub const IMPORT_LIMIT: ImportLimit =
    ImportLimit { blocks: 16 * MAX_BLOCKS_PER_REQUEST, transactions: 8192 };

/// What sync reads of the chain. Implemented by [`Chain`]; tests use a fake.
pub trait ChainView {
    /// Our status, for handshakes and announcements.
    fn status(&self) -> ChainStatus;
    /// Cumulative work of our best chain.
    fn tip_work(&self) -> Work {
        self.status().work
    }
    /// Hashes from our tip back to genesis, densely then sparsely.
    fn locator(&self) -> Result<Vec<BlockHash>, StoreError>;
    /// Whether a block is stored.
    fn knows(&self, hash: &BlockHash) -> Result<bool, StoreError>;
    /// Checks `headers[from..]` against the header rules in the context of what comes
    /// before (see [`Chain::check_header_chain`]).
    fn check_header_chain(
        &self,
        headers: &[BlockHeader],
        from: usize,
        now_ms: u64,
    ) -> Result<Result<(), (usize, HeaderChainError)>, StoreError>;
    /// The cumulative work at the end of `headers`, a branch on a stored block; `None`
    /// if its base is not stored or a target is invalid.
    fn work_of_headers(&self, headers: &[BlockHeader]) -> Result<Option<Work>, StoreError>;
    /// Headers of context that let a window of a branch be checked without its start.
    fn header_context_len(&self) -> usize;
}

impl<S: Store> ChainView for Chain<S> {
    fn status(&self) -> ChainStatus {
        Chain::status(self)
    }
    fn tip_work(&self) -> Work {
        self.tip().work
    }
    fn locator(&self) -> Result<Vec<BlockHash>, StoreError> {
        Chain::locator(self)
    }
    fn knows(&self, hash: &BlockHash) -> Result<bool, StoreError> {
        Chain::knows(self, hash)
    }
    fn check_header_chain(
        &self,
        headers: &[BlockHeader],
        from: usize,
        now_ms: u64,
    ) -> Result<Result<(), (usize, HeaderChainError)>, StoreError> {
        Chain::check_header_chain(self, headers, from, now_ms)
    }
    fn work_of_headers(&self, headers: &[BlockHeader]) -> Result<Option<Work>, StoreError> {
        Chain::work_of_headers(self, headers)
    }
    fn header_context_len(&self) -> usize {
        Chain::header_context_len(self)
    }
}

/// What happens to sync. `P` names a peer (the network's PeerId in the node).
#[derive(Debug)]
pub enum Input<P> {
    /// A peer connected: the handshake.
    Connected(P),
    /// A peer's last connection closed.
    Disconnected(P),
    /// A peer told us its status (its handshake or a tip announcement).
    Status {
        /// Who.
        peer: P,
        /// Its chain, as it says.
        status: ChainStatus,
    },
    /// The answer to a request from [`Action::Send`], or why none came.
    Answer {
        /// Who answered.
        peer: P,
        /// The request's id.
        id: u64,
        /// The answer's bytes, or the failure.
        result: Result<Vec<u8>, String>,
    },
    /// Our best tip moved.
    TipChanged,
    /// A peer sent a block whose ancestors we lack.
    Orphan(P),
    /// How the batch of [`Action::Import`] went.
    Imported(Option<ImportFailure>),
    /// Once a second.
    Tick,
}

/// The block of an imported batch that failed, and why.
#[derive(Debug, Clone)]
pub struct ImportFailure {
    /// Its index in the batch; the blocks before it were imported.
    pub index: usize,
    /// What its sender has to pay, if it is to blame ([`crate::verdict`]).
    pub penalty: Option<Penalty>,
    /// Whether its body is not the one its header commits to: the sender swapped it, and
    /// the real block is fetched from someone else (the branch is not to blame).
    pub forged_body: bool,
    /// The error, for logs and the penalty's reason.
    pub reason: String,
}

/// What the node is to do.
#[derive(Debug)]
pub enum Action<P> {
    /// Send `request` to `peer`; the answer comes back as [`Input::Answer`] with `id`.
    Send {
        /// To whom.
        peer: P,
        /// Its id.
        id: u64,
        /// What.
        request: SyncRequest,
    },
    /// Count a fault against a peer.
    Penalize {
        /// Who.
        peer: P,
        /// How much.
        penalty: Penalty,
        /// Why.
        reason: String,
    },
    /// Close every connection to a peer (it is on another network).
    Disconnect(P),
    /// Import these blocks, in order, as one batch; answer with [`Input::Imported`].
    Import(Vec<Block>),
    /// Progress while catching up.
    Progress {
        /// Our height now.
        height: u64,
        /// The height catching up leads to.
        target: u64,
    },
    /// Every block of the branch was imported.
    CaughtUp {
        /// Our height now.
        height: u64,
    },
}

/// What a request was, to interpret its answer. Headers and blocks requests carry the
/// attempt they belong to: an answer that comes after its attempt ended is ignored.
#[derive(Debug, Clone)]
enum Sent {
    Status,
    Headers { attempt: u64 },
    Blocks { attempt: u64, hashes: Vec<BlockHash> },
}

#[derive(Debug)]
struct Pending<P> {
    peer: P,
    sent: Sent,
    at: Instant,
}

#[derive(Debug, Default)]
enum Phase<P> {
    /// Nothing to catch up.
    #[default]
    Idle,
    /// Asking for headers.
    Headers(Box<HeaderSync<P>>),
    /// Downloading the blocks of a header chain.
    Blocks(Box<Download<P>>),
}

/// The headers phase of one attempt.
#[derive(Debug)]
struct HeaderSync<P> {
    attempt: u64,
    /// Candidates asked for a first page: the first to give a usable one is the source.
    probes: HashSet<P>,
    /// The peer whose branch is followed.
    source: Option<P>,
    /// The branch's first headers (checked), continuing a stored block: the blocks to
    /// fetch.
    collected: Vec<BlockHeader>,
    /// Past [`MAX_COLLECTED_HEADERS`]: the rest of the branch, checked but not kept.
    beyond: Option<Beyond>,
}

/// A branch checked on past the headers kept.
#[derive(Debug)]
struct Beyond {
    /// The last headers, as context for the next page.
    window: Vec<BlockHeader>,
    /// The cumulative work at the end of the kept headers (summed once: they no longer
    /// change), `None` if their base is not stored.
    kept_work: Option<Work>,
    /// The work of the headers past the kept ones.
    work: Work,
}

/// Where catching up stands.
#[derive(Debug)]
pub struct Sync<P> {
    /// Connected peers, with the last status each announced.
    peers: HashMap<P, Option<ChainStatus>>,
    /// Work that peers' headers proved, above our tip at the time: such peers are
    /// probed first.
    proven: HashMap<P, Work>,
    phase: Phase<P>,
    /// Peers whose last attempt led nowhere, and when they may be tried again.
    retry: Backoff<P>,
    /// Attempts to catch up started so far (numbers them).
    attempts: u64,
    /// Requests waiting for an answer, by id.
    pending: HashMap<u64, Pending<P>>,
    next_id: u64,
    /// When a random peer was last asked for its status (the safety net under tip
    /// announcements), and how often that happens.
    last_poll: Option<Instant>,
    poll_every: Duration,
    rng: StdRng,
}

/// Everything one step of [`Sync::handle`] reads, and the actions it collects.
struct Step<'a, C, P> {
    chain: &'a C,
    now: Instant,
    now_ms: u64,
    out: Vec<Action<P>>,
}

impl<'a, C: ChainView, P> Step<'a, C, P> {
    fn penalize(&mut self, peer: P, penalty: Penalty, reason: impl Into<String>) {
        self.out.push(Action::Penalize { peer, penalty, reason: reason.into() });
    }
}

impl<P: Copy + Eq + Hash + Debug + Display> Sync<P> {
    /// A fresh state; a random peer's status is asked for every `poll_every` while idle.
    pub fn new(poll_every: Duration) -> Self {
        Self::with_rng(poll_every, StdRng::from_entropy())
    }

    /// The same with a fixed seed, for tests.
    pub fn with_seed(poll_every: Duration, seed: u64) -> Self {
        Self::with_rng(poll_every, StdRng::seed_from_u64(seed))
    }

    fn with_rng(poll_every: Duration, rng: StdRng) -> Self {
        Self {
            peers: HashMap::new(),
            proven: HashMap::new(),
            phase: Phase::Idle,
            retry: Backoff::new(RETRY_AFTER, RETRY_AT_MOST_EVERY),
            attempts: 0,
            pending: HashMap::new(),
            next_id: 0,
            last_poll: None,
            poll_every,
            rng,
        }
    }

    /// Whether the node is catching up (asking for headers or downloading blocks).
    pub fn is_active(&self) -> bool {
        !matches!(self.phase, Phase::Idle)
    }

    /// Whether blocks of a heavier branch are downloading: the miner waits meanwhile.
    /// (Asking for headers does not stop it: a claim is not proof.)
    pub fn is_downloading(&self) -> bool {
        matches!(self.phase, Phase::Blocks(_))
    }

    /// The highest height any peer announced (or a download leads to).
    pub fn best_known_height(&self) -> u64 {
        let announced =
            self.peers.values().flatten().map(|status| status.height).max().unwrap_or(0);
        match &self.phase {
            Phase::Blocks(download) => announced.max(download.target_height),
            _ => announced,
        }
    }

    /// What request `id` was, for metrics: `status`, `headers` or `blocks`.
    pub fn request_kind(&self, id: u64) -> Option<&'static str> {
        self.pending.get(&id).map(|pending| match pending.sent {
            Sent::Status => "status",
            Sent::Headers { .. } => "headers",
            Sent::Blocks { .. } => "blocks",
        })
    }

    /// Takes one input; returns what to do.
    pub fn handle(
        &mut self,
        input: Input<P>,
        chain: &impl ChainView,
        now: Instant,
        now_ms: u64,
    ) -> Result<Vec<Action<P>>, StoreError> {
        let mut step = Step { chain, now, now_ms, out: Vec::new() };
        match input {
            Input::Connected(peer) => {
                self.peers.insert(peer, None);
                self.ask_status(peer, &mut step);
            }
            Input::Disconnected(peer) => self.peer_gone(peer),
            Input::Status { peer, status } => self.take_status(peer, status, &mut step)?,
            Input::Answer { peer, id, result } => self.on_answer(peer, id, result, &mut step)?,
            Input::TipChanged => {
                // Tell every peer (§13.1): one whose gossip missed the block hears of
                // more work and catches up. Not while downloading: each batch moves it.
                if !self.is_downloading() {
                    let peers: Vec<P> = self.peers.keys().copied().collect();
                    for peer in peers {
                        self.ask_status(peer, &mut step);
                    }
                }
            }
            Input::Orphan(peer) => {
                if !self.is_active() && self.retry.due(&peer, now) {
                    self.start_attempt(vec![peer], &mut step)?;
                }
            }
            Input::Imported(failure) => self.on_imported(failure, &mut step)?,
            Input::Tick => self.tick(&mut step)?,
        }
        Ok(step.out)
    }

    fn send<C: ChainView>(
        &mut self,
        peer: P,
        sent: Sent,
        request: SyncRequest,
        step: &mut Step<'_, C, P>,
    ) {
        self.next_id += 1;
        let id = self.next_id;
        self.pending.insert(id, Pending { peer, sent, at: step.now });
        step.out.push(Action::Send { peer, id, request });
    }

    fn ask_status<C: ChainView>(&mut self, peer: P, step: &mut Step<'_, C, P>) {
        let status = step.chain.status();
        self.send(peer, Sent::Status, SyncRequest::Status(status), step);
    }

    /// Forgets a peer that left; its block requests go back in the queue.
    fn peer_gone(&mut self, peer: P) {
        self.peers.remove(&peer);
        self.proven.remove(&peer);
        match &mut self.phase {
            Phase::Headers(headers) if headers.source == Some(peer) => self.phase = Phase::Idle,
            Phase::Headers(headers) => {
                headers.probes.remove(&peer);
                if headers.source.is_none() && headers.probes.is_empty() {
                    self.phase = Phase::Idle;
                }
            }
            // (Its requests still end, each with a failure: that brings its count down.)
            Phase::Blocks(download) => download.requeue_from(&peer),
            Phase::Idle => {}
        }
    }

    /// The attempt under way, if any.
    fn current_attempt(&self) -> Option<u64> {
        match &self.phase {
            Phase::Idle => None,
            Phase::Headers(headers) => Some(headers.attempt),
            Phase::Blocks(download) => Some(download.attempt),
        }
    }

    /// An attempt to catch up from `peer` led nowhere: wait before the next, and look
    /// for another source.
    fn failed<C: ChainView>(
        &mut self,
        peer: P,
        step: &mut Step<'_, C, P>,
    ) -> Result<(), StoreError> {
        self.retry.tried(peer, step.now);
        self.phase = Phase::Idle;
        self.start_attempt(Vec::new(), step)
    }

    /// A peer's status, from its answer or its own request.
    fn take_status<C: ChainView>(
        &mut self,
        peer: P,
        status: ChainStatus,
        step: &mut Step<'_, C, P>,
    ) -> Result<(), StoreError> {
        let ours: NetworkId = step.chain.status().network;
        if status.network != ours {
            warn!(%peer, theirs = %status.network, "peer is on another network: disconnecting");
            step.penalize(peer, Penalty::MidTolerance, "wrong network");
            step.out.push(Action::Disconnect(peer));
            self.peer_gone(peer);
            return Ok(());
        }
        let Some(known) = self.peers.get_mut(&peer) else {
            return Ok(()); // its answer came after it left
        };
        let ahead = status.work > step.chain.tip_work();
        *known = Some(status);
        if ahead && !self.is_active() {
            self.start_attempt(Vec::new(), step)?;
        }
        Ok(())
    }

    /// Starts catching up: asks up to [`PROBES`] candidates for headers, from `only` if
    /// given, else from the peers that announced more work than ours and are not
    /// waiting out a failure, in random order with the proven ones first.
    fn start_attempt<C: ChainView>(
        &mut self,
        only: Vec<P>,
        step: &mut Step<'_, C, P>,
    ) -> Result<(), StoreError> {
        if self.is_active() {
            return Ok(());
        }
        let tip = step.chain.tip_work();
        let mut candidates: Vec<P> = if only.is_empty() {
            self.peers
                .iter()
                .filter(|(_, status)| status.as_ref().is_some_and(|s| s.work > tip))
                .map(|(peer, _)| *peer)
                .collect()
        } else {
            only
        };
        candidates.retain(|peer| self.retry.due(peer, step.now));
        if candidates.is_empty() {
            return Ok(());
        }
        candidates.sort_by_key(|peer| peer.to_string()); // a seed gives the same order
        candidates.shuffle(&mut self.rng);
        candidates.sort_by_key(|peer| self.proven.get(peer).is_none_or(|work| *work <= tip));
        candidates.truncate(PROBES);
        let locator = step.chain.locator()?;
        self.attempts += 1;
        let attempt = self.attempts;
        debug!(?candidates, attempt, "asking for headers");
        self.phase = Phase::Headers(Box::new(HeaderSync {
            attempt,
            probes: candidates.iter().copied().collect(),
            source: None,
            collected: Vec::new(),
            beyond: None,
        }));
        for peer in candidates {
            let request = SyncRequest::Headers {
                locator: locator.clone(),
                limit: MAX_HEADERS_PER_RESPONSE as u32,
            };
            self.send(peer, Sent::Headers { attempt }, request, step);
        }
        Ok(())
    }

    fn on_answer<C: ChainView>(
        &mut self,
        peer: P,
        id: u64,
        result: Result<Vec<u8>, String>,
        step: &mut Step<'_, C, P>,
    ) -> Result<(), StoreError> {
        let Some(pending) = self.pending.remove(&id) else {
            return Ok(()); // given up on already
        };
        if pending.peer != peer {
            return Ok(());
        }
        let stale = match &pending.sent {
            Sent::Status => false,
            Sent::Headers { attempt } | Sent::Blocks { attempt, .. } => {
                self.current_attempt() != Some(*attempt)
            }
        };
        if stale {
            debug!(%peer, sent = ?pending.sent, "an answer for an attempt that has ended: ignored");
            return Ok(());
        }
        let response = match result {
            Ok(bytes) => match SyncResponse::decode(&bytes) {
                Ok(response) => response,
                Err(error) => {
                    step.penalize(
                        peer,
                        Penalty::LowTolerance,
                        format!("malformed sync answer: {error}"),
                    );
                    return self.request_failed(peer, pending.sent, step);
                }
            },
            Err(error) => {
                debug!(%peer, %error, sent = ?pending.sent, "sync request failed");
                return self.request_failed(peer, pending.sent, step);
            }
        };
        match (pending.sent, response) {
            (Sent::Status, SyncResponse::Status(status)) => self.take_status(peer, status, step),
            (Sent::Headers { .. }, SyncResponse::Headers(headers)) => {
                self.on_headers(peer, headers, step)
            }
            (Sent::Blocks { hashes, .. }, SyncResponse::Blocks(blocks)) => {
                self.on_blocks(peer, hashes, blocks, step)
            }
            (sent, SyncResponse::Refused { reason }) => {
                debug!(%peer, %reason, ?sent, "sync request refused");
                self.request_failed(peer, sent, step)
            }
            (sent, _) => {
                step.penalize(
                    peer,
                    Penalty::LowTolerance,
                    "answered a sync request with the wrong message",
                );
                self.request_failed(peer, sent, step)
            }
        }
    }

    /// A request of the current attempt got no usable answer.
    fn request_failed<C: ChainView>(
        &mut self,
        peer: P,
        sent: Sent,
        step: &mut Step<'_, C, P>,
    ) -> Result<(), StoreError> {
        match (sent, &mut self.phase) {
            (Sent::Headers { .. }, Phase::Headers(headers)) => {
                if headers.source == Some(peer) {
                    return self.failed(peer, step);
                }
                if headers.source.is_none() && headers.probes.remove(&peer) {
                    self.retry.tried(peer, step.now);
                    if headers.probes.is_empty() {
                        self.phase = Phase::Idle;
                        return self.start_attempt(Vec::new(), step);
                    }
                }
            }
            (Sent::Blocks { hashes, .. }, Phase::Blocks(download)) => {
                download.request_ended(&peer);
                download.requeue(&peer, &hashes);
                // A slow link times out now and then: only a source that keeps failing is
                // left out (and the page goes to whoever is free first). Another helper
                // only said it has the blocks: it gets no second chance. A peer that
                // left is not at fault.
                if self.peers.contains_key(&peer) {
                    let failures = download.failures.entry(peer).or_default();
                    *failures += 1;
                    if *failures >= MAX_PAGE_FAILURES || peer != download.source {
                        debug!(%peer, "block requests keep failing: not asking this peer again");
                        download.unhelpful.insert(peer);
                    }
                }
                self.request_blocks(step);
            }
            _ => {}
        }
        Ok(())
    }

    fn on_headers<C: ChainView>(
        &mut self,
        peer: P,
        headers: Vec<BlockHeader>,
        step: &mut Step<'_, C, P>,
    ) -> Result<(), StoreError> {
        let Phase::Headers(sync) = &mut self.phase else { return Ok(()) };
        let attempt = sync.attempt;
        let first_page = sync.source.is_none();
        if first_page && !sync.probes.contains(&peer) || sync.source.is_some_and(|s| s != peer) {
            return Ok(());
        }
        if first_page && headers.is_empty() {
            warn!(%peer, "it announced more work than ours but sent no headers");
            return self.request_failed(peer, Sent::Headers { attempt }, step);
        }
        let full_page = headers.len() >= MAX_HEADERS_PER_RESPONSE;
        // Each page continues the last: the first must build on a stored block (the
        // check below says so if it does not).
        let mut previous = match &sync.beyond {
            Some(beyond) => beyond.window.last().map(BlockHeader::hash),
            None => sync.collected.last().map(BlockHeader::hash),
        };
        for header in &headers {
            if previous.is_some_and(|hash| header.prev != hash) {
                // An honest peer whose chain moved between two pages answers this way
                // too: try again later rather than blame it.
                debug!(%peer, height = header.height, "headers do not link; starting over");
                return self.request_failed(peer, Sent::Headers { attempt }, step);
            }
            previous = Some(header.hash());
        }
        // The header rules, each new header in the context of those before it: a branch
        // whose targets or times break them is not downloaded, however much work it
        // claims.
        let context = step.chain.header_context_len();
        let checked = match &mut sync.beyond {
            Some(beyond) => {
                let from = beyond.window.len();
                beyond.window.extend_from_slice(&headers);
                let window = step.chain.check_header_chain(&beyond.window, from, step.now_ms)?;
                for header in &headers {
                    match header.bits.to_target() {
                        Ok(target) => beyond.work = beyond.work + target.work(),
                        Err(_) => break, // the check above refused it
                    }
                }
                let excess = beyond.window.len().saturating_sub(context);
                beyond.window.drain(..excess);
                window.map_err(|(index, error)| (index + excess, error))
            }
            None => {
                let from = sync.collected.len();
                sync.collected.extend_from_slice(&headers);
                step.chain.check_header_chain(&sync.collected, from, step.now_ms)?
            }
        };
        if let Err((_, error)) = checked {
            let penalty = match &error {
                HeaderChainError::Header(fault) => verdict(Refusal::Header(fault)).penalty,
                HeaderChainError::UnknownParent(_) => None,
            };
            match penalty {
                Some(penalty) => {
                    warn!(%peer, %error, "invalid headers");
                    step.penalize(peer, penalty, format!("invalid headers: {error}"));
                }
                None => debug!(%peer, %error, "headers not usable now; starting over"),
            }
            return self.request_failed(peer, Sent::Headers { attempt }, step);
        }
        if first_page {
            sync.source = Some(peer);
            sync.probes.clear();
        }
        if sync.beyond.is_none() && sync.collected.len() >= MAX_COLLECTED_HEADERS && full_page {
            let start = sync.collected.len().saturating_sub(context);
            sync.beyond = Some(Beyond {
                window: sync.collected[start..].to_vec(),
                kept_work: step.chain.work_of_headers(&sync.collected)?,
                work: Work::ZERO,
            });
        }
        let tip = step.chain.tip_work();
        // The branch's work so far; not summed while it simply goes on below the cap.
        let work = match &sync.beyond {
            Some(beyond) => beyond.kept_work.map(|kept| kept + beyond.work),
            None if full_page => None,
            None => step.chain.work_of_headers(&sync.collected)?,
        };
        // Past what is kept, the first part's blocks come as soon as the branch proves
        // more work than ours; the rest on the next attempt.
        if sync.beyond.is_some() && work.is_some_and(|work| work > tip) {
            return self.download(peer, work, step);
        }
        if full_page {
            // Continue after what we have, and give our own chain as a fallback in case
            // the peer's best chain no longer holds our last header.
            let last = match &sync.beyond {
                Some(beyond) => &beyond.window,
                None => &sync.collected,
            };
            let mut locator: Vec<BlockHash> =
                last.iter().rev().take(16).map(BlockHeader::hash).collect();
            locator.extend(step.chain.locator()?);
            locator.truncate(MAX_LOCATOR_HASHES);
            let request = SyncRequest::Headers { locator, limit: MAX_HEADERS_PER_RESPONSE as u32 };
            self.send(peer, Sent::Headers { attempt }, request, step);
            return Ok(());
        }
        // The whole branch is in. Headers first means blocks only for a branch that beats
        // ours. A peer whose headers add up to less work than its status announced said
        // more than it had; one whose branch merely no longer beats ours (our tip moved
        // meanwhile) is honest, and just not useful now.
        let claimed = self.peers.get(&peer).and_then(Option::as_ref).map(|status| status.work);
        if work.is_none_or(|work| claimed.is_some_and(|claim| work < claim)) {
            warn!(%peer, "its headers do not lead to the work it announced: not fetching blocks");
            if let Some(status) = self.peers.get_mut(&peer) {
                *status = None;
            }
            step.penalize(
                peer,
                Penalty::HighTolerance,
                "announced more work than its headers have",
            );
            return self.failed(peer, step);
        }
        if work.is_some_and(|work| work <= tip) {
            debug!(%peer, "its branch does not have more work than ours");
            return self.failed(peer, step);
        }
        self.download(peer, work, step)
    }

    /// The branch collected from `source` beats ours: fetch the blocks we lack.
    fn download<C: ChainView>(
        &mut self,
        source: P,
        work: Option<Work>,
        step: &mut Step<'_, C, P>,
    ) -> Result<(), StoreError> {
        let Phase::Headers(sync) = std::mem::take(&mut self.phase) else { return Ok(()) };
        if let Some(work) = work {
            self.proven.insert(source, work);
        }
        let mut order = Vec::with_capacity(sync.collected.len());
        for header in &sync.collected {
            let hash = header.hash();
            if !step.chain.knows(&hash)? {
                order.push(hash);
            }
        }
        if order.is_empty() {
            debug!(peer = %source, "its headers hold no block we lack");
            return self.failed(source, step);
        }
        let target_height = sync.collected.last().map_or(0, |header| header.height);
        info!(peer = %source, blocks = order.len(), target_height, "catching up");
        self.phase = Phase::Blocks(Box::new(Download::new(
            sync.attempt,
            order,
            target_height,
            source,
            step.now,
        )));
        self.request_blocks(step);
        Ok(())
    }

    /// Hands out block pages to the source and to every other peer whose announced tip
    /// is on the branch (it holds the blocks), leaving out those that failed. A claim of
    /// more work alone does not make a helper: a liar would sit on its pages. With
    /// nobody left to ask, the download ends.
    fn request_blocks<C: ChainView>(&mut self, step: &mut Step<'_, C, P>) {
        let Phase::Blocks(download) = &mut self.phase else { return };
        let mut helpers: Vec<P> = self
            .peers
            .iter()
            .filter(|(_, status)| status.as_ref().is_some_and(|s| download.holds(&s.tip)))
            .map(|(peer, _)| *peer)
            .collect();
        // The source has every block as long as it is connected: it goes first.
        helpers.retain(|peer| *peer != download.source);
        if self.peers.contains_key(&download.source) {
            helpers.insert(0, download.source);
        }
        helpers.retain(|peer| !download.unhelpful.contains(peer));
        let mut pages = Vec::new();
        for peer in &helpers {
            while download.requests_of(peer) < REQUESTS_PER_PEER {
                let page = download.next_page();
                if page.is_empty() {
                    break;
                }
                download.request_sent(*peer, &page, step.now);
                pages.push((*peer, page));
            }
        }
        let attempt = download.attempt;
        if helpers.is_empty() && download.in_flight.is_empty() && download.importing.is_none() {
            let source = download.source;
            warn!(
                missing = download.queue.len(),
                "no peer can deliver the blocks: catching up stopped"
            );
            self.retry.tried(source, step.now);
            self.phase = Phase::Idle;
            return;
        }
        for (peer, page) in pages {
            let request = SyncRequest::Blocks { hashes: page.clone() };
            self.send(peer, Sent::Blocks { attempt, hashes: page }, request, step);
        }
    }

    fn on_blocks<C: ChainView>(
        &mut self,
        peer: P,
        asked: Vec<BlockHash>,
        blocks: Vec<Block>,
        step: &mut Step<'_, C, P>,
    ) -> Result<(), StoreError> {
        let Phase::Blocks(download) = &mut self.phase else { return Ok(()) };
        download.request_ended(&peer);
        let mut unasked = false;
        for block in blocks {
            let hash = block.hash();
            if !asked.contains(&hash) {
                unasked = true;
                continue;
            }
            if !download.wants(&hash) {
                continue; // arrived from someone else meanwhile
            }
            // Whoever else it was asked of meanwhile (a slow page given to another peer)
            // is no longer waited for.
            download.in_flight.remove(&hash);
            download.received.insert(hash, (block, peer));
        }
        // What it was asked for and did not deliver: someone else, first thing.
        if download.requeue(&peer, &asked) {
            debug!(%peer, "peer lacks blocks of the branch: not asking it again");
            download.unhelpful.insert(peer);
        } else {
            download.failures.remove(&peer);
        }
        if unasked {
            step.penalize(peer, Penalty::MidTolerance, "sent blocks nobody asked for");
        }
        self.import_ready(step);
        self.request_blocks(step);
        Ok(())
    }

    /// Hands the node the next blocks in line, unless a batch is being imported.
    fn import_ready<C: ChainView>(&mut self, step: &mut Step<'_, C, P>) {
        let Phase::Blocks(download) = &mut self.phase else { return };
        if download.importing.is_some() {
            return;
        }
        let (batch, senders) = download.take_ready(IMPORT_LIMIT, step.now);
        if !batch.is_empty() {
            download.importing = Some(senders);
            step.out.push(Action::Import(batch));
        }
    }

    fn on_imported<C: ChainView>(
        &mut self,
        failure: Option<ImportFailure>,
        step: &mut Step<'_, C, P>,
    ) -> Result<(), StoreError> {
        let Phase::Blocks(download) = &mut self.phase else { return Ok(()) };
        let batch = download.importing.take().unwrap_or_default();
        let source = download.source;
        if let Some(failure) = failure {
            let sender = batch.get(failure.index).map_or(source, |(_, sender)| *sender);
            if failure.forged_body {
                // The hash covers the header only: a body that is not the one the header
                // commits to is this sender's fault, not the branch's. That block and the
                // rest of the batch are fetched again, from others. (A body that matches
                // but breaks a rule, too large say, is the branch's.)
                warn!(peer = %sender, error = %failure.reason, "a block body that is not its header's");
                if let Some(penalty) = failure.penalty {
                    step.penalize(
                        sender,
                        penalty,
                        format!("forged block body: {}", failure.reason),
                    );
                }
                download.unhelpful.insert(sender);
                let lost: Vec<BlockHash> =
                    batch[failure.index.min(batch.len())..].iter().map(|(hash, _)| *hash).collect();
                download.refetch(&lost);
                self.import_ready(step);
                self.request_blocks(step);
                return Ok(());
            }
            warn!(peer = %sender, error = %failure.reason, "invalid block while catching up");
            if let Some(penalty) = failure.penalty {
                step.penalize(sender, penalty, format!("invalid block: {}", failure.reason));
            }
            // The branch its headers promised does not hold up.
            return self.failed(source, step);
        }
        // Progress: the source's branch holds up so far.
        self.retry.forget(&source);
        let height = step.chain.status().height;
        step.out.push(Action::Progress { height, target: download.target_height });
        if download.is_done() {
            info!(height, "caught up");
            self.phase = Phase::Idle;
            step.out.push(Action::CaughtUp { height });
            // Our tip moved while downloading, unannounced: tell everyone now.
            let peers: Vec<P> = self.peers.keys().copied().collect();
            for peer in peers {
                self.ask_status(peer, step);
            }
            // More to get from someone?
            return self.start_attempt(Vec::new(), step);
        }
        self.import_ready(step);
        self.request_blocks(step);
        Ok(())
    }

    /// Once a second: give up on requests past their patience; poll a peer while idle;
    /// abandon a stalled download; start catching up if a peer is ahead.
    fn tick<C: ChainView>(&mut self, step: &mut Step<'_, C, P>) -> Result<(), StoreError> {
        let now = step.now;
        let mut expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, pending)| {
                let patience = match pending.sent {
                    Sent::Headers { .. } => HEADERS_PATIENCE,
                    Sent::Status | Sent::Blocks { .. } => REQUEST_PATIENCE,
                };
                now.duration_since(pending.at) >= patience
            })
            .map(|(id, _)| *id)
            .collect();
        expired.sort_unstable();
        for id in expired {
            if let Some(pending) = self.pending.get(&id) {
                let peer = pending.peer;
                self.on_answer(peer, id, Err("no answer in time".into()), step)?;
            }
        }
        if let Phase::Blocks(download) = &self.phase {
            let drained = download.in_flight.is_empty()
                && download.queue.is_empty()
                && download.received.is_empty()
                && download.importing.is_none();
            if now.duration_since(download.progress_at) > DOWNLOAD_STALL {
                warn!("catching up stalled; starting over");
                let source = download.source;
                return self.failed(source, step);
            } else if drained {
                self.phase = Phase::Idle;
            } else if download.in_flight.is_empty() && !download.queue.is_empty() {
                self.request_blocks(step);
            }
        }
        if !self.is_active() {
            if self.last_poll.is_none_or(|at| now.duration_since(at) >= self.poll_every) {
                self.last_poll = Some(now);
                let mut peers: Vec<P> = self.peers.keys().copied().collect();
                peers.sort_by_key(|peer| peer.to_string());
                if let Some(peer) = peers.choose(&mut self.rng).copied() {
                    self.ask_status(peer, step);
                }
            }
            self.start_attempt(Vec::new(), step)?;
        }
        Ok(())
    }
}
