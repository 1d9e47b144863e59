//! Real trackers and nodes on loopback, for end-to-end tests: each runs as its own
//! process from the workspace's binaries, in a directory the test owns, with ports
//! chosen by the OS; they are killed when the handle drops.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant};

use raclette_protocol::{NetworkParams, Target};
use serde_json::Value;

/// Paths of the binaries under test.
pub struct Binaries {
    /// `raclette-node`.
    pub node: PathBuf,
    /// `raclette-tracker`.
    pub tracker: PathBuf,
}

/// The binaries under test. `cargo test --workspace` builds them (the node and tracker
/// packages have integration tests of their own, so Cargo links their binaries first);
/// when they are missing or older than the sources, as when this package is tested or
/// benchmarked alone, they are built here. Building unconditionally would relink both
/// every time: `cargo build` resolves features differently from the test build.
pub fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let workspace =
            Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
        let exe = std::env::current_exe().expect("test binary path");
        // target/<profile>/deps/<test> → target/<profile>
        let profile_dir =
            exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
        let binaries = Binaries {
            node: profile_dir.join("raclette-node"),
            tracker: profile_dir.join("raclette-tracker"),
        };
        let sources = newest_source(&workspace);
        let stale = |binary: &Path| {
            std::fs::metadata(binary)
                .and_then(|m| m.modified())
                .map_or(true, |built| built < sources)
        };
        if stale(&binaries.node) || stale(&binaries.tracker) {
            let release = profile_dir.file_name().is_some_and(|name| name == "release");
            let mut build = raclette_node::demo::user_command(env!("CARGO").as_ref());
            build
                .args(["build", "--quiet", "--bin", "raclette-node", "--bin", "raclette-tracker"])
                .current_dir(&workspace);
            if release {
                build.arg("--release");
            }
            assert!(build.status().expect("cargo runs").success(), "building the binaries failed");
        }
        binaries
    })
}

