//! The node's kernel-path networking, planned without syscalls: [`rules`] turns the services and
//! host ports this node serves into an nftables table that [`crate::sys::nft`] installs.

pub mod rules;
