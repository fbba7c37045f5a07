//! `#[serde(with = "crate::bytes")]` for `Vec<u8>` fields that carry bulk data (artifact and blob
//! chunks, logs): serialized with `serialize_bytes`, deserialized with `deserialize_byte_buf`.
//!
//! postcard encodes a byte string exactly as it encodes a `Vec<u8>` sequence (a varint length,
//! then the bytes), so the wire bytes do not change (the goldens pin them); but postcard then
//! copies the bytes in one `memcpy` instead of visiting them one `u8` at a time. Self-describing
//! formats still get a sequence: `visit_seq` accepts one (JSON writes byte strings as arrays).

use alloc::vec::Vec;
use core::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

/// Serializes the bytes as one byte string.
pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(v)
}

/// Deserializes a byte string (or a sequence of bytes).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_byte_buf(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // Bounded by what arrived, not by the peer's size hint.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 * 1024));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Plain {
        a: u32,
        data: Vec<u8>,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Bytes {
        a: u32,
        #[serde(with = "crate::bytes")]
        data: Vec<u8>,
    }

    #[test]
    fn postcard_bytes_are_those_of_a_plain_vec() {
        for len in [0usize, 1, 127, 128, 300, 32 * 1024] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let plain = postcard::to_allocvec(&Plain {
                a: 5,
                data: data.clone(),
            })
            .unwrap();
            let bytes = postcard::to_allocvec(&Bytes {
                a: 5,
                data: data.clone(),
            })
            .unwrap();
            assert_eq!(plain, bytes);
            let back: Bytes = postcard::from_bytes(&plain).unwrap();
            assert_eq!(back.data, data);
        }
        let short = postcard::to_allocvec(&Plain {
            a: 1,
            data: vec![1, 2, 3],
        })
        .unwrap();
        assert!(postcard::from_bytes::<Bytes>(&short[..short.len() - 1]).is_err());
    }
}
