// The build id `bramble --build-id` prints: the test harness refuses a `bramble` built from other
// sources than the tests (see tests/build-id).
fn main() {
    bramble_build_id::emit(bramble_build_id::BRAMBLE);
}
