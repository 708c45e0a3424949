//! Local simulators for flexdisk: Azure's ARM compute API, Entra ID's token endpoint and per-node
//! IMDS, with a node backend that turns attached disks into real loop devices; the Kubernetes API;
//! and the parts of a cluster around the real binaries (a FlexVolume caller as kubelet and the
//! attach/detach controller call drivers, a small blocking API client) that the demo and the
//! system tests use.

pub mod arm;
pub mod bus;
pub mod bus_guard;
pub mod cli;
pub mod control;
pub mod demo;
pub mod entra;
pub mod faults;
pub mod http;
pub mod imds;
pub mod inventory;
pub mod journal;
pub mod kube;
pub mod kube_client;
pub mod kubelet;
pub mod loopdev;
pub mod model;
pub mod node;
pub mod process;
pub mod schema;
pub mod serve;
pub mod simulator;
pub mod store;
pub mod throttle;
pub mod tls;
pub mod tokens;
pub mod vm_sizes;
pub mod world;
