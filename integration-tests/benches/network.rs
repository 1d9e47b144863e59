//! placeholder replaced by the network bench
fn main() {}
