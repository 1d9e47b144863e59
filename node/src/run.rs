//! Running a node from the command line: logging, the runtime, the API, then the REPL on
//! a terminal or a daemon waiting for a signal.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::broadcast;

use crate::cli::NodeArgs;
use crate::node::{self, NodeExit, NodeHandle, Notice, Request};

/// Exit code when the arguments are wrong.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when a tracker refused the node's name.
pub const EXIT_NAME_REFUSED: u8 = 3;

fn init_logging(to_file: Option<std::fs::File>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match to_file {
        Some(file) => builder.with_ansi(false).with_writer(Mutex::new(file)).try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}

/// Runs a node with `args` until it is told to stop; returns the process exit code.
pub fn run_node(args: &NodeArgs) -> ExitCode {
    let config = match args.config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("raclette-node: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let interactive =
        !args.daemon && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if let Err(error) = std::fs::create_dir_all(&config.data_dir) {
        eprintln!("raclette-node: cannot create {}: {error}", config.data_dir.display());
        return ExitCode::FAILURE;
    }
    if interactive {
        // On a terminal the log would tear the prompt: it goes to a file instead.
        let log = config.data_dir.join("node.log");
        match std::fs::OpenOptions::new().create(true).append(true).open(&log) {
            Ok(file) => init_logging(Some(file)),
            Err(_) => init_logging(None),
        }
    } else {
        init_logging(None);
    }
    if config.trackers.is_empty() {
        eprintln!(
            "raclette-node: no --tracker given: only peers already in the local directory will be found"
        );
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("raclette-node: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let name = config.name.to_string();
    let history = config.data_dir.join("history.txt");
    let data_dir = config.data_dir.clone();
    let exit = runtime.block_on(async {
        let (handle, task) = match node::start(config) {
            Ok(started) => started,
            Err(error) => {
                eprintln!("raclette-node: {error}");
                return Err(ExitCode::FAILURE);
            }
        };
        println!("node peer id: {}", handle.peer_id);
        if let Some(address) = args.api {
            match crate::api::serve(address, &data_dir, handle.clone()).await {
                Ok((bound, token)) => {
                    if !address.ip().is_loopback() {
                        eprintln!(
                            "raclette-node: WARNING: the API listens on {bound}, beyond this \
                             machine: the token in {} is all that guards your wallet",
                            data_dir.join(crate::api::access::COOKIE_FILE).display()
                        );
                    }
                    println!("node api: http://{bound}");
                    // The token rides in the fragment, which browsers never send; it is
                    // printed only to a terminal, never into a daemon's log.
                    let page = match bound.ip().is_unspecified() {
                        true => std::net::SocketAddr::from(([127, 0, 0, 1], bound.port())),
                        false => bound,
                    };
                    if std::io::stdout().is_terminal() {
                        println!("web: http://{page}/#token={token}");
                    } else {
                        println!(
                            "web: http://{page}/#token=TOKEN (TOKEN: the line in {})",
                            data_dir.join(crate::api::access::COOKIE_FILE).display()
                        );
                    }
                }
                Err(error) => {
                    eprintln!("raclette-node: cannot serve the API on {address}: {error}");
                    return Err(ExitCode::FAILURE);
                }
            }
        }
        Ok(if interactive {
            interact(handle, task, &history, &name).await
        } else {
            daemon(handle, task).await
        })
    });
    // The REPL thread may still be blocked reading a line; do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match exit {
        Err(code) => code,
        Ok(NodeExit::Shutdown) => ExitCode::SUCCESS,
        Ok(NodeExit::NameRefused(reason)) => {
            eprintln!("raclette-node: {reason}");
            ExitCode::from(EXIT_NAME_REFUSED)
        }
    }
}

async fn stop(handle: &NodeHandle, task: tokio::task::JoinHandle<NodeExit>) -> NodeExit {
    let _ = handle.ask(Request::Shutdown).await;
    task.await.unwrap_or(NodeExit::Shutdown)
}

/// Without a terminal: run until SIGINT or SIGTERM (or the node stops by itself).
async fn daemon(handle: NodeHandle, mut task: tokio::task::JoinHandle<NodeExit>) -> NodeExit {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        exit = &mut task => exit.unwrap_or(NodeExit::Shutdown),
        _ = tokio::signal::ctrl_c() => stop(&handle, task).await,
        _ = terminate => stop(&handle, task).await,
    }
}

/// On a terminal: a progress bar while catching up at start, then the REPL.
async fn interact(
    handle: NodeHandle,
    mut task: tokio::task::JoinHandle<NodeExit>,
    history: &std::path::Path,
    name: &str,
) -> NodeExit {
    show_initial_sync(handle.notices.subscribe()).await;
    let repl = {
        let (handle, history, name) = (handle.clone(), history.to_path_buf(), name.to_string());
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || crate::repl::run(handle, runtime, &history, &name))
    };
    tokio::select! {
        exit = &mut task => exit.unwrap_or(NodeExit::Shutdown),
        result = repl => {
            if let Ok(Err(error)) = result {
                eprintln!("raclette-node: terminal error: {error}");
            }
            stop(&handle, task).await
        }
    }
}

/// Waits briefly to learn whether the node is behind; if so, shows a progress bar until
/// it has caught up.
async fn show_initial_sync(mut notices: broadcast::Receiver<Notice>) {
    let first = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match notices.recv().await {
                Ok(Notice::Syncing { height, target }) => return Some((height, target)),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .await;
    let Ok(Some((height, target))) = first else { return };
    let bar = ProgressBar::new(target);
    bar.set_style(
        ProgressStyle::with_template(
            "catching up {bar:40} {pos}/{len} blocks ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(height);
    loop {
        match notices.recv().await {
            Ok(Notice::Syncing { height, target }) => {
                bar.set_length(target);
                bar.set_position(height);
            }
            Ok(Notice::Synced { .. }) | Err(broadcast::error::RecvError::Closed) => break,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
        }
    }
    bar.finish();
}
