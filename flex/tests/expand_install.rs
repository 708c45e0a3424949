//! Growing a mounted volume (disk through ARM, then the filesystem online) and installing the
//! driver into kubelet's plugin directory.

mod common;

use common::*;
use serde_json::json;

fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    eff >> 24 & 1 == 1
}

/// The size of the block device as the node's kernel shows it now.
fn device_bytes(dev: &str) -> u64 {
    use std::io::Seek;
    std::fs::File::open(dev)
        .and_then(|mut f| f.seek(std::io::SeekFrom::End(0)))
        .unwrap_or_else(|e| panic!("{dev}: {e}"))
}

fn size_of(dir: &std::path::Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(dir).expect("statvfs");
    st.blocks() as u64 * st.fragment_size() as u64
}

#[test]
fn a_mounted_volume_grows_online_for_each_filesystem() {
    let env = Env::start();
    for fs in ["ext4", "xfs", "btrfs"] {
        let name = format!("pvc-grow-{fs}");
        let disk = env.disk(&name, 1);
        let opts = env.options(&disk, &name, json!({"kubernetes.io/fsType": fs}));
        let (_, dev) = env.attach_and_wait(AS_A, &opts);
        let mnt = env.dir(&format!("grow-{fs}"));
        let m = mnt.to_str().expect("utf-8");
        env.kubelet(AS_A, &["mountdevice", m, &dev, &opts]).ok();
        std::fs::write(mnt.join("keep.txt"), fs).expect("write");
        let before = size_of(&mnt);
        let two_gib = (2u64 << 30).to_string();
        let one_gib = (1u64 << 30).to_string();
        let grown = env.controller(&["expandvolume", &opts, m, &two_gib, &one_gib]);
        assert!(
            grown.ok()["message"].as_str().expect("m").contains("2 GiB"),
            "{}",
            grown.raw
        );
        // Repeated: still Success, nothing to do.
        env.controller(&["expandvolume", &opts, m, &two_gib, &one_gib])
            .ok();
        // Azure grew the disk; the node's device keeps its size until the guest rescans it.
        assert_eq!(device_bytes(&dev), 1 << 30, "{fs}: before the rescan");
        let fsr = env.kubelet(AS_A, &["expandfs", &opts, &dev, m, &two_gib, &one_gib]);
        // The driver's rescan, through the node's sysfs, made the device take the new size.
        assert_eq!(
            device_bytes(&dev),
            2 << 30,
            "{fs}: after expandfs: {}",
            fsr.raw
        );
        if fs == "ext4" && !has_cap_sys_resource() {
            // ext4's online resize needs CAP_SYS_RESOURCE, which this sandbox withholds even from
            // root: the driver must say so clearly; the grow itself cannot be checked here.
            assert!(fsr.message().contains("CAP_SYS_RESOURCE"), "{}", fsr.raw);
            println!("ext4 online grow not checkable here: CAP_SYS_RESOURCE is not in CapEff");
            env.kubelet(AS_A, &["unmountdevice", m]).ok();
            env.controller(&["detach", &name, AS_A]).ok();
            continue;
        }
        assert!(
            fsr.ok()["message"]
                .as_str()
                .expect("m")
                .contains(&format!("grew the {fs}")),
            "{}",
            fsr.raw
        );
        let after = size_of(&mnt);
        assert!(after > before + (512 << 20), "{fs}: {before} → {after}");
        assert_eq!(
            std::fs::read_to_string(mnt.join("keep.txt")).expect("data"),
            fs
        );
        env.kubelet(AS_A, &["unmountdevice", m]).ok();
        env.controller(&["detach", &name, AS_A]).ok();
    }
    assert_eq!(
        env.controller(&["init"]).ok()["capabilities"]["requiresFSResize"],
        true
    );
}

#[test]
fn install_replaces_the_driver_atomically() {
    let env = Env::start();
    let plugins = env.dir("plugins");
    let dir = plugins.to_str().expect("utf-8");
    env.controller(&["install", "--plugin-dir", dir]).ok();
    env.controller(&["install", "--plugin-dir", dir]).ok();
    let installed = plugins.join("flexdisk~azure-disk/azure-disk");
    assert_eq!(
        std::fs::read(&installed).expect("installed"),
        std::fs::read(env!("CARGO_BIN_EXE_flexdisk")).expect("binary")
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&installed)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    let entries: Vec<String> = std::fs::read_dir(plugins.join("flexdisk~azure-disk"))
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    let mut entries = entries;
    entries.sort();
    assert_eq!(
        entries,
        ["azure-disk", "flexdisk.conf"],
        "no staging files left"
    );
    // The installed copy answers kubelet's probe.
    let out = std::process::Command::new(&installed)
        .arg("init")
        .env("FLEXDISK_LOG", env.dir("log"))
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"attach\":true"));
}

