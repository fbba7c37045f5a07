// The build ids `bramble` and `bramble-worker` must print to be started by the harness: the ids
// of the sources as they are when these tests are built.
fn main() {
    bramble_build_id::emit_expected();
}
