//! The worker's persisted files in the format of this build, byte for byte, captured into
//! `tests/fixtures/state-v0/` (run with `--ignored`): the files an upgraded worker finds.

#[path = "state_fixture_values/mod.rs"]
mod values;

use std::path::Path;

#[test]
#[ignore = "writes the fixtures of the current format; run once per format change"]
fn capture_v0_fixtures() {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state-v0");
    let state = out.join("state");
    let run = out.join("run/pods").join(values::POD_KEY);
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&run).unwrap();
    // The agent's own writers.
    let mut f = bramble_worker::agent::state::StateFile::new(&state);
    f.save(&values::assignment()).unwrap();
    bramble_worker::agent::credential::save(&state, values::CREDENTIAL).unwrap();
    // As `apply_network` and the proxy's `save` write them (private functions): postcard.
    std::fs::write(
        state.join("network"),
        postcard::to_allocvec(&values::subnets()).unwrap(),
    )
    .unwrap();
    std::fs::write(
        state.join("endpoints"),
        postcard::to_allocvec(&values::endpoints()).unwrap(),
    )
    .unwrap();
    // A pod's run dir as `start_pod` and the init write it.
    std::fs::write(
        run.join("config"),
        postcard::to_stdvec(&values::init_config()).unwrap(),
    )
    .unwrap();
    std::fs::write(
        run.join("status"),
        postcard::to_stdvec(&values::status()).unwrap(),
    )
    .unwrap();
    let (pid, ticks, ms) = values::INIT;
    std::fs::write(run.join("init"), format!("{pid} {ticks} {ms}\n")).unwrap();
    std::fs::write(run.join("ip"), format!("{}\n", values::IP)).unwrap();
}
