//! The dynamic provisioner's domain core: what to create for a claim, and what to do with a
//! released volume — decided without I/O and without Kubernetes types; the binary (issue 6, still
//! to come) wires these decisions to kube-rs and Azure.
#![forbid(unsafe_code)]

pub mod decide;
