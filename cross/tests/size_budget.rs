//! The size budget of the board binaries as a failing check of the test command, not only a
//! line in `cargo cross build`'s report: the aarch64 worker, release, stripped, is static and at
//! most 3 MB (DESIGN §12). Needs the cross toolchain of `cargo cross build` (cross/README.md).

use bramble_cross::build::{self, Bin};

#[test]
fn the_aarch64_worker_is_static_and_within_its_budget() {
    let board = bramble_boards::find_in(bramble_boards::builtin(), "pi4b").unwrap();
    assert_eq!(board.target, "aarch64-unknown-linux-musl");
    let built = build::build(board, true, &[Bin::Worker])
        .expect("cross-build the pi4b worker (see cross/README.md for the toolchain)");
    let w = &built[0];
    eprint!("{}", build::report(board, &built));
    assert!(
        !w.elf.dynamic,
        "{} is dynamically linked",
        w.stripped.display()
    );
    let max = Bin::Worker.budget().expect("the worker has a size budget");
    assert!(
        w.stripped_size <= max,
        "bramble-worker for {} is {} B stripped, over its {max} B budget: {}",
        board.target,
        w.stripped_size,
        w.stripped.display()
    );
}
