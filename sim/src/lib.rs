//! Local simulators for flexdisk: Azure's ARM compute API, Entra ID's token endpoint and per-node
//! IMDS, with a node backend that turns attached disks into real loop devices.

pub mod arm;
pub mod cli;
pub mod control;
pub mod entra;
pub mod faults;
pub mod http;
pub mod imds;
pub mod inventory;
pub mod kube;
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
