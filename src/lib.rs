//! pushroll: restarts Kubernetes workloads the moment a new container image
//! is pushed (Artifact Registry → Pub/Sub push → `POST /push`).
//!
//! # Layout
//!
//! A push, in the order it is handled:
//!
//! | step | module |
//! |---|---|
//! | HTTP in, the one place errors become status codes | [`server`], [`server::error`] (connections: [`server::conn`]) |
//! | verified | [`auth`] |
//! | parsed | [`push`] (image references: [`reference`](mod@reference)); a registry's own webhook: [`webhook`] (verified by [`webhook::verify`], digests Docker Hub and Quay leave out found by [`webhook::resolve`]), served by [`server::webhooks`] |
//! | one path from here on, whatever the source (`/push`, a pulled message, a webhook): timed, counted with a `source` label, logged | [`server::pipeline`] |
//! | looked up | [`index::store`]: the mounted file ([`index::file`]), the ConfigMap ([`index::configmap`]), the scan ([`index::scan`]) |
//! | turned into patches | [`plan`] (pure) |
//! | held or let through by the workload's rules | [`policy`] (pure: opt-in, approval, [`policy::window`], interval, refused digests; the waiting push [`policy::pending`]) |
//! | carried out | [`restart`], through the Kubernetes edge [`k8s`] |
//! | followed to its end | [`rollout`] (pure: which rollouts are pushroll's, by the record its restart writes; kubectl's rules; stale pods), by the indexer's Lease holder |
//! | waiting, carried out later; undone on failure | by the indexer's Lease holder (`indexer/pending.rs`, `indexer/undo.rs`; planned in [`policy::undo`]) |
//! | told to people (`--notify-url`) | [`notify`]: a queue per URL, off the push's path |
//!
//! Pulled instead of pushed (`--pull-subscription`, private clusters):
//! [`pull`] receives each message by StreamingPull and hands it to the same
//! [`push::from_message`] and [`server::pipeline`], then acks or nacks it.
//!
//! Beside the push path:
//!
//! * [`index`]: the index format and map; [`index::builder`] turns
//!   workloads into it.
//! * [`indexer`]: the watch that keeps the index ConfigMap current
//!   ([`indexer::lease`]: the election among replicas), follows every
//!   rollout pushroll started (`indexer/rollout.rs`), and carries out the
//!   pushes waiting on workloads (`indexer/pending.rs`).
//! * [`workload`]: the kinds, references, names, namespaces and containers
//!   every layer shares.
//! * [`metrics`]: every Prometheus metric, grouped by concern.
//! * [`cli`] turns flags into plain config structs; [`cmd`] holds one
//!   file per subcommand, wiring the parts from those structs.
//!
//! # Tests
//!
//! Unit tests sit beside the code (`#[cfg(test)]` modules). The end-to-end
//! tests are one test binary, `tests/it/` (`main.rs` declares one module
//! per area, `tests/it/support/` holds the shared helpers, the fake API
//! server is its own crate in `tests/fake-apiserver/` with its own
//! tests); README's "Tests" says how to run them.

#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod cmd;
pub mod index;
pub mod indexer;
pub mod k8s;
pub mod metrics;
pub mod notify;
pub mod plan;
pub mod policy;
pub mod pull;
pub mod push;
pub mod reference;
pub mod restart;
pub mod rollout;
pub mod server;
pub mod webhook;
pub mod workload;
