//! `bramble`: the master server and the CLI client in one binary.

use clap::Parser;

fn main() {
    let cli = bramble_master::cli::Cli::parse();
    std::process::exit(bramble_master::cli::run(cli));
}
