//! Framing: length-prefix decoding, its errors, COBS, and the async helpers.

mod common;

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bramble_wire::frame::{self, CobsDecoder, Decoder};
use bramble_wire::io::{self as wire_io, FrameReader, IoError};
use bramble_wire::msg::{NodeDown, NodeUp, Request, RequestBody, Response, ResponseBody};
use bramble_wire::objects::{Kind, Object};
use bramble_wire::{
    DEFAULT_MAX_FRAME, DeviceUp, Handshake, Heartbeat, Hello, PROTOCOL_VERSION, Role, WireError,
};
use common::{TrackingBuf, feed_chunked, heartbeat, hello_pod, hs, node_info};
use futures_lite::{AsyncRead, AsyncWriteExt};

fn hello(version: u16) -> Handshake {
    Handshake::Hello(Hello {
        protocol_version: version,
        role: Role::Worker,
        identity: hs("pi4b-kitchen"),
        credentials: hs("bjt-0123456789abcdef"),
        agent_version: hs("0.1.0"),
    })
}

fn body_of<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    let framed = frame::encode_vec(msg, usize::MAX).unwrap();
    let mut dec = Decoder::new(Vec::new(), usize::MAX);
    dec.feed(&framed).unwrap().1.unwrap().to_vec()
}

// ---------------------------------------------------------------------------------------------
// Size bound.

#[test]
fn gigabyte_header_is_rejected_before_any_buffering() {
    let peak_len = Rc::new(Cell::new(0));
    let peak_reserve = Rc::new(Cell::new(0));
    let buf = TrackingBuf {
        bytes: Vec::new(),
        peak_len: peak_len.clone(),
        peak_reserve: peak_reserve.clone(),
    };
    let mut dec = Decoder::new(buf, DEFAULT_MAX_FRAME);

    let mut header = [0u8; frame::MAX_VARINT_LEN];
    let n = frame::encode_varint(1 << 30, &mut header);
    assert_eq!(&header[..n], &[0x80, 0x80, 0x80, 0x80, 0x04]);

    // Only the header: no body byte was ever sent, and the error comes at once.
    let err = dec.feed(&header[..n]).unwrap_err();
    assert_eq!(
        err,
        WireError::FrameTooLarge {
            len: 1 << 30,
            max: DEFAULT_MAX_FRAME as u64
        }
    );
    assert_eq!(peak_len.get(), 0, "nothing buffered");
    assert_eq!(peak_reserve.get(), 0, "nothing reserved");
    // The decoder stays failed.
    assert_eq!(dec.feed(&[0]).unwrap_err(), WireError::Malformed);
}

#[test]
fn gigabyte_header_is_rejected_with_a_vec_and_a_heapless_buffer() {
    let header = [0x80, 0x80, 0x80, 0x80, 0x04];
    let mut dec = Decoder::new(Vec::new(), DEFAULT_MAX_FRAME);
    assert!(matches!(
        dec.feed(&header),
        Err(WireError::FrameTooLarge {
            len: 1_073_741_824,
            ..
        })
    ));

    let mut dec = Decoder::new(heapless::Vec::<u8, 128>::new(), DEFAULT_MAX_FRAME);
    assert_eq!(dec.max(), 128, "the buffer's capacity caps the maximum");
    assert_eq!(
        dec.feed(&header).unwrap_err(),
        WireError::FrameTooLarge {
            len: 1 << 30,
            max: 128
        }
    );
}

#[test]
fn too_large_is_reported_as_soon_as_the_partial_header_exceeds_max() {
    // 0xff alone already means "at least 127 bytes".
    let mut dec = Decoder::new(Vec::new(), 100);
    assert_eq!(
        dec.feed(&[0xff]).unwrap_err(),
        WireError::FrameTooLarge { len: 127, max: 100 }
    );
}

