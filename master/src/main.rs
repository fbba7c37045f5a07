//! `bramble`: the master server and the CLI client in one binary.

use clap::Parser;

fn main() {
    // The sources it was built from (see tests/build-id): the test harness compares it.
    if std::env::args().nth(1).as_deref() == Some("--build-id") {
        println!("{}", env!("BRAMBLE_BUILD_ID"));
        return;
    }
    let cli = bramble_master::cli::Cli::parse();
    std::process::exit(bramble_master::cli::run(cli));
}
