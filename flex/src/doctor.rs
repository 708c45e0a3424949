//! `flexdisk doctor`: checks a node's setup, one line per check with a fix hint, for an operator
//! (plain text, not kubelet's JSON). Exits non-zero when something is broken.

use crate::error::Error;
use crate::install::{DRIVER, VENDOR_DRIVER};
use crate::settings::Settings;
use flexdisk_azure::{Arm, ArmOptions, Config};
use std::path::Path;

struct Report {
    lines: Vec<String>,
    broken: bool,
}

impl Report {
    fn ok(&mut self, what: &str, detail: impl std::fmt::Display) {
        self.lines.push(format!("ok    {what}: {detail}"));
    }
    fn warn(&mut self, what: &str, detail: impl std::fmt::Display, fix: &str) {
        self.lines.push(format!("warn  {what}: {detail} — {fix}"));
    }
    fn fail(&mut self, what: &str, detail: impl std::fmt::Display, fix: &str) {
        self.broken = true;
        self.lines.push(format!("FAIL  {what}: {detail} — {fix}"));
    }
}

pub fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

fn writable_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(Error::file(dir))?;
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(Error::file(&probe))?;
    std::fs::remove_file(&probe).map_err(Error::file(&probe))
}

/// Runs every check; the report's lines and whether anything is broken.
pub fn run(s: &Settings) -> (Vec<String>, bool) {
    let mut r = Report {
        lines: Vec::new(),
        broken: false,
    };
    match std::env::current_exe() {
        Ok(exe) => {
            let in_plugin_dir = exe.file_name().is_some_and(|n| n == DRIVER)
                && exe
                    .parent()
                    .and_then(|p| p.file_name())
                    .is_some_and(|n| n == VENDOR_DRIVER);
            if in_plugin_dir {
                r.ok("install", exe.display());
            } else {
                r.warn("install", format!("running from {}", exe.display()), "kubelet finds the driver only as <plugin dir>/flexdisk~azure-disk/azure-disk: run `flexdisk install --plugin-dir <dir>`");
            }
        }
        Err(e) => r.warn("install", e, "cannot tell where this binary is"),
    }
    let log_ok = s
        .log
        .parent()
        .map(writable_dir)
        .unwrap_or_else(|| Err(Error::Options("the log file has no directory".into())));
    match log_ok {
        Ok(()) => r.ok("log", s.log.display()),
        Err(e) => r.fail(
            "log",
            format!("{}: {e}", s.log.display()),
            "set FLEXDISK_LOG to a writable file; kubelet must not see logs on stdout",
        ),
    }
    match writable_dir(&s.state_dir) {
        Ok(()) => r.ok("state", s.state_dir.display()),
        Err(e) => r.fail("state", format!("{}: {e}", s.state_dir.display()), "set FLEXDISK_STATE_DIR to a writable directory (batching spools and volume records live there)"),
    }
    if in_path("blkid") {
        r.ok("blkid", "blkid -p checks every disk before it is formatted");
    } else {
        r.fail(
            "blkid",
            "not found",
            "install util-linux: without blkid -p flexdisk formats no new disk (its own probe reads only the first 68 KiB)",
        );
    }
    let tools = [
        "mkfs.ext4",
        "resize2fs",
        "mkfs.xfs",
        "xfs_growfs",
        "mkfs.btrfs",
        "btrfs",
    ];
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !in_path(t)).collect();
    if missing.is_empty() {
        r.ok("tools", tools.join(", "));
    } else {
        r.fail("tools", format!("missing {}", missing.join(", ")), "install e2fsprogs, xfsprogs, btrfs-progs and util-linux on the node (only the filesystems you use are needed)");
    }
    let azure_dev = s.host("dev/disk/azure");
    if azure_dev.is_dir() {
        r.ok("devices", azure_dev.display());
    } else {
        r.warn("devices", format!("{} does not exist", azure_dev.display()), "Azure's udev rules are missing; the driver falls back to /sys, but installing WALinuxAgent's udev rules is better");
    }
    let config = match Config::load(&s.cloud_config) {
        Ok(c) => {
            r.ok(
                "config",
                format!(
                    "{} ({}, subscription {}, resource group {})",
                    s.cloud_config.display(),
                    c.auth.kind(),
                    c.subscription_id,
                    c.resource_group
                ),
            );
            for w in &c.warnings {
                r.warn("config", w, "fix the file's permissions");
            }
            Some(c)
        }
        Err(e) => {
            r.fail(
                "config",
                e,
                "set FLEXDISK_CONFIG to cloud-provider-azure's azure.json",
            );
            None
        }
    };
    if let Some(c) = config {
        let imds = c
            .imds_endpoint
            .join("metadata/instance?api-version=2021-02-01");
        let answered = imds.ok().and_then(|u| {
            reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(3))
                .build()
                .ok()?
                .get(u)
                .header("Metadata", "true")
                .send()
                .ok()
        });
        match answered {
            Some(rsp) if rsp.status().is_success() => r.ok("imds", c.imds_endpoint.as_str()),
            Some(rsp) => r.warn(
                "imds",
                format!("{} answered {}", c.imds_endpoint, rsp.status()),
                "needed for managed identities; check IMDS_ENDPOINT",
            ),
            None => r.warn(
                "imds",
                format!("{} does not answer", c.imds_endpoint),
                "needed for managed identities (not for a service principal)",
            ),
        }
        let credential = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::Runtime)
            .and_then(|rt| {
                rt.block_on(async {
                    let arm = Arm::connect(&c, ArmOptions::default()).await?;
                    arm.credential().token(&arm.endpoints.scope()).await?;
                    Ok::<_, Error>(arm.credential().kind())
                })
            });
        match credential {
            Ok(kind) => r.ok("credentials", format!("a Resource Manager token for the {kind}")),
            Err(e) => r.fail("credentials", e, "check the identity in the config and its role on the resource group (Contributor on disks and VMs)"),
        }
    }
    (r.lines, r.broken)
}
