//! `mine N`: build a block on the tip, search nonces on all threads, publish what is
//! found; when another peer's block takes the height first, stop, say who won, and go on
//! from the new tip.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use raclette_protocol::{Block, BlockHash, WireMessage};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::{Internal, LostBlock, MineView, MinedBlock, Node, Notice, UserError, now_ms};
use crate::chain::{ImportError, Placement};
use crate::miner::{assemble_block, solve};
use crate::network::Topic;
use crate::store::Store;

/// A `mine N` in progress.
pub(super) struct MiningSession {
    /// Heights still to try.
    remaining: u32,
    report: MineView,
    reply: Option<oneshot::Sender<Result<MineView, UserError>>>,
    job: Option<Job>,
    /// The user asked to stop: the search ends without a "lost" height.
    stopping: bool,
    /// The last measured hash rate, hashes per second.
    pub(super) rate: f64,
}

/// One nonce search.
struct Job {
    id: u64,
    height: u64,
    parent: BlockHash,
    stop: Arc<AtomicBool>,
    hashes: Arc<AtomicU64>,
    sampled: (Instant, u64),
}

impl MiningSession {
    /// Stops the current search.
    pub(super) fn stop(&self) {
        if let Some(job) = &self.job {
            job.stop.store(true, Ordering::Relaxed);
        }
    }
}

impl<S: Store> Node<S> {
    pub(super) fn start_mining(
        &mut self,
        blocks: u32,
        reply: oneshot::Sender<Result<MineView, UserError>>,
    ) {
        if self.mining.is_some() {
            let _ =
                reply.send(Err(UserError::Invalid("already mining; wait for it to finish".into())));
            return;
        }
        if blocks == 0 {
            let _ = reply.send(Err(UserError::Invalid("mine at least 1 block".into())));
            return;
        }
        self.mining = Some(MiningSession {
            remaining: blocks,
            report: MineView::default(),
            reply: Some(reply),
            job: None,
            stopping: false,
            rate: 0.0,
        });
        self.next_mining_job();
    }

    /// Starts the next search, or ends the session when all heights were tried. While
    /// the node is catching up it waits: mining behind the best chain is wasted work.
    fn next_mining_job(&mut self) {
        let Some(session) = &mut self.mining else { return };
        if session.remaining == 0 {
            let session = self.mining.take().expect("checked above");
            if let Some(reply) = session.reply {
                let _ = reply.send(Ok(session.report));
            }
            return;
        }
        if self.sync.is_downloading() {
            info!("behind the network: mining waits until caught up");
            return;
        }
        let next = match self.chain.next_block() {
            Ok(next) => next,
            Err(error) => self.fatal(error),
        };
        let block = assemble_block(
            self.chain.params(),
            &next,
            self.keypair.public(),
            self.mempool.select(),
            now_ms(),
            self.config.name.as_str().as_bytes(),
        );
        self.next_job += 1;
        let job = Job {
            id: self.next_job,
            height: next.height,
            parent: next.parent,
            stop: Arc::new(AtomicBool::new(false)),
            hashes: Arc::new(AtomicU64::new(0)),
            sampled: (Instant::now(), 0),
        };
        let (id, stop, hashes, threads) =
            (job.id, job.stop.clone(), job.hashes.clone(), self.config.threads);
        let internal = self.internal.clone();
        tokio::task::spawn_blocking(move || {
            let solved = solve(&block.header, threads, &stop, &hashes);
            let solved_block = match solved {
                Some(header) => Block { header, ..block },
                None => block,
            };
            let _ = internal.blocking_send(Internal::Solved {
                job: id,
                solved: solved.is_some(),
                block: Box::new(solved_block),
            });
        });
        info!(height = next.height, threads, "mining");
        if let Some(session) = &mut self.mining {
            session.job = Some(job);
        }
    }

