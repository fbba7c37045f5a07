use core::fmt;

/// Everything that can go wrong between bytes and a message. Each case is distinct so that a
/// connection can be closed with a precise reason.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WireError {
    /// The frame header announces a body larger than the configured maximum.
    FrameTooLarge {
        /// Announced length (saturated at `u64::MAX`).
        len: u64,
        /// The configured maximum.
        max: u64,
    },
    /// The length prefix is not a minimal LEB128 varint of at most 5 bytes.
    OverlongVarint,
    /// The body ended before the message was complete (or the stream ended mid-frame).
    Truncated,
    /// The message decoded but bytes were left over in the frame.
    TrailingBytes {
        /// How many bytes were left.
        extra: u64,
    },
    /// A message or enum case this build does not know (a newer peer, or garbage).
    UnknownTag,
    /// The peer speaks a protocol version outside what this build accepts.
    UnsupportedVersion {
        /// The peer's version.
        got: u16,
        /// Oldest accepted.
        min: u16,
        /// Newest accepted.
        max: u16,
    },
    /// The body is not a valid encoding (bad UTF-8, bad bool, a string over its bound, ...).
    Malformed,
    /// A COBS frame is not valid COBS.
    BadCobs,
    /// The output buffer is too small, or the encoded message exceeds the maximum frame size.
    EncodeTooLarge,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max} bytes")
            }
            WireError::OverlongVarint => write!(f, "overlong or non-minimal varint length prefix"),
            WireError::Truncated => write!(f, "truncated frame: the message ended early"),
            WireError::TrailingBytes { extra } => {
                write!(f, "{extra} trailing bytes after the message in one frame")
            }
            WireError::UnknownTag => {
                write!(f, "unknown message or enum tag (newer peer or garbage)")
            }
            WireError::UnsupportedVersion { got, min, max } => write!(
                f,
                "protocol version {got} is not supported (this build speaks {min}..={max}); upgrade the older side"
            ),
            WireError::Malformed => write!(f, "malformed message body"),
            WireError::BadCobs => write!(f, "invalid COBS frame"),
            WireError::EncodeTooLarge => {
                write!(f, "message too large to encode within the frame limit")
            }
        }
    }
}

impl core::error::Error for WireError {}

impl From<postcard::Error> for WireError {
    fn from(e: postcard::Error) -> Self {
        use postcard::Error as E;
        match e {
            E::DeserializeUnexpectedEnd => WireError::Truncated,
            E::DeserializeBadEnum => WireError::UnknownTag,
            E::DeserializeBadVarint => WireError::Malformed,
            E::SerializeBufferFull => WireError::EncodeTooLarge,
            _ => WireError::Malformed,
        }
    }
}
