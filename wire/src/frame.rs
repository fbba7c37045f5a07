//! Framing: a LEB128 varint length prefix followed by a postcard body (streams), or COBS with a
//! zero delimiter (serial links).
//!
//! The decoder is pure and incremental: feed it whatever bytes arrived and it hands back complete
//! frame bodies. The announced length is checked against the maximum *before* any of the body is
//! buffered, so a hostile peer cannot make it allocate more than the bound.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::WireError;

/// Most bytes a u32 LEB128 varint can take.
pub const MAX_VARINT_LEN: usize = 5;

/// Storage for one frame body: `Vec<u8>` with `alloc`, `heapless::Vec<u8, N>` without.
pub trait FrameBuf {
    /// Empties the buffer.
    fn clear(&mut self);
    /// Appends bytes; the decoder never exceeds the capacity it was told.
    fn extend(&mut self, bytes: &[u8]) -> Result<(), WireError>;
    /// The bytes held.
    fn bytes(&self) -> &[u8];
    /// Most bytes this buffer can ever hold.
    fn capacity_limit(&self) -> usize;
    /// Reserves room for a body of `len` bytes (already checked against the maximum).
    fn reserve_exact(&mut self, _len: usize) {}
}

impl<const N: usize> FrameBuf for heapless::Vec<u8, N> {
    fn clear(&mut self) {
        heapless::Vec::clear(self)
    }
    fn extend(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        self.extend_from_slice(bytes)
            .map_err(|_| WireError::FrameTooLarge {
                len: bytes.len() as u64,
                max: N as u64,
            })
    }
    fn bytes(&self) -> &[u8] {
        self.as_slice()
    }
    fn capacity_limit(&self) -> usize {
        N
    }
}

#[cfg(feature = "alloc")]
impl FrameBuf for alloc::vec::Vec<u8> {
    fn clear(&mut self) {
        alloc::vec::Vec::clear(self)
    }
    fn extend(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        self.extend_from_slice(bytes);
        Ok(())
    }
    fn bytes(&self) -> &[u8] {
        self.as_slice()
    }
    fn capacity_limit(&self) -> usize {
        usize::MAX
    }
    fn reserve_exact(&mut self, len: usize) {
        alloc::vec::Vec::reserve_exact(self, len.saturating_sub(self.len()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the length prefix: value so far and bytes read.
    Header { value: u32, read: u8 },
    /// Reading a body of `len` bytes.
    Body { len: usize },
    /// A complete body is in the buffer and was handed out; cleared on the next feed.
    Done,
    /// An error occurred; the stream cannot be resynchronised.
    Failed,
}

/// Incremental decoder of length-prefixed frames.
#[derive(Debug)]
pub struct Decoder<B: FrameBuf> {
    buf: B,
    max: usize,
    state: State,
}

impl<B: FrameBuf> Decoder<B> {
    /// A decoder that accepts bodies of at most `max` bytes (and at most what `buf` can hold).
    pub fn new(buf: B, max: usize) -> Self {
        let max = max.min(buf.capacity_limit());
        Decoder {
            buf,
            max,
            state: State::Header { value: 0, read: 0 },
        }
    }

    /// The maximum body size.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Whether the decoder is between frames (a clean place for the stream to end).
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header { read: 0, .. } | State::Done)
    }

    /// Consumes bytes from `input`. Returns how many were used and, when a frame completed, its
    /// body. Call again with the rest of `input` after handling the body. After an error the
    /// decoder stays failed: close the connection.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Option<&[u8]>), WireError> {
        if self.state == State::Failed {
            return Err(WireError::Malformed);
        }
        if self.state == State::Done {
            self.buf.clear();
            self.state = State::Header { value: 0, read: 0 };
        }
        let mut used = 0;
        while used < input.len() {
            match self.state {
                // `Done` is reset on entry and returned as soon as it is set.
                State::Failed | State::Done => return Err(WireError::Malformed),
                State::Header { value, read } => {
                    let byte = input[used];
                    used += 1;
                    let shift = 7 * u32::from(read);
                    let part = u32::from(byte & 0x7f);
                    // The fifth byte may only carry the top 4 bits of a u32.
                    if read == 4 && (byte & 0xf0) != 0 {
                        return self.fail(WireError::OverlongVarint);
                    }
                    let value = value | (part << shift);
                    let read = read + 1;
                    if byte & 0x80 != 0 {
                        if read as usize >= MAX_VARINT_LEN {
                            return self.fail(WireError::OverlongVarint);
                        }
                        // Reject as soon as the length is known to exceed the bound.
                        if (value as u64) > self.max as u64 {
                            return self.fail(WireError::FrameTooLarge {
                                len: value as u64,
                                max: self.max as u64,
                            });
                        }
                        self.state = State::Header { value, read };
                        continue;
                    }
                    // Last byte: a zero continuation byte means a non-minimal encoding.
                    if read > 1 && byte == 0 {
                        return self.fail(WireError::OverlongVarint);
                    }
                    let len = value as usize;
                    if value as u64 > self.max as u64 {
                        return self.fail(WireError::FrameTooLarge {
                            len: value as u64,
                            max: self.max as u64,
                        });
                    }
                    self.buf.clear();
                    // Grow with the bytes that actually arrive: a header alone costs nothing.
                    self.buf.reserve_exact(len.min(4096));
                    if len == 0 {
                        self.state = State::Done;
                        return Ok((used, Some(self.buf.bytes())));
                    }
                    self.state = State::Body { len };
                }
                State::Body { len } => {
                    let need = len - self.buf.bytes().len();
                    let take = need.min(input.len() - used);
                    if let Err(e) = self.buf.extend(&input[used..used + take]) {
                        return self.fail(e);
                    }
                    used += take;
                    if take == need {
                        self.state = State::Done;
                        return Ok((used, Some(self.buf.bytes())));
                    }
                }
            }
        }
        Ok((used, None))
    }

