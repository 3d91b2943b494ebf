//! pushroll's integration tests: one test binary (`cargo test --test it`),
//! one module per area, so the dependency graph is linked once rather than
//! once per area. Test names read `<area>::<test>`, e.g.
//! `restart::…`; `cargo test --test it -- --list` lists them all and
//! `cargo test --test it restart::` runs one area.
//!
//! The tests run in parallel in this one process. Those that share the real
//! API server (`PUSHROLL_REAL_*`) each use their own namespaces
//! (`Cluster::ns`); the two that change the whole cluster (`relist`
//! restarts the API server, `rbac` rewrites the ServiceAccounts' roles)
//! start a private control plane of their own
//! (`Cluster::real_private`). `support` holds the shared helpers (also
//! used by the benches), `pubsub/` the Pub/Sub emulator's driver and tap.

#[macro_use]
mod support;

mod auth;
mod connections;
mod controller;
mod controller_faults;
mod deploy;
mod helm;
mod http;
mod indexer;
mod kubelet;
mod load;
mod monitoring;
mod notify;
mod openapi;
mod policies;
mod prometheus;
mod properties;
mod pubsub;
// Pub/Sub pull (issue 24).
mod pull;
mod rbac;
mod relist;
mod restart;
mod rollout;
mod webhooks;
