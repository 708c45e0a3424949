//! Logs go to a file (kubelet reads stdout and stderr as the reply); nothing when it cannot be
//! opened. Panics are logged, not printed.

use crate::settings::Settings;
use std::sync::Mutex;

pub struct LogGuard;

pub fn init(s: &Settings) -> Option<LogGuard> {
    // The default hook prints to stderr, which kubelet would read as part of the reply.
    std::panic::set_hook(Box::new(|info| tracing::error!("panic: {info}")));
    if let Some(dir) = s.log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&s.log)
        .ok()?;
    let level = std::env::var("FLEXDISK_LOG_LEVEL").unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(format!(
        "{level},{}",
        flexdisk_azure::QUIET_DEPENDENCIES
    ))
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .try_init()
        .ok()?;
    Some(LogGuard)
}
