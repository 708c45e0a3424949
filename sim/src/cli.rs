//! Command line of `flexdisk-sim`.

use crate::serve::{serve, ServeOptions};
use crate::simulator::Timing;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "flexdisk-sim",
    version,
    about = "Local Azure (ARM compute, IMDS, Entra ID) for flexdisk, with real block devices"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the simulated Azure until SIGTERM/SIGINT; prints one JSON line when ready.
    Serve {
        /// Directory holding all state (created if missing); a restart with it loses nothing.
        #[arg(long)]
        state: PathBuf,
        /// World file (JSON) replacing the default world; `flexdisk-sim world` prints the default.
        #[arg(long)]
        world: Option<PathBuf>,
        /// How long VM operations (attach, detach) take, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        vm_op_ms: u64,
        /// How long disk and snapshot operations (create, grow, delete) take, in milliseconds.
        #[arg(long, default_value_t = 500)]
        disk_op_ms: u64,
        /// Spread of each VM operation's time around --vm-op-ms: the σ of a log-normal (0: all
        /// take --vm-op-ms; Azure's attach/detach times are matched by 12000 ms with σ 1).
        #[arg(long, default_value_t = 0.0)]
        vm_op_sigma: f64,
        /// Spread of each disk operation's time around --disk-op-ms, as --vm-op-sigma.
        #[arg(long, default_value_t = 0.0)]
        disk_op_sigma: f64,
        /// ARM (and control API) port; 0 picks a free one.
        #[arg(long, default_value_t = 0)]
        arm_port: u16,
        /// Entra ID (login) port; 0 picks a free one.
        #[arg(long, default_value_t = 0)]
        login_port: u16,
        /// First IMDS port (node i gets this + i); 0 picks free ones.
        #[arg(long, default_value_t = 0)]
        imds_port: u16,
        /// Kubernetes API port; 0 picks a free one.
        #[arg(long, default_value_t = 0)]
        kube_port: u16,
        /// The address ARM, Entra ID and IMDS listen on (the Kubernetes API stays on loopback):
        /// another than loopback lets hosts in network namespaces reach them (and is added to the
        /// login certificate when the TLS directory is made).
        #[arg(long, default_value = "127.0.0.1")]
        listen: std::net::IpAddr,
        /// How many changes a Kubernetes watch can resume from; older resourceVersions get 410 Gone.
        #[arg(long, default_value_t = crate::kube::DEFAULT_WINDOW)]
        kube_watch_window: usize,
        /// How often watches that allow bookmarks get one, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        kube_bookmark_ms: u64,
        /// Where the private CA and the login certificate live (default: STATE/tls). Several
        /// simulators may share one, so that one `SSL_CERT_FILE` trusts them all.
        #[arg(long)]
        tls_dir: Option<PathBuf>,
    },
    /// Print the default world as JSON, a starting point for --world files.
    World,
    /// Started by `serve` for itself: clears its storage bus (loop devices, FUSE mount) when the
    /// simulator ends, however it ends.
    #[command(hide = true)]
    BusGuard {
        /// The bus's mount point.
        mountpoint: PathBuf,
    },
    /// The whole system on this machine (needs root): simulators, the real provisioner and driver;
    /// a claim is provisioned, used on one node, moved to another, checked and deleted.
    Demo {
        /// Where logs and the simulators' state go; kept after the run.
        #[arg(long, default_value = "/tmp/flexdisk-demo")]
        dir: PathBuf,
        /// How long VM operations (attach, detach) take, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        vm_op_ms: u64,
        /// How long disk operations take, in milliseconds.
        #[arg(long, default_value_t = 500)]
        disk_op_ms: u64,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::World => {
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::world::World::default_world())?
            );
            Ok(())
        }
        Command::BusGuard { mountpoint } => Ok(crate::bus_guard::run(&mountpoint)?),
        Command::Demo {
            dir,
            vm_op_ms,
            disk_op_ms,
        } => {
            let passed = crate::demo::run(crate::demo::DemoOptions {
                dir,
                vm_op_ms,
                disk_op_ms,
            })?;
            if !passed {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Serve {
            state,
            world,
            vm_op_ms,
            disk_op_ms,
            vm_op_sigma,
            disk_op_sigma,
            arm_port,
            login_port,
            imds_port,
            tls_dir,
            kube_port,
            listen,
            kube_watch_window,
            kube_bookmark_ms,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(serve(ServeOptions {
                state,
                world,
                timing: {
                    let t = Timing {
                        vm_op_sigma,
                        disk_op_sigma,
                        ..Timing::fixed(
                            Duration::from_millis(vm_op_ms),
                            Duration::from_millis(disk_op_ms),
                        )
                    };
                    t.check().map_err(anyhow::Error::msg)?;
                    t
                },
                arm_port,
                login_port,
                imds_port,
                tls_dir,
                kube_port,
                listen,
                kube_watch_window,
                kube_bookmark: Duration::from_millis(kube_bookmark_ms),
            }))
        }
    }
}
