//! Sending and receiving transfers: straight to the receiver when it can be reached,
//! by gossip otherwise; an outbox delivers to receivers that were offline once they
//! come back.

use libp2p::PeerId;
use libp2p::gossipsub::MessageAcceptance;
use raclette_protocol::encryption::{MAX_MESSAGE_BYTES, encrypt};
use raclette_protocol::wire::{DirectRequest, DirectResponse};
use raclette_protocol::{Amount, PublicKey, Transfer, TxId, WireMessage};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::{Internal, Node, SendView, UserError, now_ms};
use crate::mempool::MempoolError;
use crate::network::identity::{key_of, peer_id_of};
use crate::network::{InboundRequest, Protocol, RequestError, Topic};
use crate::store::{InboxRecord, ReadTables, Store, StoreRead, StoreWrite, Table, WriteTables};
use crate::verdict::{Refusal, Verdict, verdict};

/// A transfer waiting for its receiver to be reachable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRecord {
    /// The receiver.
    pub to: PublicKey,
    /// The transfer.
    pub transfer: Transfer,
}

impl<S: Store> Node<S> {
    /// `send NAME AMOUNT MESSAGE`: checks, encrypts, signs, keeps it pending here, and
    /// sends it to the receiver.
    pub(super) async fn send_transfer(
        &mut self,
        to: String,
        amount: Amount,
        message: String,
        fee: Amount,
        reply: oneshot::Sender<Result<SendView, UserError>>,
    ) {
        match self.prepare_transfer(&to, amount, &message, fee) {
            Ok((transfer, to_name)) => {
                let txid = transfer.txid();
                info!(%txid, to = %to_name, %amount, "sending");
                self.send_direct(transfer, to_name, Some(reply));
            }
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }

    fn prepare_transfer(
        &mut self,
        to: &str,
        amount: Amount,
        message: &str,
        fee: Amount,
    ) -> Result<(Transfer, String), UserError> {
        let card = self.directory.resolve(to).map_err(UserError::NotFound)?;
        let own = self.keypair.public();
        if card.key == own {
            return Err(UserError::Invalid("that is you: send to another peer".into()));
        }
        if message.len() > MAX_MESSAGE_BYTES {
            return Err(UserError::Invalid(format!(
                "the message is {} bytes; the limit is {MAX_MESSAGE_BYTES}",
                message.len()
            )));
        }
        let needed = amount
            .checked_add(fee)
            .ok_or_else(|| UserError::Invalid("amount plus fee is too large".into()))?;
        let account = self.chain.account(&own).unwrap_or_else(|error| self.fatal(error));
        let (_, outgoing) = self.mempool.pending_for(&own);
        let available = account.balance.checked_sub(outgoing).unwrap_or(Amount::ZERO);
        if needed > available {
            return Err(UserError::Invalid(format!(
                "insufficient balance: you have {available} available and this needs {needed} ({amount} plus fee {fee})"
            )));
        }
        let nonce = self.mempool.next_nonce(&own, account.nonce);
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let sealed = encrypt(&self.keypair, &card.key, salt, message.as_bytes())
            .map_err(|error| UserError::Invalid(error.to_string()))?;
        let transfer = Transfer::sign(
            &self.keypair,
            self.chain.network(),
            card.key,
            amount,
            fee,
            nonce,
            sealed,
        );
        self.admit(&transfer).map_err(|error| UserError::Invalid(format!("not sent: {error}")))?;
        self.flush();
        Ok((transfer, card.name.to_string()))
    }

    /// Sends a transfer to its receiver in a spawned task; the answer comes back as
    /// [`Internal::DirectAnswer`].
    fn send_direct(
        &self,
        transfer: Transfer,
        to_name: String,
        reply: Option<oneshot::Sender<Result<SendView, UserError>>>,
    ) {
        let client = self.client.clone();
        let internal = self.internal.clone();
        let peer = peer_id_of(&transfer.to);
        let txid = transfer.txid();
        // Most peers of a large network are not connected: dial the receiver on demand.
        let addresses = self.directory.addresses_for(&transfer.to);
        tokio::spawn(async move {
            if !addresses.is_empty() {
                client.dial(Some(peer), addresses).await;
            }
            let result =
                client.request(peer, Protocol::Direct, DirectRequest { transfer }.encode()).await;
            let _ = internal.send(Internal::DirectAnswer { txid, to_name, result, reply }).await;
        });
    }

    pub(super) async fn on_direct_answer(
        &mut self,
        txid: TxId,
        to_name: String,
        result: Result<Vec<u8>, RequestError>,
        reply: Option<oneshot::Sender<Result<SendView, UserError>>>,
    ) {
        let answer = match result {
            Ok(bytes) => DirectResponse::decode(&bytes)
                .map_err(|error| RequestError::Failed(error.to_string())),
            Err(error) => Err(error),
        };
        let outcome = match answer {
            Ok(DirectResponse::Accepted) => {
                info!(%txid, to = %to_name, "accepted by the receiver");
                self.outbox_remove(&txid);
                let also_claimed_by = self.directory.other_claims(&to_name);
                Ok(SendView { txid: txid.to_string(), status: "accepted", also_claimed_by })
            }
            Ok(DirectResponse::Rejected { reason }) => {
                warn!(%txid, to = %to_name, %reason, "rejected by the receiver");
                self.outbox_remove(&txid);
                if reply.is_some() {
                    self.mempool.remove(&txid);
                }
                Err(UserError::Invalid(format!("{to_name} rejected it: {reason}")))
            }
            Err(error) => {
                warn!(%txid, to = %to_name, %error, "could not reach the receiver: broadcast instead");
                if reply.is_some() {
                    self.broadcast_pending(&txid).await;
                }
                let also_claimed_by = self.directory.other_claims(&to_name);
                Ok(SendView { txid: txid.to_string(), status: "broadcast", also_claimed_by })
            }
        };
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }

    /// Publishes a pending transfer of ours and keeps it for direct delivery later.
    async fn broadcast_pending(&mut self, txid: &TxId) {
        let Some(record) = self.mempool.get(txid).cloned() else { return };
        self.publish(Topic::Transactions, record.transfer.encode(), "our transfer");
        let outbox = OutboxRecord { to: record.transfer.to, transfer: record.transfer };
        self.write(|writer| writer.put_value(Table::Outbox, txid.as_bytes(), &outbox));
    }

    fn outbox_remove(&self, txid: &TxId) {
        self.write(|writer| writer.delete(Table::Outbox, txid.as_bytes()));
    }

    /// One small write transaction, committed at once.
    fn write(
        &self,
        change: impl FnOnce(&mut S::Writer<'_>) -> Result<(), crate::store::StoreError>,
    ) {
        let result = (|| {
            let mut writer = self.chain.store().writer()?;
            change(&mut writer)?;
            writer.commit()
        })();
        if let Err(error) = result {
            self.fatal(error);
        }
    }

    /// Drops the inbox rows of transfers that were never mined and are no longer
    /// pending, once they are [`INBOX_UNMINED_EXPIRY`] old: a transfer that was evicted
    /// or replaced would otherwise keep its row for ever.
    pub(super) fn sweep_inbox(&mut self, now: u64) {
        let records = self
            .chain
            .store()
            .reader()
            .and_then(|reader| reader.values::<InboxRecord>(Table::Inbox))
            .unwrap_or_else(|error| self.fatal(error));
        let rows: Vec<(TxId, u64)> =
            records.iter().map(|record| (record.transfer.txid(), record.received_ms)).collect();
        let expired = expired_inbox(&rows, now, |txid| {
            self.mempool.get(txid).is_some()
                || self
                    .chain
                    .confirmation_height(txid)
                    .unwrap_or_else(|error| self.fatal(error))
                    .is_some()
        });
        if expired.is_empty() {
            return;
        }
        info!(rows = expired.len(), "dropped inbox rows of transfers that were never mined");
        self.write(|writer| {
            expired.iter().try_for_each(|txid| writer.delete(Table::Inbox, txid.as_bytes()))
        });
    }

    /// A peer came online: deliver what waited for it.
    pub(super) async fn deliver_outbox_to(&mut self, peer: PeerId) {
        let Some(key) = key_of(&peer) else { return };
        let records = self
            .chain
            .store()
            .reader()
            .and_then(|reader| reader.values::<OutboxRecord>(Table::Outbox))
            .unwrap_or_else(|error| self.fatal(error));
        for record in records.into_iter().filter(|record| record.to == key) {
            let name = self.name_of(&key);
            info!(txid = %record.transfer.txid(), to = %name, "delivering a transfer from the outbox");
            self.send_direct(record.transfer, name, None);
        }
    }

    /// Stores a transfer to this node in the inbox (with any pending mempool changes),
    /// durably, before the sender hears "accepted".
    fn keep_in_inbox(&mut self, transfer: &Transfer) {
        let txid = transfer.txid();
        let record = InboxRecord { transfer: transfer.clone(), received_ms: now_ms() };
        let mempool = &mut self.mempool;
        let result = (|| {
            let mut writer = self.chain.store().writer()?;
            if writer.get(Table::Inbox, txid.as_bytes())?.is_none() {
                writer.put_value(Table::Inbox, txid.as_bytes(), &record)?;
            }
            mempool.flush(&mut writer)?;
            writer.commit()
        })();
        if let Err(error) = result {
            self.fatal(error);
        }
        self.announce_received(transfer, None);
    }

    /// Offers a transfer to the mempool; an accepted one has had its signature verified,
    /// which the chain remembers so the block holding it need not verify it again.
    fn admit(&mut self, transfer: &Transfer) -> Result<TxId, MempoolError> {
        let reader = self.chain.store().reader().unwrap_or_else(|error| self.fatal(error));
        let added = self.mempool.add(&reader, transfer.clone(), now_ms());
        drop(reader);
        if let Ok(txid) = &added {
            self.chain.note_verified(*txid);
        }
        added
    }

    /// A transfer sent straight to this node. The sender hears the answer before any
    /// penalty, so even a peer about to be banned learns why.
    pub(super) async fn on_direct_request(&mut self, request: InboundRequest) {
        let (response, fault) = self.receive_direct(&request.bytes).await;
        self.client.respond(request.token, response.encode()).await;
        if let Some((verdict, reason)) = fault {
            self.blame(request.peer, verdict, reason).await;
        }
    }

    /// The answer to a direct transfer, and the verdict on the sender if it broke a rule.
    async fn receive_direct(
        &mut self,
        bytes: &[u8],
    ) -> (DirectResponse, Option<(Verdict, String)>) {
        let reject = |reason: String| DirectResponse::Rejected { reason };
        let transfer = match DirectRequest::decode(bytes) {
            Ok(request) => request.transfer,
            Err(error) => {
                let verdict = verdict(Refusal::Malformed(&error));
                self.metrics.transfer("direct", verdict.label(), "malformed");
                let fault = (verdict, format!("malformed direct request: {error}"));
                return (reject(format!("malformed request: {error}")), Some(fault));
            }
        };
        if transfer.to != self.keypair.public() {
            self.metrics.transfer("direct", "rejected", "not_for_us");
            return (reject("this transaction is not addressed to this node".into()), None);
        }
        // A message this node cannot decrypt does not make the transfer invalid
        // (PROTOCOL.md §7): it is kept, and shown as unreadable.
        match self.admit(&transfer) {
            Ok(_) => {
                self.metrics.transfer("direct", "accepted", "mempool");
                self.keep_in_inbox(&transfer);
                self.publish(Topic::Transactions, transfer.encode(), "a transfer sent to us");
                (DirectResponse::Accepted, None)
            }
            Err(error @ (MempoolError::AlreadyKnown | MempoolError::AlreadyMined)) => {
                self.metrics.transfer("direct", "ignored", crate::metrics::reason(&error));
                self.keep_in_inbox(&transfer);
                (DirectResponse::Accepted, None)
            }
            Err(error) => {
                let verdict = verdict(Refusal::Mempool(&error));
                self.metrics.transfer("direct", verdict.label(), crate::metrics::reason(&error));
                let fault =
                    verdict.is_fault().then(|| (verdict, format!("invalid transfer: {error}")));
                (reject(error.to_string()), fault)
            }
        }
    }

    /// A gossiped transfer: into the mempool if valid (and the inbox if for us).
    pub(super) async fn on_gossip_transfer(
        &mut self,
        source: PeerId,
        data: &[u8],
    ) -> MessageAcceptance {
        let transfer = match Transfer::decode(data) {
            Ok(transfer) => transfer,
            Err(error) => {
                let verdict = verdict(Refusal::Malformed(&error));
                self.metrics.transfer("gossip", verdict.label(), "malformed");
                self.blame(source, verdict, format!("malformed transfer: {error}")).await;
                return super::acceptance(verdict);
            }
        };
        match self.admit(&transfer) {
            Ok(_) => {
                self.metrics.transfer("gossip", "accepted", "mempool".to_string());
                if transfer.to == self.keypair.public() {
                    self.keep_in_inbox(&transfer);
                }
                MessageAcceptance::Accept
            }
            Err(error) => {
                let verdict = verdict(Refusal::Mempool(&error));
                self.metrics.transfer("gossip", verdict.label(), crate::metrics::reason(&error));
                if verdict.is_fault() {
                    warn!(%source, %error, "rejected a gossiped transfer");
                }
                self.blame(source, verdict, format!("invalid transfer: {error}")).await;
                super::acceptance(verdict)
            }
        }
    }
}

/// How long the inbox keeps a transfer that is neither mined nor pending, as long as
/// Bitcoin Core keeps a transaction in its mempool.
pub const INBOX_UNMINED_EXPIRY: std::time::Duration =
    std::time::Duration::from_secs(14 * 24 * 3600);

/// The inbox rows (txid, received at) to drop at `now`: old enough, and not `alive` (mined
/// on the best chain, or pending).
fn expired_inbox(rows: &[(TxId, u64)], now: u64, alive: impl Fn(&TxId) -> bool) -> Vec<TxId> {
    let expiry = INBOX_UNMINED_EXPIRY.as_millis() as u64;
    rows.iter()
        .filter(|(txid, received)| received.saturating_add(expiry) < now && !alive(txid))
        .map(|(txid, _)| *txid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_old_rows_then_only_those_neither_mined_nor_pending_expire() {
        let day = 24 * 3600 * 1000;
        let now = 100 * day;
        let id = |byte| TxId::from_bytes([byte; 32]);
        let rows = [
            (id(1), now - 20 * day), // evicted long ago: expires
            (id(2), now - 20 * day), // mined: stays
            (id(3), now - day),      // recent: stays
            (id(4), now - 20 * day), // still pending: stays
        ];
        let alive = |txid: &TxId| *txid == id(2) || *txid == id(4);
        assert_eq!(expired_inbox(&rows, now, alive), vec![id(1)]);
    }
}
