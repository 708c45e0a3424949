//! `flexdisk install --plugin-dir DIR`: puts this binary where kubelet looks for the driver,
//! atomically — kubelet's prober watches that directory and must never see a half-written file.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub const VENDOR_DRIVER: &str = "flexdisk~azure-disk";
pub const DRIVER: &str = "azure-disk";

pub fn install(plugin_dir: &Path) -> Result<String, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let dir = plugin_dir.join(VENDOR_DRIVER);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let target = dir.join(DRIVER);
    let staging = dir.join(format!(".{DRIVER}.{}", std::process::id()));
    let bytes = std::fs::read(&me).map_err(|e| format!("{}: {e}", me.display()))?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&staging)?;
        f.write_all(&bytes)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        f.sync_all()?;
        std::fs::rename(&staging, &target)?;
        std::fs::File::open(&dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&staging);
        format!("installing to {}: {e}", target.display())
    })?;
    Ok(format!("installed {}", target.display()))
}
