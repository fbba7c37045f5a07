//! An upgraded worker reads the files older builds left (`tests/fixtures/state-v0/`, captured
//! byte for byte from the writers of the last unversioned build, and `state-v1/`, the same values
//! as the first versioned build wrote them, with protocol 3's pod spec and protocol 4's endpoints) and migrates its own. When a
//! change to a persisted type breaks this test, bump that file's version and keep a decoder for
//! the old one (see `bramble_worker::persist`).

#[path = "state_fixture_values/mod.rs"]
mod values;

use std::path::{Path, PathBuf};

use bramble_wire::msg::PodSubnet;
use bramble_wire::objects::{Endpoints, PodStatus};
use bramble_worker::agent::{credential, state::StateFile};
use bramble_worker::persist::{self, PodDir, RunDir, StateDir};
use bramble_worker::runtime::init::InitConfig;

/// The fixture trees of every earlier version, with that version.
fn fixtures() -> [(u32, PathBuf); 2] {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    [(0, dir.join("state-v0")), (1, dir.join("state-v1"))]
}

/// A copy of the fixture tree (migration rewrites files).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

#[test]
fn the_agent_reads_and_migrates_its_older_files() {
    for (version, fixtures) in fixtures() {
        reads_and_migrates(version, &fixtures);
    }
}

fn reads_and_migrates(version: u32, fixtures: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(fixtures, tmp.path());
    let state = StateDir::new(tmp.path().join("state"));

    let mut f = StateFile::new(&state);
    assert_eq!(
        f.load().unwrap(),
        Some(values::assignment()),
        "assignment v{version}"
    );
    let migrated = std::fs::read(state.assignment()).unwrap();
    let (v, again) = persist::decode_postcard(persist::ASSIGNMENT, &migrated).unwrap();
    assert_eq!(
        (v, Some(again)),
        (persist::ASSIGNMENT_V, Some(values::assignment()))
    );
    assert!(
        !f.save(&values::assignment()).unwrap(),
        "nothing left to write"
    );

    assert_eq!(
        credential::load(&state).as_deref(),
        Some(values::CREDENTIAL)
    );
    assert!(
        std::fs::read(state.credential())
            .unwrap()
            .starts_with(b"bramble credential v1\n")
    );

    let (v, subnets) = persist::read_postcard::<Vec<PodSubnet>>(persist::NETWORK, &state.network())
        .unwrap()
        .unwrap();
    assert_eq!((v, subnets), (version, values::subnets()));
    let (v, eps) = persist::read_postcard::<Vec<Endpoints>>(persist::ENDPOINTS, &state.endpoints())
        .unwrap()
        .unwrap();
    assert_eq!((v, eps), (version, values::endpoints()));
}

#[test]
fn the_agent_reads_a_pod_run_dir_of_an_older_build() {
    for (version, fixtures) in fixtures() {
        reads_run_dir(version, &fixtures);
    }
}

fn reads_run_dir(version: u32, fixtures: &Path) {
    let run = RunDir::new(fixtures.join("run"));
    let pod = PodDir::new(&run.pods(), values::POD_KEY);
    let (v, cfg) = persist::read_postcard::<InitConfig>(persist::POD_CONFIG, &pod.config())
        .unwrap()
        .unwrap();
    assert_eq!((v, cfg), (version, values::init_config()));
    let (v, st) = persist::read_postcard::<PodStatus>(persist::POD_STATUS, &pod.status())
        .unwrap()
        .unwrap();
    assert_eq!((v, st), (version, values::status()));
    assert_eq!(pod.read_init(), Some(values::INIT));
    assert_eq!(pod.read_ip().as_deref(), Some(values::IP));
}

#[test]
fn a_file_of_a_newer_build_is_refused_not_misread() {
    let bytes = b"bramble assignment v99\n\x00";
    assert!(persist::decode(persist::ASSIGNMENT, bytes).is_err());
}

#[test]
fn the_previous_format_of_todays_values_is_the_v1_fixture() {
    let (_, v1) = &fixtures()[1];
    let now = persist::encode_postcard(persist::ASSIGNMENT, &values::assignment()).unwrap();
    assert_eq!(
        persist::previous_format(persist::ASSIGNMENT, &now).unwrap(),
        std::fs::read(v1.join("state/assignment.bin")).unwrap()
    );
    let now = persist::encode_postcard(persist::POD_CONFIG, &values::init_config()).unwrap();
    let pod = PodDir::new(&RunDir::new(v1.join("run")).pods(), values::POD_KEY);
    assert_eq!(
        persist::previous_format(persist::POD_CONFIG, &now).unwrap(),
        std::fs::read(pod.config()).unwrap()
    );
    let now = persist::encode_postcard(persist::ENDPOINTS, &values::endpoints()).unwrap();
    assert_eq!(
        persist::previous_format(persist::ENDPOINTS, &now).unwrap(),
        std::fs::read(v1.join("state/endpoints")).unwrap()
    );
}
