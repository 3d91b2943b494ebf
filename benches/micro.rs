//! Micro-benchmarks (criterion): index lookup and token verification.
fn main() {}
