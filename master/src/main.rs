//! `bramble`: the master server and the CLI client in one binary.

fn main() {
    println!("bramble {}", env!("CARGO_PKG_VERSION"));
}