/// The newest modification time among the sources the binaries are built from.
fn newest_source(workspace: &Path) -> std::time::SystemTime {
    fn walk(dir: &Path, newest: &mut std::time::SystemTime) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                *newest = (*newest).max(modified);
            }
        }
    }
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for dir in ["protocol/src", "node/src", "rendezvous-tracker/src"] {
        walk(&workspace.join(dir), &mut newest);
    }
    newest
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` naming
/// `what`. The timeout is only a guard against hanging.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lines of a child's stdout, read by a thread.
fn stdout_lines(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (sender, receiver) = sync_channel(1024);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

/// Reads lines until one starting with each prefix has been seen (in any order);
/// returns the rest of each, in the order of `prefixes`.
fn wait_lines(
    lines: &Receiver<String>,
    prefixes: &[&str],
    child: &mut Child,
    log: &Path,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut found: Vec<Option<String>> = vec![None; prefixes.len()];
    while found.iter().any(Option::is_none) {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                for (slot, prefix) in found.iter_mut().zip(prefixes) {
                    if slot.is_none()
                        && let Some(rest) = line.strip_prefix(prefix)
                    {
                        *slot = Some(rest.to_string());
                    }
                }
            }
            Err(_) => {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("process exited ({status}) before printing {prefixes:?}: {}", tail(log));
                }
                if Instant::now() >= deadline {
                    kill_now(child); // the caller never gets a handle that would
                    panic!("no {prefixes:?} lines: {}", tail(log));
                }
            }
        }
    }
    found.into_iter().map(|line| line.expect("all found")).collect()
}

/// The last lines of a log file, for failure messages.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn kill_now(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn terminate(child: &mut Child) {
    // SIGTERM, then SIGKILL if it does not stop in time.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    kill_now(child);
}

/// A running tracker.
pub struct TrackerProcess {
    child: Child,
    /// Its TCP multiaddr with `/p2p/<PeerId>`.
    pub address: String,
    /// Its data directory.
    pub data: PathBuf,
    /// Its API base URL.
    pub api: String,
}

impl TrackerProcess {
    /// Starts a tracker with data in `data` on an OS-chosen port.
    pub fn start(data: &Path) -> Self {
        Self::start_on(data, 0)
    }

    /// Starts a tracker listening on `port` (0: any).
    pub fn start_on(data: &Path, port: u16) -> Self {
        Self::start_with(data, &[format!("/ip4/127.0.0.1/tcp/{port}")], "127.0.0.1:0", &[])
    }

    /// Starts a tracker on loopback with exactly these extra `flags` (no
    /// `--exempt-private` unless among them).
    pub fn start_with_flags(data: &Path, flags: &[&str]) -> Self {
        let listen = ["/ip4/127.0.0.1/tcp/0".to_string()];
        Self::start_full(data, &listen, "127.0.0.1:0", &[], flags)
    }

    /// Starts a tracker on `listen` with its API on `api`, under `prefix` (e.g.
    /// `ip netns exec NS`). Tests run many nodes from one address: the per-source limits
    /// spare loopback and private addresses. Each test makes up its own network, so the
    /// tracker serves any.
    pub fn start_with(data: &Path, listen: &[String], api: &str, prefix: &[String]) -> Self {
        Self::start_full(data, listen, api, prefix, &["--exempt-private", "--network", "any"])
    }

    fn start_full(
        data: &Path,
        listen: &[String],
        api: &str,
        prefix: &[String],
        flags: &[&str],
    ) -> Self {
        std::fs::create_dir_all(data).expect("tracker data dir");
        let log = data.join("tracker.log");
        let mut command = match prefix.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&binaries().tracker);
                command
            }
            None => Command::new(&binaries().tracker),
        };
        for address in listen {
            command.args(["--listen", address]);
        }
        let mut child = command
            .args(flags)
            .args(["--api", api, "--data"])
            .arg(data)
            .env("RUST_LOG", "info,libp2p=warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("tracker starts");
        let lines = stdout_lines(&mut child);
        let found = wait_lines(&lines, &["tracker address: ", "tracker api: "], &mut child, &log);
        let (address, api) = (found[0].clone(), found[1].clone());
        std::thread::spawn(move || lines.iter().for_each(drop));
        Self { child, address, data: data.to_path_buf(), api }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its TCP port.
    pub fn port(&self) -> u16 {
        let after = self.address.split("/tcp/").nth(1).expect("a tcp address");
        after.split('/').next().and_then(|p| p.parse().ok()).expect("a port")
    }

    /// Kills it with SIGKILL.
    pub fn kill9(&mut self) {
        kill_now(&mut self.child);
    }

    /// `GET /api/peers` of the tracker.
    pub fn peers(&self) -> Value {
        http_get(&format!("{}/api/peers", self.api)).1
    }

    /// The tracker's log.
    pub fn log(&self) -> String {
        tail(&self.data.join("tracker.log"))
    }
}

impl Drop for TrackerProcess {
    fn drop(&mut self) {
        kill_now(&mut self.child);
    }
}

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into()
    })
}

fn read(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut response = response.expect("the API answers");
    let status = response.status().as_u16();
    let body = response.body_mut().read_json::<Value>().unwrap_or(Value::Null);
    (status, body)
}

/// `GET url`: status and JSON body.
pub fn http_get(url: &str) -> (u16, Value) {
    read(agent().get(url).call())
}

/// `GET url`: status and the body as text.
pub fn http_text(url: &str) -> (u16, String) {
    let mut response = agent().get(url).call().expect("the server answers");
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap_or_default())
}

/// `GET url` with `Authorization: Bearer token`: status and JSON body.
pub fn http_get_as(url: &str, token: &str) -> (u16, Value) {
    read(agent().get(url).header("authorization", format!("Bearer {token}")).call())
}

/// `POST url` with a JSON body and `Authorization: Bearer token`: status and JSON body.
pub fn http_post_as(url: &str, token: &str, body: &Value) -> (u16, Value) {
    read(agent().post(url).header("authorization", format!("Bearer {token}")).send_json(body))
}

/// How to start a node.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// Tracker addresses.
    pub trackers: Vec<String>,
    /// A network parameter file (else `--network dev`).
    pub network_file: Option<PathBuf>,
    /// Mining threads (default 1).
    pub threads: Option<usize>,
    /// More arguments.
    pub extra: Vec<String>,
    /// A command to run the node under, e.g. `ip netns exec NS`.
    pub prefix: Vec<String>,
    /// Listen addresses (default: loopback TCP, any port).
    pub listen: Vec<String>,
    /// Where the API listens (default `127.0.0.1:0`).
    pub api: Option<String>,
    /// Environment variables for the node (test switches).
    pub env: Vec<(String, String)>,
}

/// A running node, driven through its API.
pub struct NodeProcess {
    child: Child,
    /// Its name.
    pub name: String,
    /// API base URL.
    pub api: String,
    /// This start's API token, from `DATA/api.cookie`.
    pub token: String,
    /// Its PeerId.
    pub peer_id: String,
    /// Its data directory.
    pub data: PathBuf,
    options: NodeOptions,
}

impl NodeProcess {
    /// Starts `name` with its data in `data`.
    pub fn start(name: &str, data: &Path, options: &NodeOptions) -> Self {
        std::fs::create_dir_all(data).expect("node data dir");
        let log = data.join("node.log");
        let mut command = match options.prefix.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&binaries().node);
                command
            }
            None => Command::new(&binaries().node),
        };
        let listen = match options.listen.is_empty() {
            true => vec!["/ip4/127.0.0.1/tcp/0".to_string()],
            false => options.listen.clone(),
        };
        for address in &listen {
            command.args(["--listen", address]);
        }
        let api = options.api.as_deref().unwrap_or("127.0.0.1:0");
        if !api.starts_with("127.") {
            command.arg("--api-allow-remote");
        }
        command
            .args(["--name", name, "--api", api, "--daemon"])
            .args(["--threads", &options.threads.unwrap_or(1).to_string(), "--data"])
            .arg(data);
        for tracker in &options.trackers {
            command.args(["--tracker", tracker]);
        }
        match &options.network_file {
            Some(file) => command.arg("--network-file").arg(file),
            None => command.args(["--network", "dev"]),
        };
        command.args(&options.extra);
        let log_file =
            std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let mut child = command
            .env("RUST_LOG", "info,libp2p=warn,libp2p_gossipsub=error")
            .envs(options.env.iter().map(|(key, value)| (key, value)))
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("node starts");
        let lines = stdout_lines(&mut child);
        let found = wait_lines(&lines, &["node peer id: ", "node api: "], &mut child, &log);
        let (peer_id, api) = (found[0].clone(), found[1].clone());
        std::thread::spawn(move || lines.iter().for_each(drop));
        // Written before the API address is printed.
        let token = std::fs::read_to_string(data.join("api.cookie")).expect("the API cookie");
        Self {
            child,
            name: name.to_string(),
            api,
            token: token.trim().to_string(),
            peer_id,
            data: data.to_path_buf(),
            options: options.clone(),
        }
    }

    /// Starts a node expected to fail; returns its exit code and log.
    pub fn run_to_exit(
        name: &str,
        data: &Path,
        options: &NodeOptions,
        timeout: Duration,
    ) -> (Option<i32>, String) {
        std::fs::create_dir_all(data).expect("node data dir");
        let log = data.join("node.log");
        let mut command = Command::new(&binaries().node);
        command
            .args([
                "--name",
                name,
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--daemon",
                "--network",
                "dev",
                "--data",
            ])
            .arg(data);
        for tracker in &options.trackers {
            command.args(["--tracker", tracker]);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("node starts");
        let status = wait_for("the node to exit", timeout, || child.try_wait().ok().flatten());
        (status.code(), std::fs::read_to_string(&log).unwrap_or_default())
    }

    /// `GET /api/{path}`, expecting success.
    pub fn get(&self, path: &str) -> Value {
        let (status, body) = self.try_get(path);
        assert_eq!(status, 200, "GET {path} on {}: {body}", self.name);
        body
    }

    /// `GET /api/{path}`: status and body.
    pub fn try_get(&self, path: &str) -> (u16, Value) {
        http_get_as(&format!("{}/api/{path}", self.api), &self.token)
    }

    /// `POST /api/{path}`: status and body.
    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        http_post_as(&format!("{}/api/{path}", self.api), &self.token, &body)
    }

    /// `POST /api/send`, expecting success; returns (txid, status).
    pub fn send(&self, to: &str, amount: &str, message: &str) -> (String, String) {
        let (status, body) = self
            .post("send", serde_json::json!({ "to": to, "amount": amount, "message": message }));
        assert_eq!(status, 200, "{} sending to {to}: {body}", self.name);
        (
            body["txid"].as_str().expect("txid").to_string(),
            body["status"].as_str().expect("status").to_string(),
        )
    }

    /// `POST /api/mine`, waiting for the result.
    pub fn mine(&self, blocks: u32) -> Value {
        let (status, body) = self.post("mine", serde_json::json!({ "blocks": blocks }));
        assert_eq!(status, 200, "{} mining: {body}", self.name);
        body
    }

    /// Best height.
    pub fn height(&self) -> u64 {
        self.get("status")["height"].as_u64().expect("height")
    }

    /// Best tip hash.
    pub fn tip(&self) -> String {
        self.get("status")["tip"].as_str().expect("tip").to_string()
    }

    /// Confirmed balance of `name` as text.
    pub fn balance(&self, name: &str) -> String {
        self.get(&format!("balance/{name}"))["confirmed"].as_str().expect("confirmed").to_string()
    }

    /// Names this node lists in its directory, with whether each is connected.
    pub fn peer_names(&self) -> Vec<(String, bool)> {
        self.get("peers")
            .as_array()
            .expect("a list")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_string(),
                    p["connected"].as_bool().unwrap_or(false),
                )
            })
            .collect()
    }

    /// Txids in the mempool.
    pub fn mempool_ids(&self) -> Vec<String> {
        self.get("mempool")
            .as_array()
            .expect("a list")
            .iter()
            .map(|t| t["txid"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The node's log.
    pub fn log(&self) -> String {
        tail(&self.data.join("node.log"))
    }

    /// Kills it with SIGKILL.
    pub fn kill9(&mut self) {
        kill_now(&mut self.child);
    }

    /// Stops it with SIGTERM (clean shutdown).
    pub fn stop(&mut self) {
        terminate(&mut self.child);
    }

    /// Starts it again with the same data directory and options.
    pub fn restart(&mut self) {
        self.stop();
        let again = Self::start(&self.name, &self.data.clone(), &self.options.clone());
        *self = again;
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        kill_now(&mut self.child);
    }
}

/// A test network with a fixed difficulty of about `2^log2_hashes` hashes a block.
pub fn test_params(name: &str, log2_hashes: u32) -> NetworkParams {
    let bits = Target::from_expected_hashes_log2(log2_hashes).to_compact();
    NetworkParams {
        name: name.into(),
        initial_bits: bits,
        pow_limit_bits: bits,
        retarget_interval: 0,
        ..NetworkParams::dev()
    }
}

/// Writes `params` as a `--network-file` in `dir`.
pub fn network_file(dir: &Path, params: &NetworkParams) -> PathBuf {
    let path = dir.join(format!("{}.json", params.name));
    std::fs::write(&path, serde_json::to_string_pretty(params).expect("params serialise"))
        .expect("write params");
    path
}

/// A peer under the test's full control, built from the node's own network stack: it
/// can send any bytes on any protocol, for tests of what honest nodes do with garbage.
pub struct RawPeer {
    runtime: tokio::runtime::Runtime,
    /// Its network client.
    pub client: raclette_node::network::Client,
    /// Its key.
    pub keypair: raclette_protocol::Keypair,
    /// Its PeerId.
    pub peer_id: libp2p::PeerId,
}

impl RawPeer {
    /// Starts a peer on loopback for `network`, connected to `trackers` (none is fine),
    /// that answers every request with nothing.
    pub fn start(
        keypair: raclette_protocol::Keypair,
        network: raclette_protocol::NetworkId,
        trackers: &[String],
    ) -> Self {
        Self::start_answering(keypair, network, trackers, |_, _| Vec::new())
    }

    /// Like [`RawPeer::start`], answering each request with `answer(protocol, bytes)`.
    pub fn start_answering(
        keypair: raclette_protocol::Keypair,
        network: raclette_protocol::NetworkId,
        trackers: &[String],
        answer: impl Fn(raclette_node::network::InboundProtocol, &[u8]) -> Vec<u8> + Send + 'static,
    ) -> Self {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let peer_id = raclette_node::network::identity::peer_id_of(&keypair.public());
        let config = raclette_node::network::NetworkConfig {
            keypair: keypair.clone(),
            network,
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("constant")],
            trackers: trackers.iter().map(|t| t.parse().expect("tracker multiaddr")).collect(),
            external: Vec::new(),
            transport: raclette_node::network::Transport::Os,
        };
        let client = runtime.block_on(async {
            let (client, mut events, event_loop) =
                raclette_node::network::new(config, &mut Default::default())
                    .expect("network starts");
            tokio::spawn(event_loop.run());
            let answering = client.clone();
            tokio::spawn(async move {
                // Answer as told, and ignore all gossip.
                while let Some(event) = events.recv().await {
                    match event {
                        raclette_node::network::NetworkEvent::Request(request) => {
                            let bytes = answer(request.protocol, &request.bytes);
                            answering.respond(request.token, bytes).await;
                        }
                        raclette_node::network::NetworkEvent::Gossip {
                            message_id, source, ..
                        } => {
                            answering
                                .validate(
                                    message_id,
                                    source,
                                    libp2p::gossipsub::MessageAcceptance::Ignore,
                                )
                                .await;
                        }
                        _ => {}
                    }
                }
            });
            client
        });
        Self { runtime, client, keypair, peer_id }
    }

    /// Dials a multiaddr (with `/p2p/...`).
    pub fn dial(&self, address: &str) {
        let address: libp2p::Multiaddr = address.parse().expect("a multiaddr");
        let peer = raclette_node::network::peer_of(&address);
        self.runtime.block_on(self.client.dial(peer, vec![address]));
    }

    /// Sends raw bytes as a request and waits for the raw answer.
    pub fn request(
        &self,
        peer: &str,
        protocol: raclette_node::network::Protocol,
        bytes: Vec<u8>,
    ) -> Result<Vec<u8>, raclette_node::network::RequestError> {
        let peer: libp2p::PeerId = peer.parse().expect("a PeerId");
        self.runtime.block_on(self.client.request(peer, protocol, bytes))
    }

    /// Sends all `requests` at once (each on its own stream) and returns every answer,
    /// in the order of the requests.
    pub fn request_all(
        &self,
        peer: &str,
        protocol: raclette_node::network::Protocol,
        requests: Vec<Vec<u8>>,
    ) -> Vec<Result<Vec<u8>, raclette_node::network::RequestError>> {
        let peer: libp2p::PeerId = peer.parse().expect("a PeerId");
        self.runtime.block_on(async {
            let pending: Vec<_> = requests
                .into_iter()
                .map(|bytes| {
                    let client = self.client.clone();
                    tokio::spawn(async move { client.request(peer, protocol, bytes).await })
                })
                .collect();
            let mut answers = Vec::with_capacity(pending.len());
            for answer in pending {
                answers.push(answer.await.expect("the request task does not panic"));
            }
            answers
        })
    }

    /// Publishes raw bytes on a topic, retrying until some peer is subscribed.
    pub fn publish(&self, topic: raclette_node::network::Topic, bytes: Vec<u8>) {
        wait_for("a gossip peer to publish to", Duration::from_secs(30), || {
            self.runtime.block_on(self.client.publish(topic, bytes.clone())).ok()
        });
    }

    /// PeerIds connected now.
    pub fn connected(&self) -> Vec<String> {
        self.runtime
            .block_on(self.client.connections())
            .into_iter()
            .map(|(peer, _)| peer.to_string())
            .collect()
    }
}

/// The resident memory of process `pid` in MiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}
