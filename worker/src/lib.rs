//! The worker agent: runs pods as processes in Linux namespaces and cgroups.
//!
//! Invariant: only [`sys`] calls `nix`/`libc` or holds `unsafe`.

pub mod agent;
pub mod dns;
pub mod net;
pub mod persist;
pub mod proxy;
pub mod runtime;
pub mod sys;
