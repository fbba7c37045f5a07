//! Fuzzes everything that reads bytes from a peer: the length-prefix decoder (with a `Vec` and a
//! heapless buffer, in arbitrary chunkings), message decoding of every completed body, and the
//! COBS path.
//!
//! Input layout: `[max selector] [8 chunk sizes] [stream...]`. Besides "no panic", it checks:
//! - the chunking never changes the frames or the error (compared with whole-buffer feeding);
//! - the `Vec` and heapless decoders agree;
//! - no body exceeds the maximum;
//! - a message that decodes re-encodes and decodes to the same value.
#![no_main]

use std::fmt::Debug;

use bramble_wire::frame::{self, CobsDecoder, Decoder, FrameBuf};
use bramble_wire::msg::{NodeDown, NodeUp, Request, Response};
use bramble_wire::{DeviceUp, Handshake, WireError};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

const MAXES: [usize; 8] = [0, 1, 5, 16, 64, 127, 128, 256];
const HEAPLESS: usize = 256;

/// What a decoder made of a stream: the bodies, then the error that stopped it (if any).
type Outcome = (Vec<Vec<u8>>, Option<WireError>);

fn run<B: FrameBuf>(mut dec: Decoder<B>, stream: &[u8], chunks: &[usize]) -> Outcome {
    let max = dec.max();
    let mut bodies = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let n = chunks[i % chunks.len()].min(stream.len() - pos);
        i += 1;
        let mut chunk = &stream[pos..pos + n];
        pos += n;
        loop {
            match dec.feed(chunk) {
                Ok((used, body)) => {
                    assert!(used <= chunk.len());
                    chunk = &chunk[used..];
                    match body {
                        Some(b) => {
                            assert!(b.len() <= max, "body of {} bytes over max {max}", b.len());
                            bodies.push(b.to_vec());
                        }
                        None => {
                            assert!(chunk.is_empty(), "decoder stopped early without a frame");
                            break;
                        }
                    }
                    if chunk.is_empty() {
                        break;
                    }
                }
                Err(e) => {
                    // Failed decoders stay failed.
                    assert!(dec.feed(b"\x01\x00").is_err());
                    return (bodies, Some(e));
                }
            }
        }
    }
    (bodies, None)
}

fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + Debug>(body: &[u8]) {
    let Ok(msg) = frame::decode::<T>(body) else {
        return;
    };
    let framed = frame::encode_vec(&msg, usize::MAX).expect("a decoded message re-encodes");
    let mut dec = Decoder::new(Vec::new(), usize::MAX);
    let (used, again) = dec.feed(&framed).expect("own frame");
    assert_eq!(used, framed.len());
    let back: T = frame::decode(again.expect("complete")).expect("own body decodes");
    assert_eq!(back, msg);

    let mut cobs = vec![0u8; framed.len() * 2 + 16];
    let enc = frame::encode_cobs(&msg, &mut cobs).expect("cobs buffer is large enough");
    let n = enc.len();
    assert_eq!(enc[n - 1], 0);
    assert!(!enc[..n - 1].contains(&0));
    let back: T = frame::decode_cobs(&mut enc[..n - 1]).expect("own cobs decodes");
    assert_eq!(back, msg);
}

fn decode_all(body: &[u8]) {
    roundtrip::<Handshake>(body);
    roundtrip::<DeviceUp>(body);
    roundtrip::<NodeUp>(body);
    roundtrip::<NodeDown>(body);
    roundtrip::<Request>(body);
    roundtrip::<Response>(body);
    let _ = Handshake::check_hello_version(body);
}

fn cobs(stream: &[u8], chunks: &[usize]) {
    let mut dec = CobsDecoder::<HEAPLESS>::default();
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let n = chunks[i % chunks.len()].max(1).min(stream.len() - pos);
        i += 1;
        let mut chunk = &stream[pos..pos + n];
        pos += n;
        while !chunk.is_empty() {
            let (used, msg) = dec.feed::<Handshake>(chunk);
            assert!(used >= 1 && used <= chunk.len());
            if msg.is_some() {
                assert_eq!(chunk[used - 1], 0, "a frame ends at a delimiter");
            }
            chunk = &chunk[used..];
        }
    }
    // Raw in-place decoding of each zero-delimited piece.
    for piece in stream.split(|&b| b == 0) {
        let mut piece = piece.to_vec();
        if let Ok(n) = frame::cobs_decode_in_place(&mut piece) {
            assert!(n <= piece.len());
            decode_all(&piece[..n]);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let max = MAXES[data[0] as usize % MAXES.len()];
    // Chunk sizes 0..=31 (0 = an empty feed, which must be harmless).
    let chunks: Vec<usize> = data[1..9].iter().map(|&b| (b % 32) as usize).collect();
    let stream = &data[9..];
    if chunks.iter().all(|&c| c == 0) {
        return;
    }

    let whole = run(Decoder::new(Vec::new(), max), stream, &[usize::MAX]);
    let chunked = run(Decoder::new(Vec::new(), max), stream, &chunks);
    assert_eq!(whole, chunked, "chunking changed the outcome");
    let small = run(
        Decoder::new(heapless::Vec::<u8, HEAPLESS>::new(), max),
        stream,
        &chunks,
    );
    assert_eq!(whole, small, "vec and heapless decoders disagree");
    // A Vec decoder with a large bound sees larger frames too.
    let (big, _) = run(Decoder::new(Vec::new(), 1 << 20), stream, &chunks);

    for body in whole.0.iter().chain(big.iter()) {
        decode_all(body);
    }
    decode_all(stream);
    cobs(stream, &chunks);
});
