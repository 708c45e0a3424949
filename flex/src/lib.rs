//! flexdisk, the FlexVolume driver for Azure managed disks: kubelet and kube-controller-manager
//! exec it for every volume operation and read one JSON object from its output.
#![forbid(unsafe_code)]

pub mod attach;
pub mod batch;
pub mod calls;
pub mod clock;
pub mod device;
pub mod doctor;
pub mod error;
pub mod format;
pub mod install;
pub mod logging;
pub mod mount_device;
pub mod mounts;
pub mod options;
pub mod ownership;
pub mod protocol;
pub mod settings;
pub mod signatures;
pub mod vm_view;

use protocol::{Call, Reply};
use settings::Settings;
use std::time::Instant;

/// Runs one invocation (argv without the program name) and returns its reply; never panics
/// outward, never prints.
pub fn main_reply(argv: &[String]) -> Reply {
    let started = Instant::now();
    let settings = Settings::from_env();
    if let [only] = argv {
        if only == "init" {
            // A constant answer: no runtime, no logger (see `logging::plain_line`).
            let reply = calls::run(&settings, Call::Init);
            logging::plain_line(
                &settings,
                &format!(
                    "call call=init outcome={:?} duration_us={}",
                    reply.status,
                    started.elapsed().as_micros()
                ),
            );
            return reply;
        }
    }
    let _log = logging::init(&settings);
    let call_name = argv.first().cloned().unwrap_or_default();
    let parsed = Call::parse(argv);
    let volume = parsed
        .as_ref()
        .ok()
        .and_then(Call::volume)
        .unwrap_or_default();
    let reply = match parsed {
        Err(e) => Reply::failure(e.0),
        Ok(call) => std::panic::catch_unwind(|| calls::run(&settings, call)).unwrap_or_else(|_| {
            Reply::failure(format!(
                "flexdisk {call_name} failed unexpectedly; see {}",
                settings.log.display()
            ))
        }),
    };
    tracing::info!(
        call = %call_name,
        volume = %volume,
        args = ?logging::loggable_args(argv.get(1..).unwrap_or_default()),
        outcome = ?reply.status,
        message = %reply.message,
        duration_ms = started.elapsed().as_millis() as u64,
        "call"
    );
    reply
}
