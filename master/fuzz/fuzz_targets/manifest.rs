//! Fuzzes the manifest parser (`bramble apply -f`): TOML text → validated objects, with no I/O.
//! Besides "no panic": every object it accepts passes the master's own validation again (what the
//! API server re-checks), and a parse error names the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match bramble_client::manifest::parse(text, "fuzz.toml", "default") {
        Ok(objs) => {
            for o in &objs {
                if let Err(e) = bramble_client::validate::check_object(o) {
                    panic!("the parser accepted an object the API would refuse: {e}");
                }
            }
        }
        Err(e) => assert!(e.contains("fuzz.toml"), "error without the file name: {e}"),
    }
});