#[test]
fn a_body_of_exactly_max_is_accepted_and_one_more_is_not() {
    let max = 300;
    let mut header = [0u8; frame::MAX_VARINT_LEN];

    let n = frame::encode_varint(max as u32, &mut header);
    let mut stream = header[..n].to_vec();
    stream.extend(std::iter::repeat_n(7u8, max));
    let mut dec = Decoder::new(Vec::new(), max);
    let (used, body) = dec.feed(&stream).unwrap();
    assert_eq!((used, body.map(<[u8]>::len)), (stream.len(), Some(max)));

    let n = frame::encode_varint(max as u32 + 1, &mut header);
    let mut dec = Decoder::new(Vec::new(), max);
    assert_eq!(
        dec.feed(&header[..n]).unwrap_err(),
        WireError::FrameTooLarge { len: 301, max: 300 }
    );
}

#[test]
fn encoders_refuse_what_does_not_fit() {
    let pod = Object::Pod(hello_pod("hello"));
    assert_eq!(
        frame::encode_vec(&pod, 16).unwrap_err(),
        WireError::EncodeTooLarge
    );
    let mut small = [0u8; 32];
    assert_eq!(
        frame::encode(&pod, &mut small).unwrap_err(),
        WireError::EncodeTooLarge
    );
    let mut tiny = [0u8; 3];
    assert_eq!(
        frame::encode(&heartbeat(), &mut tiny).unwrap_err(),
        WireError::EncodeTooLarge
    );
    let mut cobs = [0u8; 4];
    assert_eq!(
        frame::encode_cobs(&pod, &mut cobs).unwrap_err(),
        WireError::EncodeTooLarge
    );
}

// ---------------------------------------------------------------------------------------------
// Varints.

#[test]
fn six_byte_varint_is_overlong() {
    let mut dec = Decoder::new(heapless::Vec::<u8, 64>::new(), 64);
    // Rejected at the fifth byte: it still has the continuation bit set.
    assert_eq!(
        dec.feed(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]).unwrap_err(),
        WireError::OverlongVarint
    );
    // Same with an unbounded maximum, where no size check can fire first.
    let mut dec = Decoder::new(TrackingBuf::default(), usize::MAX);
    assert_eq!(
        dec.feed(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).unwrap_err(),
        WireError::OverlongVarint
    );
}

#[test]
fn non_minimal_varints_are_overlong() {
    for bad in [
        &[0x80, 0x00][..],
        &[0x81, 0x00],
        &[0x80, 0x80, 0x80, 0x80, 0x00],
    ] {
        let mut dec = Decoder::new(Vec::new(), DEFAULT_MAX_FRAME);
        assert_eq!(
            dec.feed(bad).unwrap_err(),
            WireError::OverlongVarint,
            "{bad:02x?}"
        );
    }
}

#[test]
fn varint_over_u32_is_overlong() {
    // Fifth byte 0x10: bit 32.
    let mut dec = Decoder::new(TrackingBuf::default(), usize::MAX);
    assert_eq!(
        dec.feed(&[0xff, 0xff, 0xff, 0xff, 0x10]).unwrap_err(),
        WireError::OverlongVarint
    );
}

#[test]
fn largest_five_byte_varint_is_a_valid_header() {
    let reserve = Rc::new(Cell::new(0));
    let buf = TrackingBuf {
        peak_reserve: reserve.clone(),
        ..TrackingBuf::default()
    };
    let mut dec = Decoder::new(buf, usize::MAX);
    assert_eq!(
        dec.feed(&[0xff, 0xff, 0xff, 0xff, 0x0f]).unwrap(),
        (5, None)
    );
    // A header alone reserves little: the buffer grows with the bytes that actually arrive.
    assert_eq!(reserve.get(), 4096);
    assert!(!dec.at_boundary());
}

