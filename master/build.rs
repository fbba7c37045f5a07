// `sqlx::migrate!` embeds the migrations folder at compile time; the build id covers it (and
// reruns this script when a migration is added).
fn main() {
    bramble_build_id::emit(bramble_build_id::BRAMBLE);
}
