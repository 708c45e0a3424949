//! The dynamic provisioner's domain core: what to create for a claim, and what to do with a
//! released volume — decided without I/O and without Kubernetes types (`decide.rs`); `claims.rs` and
//! `volumes.rs` wire those decisions to kube-rs and Azure, `run.rs` starts it all.
#![forbid(unsafe_code)]

pub mod claim_status;
pub mod claims;
pub mod cli;
pub mod decide;
pub mod intent;
pub mod metrics;
pub mod modify;
pub mod resize;
pub mod run;
pub mod volumes;