#[test]
fn encode_varint_is_minimal() {
    for (value, expect) in [
        (0u32, &[0x00][..]),
        (1, &[0x01]),
        (127, &[0x7f]),
        (128, &[0x80, 0x01]),
        (300, &[0xac, 0x02]),
        (16_383, &[0xff, 0x7f]),
        (16_384, &[0x80, 0x80, 0x01]),
        (u32::MAX, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
    ] {
        let mut out = [0u8; frame::MAX_VARINT_LEN];
        let n = frame::encode_varint(value, &mut out);
        assert_eq!(&out[..n], expect, "{value}");
    }
}

// ---------------------------------------------------------------------------------------------
// Bodies: truncation, garbage, trailing bytes, versions, unknown tags.

#[test]
fn truncated_body_is_truncated() {
    let body = body_of(&hello(PROTOCOL_VERSION));
    for cut in 0..body.len() {
        assert_eq!(
            frame::decode::<Handshake>(&body[..cut]).unwrap_err(),
            WireError::Truncated,
            "cut at {cut}"
        );
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut body = body_of(&heartbeat());
    body.extend([0, 0]);
    assert_eq!(
        frame::decode::<Heartbeat>(&body).unwrap_err(),
        WireError::TrailingBytes { extra: 2 }
    );
}

#[test]
fn garbage_gets_a_distinct_error() {
    // Not a handshake tag.
    assert_eq!(
        frame::decode::<Handshake>(&[0x09]).unwrap_err(),
        WireError::UnknownTag
    );
    // A varint that never ends within its type's width.
    assert_eq!(
        frame::decode::<Heartbeat>(&[0xff; 8]).unwrap_err(),
        WireError::Malformed,
        "bad varint"
    );
    // A u16 version over 65535.
    assert_eq!(
        frame::decode::<Handshake>(&[0x00, 0xff, 0xff, 0x04]).unwrap_err(),
        WireError::Malformed
    );
    // Invalid UTF-8 in the identity.
    let mut body = body_of(&hello(PROTOCOL_VERSION));
    body[4] = 0xff; // first byte of "pi4b-kitchen"
    assert_eq!(
        frame::decode::<Handshake>(&body).unwrap_err(),
        WireError::Malformed
    );
    // A string longer than its heapless bound (identity is at most 63 bytes): postcard reports
    // it like an unknown enum case (see `From<postcard::Error>`), and it is never `Ok`.
    let mut body = vec![0x00, 0x01, 0x00, 64];
    body.extend([b'a'; 64]);
    body.extend([0, 0]);
    assert_eq!(
        frame::decode::<Handshake>(&body).unwrap_err(),
        WireError::UnknownTag
    );
    body[3] = 63;
    body.remove(4);
    assert!(frame::decode::<Handshake>(&body).is_ok(), "63 bytes fit");
    // A bool that is neither 0 nor 1 (NodeDown::Logs.follow).
    assert_eq!(
        frame::decode::<NodeDown>(&[0x01, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00]).unwrap_err(),
        WireError::Malformed
    );
    // A u64 varint that is too long (NodeUp::ArtifactGet.offset).
    assert_eq!(
        frame::decode::<NodeUp>(&[
            0x05, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            0x00
        ])
        .unwrap_err(),
        WireError::Malformed
    );
    assert_eq!(
        frame::decode::<Handshake>(&[3]).unwrap_err(),
        WireError::UnknownTag
    );
    assert_eq!(
        frame::decode::<DeviceUp>(&[3]).unwrap_err(),
        WireError::UnknownTag
    );
    assert_eq!(
        frame::decode::<NodeUp>(&[10]).unwrap_err(),
        WireError::UnknownTag
    );
    assert_eq!(
        frame::decode::<NodeDown>(&[15]).unwrap_err(),
        WireError::UnknownTag
    );
    assert_eq!(
        frame::decode::<Request>(&[1, 22]).unwrap_err(),
        WireError::UnknownTag
    );
    assert_eq!(
        frame::decode::<Response>(&[1, 14]).unwrap_err(),
        WireError::UnknownTag
    );
    // Nested: a Hello whose role is 3.
    let mut body = body_of(&hello(PROTOCOL_VERSION));
    assert_eq!(body[2], 0, "role byte");
    body[2] = 3;
    assert_eq!(
        frame::decode::<Handshake>(&body).unwrap_err(),
        WireError::UnknownTag
    );
    // Nested: an Apply of an object of kind 15 (one past the last).
    assert_eq!(
        frame::decode::<Request>(&[1, 0, 1, 15]).unwrap_err(),
        WireError::UnknownTag
    );
    // Nested: a Get of kind 15 (one past the last).
    assert_eq!(
        frame::decode::<Request>(&[1, 1, 15, 0, 0]).unwrap_err(),
        WireError::UnknownTag
    );
    // Known tags still decode.
    assert_eq!(
        frame::decode::<Request>(&[1, 1, 2, 0, 0]).unwrap(),
        Request {
            id: 1,
            body: RequestBody::Get {
                kind: Kind::Pod,
                namespace: "".into(),
                name: "".into()
            }
        }
    );
    assert_eq!(
        frame::decode::<Response>(&[1, 6]).unwrap(),
        Response {
            id: 1,
            body: ResponseBody::End
        }
    );
}

#[test]
fn error_messages_are_lowercase() {
    let all = [
        WireError::FrameTooLarge { len: 2, max: 1 },
        WireError::OverlongVarint,
        WireError::Truncated,
        WireError::TrailingBytes { extra: 1 },
        WireError::UnknownTag,
        WireError::UnsupportedVersion {
            got: 2,
            min: 1,
            max: 1,
        },
        WireError::Malformed,
        WireError::BadCobs,
        WireError::EncodeTooLarge,
    ];
    for e in all {
        let s = e.to_string();
        assert!(s.chars().next().is_some_and(|c| !c.is_uppercase()), "{s}");
    }
}

// ---------------------------------------------------------------------------------------------
// Incremental decoding.

fn sample_stream() -> (Vec<Vec<u8>>, Vec<u8>) {
    let bodies = vec![
        body_of(&hello(PROTOCOL_VERSION)),
        body_of(&heartbeat()),
        Vec::new(), // an empty body is a valid frame
        body_of(&NodeUp::Register(Box::new(node_info()))),
        body_of(&NodeDown::Assign(common::assignment(3))), // over 127 bytes: 2-byte prefix
        body_of(&heartbeat()),
    ];
    let mut stream = Vec::new();
    for b in &bodies {
        let mut prefix = [0u8; frame::MAX_VARINT_LEN];
        let n = frame::encode_varint(b.len() as u32, &mut prefix);
        stream.extend_from_slice(&prefix[..n]);
        stream.extend_from_slice(b);
    }
    (bodies, stream)
}

#[test]
fn byte_at_a_time_equals_whole_buffer() {
    let (bodies, stream) = sample_stream();
    assert!(bodies[4].len() > 127);

    let mut whole = Decoder::new(Vec::new(), DEFAULT_MAX_FRAME);
    let got_whole = feed_chunked(&mut whole, &stream, &[stream.len()]);
    assert_eq!(got_whole, (bodies.clone(), None));
    assert!(whole.at_boundary());

    let mut bytewise = Decoder::new(Vec::new(), DEFAULT_MAX_FRAME);
    let got_bytewise = feed_chunked(&mut bytewise, &stream, &[1]);
    assert_eq!(got_bytewise, got_whole);
    assert!(bytewise.at_boundary());

    for sizes in [&[2][..], &[3, 1, 4, 1, 5, 9, 2, 6], &[127, 1], &[0, 7]] {
        let mut dec = Decoder::new(heapless::Vec::<u8, 1024>::new(), 1024);
        assert_eq!(
            feed_chunked(&mut dec, &stream, sizes),
            got_whole,
            "{sizes:?}"
        );
    }
}

#[test]
fn byte_at_a_time_reports_the_same_error() {
    let (_, mut stream) = sample_stream();
    stream.extend([0x80, 0x00]);
    let whole = feed_chunked(
        &mut Decoder::new(Vec::new(), 4096),
        &stream,
        &[stream.len()],
    );
    let bytewise = feed_chunked(&mut Decoder::new(Vec::new(), 4096), &stream, &[1]);
    assert_eq!(whole.1, Some(WireError::OverlongVarint));
    assert_eq!(whole, bytewise);
}

#[test]
fn at_boundary_tracks_partial_frames() {
    let mut dec = Decoder::new(Vec::new(), 64);
    assert!(dec.at_boundary());
    assert_eq!(dec.feed(&[3, 1]).unwrap(), (2, None));
    assert!(!dec.at_boundary());
    assert_eq!(dec.feed(&[2, 3]).unwrap(), (2, Some(&[1, 2, 3][..])));
    assert!(dec.at_boundary());
    assert_eq!(dec.feed(&[0x81]).unwrap(), (1, None));
    assert!(!dec.at_boundary(), "inside a header");
}

// ---------------------------------------------------------------------------------------------
// COBS.

#[test]
fn cobs_round_trip() {
    fn round<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        msg: T,
    ) {
        let mut buf = [0u8; 1024];
        let enc = frame::encode_cobs(&msg, &mut buf).unwrap();
        let n = enc.len();
        assert_eq!(enc[n - 1], 0, "delimiter");
        assert!(!enc[..n - 1].contains(&0), "no zero inside");
        assert_eq!(frame::decode_cobs::<T>(&mut enc[..n - 1]).unwrap(), msg);
    }
    round(heartbeat());
    round(hello(PROTOCOL_VERSION));
    round(DeviceUp::Register(node_info()));
    round(Heartbeat {
        seq: 0,
        pods_running: 0,
        uptime_s: 0,
    }); // all zeros
    // Runs of 254+ non-zero bytes need the 0xff code.
    round(Response {
        id: 1,
        body: ResponseBody::Log(vec![0x5a; 600]),
    });
    round(Response {
        id: 1,
        body: ResponseBody::Log(vec![0x5a; 253]),
    });
    round(Response {
        id: 1,
        body: ResponseBody::Log(vec![0x5a; 254]),
    });
    round(Response {
        id: 1,
        body: ResponseBody::Log((0..=255).cycle().take(700).collect()),
    });
}

#[test]
fn cobs_known_vectors() {
    for (enc, dec) in [
        (&[0x01][..], &[][..]),
        (&[0x01, 0x01], &[0x00]),
        (&[0x01, 0x01, 0x01], &[0x00, 0x00]),
        (&[0x03, 0x11, 0x22, 0x02, 0x33], &[0x11, 0x22, 0x00, 0x33]),
        (&[0x05, 0x11, 0x22, 0x33, 0x44], &[0x11, 0x22, 0x33, 0x44]),
        (&[0x02, 0x11, 0x01, 0x01, 0x01], &[0x11, 0x00, 0x00, 0x00]),
    ] {
        let mut buf = enc.to_vec();
        let n = frame::cobs_decode_in_place(&mut buf).unwrap();
        assert_eq!(&buf[..n], dec, "{enc:02x?}");
    }
    // 254 non-zero bytes: one 0xff block, no implied zero after it.
    let mut buf = vec![0xff];
    buf.extend(1..=254u8);
    let n = frame::cobs_decode_in_place(&mut buf).unwrap();
    assert_eq!(buf[..n], (1..=254u8).collect::<Vec<_>>()[..]);
}

#[test]
fn invalid_cobs_is_bad_cobs() {
    for bad in [
        &[0x00][..],               // a zero code
        &[0x05, 0x01],             // run past the end
        &[0x03, 0x11, 0x00],       // a zero inside a run
        &[0x02, 0x11, 0x00, 0x01], // a zero code after a block
        &[0xff, 0x01],             // 0xff block too short
    ] {
        let mut buf = bad.to_vec();
        assert_eq!(
            frame::cobs_decode_in_place(&mut buf).unwrap_err(),
            WireError::BadCobs,
            "{bad:02x?}"
        );
        let mut buf = bad.to_vec();
        assert_eq!(
            frame::decode_cobs::<Heartbeat>(&mut buf).unwrap_err(),
            WireError::BadCobs
        );
    }
}

fn cobs_frame<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    let mut buf = [0u8; 512];
    frame::encode_cobs(msg, &mut buf).unwrap().to_vec()
}

