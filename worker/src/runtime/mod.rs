//! The pod runtime: cgroups, namespaces, pod init, restarts; all syscalls go through `crate::sys`.
