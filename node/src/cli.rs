//! The command line: flags (also from `RACLETTE_*` environment variables) and the
//! `demo` subcommand.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use libp2p::Multiaddr;
use raclette_protocol::{Amount, NetworkParams, PeerName};

use crate::node::NodeConfig;

/// A Raclette node: a small proof-of-work blockchain you can read and run among friends.
#[derive(Parser, Debug)]
#[command(name = "raclette-node", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Something other than running a node.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Running a node.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// A local network in one command: a tracker, two background peers (bob and carol)
    /// and your own REPL, on the dev network; everything is cleaned up on exit.
    Demo(DemoArgs),
}

/// `demo` options.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Your name in the demo.
    #[arg(long, default_value = "alice")]
    pub name: String,
    /// Mining threads for your node.
    #[arg(long)]
    pub threads: Option<usize>,
}

/// The default minimum relay fee, a tenth of the fee `send` pays by default.
pub const DEFAULT_MIN_RELAY_FEE: &str = "0.0001";

/// The flags of a node.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// Your name in the directory: 1-32 letters, digits, '-' or '_'.
    #[arg(long, env = "RACLETTE_NAME")]
    pub name: Option<String>,
    /// A tracker's address ending in /p2p/<PeerId> (repeatable).
    #[arg(long = "tracker", env = "RACLETTE_TRACKER", value_delimiter = ',')]
    pub trackers: Vec<Multiaddr>,
    /// Address to listen on (repeatable) [default: all interfaces, TCP and QUIC, any port].
    #[arg(long, env = "RACLETTE_LISTEN", value_delimiter = ',')]
    pub listen: Vec<Multiaddr>,
    /// An address others can reach you at that this node cannot see itself, e.g. a
    /// forwarded port: /ip4/203.0.113.7/tcp/4001 (repeatable).
    #[arg(long = "external-address", env = "RACLETTE_EXTERNAL_ADDRESS", value_delimiter = ',')]
    pub external: Vec<Multiaddr>,
    /// Data directory (key, chain, history) [default: raclette-data/NAME].
    #[arg(long, env = "RACLETTE_DATA")]
    pub data: Option<PathBuf>,
    /// Serve the JSON API on this address, e.g. 127.0.0.1:8080 (port 0 picks one); every
    /// request needs the token the node writes to DATA/api.cookie at each start.
    #[arg(long, env = "RACLETTE_API")]
    pub api: Option<SocketAddr>,
    /// Let --api listen beyond loopback; the token is then the only guard.
    #[arg(long = "api-allow-remote", env = "RACLETTE_API_ALLOW_REMOTE")]
    pub api_allow_remote: bool,
    /// The least fee a transfer must pay for this node to take it into its mempool and
    /// relay it (policy, not consensus: a block may hold cheaper ones).
    #[arg(long = "min-relay-fee", env = "RACLETTE_MIN_RELAY_FEE", default_value = DEFAULT_MIN_RELAY_FEE)]
    pub min_relay_fee: Amount,
    /// Mining threads [default: all cores].
    #[arg(long, env = "RACLETTE_THREADS")]
    pub threads: Option<usize>,
    /// The network: dev (a block in about a second) or main.
    #[arg(long, env = "RACLETTE_NETWORK", default_value = "main")]
    pub network: String,
    /// A test network's parameters (JSON with the keys of PROTOCOL.md §9); overrides
    /// --network.
    #[arg(long, env = "RACLETTE_NETWORK_FILE")]
    pub network_file: Option<PathBuf>,
    /// Run without the REPL even on a terminal (drive it through --api).
    #[arg(long)]
    pub daemon: bool,
}

/// A test network's parameters from a JSON file (the keys of PROTOCOL.md §9), checked;
/// or one sentence saying what is wrong.
pub fn read_network_file(path: &Path) -> Result<NetworkParams, String> {
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let params: NetworkParams =
        serde_json::from_str(&text).map_err(|error| format!("{}: {error}", path.display()))?;
    params.validate().map_err(|error| format!("{}: {error}", path.display()))?;
    Ok(params)
}

impl NodeArgs {
    /// The node configuration, or one sentence saying what is wrong.
    pub fn config(&self) -> Result<NodeConfig, String> {
        let name =
            self.name.as_deref().ok_or("--name is required: choose the name others will see")?;
        let name = PeerName::new(name).map_err(|error| error.to_string())?;
        if let Some(api) = self.api
            && !api.ip().is_loopback()
            && !self.api_allow_remote
        {
            return Err(format!(
                "--api {api} would listen beyond this machine, where the token in DATA/{} is \
                 all that guards the wallet; use a loopback address, or add --api-allow-remote",
                crate::api::access::COOKIE_FILE
            ));
        }
        let params = match &self.network_file {
            Some(path) => read_network_file(path)?,
            None => NetworkParams::by_name(&self.network)
                .ok_or_else(|| format!("unknown network '{}': use dev or main", self.network))?,
        };
        let listen = if self.listen.is_empty() {
            vec![
                "/ip4/0.0.0.0/tcp/0".parse().expect("constant address"),
                "/ip4/0.0.0.0/udp/0/quic-v1".parse().expect("constant address"),
            ]
        } else {
            self.listen.clone()
        };
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
            .max(1);
        let data_dir =
            self.data.clone().unwrap_or_else(|| PathBuf::from("raclette-data").join(name.as_str()));
        Ok(NodeConfig {
            name,
            data_dir,
            params,
            listen,
            trackers: self.trackers.clone(),
            external: self.external.clone(),
            threads,
            min_relay_fee: self.min_relay_fee,
            ignore_block_gossip: std::env::var_os("RACLETTE_TEST_IGNORE_BLOCK_GOSSIP").is_some(),
            status_poll: std::env::var("RACLETTE_TEST_STATUS_POLL_SECS")
                .ok()
                .and_then(|secs| secs.parse().ok())
                .map_or(crate::node::STATUS_POLL_EVERY, std::time::Duration::from_secs),
        })
    }
}