/// Feeds `stream` to a COBS decoder in chunks of `size`, collecting every result.
fn cobs_feed<const N: usize>(
    dec: &mut CobsDecoder<N>,
    stream: &[u8],
    size: usize,
) -> Vec<Result<DeviceUp, WireError>> {
    let mut out = Vec::new();
    for mut chunk in stream.chunks(size) {
        while !chunk.is_empty() {
            let (used, msg) = dec.feed::<DeviceUp>(chunk);
            out.extend(msg);
            chunk = &chunk[used..];
        }
    }
    out
}

#[test]
fn cobs_decoder_streams() {
    let msgs = [
        DeviceUp::Heartbeat(heartbeat()),
        DeviceUp::Register(node_info()),
        DeviceUp::Heartbeat(Heartbeat {
            seq: 8,
            ..heartbeat()
        }),
    ];
    let stream: Vec<u8> = msgs.iter().flat_map(cobs_frame).collect();
    for size in [1, 2, 7, stream.len()] {
        let mut dec = CobsDecoder::<256>::default();
        let got = cobs_feed(&mut dec, &stream, size);
        assert_eq!(
            got,
            msgs.iter().cloned().map(Ok).collect::<Vec<_>>(),
            "chunk {size}"
        );
    }
}

#[test]
fn cobs_decoder_overflow_resynchronises_on_next_zero() {
    let good = cobs_frame(&DeviceUp::Heartbeat(heartbeat()));
    assert!(good.len() <= 16);
    let mut stream = vec![0x42; 40]; // an overlong frame (garbage, or a lost delimiter)
    stream.push(0);
    stream.extend(&good);
    stream.extend([0x42; 17]); // one byte over
    stream.push(0);
    stream.extend(&good);
    stream.extend([0x02, 0x00, 0x00]); // invalid COBS, then an empty frame
    for size in [1, 3, stream.len()] {
        let mut dec = CobsDecoder::<16>::default();
        let got = cobs_feed(&mut dec, &stream, size);
        let too_large = WireError::FrameTooLarge { len: 17, max: 16 };
        assert_eq!(
            got,
            vec![
                Err(too_large.clone()),
                Ok(DeviceUp::Heartbeat(heartbeat())),
                Err(too_large),
                Ok(DeviceUp::Heartbeat(heartbeat())),
                Err(WireError::BadCobs),
                Err(WireError::Truncated),
            ],
            "chunk {size}"
        );
    }
}

