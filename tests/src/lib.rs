//! Helpers for whole-cluster tests: start real `bramble` and `bramble-worker` processes.
#![forbid(unsafe_code)]
