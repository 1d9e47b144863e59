//! `raclette-tracker`: the meeting point of a Raclette network.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use libp2p::Multiaddr;
use raclette_node::network::{Transport, identity};
use raclette_node::store::LmdbStore;
use raclette_tracker::addresses::AddressFile;
use raclette_tracker::directory::{CARD_EXPIRY, Directory};
use raclette_tracker::limits::{MAX_CARDS_PER_SOURCE, SourceLimits};
use raclette_tracker::networks::{DEFAULT_NETWORKS, Networks};
use raclette_tracker::server::{Connected, Tracker};

/// The Raclette tracker: rendezvous server, peer directory and relay.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Address to listen on (repeatable).
    #[arg(long, env = "RACLETTE_TRACKER_LISTEN", value_delimiter = ',', default_values = ["/ip4/0.0.0.0/tcp/7000", "/ip4/0.0.0.0/udp/7000/quic-v1"])]
    listen: Vec<Multiaddr>,
    /// This tracker's public address, if it has one the host cannot see (repeatable).
    #[arg(long = "external-address", env = "RACLETTE_TRACKER_EXTERNAL", value_delimiter = ',')]
    external: Vec<Multiaddr>,
    /// Directory for the key file, the directory database and `addresses.txt`.
    #[arg(long, env = "RACLETTE_TRACKER_DATA", default_value = "raclette-tracker-data")]
    data: PathBuf,
    /// Serve the directory as JSON on this address (e.g. 127.0.0.1:7080).
    #[arg(long, env = "RACLETTE_TRACKER_API")]
    api: Option<SocketAddr>,
    /// The most distinct keys one source address may register cards for.
    #[arg(long = "max-cards-per-source", env = "RACLETTE_TRACKER_MAX_CARDS_PER_SOURCE", default_value_t = MAX_CARDS_PER_SOURCE)]
    max_cards_per_source: usize,
    /// Exempt loopback and private addresses from the per-source limits (tests, LANs
    /// where many nodes share an address).
    #[arg(long = "exempt-private", env = "RACLETTE_TRACKER_EXEMPT_PRIVATE")]
    exempt_private: bool,
    /// A network whose cards this tracker keeps: dev, main, the path of a network file,
    /// or any (repeatable; cards, listings and lookups of other networks are refused).
    #[arg(long, env = "RACLETTE_TRACKER_NETWORK", value_delimiter = ',', default_values = DEFAULT_NETWORKS)]
    network: Vec<String>,
    /// Days after which a card whose key was not seen (registered or connected) expires.
    #[arg(long = "card-expiry-days", env = "RACLETTE_TRACKER_CARD_EXPIRY_DAYS", default_value_t = CARD_EXPIRY.as_secs() / 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    card_expiry_days: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("raclette-tracker: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let networks = Networks::parse(&cli.network).map_err(anyhow::Error::msg)?;
    let keypair = identity::load_or_create(&cli.data.join("tracker.key"))?;
    let store = LmdbStore::open(&cli.data.join("directory"))?;
    let directory = Arc::new(Directory::new(store));
    let connected = Connected::default();
    let mut registry = prometheus_client::registry::Registry::with_prefix("raclette_tracker");
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let tracker = Tracker::new(
            &keypair,
            &cli.listen,
            &cli.external,
            directory.clone(),
            connected.clone(),
            &mut registry,
            (raclette_tracker::relay::config(cli.exempt_private), Transport::Os),
        )?
        .serving(networks.clone())
        .with_card_expiry(Duration::from_secs(cli.card_expiry_days * 86_400))
        .with_address_file(AddressFile::new(cli.data.join("addresses.txt"))?)
        .with_limits(SourceLimits::new(cli.max_cards_per_source, cli.exempt_private));
        println!("tracker peer id: {}", tracker.peer_id());
        println!("tracker networks: {networks}");
        if let Some(address) = cli.api {
            tokio::spawn(async move {
                if let Err(error) =
                    raclette_tracker::api::serve(address, directory, connected, registry).await
                {
                    eprintln!("raclette-tracker: api: {error:#}");
                    std::process::exit(1);
                }
            });
        }
        tracker.run().await;
        Ok(())
    })
}