#[test]
fn doctor_checks_an_installed_driver_configured_beside_it() {
    // As the DaemonSet does it: the installer's FLEXDISK_* environment and a cloud config from a
    // Secret travel beside the binary; the installed driver then runs with no environment at all.
    let env = Env::start();
    let plugins = env.dir("plugins");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flexdisk"))
        .args(["install", "--plugin-dir", plugins.to_str().expect("utf-8")])
        .args(["--cloud-config", &env.sim.node_field(AS_A, "azureJson")])
        .env_clear()
        .env("FLEXDISK_LOG", env.dir("doctor.log"))
        .env("FLEXDISK_STATE_DIR", env.dir("doctor-state"))
        .env("FLEXDISK_HOST_ROOT", env.sim.node_field(AS_A, "root"))
        .env("FLEXDISK_CONFIG", "/ignored/when/a/copy/is/installed.json")
        .env("UNRELATED", "not copied")
        .output()
        .expect("install runs");
    assert!(out.status.success(), "{out:?}");
    let beside = plugins.join("flexdisk~azure-disk");
    let installed = beside.join("azure-disk");
    let conf = std::fs::read_to_string(beside.join("flexdisk.conf")).expect("conf");
    assert!(conf.contains("\nFLEXDISK_CONFIG=azure.json\n"), "{conf}");
    assert!(
        !conf.contains("UNRELATED") && !conf.contains("/ignored/"),
        "{conf}"
    );
    use std::os::unix::fs::PermissionsExt;
    let copy = std::fs::metadata(beside.join("azure.json")).expect("copied");
    assert_eq!(
        copy.permissions().mode() & 0o777,
        0o600,
        "the copy holds secrets"
    );
    assert_eq!(
        std::fs::read(beside.join("azure.json")).expect("copy"),
        std::fs::read(env.sim.node_field(AS_A, "azureJson")).expect("source")
    );
    let run = |extra: &[(&str, &str)]| {
        let mut c = std::process::Command::new(&installed);
        c.arg("doctor")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SSL_CERT_FILE", env.sim.field("caBundle"))
            .env("IMDS_ENDPOINT", env.sim.node_field(AS_A, "imds"));
        for (k, v) in extra {
            c.env(k, v);
        }
        let out = c.output().expect("doctor runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, text) = run(&[]);
    for line in [
        "ok    install",
        "ok    config",
        "ok    imds",
        "ok    credentials",
        "ok    log",
        "ok    state",
        "ok    devices",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    assert!(text.contains("user-assigned managed identity"), "{text}");
    let tools_ok = text.contains("ok    tools");
    assert_eq!(code, Some(if tools_ok { 0 } else { 1 }), "{text}");
    // The environment wins over the file; a broken config is reported with a fix, exit 1.
    let (code, text) = run(&[("FLEXDISK_CONFIG", "/nonexistent/azure.json")]);
    assert_eq!(code, Some(1));
    assert!(
        text.contains("FAIL  config: cannot read the cloud config /nonexistent/azure.json"),
        "{text}"
    );
}

#[test]
fn installer_stays_until_terminated_and_reports_a_missing_cloud_config() {
    let env = Env::start();
    let plugins = env.dir("plugins");
    let source = env.dir("secret-azure.json");
    std::fs::write(&source, b"{\"first\": 1}").expect("source");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_flexdisk"))
        .args([
            "install",
            "--stay",
            "--plugin-dir",
            plugins.to_str().expect("utf-8"),
        ])
        .args([
            "--cloud-config",
            source.to_str().expect("utf-8"),
            "--refresh-secs=1",
        ])
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawns");
    let installed = plugins.join("flexdisk~azure-disk/azure-disk");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !installed.exists() {
        assert!(std::time::Instant::now() < deadline, "never installed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "--stay keeps running"
    );
    // A rotated secret (the Secret volume updated) reaches the copy beside the driver.
    let copy = plugins.join("flexdisk~azure-disk/azure.json");
    std::fs::write(&source, b"{\"second\": 2}").expect("rotate");
    while std::fs::read(&copy).expect("copy") != b"{\"second\": 2}" {
        assert!(
            std::time::Instant::now() < deadline,
            "the copy was never refreshed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal");
    let out = child.wait_with_output().expect("exits");
    assert_eq!(out.status.code(), Some(0), "SIGTERM ends it cleanly");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"status\":\"Success\""));

    // A cloud config that is not there: Failure naming it, nothing installed, and no staying.
    let other = env.dir("other-plugins");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flexdisk"))
        .args([
            "install",
            "--stay",
            "--plugin-dir",
            other.to_str().expect("utf-8"),
        ])
        .args(["--cloud-config", "/nonexistent/azure.json"])
        .env_clear()
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cannot read the cloud config /nonexistent/azure.json"),
        "{text}"
    );
    assert!(!other.join("flexdisk~azure-disk/azure-disk").exists());
}

/// The driver's rescan goes to the node's own sysfs (`FLEXDISK_HOST_ROOT`), never the host's:
/// run in a mount namespace whose `/sys` is a decoy laid out as a host holding this very device
/// would show it (a SCSI device whose block device has its number, `class/block/<name>/device`,
/// the SCSI hosts' `scan`), `expandfs` grows the volume and the decoy's attributes stay
/// unwritten.
#[test]
fn the_rescan_goes_to_the_nodes_sysfs_never_the_hosts() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::start();
    let name = "pvc-decoy";
    let disk = env.disk(name, 1);
    let opts = env.options(&disk, name, json!({"kubernetes.io/fsType": "xfs"}));
    let (_, dev) = env.attach_and_wait(AS_A, &opts);
    let mnt = env.dir("decoy-mnt");
    let m = mnt.to_str().expect("utf-8");
    env.kubelet(AS_A, &["mountdevice", m, &dev, &opts]).ok();
    let (two_gib, one_gib) = ((2u64 << 30).to_string(), (1u64 << 30).to_string());
    env.controller(&["expandvolume", &opts, m, &two_gib, &one_gib])
        .ok();
    assert_eq!(device_bytes(&dev), 1 << 30, "before the rescan");

    let rdev = std::fs::metadata(&dev).expect("device").rdev();
    let majmin = format!(
        "{}:{}\n",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    );
    let block = std::fs::canonicalize(&dev).expect("device");
    let block = block.file_name().expect("name").to_string_lossy();
    let decoy = env.dir("host-sys");
    let scsi = "devices/VMBUS:00/host1/target1:0:0/1:0:0:0";
    for (file, content) in [
        (format!("{scsi}/block/{block}/dev"), majmin.as_str()),
        (format!("{scsi}/vendor"), "Msft    \n"),
        (format!("{scsi}/model"), "Virtual Disk    \n"),
        (format!("{scsi}/rescan"), ""),
        (format!("class/block/{block}/device/rescan"), ""),
        ("class/scsi_host/host0/scan".into(), ""),
        ("class/scsi_host/host1/scan".into(), ""),
    ] {
        let path = decoy.join(file);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("decoy dir");
        std::fs::write(&path, content).expect("decoy file");
    }
    std::fs::create_dir_all(decoy.join("bus/scsi/devices")).expect("decoy bus");
    // Absolute, as the kernel's links resolve: into the decoy once it is the namespace's /sys.
    std::os::unix::fs::symlink(
        format!("/sys/{scsi}"),
        decoy.join("bus/scsi/devices/1:0:0:0"),
    )
    .expect("decoy link");

    let script = "mount --bind \"$0\" /sys && exec \"$@\"";
    let decoy_arg = decoy.to_str().expect("utf-8");
    let fsr = env.kubelet_under(
        AS_A,
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            decoy_arg,
        ],
        &["expandfs", &opts, &dev, m, &two_gib, &one_gib],
    );
    fsr.ok();
    assert!(fsr.message().contains("grew the xfs"), "{}", fsr.raw);
    assert_eq!(device_bytes(&dev), 2 << 30, "after expandfs");
    for attr in [
        format!("{scsi}/rescan"),
        format!("class/block/{block}/device/rescan"),
        "class/scsi_host/host0/scan".into(),
        "class/scsi_host/host1/scan".into(),
    ] {
        assert_eq!(
            std::fs::read_to_string(decoy.join(&attr)).expect("decoy attr"),
            "",
            "the driver wrote to the host's /sys/{attr}"
        );
    }
    env.kubelet(AS_A, &["unmountdevice", m]).ok();
    env.controller(&["detach", name, AS_A]).ok();
}
