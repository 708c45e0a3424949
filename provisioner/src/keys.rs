//! The annotations and finalizers the provisioner reads and writes, named as Kubernetes and the
//! external provisioner/resizer name them.

/// Set by kube-controller-manager's PV controller on a claim it hands to a provisioner.
pub const PROVISIONER_KEY: &str = "volume.kubernetes.io/storage-provisioner";
pub const PROVISIONER_BETA_KEY: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// The node the scheduler chose for a WaitForFirstConsumer claim's pod.
pub const SELECTED_NODE_KEY: &str = "volume.kubernetes.io/selected-node";
/// On our PVs while their disk is to be deleted with them (sig-storage-lib-external-provisioner).
pub const FINALIZER: &str = "external-provisioner.volume.kubernetes.io/finalizer";
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// On a claim while a clone of it is being made (external-provisioner's `pvcCloneFinalizer`):
/// the source cannot go before its copy is.
pub const CLONE_FINALIZER: &str = "provisioner.storage.kubernetes.io/cloning-protection";
/// On a PV whose disk grew while the filesystem has still to: the claim's capacity before the
/// growth (`AnnPreResizeCapacity`, kubernetes `pkg/volume/util/resize_util.go`). The PV controller
/// gives a claim bound to such a volume that capacity (so kubelet still grows the filesystem);
/// the resizer removes it once the node's part is done (external-resizer's syncPVC with
/// isNodeExpandComplete).
pub const PRE_RESIZE_CAPACITY: &str = "volume.alpha.kubernetes.io/pre-resize-capacity";

/// The finalizer that records, on a claim, a provisioning by the provisioner named `name` (each
/// provisioner of a cluster has its own, so that none finishes another's): `<name>-disk-in-progress`,
/// a qualified name as provisioner names are (`flexdisk/azure-disk` →
/// `flexdisk/azure-disk-disk-in-progress`).
pub fn provisioning_finalizer(name: &str) -> String {
    if name.contains('/') {
        format!("{name}-disk-in-progress")
    } else {
        format!("flexdisk/{name}-disk-in-progress")
    }
}