    /// Stops the mining session: the current search ends, and `mine` answers with what
    /// was mined so far.
    pub(super) fn stop_mining(&mut self) -> bool {
        let Some(session) = &mut self.mining else { return false };
        session.stopping = true;
        session.remaining = 0;
        match &session.job {
            Some(job) => job.stop.store(true, Ordering::Relaxed),
            // Waiting for the sync: nothing runs, so end the session now.
            None => self.next_mining_job(),
        }
        true
    }

    /// Resumes a session that waited for the sync to finish.
    pub(super) fn resume_mining(&mut self) {
        if self.mining.as_ref().is_some_and(|session| session.job.is_none()) {
            self.next_mining_job();
        }
    }

    /// The tip moved: a search on the old tip is pointless now.
    pub(super) fn mining_on_tip_change(&mut self) {
        let tip = self.chain.tip().hash();
        if let Some(job) = self.mining.as_ref().and_then(|s| s.job.as_ref())
            && job.parent != tip
        {
            job.stop.store(true, Ordering::Relaxed);
        }
    }

    /// Who holds `height` on the best chain now.
    fn winner_at(&self, height: u64) -> String {
        match self.chain.block_at(height) {
            Ok(Some((_, block))) => self.miner_of(&block),
            Ok(None) => "nobody yet".into(),
            Err(error) => self.fatal(error),
        }
    }

    pub(super) async fn on_solved(&mut self, job_id: u64, block: Block, solved: bool) {
        let Some(job) =
            self.mining.as_mut().and_then(|session| session.job.take_if(|job| job.id == job_id))
        else {
            return; // a search from a session that has ended
        };
        let height = job.height;
        if solved {
            let hash = block.hash();
            match self.chain.import_block(block.clone(), now_ms()) {
                Ok(imported) if imported.placement == Placement::BestChain => {
                    // Publish first: the peers need the block more than our mempool
                    // needs updating.
                    self.publish(Topic::Blocks, block.encode(), "our block");
                    if let Some(change) = imported.tip_change {
                        self.on_tip_change(change).await;
                    }
                    info!(height, %hash, "mined a block");
                    self.notify(Notice::Mined { height, hash });
                    if let Some(session) = &mut self.mining {
                        session.report.mined.push(MinedBlock { height, hash: hash.to_string() });
                    }
                }
                Ok(_) => self.record_lost(height),
                Err(ImportError::Store(error)) => self.fatal(error),
                Err(error) => {
                    warn!(%error, "our own block was refused");
                    self.record_lost(height);
                }
            }
        } else {
            let stopped_by_user = self
                .mining
                .as_ref()
                .is_none_or(|s| s.stopping || s.reply.as_ref().is_none_or(|r| r.is_closed()));
            if !stopped_by_user {
                self.record_lost(height);
            }
        }
        if let Some(session) = &mut self.mining {
            session.remaining = session.remaining.saturating_sub(1);
            if session.stopping || session.reply.as_ref().is_some_and(|reply| reply.is_closed()) {
                session.remaining = 0; // nobody waits for the result any more
            }
        }
        self.next_mining_job();
    }

    fn record_lost(&mut self, height: u64) {
        let winner = self.winner_at(height);
        info!(height, %winner, "another peer won the block");
        self.notify(Notice::Lost { height, winner: winner.clone() });
        if let Some(session) = &mut self.mining {
            session.report.lost.push(LostBlock { height, winner });
        }
    }

    /// Once a second: tell the user how fast the miner goes.
    pub(super) fn report_mining_rate(&mut self) {
        let Some(job) = self.mining.as_mut().and_then(|s| s.job.as_mut()) else { return };
        let now = Instant::now();
        let done = job.hashes.load(Ordering::Relaxed);
        let (at, before) = job.sampled;
        let seconds = now.duration_since(at).as_secs_f64();
        if seconds <= 0.0 {
            return;
        }
        let rate = (done - before) as f64 / seconds;
        job.sampled = (now, done);
        let height = job.height;
        if let Some(session) = &mut self.mining {
            session.rate = rate;
        }
        self.notify(Notice::Mining { height, rate });
    }
}
