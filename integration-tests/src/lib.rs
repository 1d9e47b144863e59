//! Shared pieces of Raclette's end-to-end tests and benchmarks.

pub mod bench;
pub mod harness;
pub mod readme;
