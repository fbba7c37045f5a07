//! The scheduler: a pure function from a snapshot and pending pods to bindings.
