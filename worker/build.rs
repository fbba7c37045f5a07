// The build id `bramble-worker --build-id` prints: the test harness refuses a worker built from
// other sources than the tests.
fn main() {
    bramble_build_id::emit(bramble_build_id::BRAMBLE_WORKER);
}
