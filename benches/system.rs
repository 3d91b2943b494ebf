//! System benchmarks: `POST /push` over HTTP, startup, RSS, the seed's designs.
fn main() {}
