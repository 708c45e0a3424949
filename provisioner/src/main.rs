//! `flexdisk-provisioner`: creates an Azure managed disk and a PersistentVolume for each claim of
//! its StorageClasses, and deletes them when released.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    flexdisk_provisioner::run::main(flexdisk_provisioner::cli::Cli::parse()).await
}
