//! `bramble-worker`: the agent on every board.

fn main() {
    // The same binary is each pod's init (`bramble-worker __bramble_init <state-dir>`).
    if let Some(code) = bramble_worker::runtime::run_init_if_requested() {
        std::process::exit(code);
    }
    println!("bramble-worker {}", env!("CARGO_PKG_VERSION"));
}
