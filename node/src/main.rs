//! `raclette-node`: run a node (its REPL on a terminal, a daemon otherwise), or the demo.

use std::process::ExitCode;

use clap::Parser;
use raclette_node::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Demo(args)) => raclette_node::demo::run(args),
        None => raclette_node::run::run_node(&cli.node),
    }
}
