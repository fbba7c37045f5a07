//! The cluster DNS of the node (like CoreDNS in k3s, inside the agent): answers names under the
//! cluster domain from the services and endpoints ([`zone`]) and forwards the rest to the
//! node's own resolvers through a cache ([`server`]). Messages are parsed and built with
//! `simple-dns`. See docs/network.md, "Cluster DNS".

pub mod cache;
pub mod message;
pub mod server;
pub mod upstream;
pub mod zone;

pub use server::Dns;
pub use upstream::Upstreams;
pub use zone::{ServiceRecord, Zone, ZoneInput, resolv_conf};
