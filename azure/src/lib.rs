//! Everything flexdisk says to Azure: the cloud configuration (`azure.json`), Entra ID
//! credentials, Resource Manager calls for disks and VMs with ARM's long-running operations,
//! retries and error classes, and the sans-IO decisions around them (StorageClass parameters,
//! names, attach plans).
#![forbid(unsafe_code)]

pub mod arm;
pub mod cloud;
pub mod config;
pub mod credential;
pub mod disks;
pub mod error;
pub mod imds;
pub mod lro;
pub mod naming;
pub mod op_durations;
pub mod params;
pub mod retry;
pub mod secret;
pub mod throttle_memory;
mod transport;
pub mod vms;

pub use arm::{Arm, ArmOptions};
pub use config::{Auth, CloudName, Config, ConfigError, VmType};
pub use disks::{DiskInfo, DiskSpec, Performance};
pub use error::AzureError;
pub use params::{Caching, DiskParams, ParamError, Sku};
pub use transport::{TransportStats, WriteGate, ATTEMPT_TIMEOUT};
pub use vms::{AttachSpec, AttachedDisk, VmDisks, VmRef};

/// Log directives every binary adds to its filter, whatever level the operator asks for: at
/// trace level the Azure SDK crates print whole requests, `Authorization` header included.
pub const QUIET_DEPENDENCIES: &str =
    "azure_core=info,azure_identity=info,typespec_client_core=info,\
azure_mgmt_compute=info,reqwest=info,hyper=info,hyper_util=info,h2=info,rustls=info";
