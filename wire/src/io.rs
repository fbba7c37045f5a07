//! Async framing over any `AsyncRead` / `AsyncWrite` (feature `std`), so TLS can wrap it later.

use std::boxed::Box;
use std::io;
use std::vec;
use std::vec::Vec;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::WireError;
use crate::frame::{self, Decoder};

/// Errors of the async helpers: the transport's, or the protocol's.
#[derive(Debug)]
pub enum IoError {
    /// The transport failed.
    Io(io::Error),
    /// The peer sent something invalid; close the connection with this reason.
    Wire(WireError),
}

impl std::fmt::Display for IoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IoError::Io(e) => write!(f, "connection error: {e}"),
            IoError::Wire(e) => write!(f, "protocol error: {e}"),
        }
    }
}

impl std::error::Error for IoError {}

impl From<io::Error> for IoError {
    fn from(e: io::Error) -> Self {
        IoError::Io(e)
    }
}

impl From<WireError> for IoError {
    fn from(e: WireError) -> Self {
        IoError::Wire(e)
    }
}

/// Reads frames from a byte stream, buffering at most one frame body of `max` bytes plus a
/// read buffer (8 KiB; [`FrameReader::with_read_buf`] sets it).
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    decoder: Decoder<Vec<u8>>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps `inner`, accepting bodies of at most `max` bytes.
    pub fn new(inner: R, max: usize) -> Self {
        Self::with_read_buf(inner, max, 8 * 1024)
    }

    /// Like [`FrameReader::new`], reading up to `read_buf` bytes from the stream at once (a
    /// receiver of bulk data wants one `read` per frame or less).
    pub fn with_read_buf(inner: R, max: usize, read_buf: usize) -> Self {
        FrameReader {
            inner,
            decoder: Decoder::new(Vec::new(), max),
            buf: vec![0u8; read_buf.max(1)].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Reads the next frame body. `Ok(None)` means the peer closed the stream cleanly between
    /// frames; a close in the middle of a frame is [`WireError::Truncated`].
    pub async fn next_frame(&mut self) -> Result<Option<Vec<u8>>, IoError> {
        Ok(self.next_body().await?.map(<[u8]>::to_vec))
    }

    /// Reads the next frame body into the decoder's buffer and lends it (no copy).
    async fn next_body(&mut self) -> Result<Option<&[u8]>, IoError> {
        loop {
            if self.start < self.end {
                let (used, done) = {
                    let (used, body) = self.decoder.feed(&self.buf[self.start..self.end])?;
                    (used, body.is_some())
                };
                self.start += used;
                if done {
                    return Ok(Some(self.decoder.body()));
                }
            }
            let n = self.inner.read(&mut self.buf).await?;
            if n == 0 {
                return if self.decoder.at_boundary() {
                    Ok(None)
                } else {
                    Err(IoError::Wire(WireError::Truncated))
                };
            }
            self.start = 0;
            self.end = n;
        }
    }

    /// Reads and decodes the next message, straight from the frame buffer.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, IoError> {
        match self.next_body().await? {
            Some(body) => Ok(Some(frame::decode(body)?)),
            None => Ok(None),
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

/// Encodes `msg` as one frame (refusing bodies over `max`) and writes it.
pub async fn send<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
    max: usize,
) -> Result<(), IoError> {
    let bytes = frame::encode_vec(msg, max)?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}

/// How a client's handshake ended when it did not end in [`crate::Welcome`].
#[derive(Debug)]
pub enum HandshakeError {
    /// The transport failed or a frame was bad.
    Io(IoError),
    /// The master refused us; its message names the fix.
    Rejected(crate::Reject),
    /// The master closed the connection (or answered something else) before a `Welcome`.
    Closed,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Io(e) => e.fmt(f),
            HandshakeError::Rejected(r) => write!(f, "master rejected us: {}", r.message),
            HandshakeError::Closed => {
                f.write_str("the master closed the connection during the handshake")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

impl From<IoError> for HandshakeError {
    fn from(e: IoError) -> Self {
        HandshakeError::Io(e)
    }
}

/// The client side of the handshake, the one every peer that dials the master uses (the CLI,
/// workers, the node simulator): sends `hello` (its `protocol_version` is set to this build's
/// [`crate::PROTOCOL_VERSION`]) and waits for the master's answer.
pub async fn client_handshake<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut W,
    mut hello: crate::Hello,
    max: usize,
) -> Result<crate::Welcome, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    hello.protocol_version = crate::PROTOCOL_VERSION;
    send(writer, &crate::Handshake::Hello(hello), max).await?;
    match reader.recv::<crate::Handshake>().await? {
        Some(crate::Handshake::Welcome(w)) => Ok(w),
        Some(crate::Handshake::Reject(r)) => Err(HandshakeError::Rejected(r)),
        Some(crate::Handshake::Hello(_)) | None => Err(HandshakeError::Closed),
    }
}
