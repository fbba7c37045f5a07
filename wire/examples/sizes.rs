//! Prints the encoded frame size (length prefix + body) of typical messages.
//!
//! `cargo run -p bramble-wire --example sizes`

// The same fixed values the golden tests pin.
#[path = "../tests/common/mod.rs"]
mod common;

use bramble_wire::frame;
use bramble_wire::msg::{NodeDown, NodeUp};
use bramble_wire::objects::Object;
use serde::Serialize;

fn frame_len<T: Serialize>(msg: &T) -> usize {
    frame::encode_vec(msg, usize::MAX).expect("encodes").len()
}

fn main() {
    let rows = [
        (
            "heartbeat (NodeUp::Heartbeat)",
            frame_len(&NodeUp::Heartbeat(common::heartbeat())),
        ),
        (
            "node registration (NodeUp::Register, pi4b-kitchen, 2 labels)",
            frame_len(&NodeUp::Register(Box::new(common::node_info()))),
        ),
        (
            "typical pod spec (Object::Pod, 1 process, 32 MiB, 250m)",
            frame_len(&Object::Pod(common::hello_pod("hello"))),
        ),
        (
            "full assignment of 10 such pods (NodeDown::Assign)",
            frame_len(&NodeDown::Assign(common::assignment(10))),
        ),
    ];
    for (what, len) in rows {
        println!("{len:>6} bytes  {what}");
    }
    println!(
        "(frame = varint length prefix + postcard body; the default maximum is {} bytes)",
        bramble_wire::DEFAULT_MAX_FRAME
    );
}
