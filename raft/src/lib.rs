//! `sluice-raft`: openraft integration for Sluice. The glommio runtime adapter lives in
//! `runtime` and nowhere else.

pub mod runtime;
