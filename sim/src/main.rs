use clap::Parser;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("FLEXDISK_SIM_LOG"))
        .init();
    flexdisk_sim::cli::run(flexdisk_sim::cli::Cli::parse())
}
