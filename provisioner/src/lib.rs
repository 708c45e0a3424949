//! The dynamic provisioner's domain core: what to create for a claim, and what to do with a
//! released volume — decided without I/O and without Kubernetes types (`decide.rs`, `budget.rs`);
//! `claims.rs` and `volumes.rs` wire those decisions to kube-rs and Azure, `run.rs` starts it all.
//!
//! Layers, each using only those below it: `error`, `keys`, `quantity`, `decide`, `budget`,
//! `triggers`, `events`, `metrics` → `context` → `claim_status`, `clone` → `intent`, `resize`,
//! `modify` → `claims`, `volumes` → `run`.
#![forbid(unsafe_code)]

pub mod budget;
pub mod claim_status;
pub mod claims;
pub mod cli;
pub mod clone;
pub mod context;
pub mod decide;
pub mod error;
pub mod events;
pub mod intent;
pub mod keys;
pub mod metrics;
pub mod modify;
pub mod quantity;
pub mod resize;
pub mod run;
pub mod triggers;
pub mod volumes;