#[test]
fn cobs_decoder_takes_a_frame_of_exactly_n_bytes() {
    let good = cobs_frame(&DeviceUp::Heartbeat(heartbeat()));
    let n = good.len() - 1; // without the delimiter
    assert_eq!(n, 6);
    let mut dec = CobsDecoder::<6>::default();
    assert_eq!(
        cobs_feed(&mut dec, &good, 1),
        vec![Ok(DeviceUp::Heartbeat(heartbeat()))]
    );
}

// ---------------------------------------------------------------------------------------------
// Async helpers.

/// Yields its bytes one per read, returning Pending every other poll.
#[derive(Debug)]
struct Trickle {
    bytes: Vec<u8>,
    pos: usize,
    pending: bool,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.pending {
            self.pending = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.pending = true;
        if self.pos == self.bytes.len() || buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        buf[0] = self.bytes[self.pos];
        self.pos += 1;
        Poll::Ready(Ok(1))
    }
}

#[test]
fn frame_reader_clean_eof_between_frames_is_none() {
    smol::block_on(async {
        let (_, stream) = sample_stream();
        let mut r = FrameReader::new(&stream[..], DEFAULT_MAX_FRAME);
        let hello_back: Handshake = r.recv().await.unwrap().unwrap();
        assert_eq!(hello_back, hello(PROTOCOL_VERSION));
        let hb: Heartbeat = r.recv().await.unwrap().unwrap();
        assert_eq!(hb, heartbeat());
        for _ in 0..4 {
            assert!(r.next_frame().await.unwrap().is_some());
        }
        assert!(r.next_frame().await.unwrap().is_none());
        // And again: still closed.
        assert!(r.next_frame().await.unwrap().is_none());

        let mut r = FrameReader::new(&[][..], DEFAULT_MAX_FRAME);
        assert!(
            r.recv::<Heartbeat>().await.unwrap().is_none(),
            "empty stream"
        );
    });
}

