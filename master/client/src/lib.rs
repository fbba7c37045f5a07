//! Bramble's API client and the manifest rules the CLI and the master share.
//!
//! - [`conn`]: a connection to the master as an admin client ([`Client`]): TCP, the pinned TLS
//!   handshake ([`tls`]), `Hello`, then typed requests and answers.
//! - [`manifest`], [`config_data`], [`validate`]: TOML manifests parsed into wire objects and
//!   checked; the master checks every applied object again with the same [`validate`].
//!
//! No SQL, no server: the master (`bramble-server`) depends on this crate, never the reverse.

pub mod config_data;
pub mod conn;
pub mod doc;
pub mod jsonpath;
pub mod manifest;
pub mod tls;
pub mod validate;

pub use conn::{CLIENT_RESPONSE_MAX, Client, ClientError, ClientRx, ClientTx, read_token_file};

/// Copies `s` into a bounded string, truncating at a char boundary.
pub fn heapless_str<const N: usize>(s: &str) -> heapless::String<N> {
    let mut out = heapless::String::new();
    for c in s.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}
