//! The node's side of catching up: routes network events into the sync state machine
//! ([`crate::sync`]) and carries out what it asks for; serves peers' sync requests.

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use libp2p::PeerId;
use raclette_protocol::wire::{
    MAX_BLOCKS_PER_REQUEST, MAX_HEADERS_PER_RESPONSE, MAX_SYNC_REQUESTS_IN_FLIGHT, SyncRequest,
    SyncResponse,
};
use raclette_protocol::{Block, WireMessage};
use tracing::info;

use super::{Node, Notice, now_ms};
use crate::chain::ImportError;
use crate::chain::validate::BlockError;
use crate::network::{InboundRequest, Penalty, Protocol, RequestError};
use crate::store::Store;
use crate::sync::{Action, ImportFailure, Input};
use crate::verdict::{Refusal, verdict};

/// The most bytes of answers to peers' sync requests on their way out at once, across
/// all peers: past it, a `headers` or `blocks` request is answered `busy`. Eight peers'
/// worth of full block pages fit in it (each answer holds at most 16 blocks).
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

impl<S: Store> Node<S> {
    /// Feeds the sync state machine one input and carries out what it asks, including
    /// the inputs that follow from that (an imported batch's outcome).
    pub(super) async fn drive_sync(&mut self, input: Input<PeerId>) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let actions = match self.sync.handle(input, &self.chain, Instant::now(), now_ms()) {
                Ok(actions) => actions,
                Err(error) => self.fatal(error),
            };
            for action in actions {
                match action {
                    Action::Send { peer, id, request } => {
                        self.client.send_request(peer, Protocol::Sync, request.encode(), id).await;
                    }
                    Action::Penalize { peer, penalty, reason } => {
                        self.client.penalize(peer, penalty, reason).await;
                    }
                    Action::Disconnect(peer) => self.client.disconnect(peer).await,
                    Action::Import(blocks) => {
                        let failure = self.import_synced(blocks).await;
                        inputs.push_back(Input::Imported(failure));
                    }
                    Action::Progress { height, target } => {
                        self.notify(Notice::Syncing { height, target });
                    }
                    Action::CaughtUp { height } => {
                        info!(height, "caught up");
                        self.notify(Notice::Synced { height });
                    }
                }
            }
        }
        if !self.sync.is_downloading() {
            // Whatever ended the download (or if none ran): a `mine` that waited goes on.
            self.resume_mining();
        }
    }

    /// The answer to one of sync's requests.
    pub(super) async fn on_sync_answer(
        &mut self,
        peer: PeerId,
        id: u64,
        result: Result<Vec<u8>, RequestError>,
    ) {
        if let (Ok(bytes), Some(kind)) = (&result, self.sync.request_kind(id)) {
            self.metrics.sync_bytes.inc_by(bytes.len() as u64);
            self.metrics.sync_pages.get_or_create(&crate::metrics::Kind { kind }).inc();
        }
        let result = result.map_err(|error| error.to_string());
        self.drive_sync(Input::Answer { peer, id, result }).await;
    }

    /// Imports a batch sync downloaded, in one store transaction; follows the tip.
    async fn import_synced(&mut self, blocks: Vec<Block>) -> Option<ImportFailure> {
        let (imported, failure) = self.chain.import_blocks(blocks, now_ms());
        for _ in &imported {
            self.metrics.block("sync", "accepted", "imported");
        }
        let changes: Vec<_> = imported.into_iter().filter_map(|i| i.tip_change).collect();
        if let Some(change) = crate::chain::merge_changes(changes) {
            self.on_tip_change(change).await;
        }
        let (index, error) = failure?;
        if let ImportError::Store(error) = error {
            self.fatal(error);
        }
        let verdict = verdict(Refusal::Import(&error));
        self.metrics.block("sync", verdict.label(), crate::metrics::reason(&error));
        let forged_body = matches!(error, ImportError::Block(BlockError::BadMerkleRoot));
        Some(ImportFailure {
            index,
            penalty: verdict.penalty,
            reason: error.to_string(),
            forged_body,
        })
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
                self.drive_sync(Input::Status { peer: request.peer, status }).await;
                return;
            }
            // Answers on their way out already hold the budget: the blocks are not read
            // into memory now. Not the requester's fault; it asks someone else.
            Ok(SyncRequest::Headers { .. } | SyncRequest::Blocks { .. })
                if self.client.answer_bytes() >= MAX_ANSWER_BYTES =>
            {
                SyncResponse::Refused { reason: "busy".into() }
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
