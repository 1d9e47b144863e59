//! placeholder replaced by the tracker bench
fn main() {}
