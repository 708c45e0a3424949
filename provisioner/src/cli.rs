//! Command line, with environment fallbacks.

use std::path::PathBuf;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    version,
    about = "Dynamic provisioner of Azure managed disks (flexdisk/azure-disk)"
)]
pub struct Cli {
    /// kubeconfig to use; otherwise KUBECONFIG or the in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// cloud-provider-azure's config.
    #[arg(
        long,
        env = "AZURE_CLOUD_CONFIG",
        default_value = "/etc/kubernetes/azure.json"
    )]
    pub cloud_config: PathBuf,
    /// The name StorageClasses use in `provisioner:`.
    #[arg(long, env = "PROVISIONER_NAME", default_value = "flexdisk/azure-disk")]
    pub provisioner_name: String,
    /// Claims and volumes handled at once.
    #[arg(long, env = "WORKERS", default_value_t = 8)]
    pub workers: u16,
    /// Elect a leader among replicas through a Lease in `--lease-namespace`.
    #[arg(long, env = "LEADER_ELECT", default_value_t = false)]
    pub leader_elect: bool,
    #[arg(long, env = "LEASE_NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,
    /// How long a leader's lease lasts without renewal; a standby takes over after it.
    #[arg(long, env = "LEASE_DURATION_SECS", default_value_t = 15)]
    pub lease_duration_secs: u64,
    /// This replica's identity in the election (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Where Prometheus metrics, /healthz and /readyz are served (port 0: any free one; the
    /// address is logged).
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: String,
    /// Log filter (tracing's syntax).
    #[arg(long, env = "LOG", default_value = "info")]
    pub log: String,
}
