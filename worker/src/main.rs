//! `bramble-worker`: the agent on every board.

fn main() {
    println!("bramble-worker {}", env!("CARGO_PKG_VERSION"));
}
