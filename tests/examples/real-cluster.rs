//! A real cluster by hand: `sudo cargo run -p flexdisk-system-tests --example real-cluster`.
//! Starts the simulated Azure, a control plane and three nodes (see `system_tests::real_cluster`),
//! installs flexdisk with `kubectl apply -k` of `install/`, applies the example StorageClasses,
//! prints how to point kubectl at it, and tears everything down on Ctrl-C.

use system_tests::real_cluster::RealCluster;
use system_tests::scene::{three_node_world, NODES};

fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let c = RealCluster::start(&three_node_world(tmp.path()), &NODES);
    c.install_flexdisk();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for class in [
        "storageclass-standardssd.yaml",
        "storageclass-premium.yaml",
        "storageclass-retain.yaml",
    ] {
        c.kubectl(&["apply", "-f", &examples.join(class).display().to_string()])
            .map_err(anyhow::Error::msg)?;
    }
    println!("the cluster is up (Ctrl-C stops and removes it):");
    println!("  export KUBECONFIG={}", c.admin.display());
    println!("  export PATH={}:$PATH", c.bin.display());
    println!("  kubectl get nodes");
    println!("logs: {}/logs", c.dir.path().display());
    println!("simulated Azure: {}", c.sim.field("arm"));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(tokio::signal::ctrl_c())?;
    println!("stopping");
    Ok(())
}
