//! Fuzzes the manifest parser (`bramble apply -f`): TOML text → validated objects, with no I/O.
//! Besides "no panic", for every manifest it accepts:
//! - the objects are what the API server takes unchanged: a kind clients may apply, the namespace
//!   set exactly for namespaced kinds, the server's own validation passes;
//! - they travel: an `Apply` request of them encodes and decodes to the same request;
//! - rendering them back to TOML and parsing that (with another default namespace) gives the same
//!   objects, and rendering those gives the same text.
//!
//! A parse error names the file.
#![no_main]

use bramble_client::{manifest, validate};
use bramble_wire::frame;
use bramble_wire::msg::{Request, RequestBody};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let objs = match manifest::parse(text, "fuzz.toml", "default") {
        Ok(objs) => objs,
        Err(e) => {
            assert!(e.contains("fuzz.toml"), "error without the file name: {e}");
            return;
        }
    };
    for o in &objs {
        let kind = o.kind();
        assert!(
            validate::client_may_apply(kind),
            "the parser made a {} object, which the API refuses",
            kind.as_str()
        );
        assert_eq!(
            o.meta().namespace.is_empty(),
            !kind.namespaced(),
            "the API would rewrite the namespace of {} {:?}",
            kind.as_str(),
            o.meta().name
        );
        if let Err(e) = validate::check_object(o) {
            panic!("the parser accepted an object the API would refuse: {e}");
        }
    }

    let req = Request {
        id: 1,
        body: RequestBody::Apply(objs.clone()),
    };
    let framed = frame::encode_vec(&req, usize::MAX).expect("an apply request encodes");
    let mut dec = frame::Decoder::new(Vec::new(), usize::MAX);
    let (used, body) = dec.feed(&framed).expect("own frame");
    assert_eq!(used, framed.len());
    let back: Request = frame::decode(body.expect("complete")).expect("own body decodes");
    assert_eq!(back, req, "the apply request changed on the wire");

    let rendered = match manifest::render(&objs) {
        Ok(t) => t,
        Err(e) => panic!("cannot render what the parser made: {e}\n{objs:?}"),
    };
    let again = match manifest::parse(&rendered, "rendered.toml", "elsewhere") {
        Ok(o) => o,
        Err(e) => panic!("the rendered manifest does not parse: {e}\n{rendered}"),
    };
    assert_eq!(
        again, objs,
        "render → parse changed the objects:\n{rendered}"
    );
    assert_eq!(
        manifest::render(&again).as_deref(),
        Ok(rendered.as_str()),
        "rendering is not stable"
    );
});