    /// The body of the frame [`Decoder::feed`] completed last (empty before then).
    pub fn body(&self) -> &[u8] {
        if self.state == State::Done {
            self.buf.bytes()
        } else {
            &[]
        }
    }

    fn fail<T>(&mut self, e: WireError) -> Result<T, WireError> {
        self.state = State::Failed;
        self.buf.clear();
        Err(e)
    }
}

/// Writes the varint prefix of `len` into `out`, returning the bytes used.
pub fn encode_varint(mut len: u32, out: &mut [u8; MAX_VARINT_LEN]) -> usize {
    let mut i = 0;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out[i] = byte;
            return i + 1;
        }
        out[i] = byte | 0x80;
        i += 1;
    }
}

/// Decodes one message from a complete frame body, rejecting trailing bytes.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    let (msg, rest) = postcard::take_from_bytes::<T>(body)?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes {
            extra: rest.len() as u64,
        });
    }
    Ok(msg)
}

/// Encodes `msg` as one length-prefixed frame into `out`, returning the frame's bytes.
pub fn encode<'a, T: Serialize>(msg: &T, out: &'a mut [u8]) -> Result<&'a mut [u8], WireError> {
    if out.len() < MAX_VARINT_LEN {
        return Err(WireError::EncodeTooLarge);
    }
    let body_len = postcard::to_slice(msg, &mut out[MAX_VARINT_LEN..])?.len();
    let mut prefix = [0u8; MAX_VARINT_LEN];
    let n = encode_varint(body_len as u32, &mut prefix);
    // Move the body right after the (shorter) prefix.
    out.copy_within(MAX_VARINT_LEN..MAX_VARINT_LEN + body_len, n);
    out[..n].copy_from_slice(&prefix[..n]);
    Ok(&mut out[..n + body_len])
}

/// Encodes `msg` as one length-prefixed frame, refusing bodies over `max` bytes.
#[cfg(feature = "alloc")]
pub fn encode_vec<T: Serialize>(msg: &T, max: usize) -> Result<alloc::vec::Vec<u8>, WireError> {
    let body = postcard::to_allocvec(msg)?;
    if body.len() > max || body.len() > u32::MAX as usize {
        return Err(WireError::EncodeTooLarge);
    }
    let mut prefix = [0u8; MAX_VARINT_LEN];
    let n = encode_varint(body.len() as u32, &mut prefix);
    let mut out = alloc::vec::Vec::with_capacity(n + body.len());
    out.extend_from_slice(&prefix[..n]);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Encodes `msg` as a COBS frame terminated by a zero byte (for serial links).
pub fn encode_cobs<'a, T: Serialize>(
    msg: &T,
    out: &'a mut [u8],
) -> Result<&'a mut [u8], WireError> {
    Ok(postcard::to_slice_cobs(msg, out)?)
}

/// Decodes a COBS-encoded frame in place (without its zero delimiter) and returns the message,
/// rejecting invalid COBS and trailing bytes.
pub fn decode_cobs<T: DeserializeOwned>(frame: &mut [u8]) -> Result<T, WireError> {
    let n = cobs_decode_in_place(frame)?;
    decode(&frame[..n])
}

/// COBS-decodes `buf` in place; returns the decoded length.
pub fn cobs_decode_in_place(buf: &mut [u8]) -> Result<usize, WireError> {
    let mut read = 0;
    let mut write = 0;
    while read < buf.len() {
        let code = buf[read];
        if code == 0 {
            return Err(WireError::BadCobs);
        }
        read += 1;
        let run = code as usize - 1;
        if read + run > buf.len() {
            return Err(WireError::BadCobs);
        }
        for i in 0..run {
            let b = buf[read + i];
            if b == 0 {
                return Err(WireError::BadCobs);
            }
            buf[write] = b;
            write += 1;
        }
        read += run;
        if code != 0xff && read < buf.len() {
            buf[write] = 0;
            write += 1;
        }
    }
    Ok(write)
}

/// Accumulates a serial byte stream into zero-delimited COBS frames of at most `N` bytes.
#[derive(Debug)]
pub struct CobsDecoder<const N: usize> {
    buf: heapless::Vec<u8, N>,
    overflowed: bool,
}

impl<const N: usize> Default for CobsDecoder<N> {
    fn default() -> Self {
        CobsDecoder {
            buf: heapless::Vec::new(),
            overflowed: false,
        }
    }
}

impl<const N: usize> CobsDecoder<N> {
    /// Feeds bytes; when a delimiter completes a frame, decodes it. Returns bytes used and the
    /// decoded message. An overlong frame is reported once at its delimiter and then skipped, so
    /// a serial link resynchronises on the next zero byte.
    pub fn feed<T: DeserializeOwned>(
        &mut self,
        input: &[u8],
    ) -> (usize, Option<Result<T, WireError>>) {
        for (i, &b) in input.iter().enumerate() {
            if b == 0 {
                let result = if self.overflowed {
                    Err(WireError::FrameTooLarge {
                        len: N as u64 + 1,
                        max: N as u64,
                    })
                } else {
                    decode_cobs(&mut self.buf)
                };
                self.buf.clear();
                self.overflowed = false;
                return (i + 1, Some(result));
            }
            if !self.overflowed && self.buf.push(b).is_err() {
                self.overflowed = true;
                self.buf.clear();
            }
        }
        (input.len(), None)
    }
}
