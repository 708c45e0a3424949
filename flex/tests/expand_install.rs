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
        let lun = env.controller(&["attach", &opts, AS_A]).ok()["device"]
            .as_str()
            .expect("lun")
            .to_string();
        let dev = env.kubelet(AS_A, &["waitforattach", &lun, &opts]).ok()["device"]
            .as_str()
            .expect("dev")
            .to_string();
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
        let fsr = env.kubelet(AS_A, &["expandfs", &opts, &dev, m, &two_gib, &one_gib]);
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
    assert_eq!(
        entries,
        vec!["azure-disk".to_string()],
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
    let env = Env::start();
    let plugins = env.dir("plugins");
    env.controller(&["install", "--plugin-dir", plugins.to_str().expect("utf-8")])
        .ok();
    let installed = plugins.join("flexdisk~azure-disk/azure-disk");
    std::fs::write(
        plugins.join("flexdisk~azure-disk/flexdisk.conf"),
        format!(
            "# written by the installer\nFLEXDISK_CONFIG={}\nFLEXDISK_LOG={}\nFLEXDISK_STATE_DIR={}\nFLEXDISK_HOST_ROOT={}\n",
            env.sim.node_field(AS_A, "azureJson"),
            env.dir("doctor.log").display(),
            env.dir("doctor-state").display(),
            env.sim.node_field(AS_A, "root"),
        ),
    )
    .expect("conf");
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