#[test]
fn frame_reader_byte_at_a_time() {
    smol::block_on(async {
        let (bodies, stream) = sample_stream();
        let mut r = FrameReader::new(
            Trickle {
                bytes: stream,
                pos: 0,
                pending: false,
            },
            DEFAULT_MAX_FRAME,
        );
        let mut got = Vec::new();
        while let Some(b) = r.next_frame().await.unwrap() {
            got.push(b);
        }
        assert_eq!(got, bodies);
    });
}

#[test]
fn frame_reader_truncated_at_stream_end() {
    smol::block_on(async {
        let (_, stream) = sample_stream();
        // Cut inside the last frame's body, and inside a header.
        let mut cut_header = stream.clone();
        cut_header.push(0x81);
        for bytes in [&stream[..stream.len() - 1], &cut_header[..]] {
            let mut r = FrameReader::new(bytes, DEFAULT_MAX_FRAME);
            for _ in 0..5 {
                assert!(r.next_frame().await.unwrap().is_some());
            }
            if bytes.len() > stream.len() {
                assert!(r.next_frame().await.unwrap().is_some());
            }
            match r.next_frame().await {
                Err(IoError::Wire(WireError::Truncated)) => {}
                other => panic!("expected truncated, got {other:?}"),
            }
        }
    });
}

