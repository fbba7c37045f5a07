//! Every syscall of the worker, and every `unsafe` block, lives here.
