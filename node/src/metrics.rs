//! What a node measures, for `GET /metrics` in Prometheus text format: the chain, peers,
//! mempool and miner (read from the node when scraped), verdicts on every block and
//! transfer that arrives, sync traffic and request latencies (counted as they happen), and
//! libp2p's own figures (connections, gossip, identify, ping, relay, hole punching).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How a block or transfer that arrived was judged.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Verdict {
    /// Where it came from: `gossip`, `direct` or `sync`.
    pub source: &'static str,
    /// `accepted`, `ignored` or `rejected`.
    pub outcome: &'static str,
    /// Why, in a few words from a fixed set (an error's variant, `best_chain`...).
    pub reason: String,
}

/// A label for the kind of link or request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// The kind.
    pub kind: &'static str,
}

/// A label for how a peer is connected.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabel {
    /// `direct` or `relayed`.
    pub link: &'static str,
}

/// The node's own series; cheap to clone (each is shared).
#[derive(Clone, Debug)]
pub struct NodeMetrics {
    /// Best height.
    pub height: Gauge,
    /// Cumulative work of the best chain.
    pub work: Gauge<f64, AtomicU64>,
    /// Connected peers by link (`direct`, `relayed`).
    pub peers: Family<LinkLabel, Gauge>,
    /// Transactions in the mempool.
    pub mempool_transactions: Gauge,
    /// Their encoded size.
    pub mempool_bytes: Gauge,
    /// The miner's hash rate (0 when idle).
    pub hash_rate: Gauge<f64, AtomicU64>,
    /// Size of the LMDB data file.
    pub store_bytes: Gauge,
    /// Blocks that arrived, by verdict.
    pub blocks: Family<Verdict, Counter>,
    /// Transfers that arrived, by verdict.
    pub transfers: Family<Verdict, Counter>,
    /// Sync pages received, by kind (`headers`, `blocks`).
    pub sync_pages: Family<Kind, Counter>,
    /// Bytes of sync pages received.
    pub sync_bytes: Counter,
}

impl NodeMetrics {
    /// Registers the node's series in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            height: Gauge::default(),
            work: Gauge::default(),
            peers: Family::default(),
            mempool_transactions: Gauge::default(),
            mempool_bytes: Gauge::default(),
            hash_rate: Gauge::default(),
            store_bytes: Gauge::default(),
            blocks: Family::default(),
            transfers: Family::default(),
            sync_pages: Family::default(),
            sync_bytes: Counter::default(),
        };
        registry.register("height", "Height of the best chain", metrics.height.clone());
        registry.register("work", "Cumulative work of the best chain", metrics.work.clone());
        registry.register("peers", "Connected peers, by link", metrics.peers.clone());
        registry.register(
            "mempool_transactions",
            "Transactions waiting in the mempool",
            metrics.mempool_transactions.clone(),
        );
        registry.register(
            "mempool_bytes",
            "Encoded size of the mempool's transactions",
            metrics.mempool_bytes.clone(),
        );
        registry.register(
            "hash_rate",
            "The miner's hashes per second (0 when idle)",
            metrics.hash_rate.clone(),
        );
        registry.register("store_bytes", "Size of the LMDB data file", metrics.store_bytes.clone());
        registry.register("blocks", "Blocks that arrived, by verdict", metrics.blocks.clone());
        registry.register(
            "transfers",
            "Transfers that arrived, by verdict",
            metrics.transfers.clone(),
        );
        registry.register("sync_pages", "Sync pages received", metrics.sync_pages.clone());
        registry.register("sync_bytes", "Bytes of sync pages received", metrics.sync_bytes.clone());
        // Request latencies are the network loop's (`network::new`), which times them.
        metrics
    }

    /// Counts a block that arrived.
    pub fn block(&self, source: &'static str, outcome: &'static str, reason: impl Into<String>) {
        self.blocks.get_or_create(&Verdict { source, outcome, reason: reason.into() }).inc();
    }

    /// Counts a transfer that arrived.
    pub fn transfer(&self, source: &'static str, outcome: &'static str, reason: impl Into<String>) {
        self.transfers.get_or_create(&Verdict { source, outcome, reason: reason.into() }).inc();
    }
}

/// The registry a node's series live in, shared with the API that encodes it.
pub type SharedRegistry = Arc<Registry>;

/// A label for an error: the names of its variants, outermost first, without their
/// fields (`Header.TimeTooOld`), so labels stay few whatever the values in them.
pub fn reason(error: &impl std::fmt::Debug) -> String {
    let debug = format!("{error:?}");
    let mut names = Vec::new();
    let mut rest = debug.as_str();
    loop {
        let name: String =
            rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_uppercase()) {
            break;
        }
        rest = &rest[name.len()..];
        names.push(name);
        match rest.strip_prefix('(') {
            Some(inner) => rest = inner,
            None => break,
        }
    }
    if names.is_empty() { "other".into() } else { names.join(".") }
}

/// Encodes `registry` as Prometheus text.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)
        .expect("writing to a String cannot fail");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    #[allow(dead_code)] // read through Debug
    enum Inner {
        TimeTooOld { median: u64, time: u64 },
        BadPow,
    }

    #[derive(Debug)]
    #[allow(dead_code)] // read through Debug
    enum Outer {
        Header(Inner),
        Overspend(u64),
    }

    #[test]
    fn given_nested_errors_then_the_label_is_their_variant_names_only() {
        assert_eq!(
            reason(&Outer::Header(Inner::TimeTooOld { median: 5, time: 3 })),
            "Header.TimeTooOld"
        );
        assert_eq!(reason(&Outer::Header(Inner::BadPow)), "Header.BadPow");
        assert_eq!(reason(&Outer::Overspend(7)), "Overspend");
        assert_eq!(reason(&"text"), "other");
    }

    #[test]
    fn given_counted_verdicts_then_the_text_format_carries_them() {
        let mut registry = Registry::with_prefix("raclette");
        let metrics = NodeMetrics::register(&mut registry);
        metrics.height.set(7);
        metrics.block("gossip", "accepted", "best_chain");
        metrics.block("gossip", "accepted", "best_chain");
        metrics.transfer("direct", "rejected", "Overspend");
        let text = encode(&registry);
        assert!(text.contains("raclette_height 7"), "{text}");
        assert!(
            text.contains(
                "raclette_blocks_total{source=\"gossip\",outcome=\"accepted\",reason=\"best_chain\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("outcome=\"rejected\",reason=\"Overspend\"} 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