#[test]
fn frame_reader_enforces_max_and_decoding_errors() {
    smol::block_on(async {
        let framed = frame::encode_vec(&NodeUp::Register(Box::new(node_info())), 4096).unwrap();
        let mut r = FrameReader::new(&framed[..], 16);
        match r.next_frame().await {
            Err(IoError::Wire(WireError::FrameTooLarge { max: 16, .. })) => {}
            other => panic!("expected too large, got {other:?}"),
        }
        // A valid frame holding the wrong message: the decoding error comes through `recv`.
        let framed = frame::encode_vec(&heartbeat(), 4096).unwrap();
        let mut r = FrameReader::new(&framed[..], 4096);
        match r.recv::<Handshake>().await {
            Err(IoError::Wire(WireError::UnknownTag)) => {}
            other => panic!("expected an unknown tag, got {other:?}"),
        }
    });
}

#[test]
fn send_refuses_oversized_messages() {
    smol::block_on(async {
        let mut out = Vec::new();
        let pod = Object::Pod(hello_pod("hello"));
        match wire_io::send(&mut out, &pod, 16).await {
            Err(IoError::Wire(WireError::EncodeTooLarge)) => {}
            other => panic!("expected encode too large, got {other:?}"),
        }
        assert!(out.is_empty(), "nothing written");
    });
}

#[test]
fn send_and_receive_over_loopback_tcp() {
    smol::block_on(async {
        let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pods = common::assignment(10);

        let client = smol::spawn({
            let pods = pods.clone();
            async move {
                let mut s = smol::net::TcpStream::connect(addr).await.unwrap();
                wire_io::send(&mut s, &hello(PROTOCOL_VERSION), DEFAULT_MAX_FRAME)
                    .await
                    .unwrap();
                for seq in 0..3 {
                    let hb = NodeUp::Heartbeat(Heartbeat { seq, ..heartbeat() });
                    wire_io::send(&mut s, &hb, DEFAULT_MAX_FRAME).await.unwrap();
                }
                wire_io::send(&mut s, &NodeDown::Assign(pods), DEFAULT_MAX_FRAME)
                    .await
                    .unwrap();
                s.close().await.unwrap();
            }
        });

        let (conn, _) = listener.accept().await.unwrap();
        let mut r = FrameReader::new(conn, DEFAULT_MAX_FRAME);
        let first = r.next_frame().await.unwrap().unwrap();
        assert_eq!(Handshake::check_hello_version(&first), Ok(PROTOCOL_VERSION));
        assert_eq!(
            frame::decode::<Handshake>(&first).unwrap(),
            hello(PROTOCOL_VERSION)
        );
        for seq in 0..3 {
            let up: NodeUp = r.recv().await.unwrap().unwrap();
            assert_eq!(up, NodeUp::Heartbeat(Heartbeat { seq, ..heartbeat() }));
        }
        let down: NodeDown = r.recv().await.unwrap().unwrap();
        assert_eq!(down, NodeDown::Assign(pods));
        assert!(
            r.recv::<NodeUp>().await.unwrap().is_none(),
            "clean close between frames"
        );
        client.await;
    });
}
