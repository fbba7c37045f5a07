//! Board profiles: what Bramble knows about each kind of board it runs on.
#![forbid(unsafe_code)]
