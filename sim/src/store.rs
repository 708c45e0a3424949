//! Everything the simulator knows, persisted as one JSON file under `--state` so a restart loses
//! nothing. Disk contents live beside it as sparse files.

use crate::model::{Disk, Operation, Snapshot, Vm};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// HMAC key that signs every token the simulator issues (base64).
    pub signing_key: String,
    pub client_secret: String,
    pub disks: BTreeMap<String, Disk>,
    pub snapshots: BTreeMap<String, Snapshot>,
    /// Keyed by node name.
    pub vms: BTreeMap<String, Vm>,
    pub operations: BTreeMap<String, Operation>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("state file {path} is damaged: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
}

pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: &Path) -> Result<Store, StoreError> {
        for sub in ["disks", "snapshots", "nodes"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|source| StoreError::Io {
                path: p.display().to_string(),
                source,
            })?;
        }
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn load(&self) -> Result<Option<State>, StoreError> {
        let path = self.file();
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StoreError::Parse {
                        path: path.display().to_string(),
                        source,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Write-then-rename, so a crash leaves either the old state or the new one.
    pub fn save(&self, state: &State) -> Result<(), StoreError> {
        let path = self.file();
        let tmp = self.dir.join("state.json.tmp");
        let io = |source| StoreError::Io {
            path: path.display().to_string(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    pub fn disk_file(&self, unique_id: &str) -> PathBuf {
        self.dir.join("disks").join(format!("{unique_id}.img"))
    }

    pub fn snapshot_file(&self, unique_id: &str) -> PathBuf {
        self.dir.join("snapshots").join(format!("{unique_id}.img"))
    }

    pub fn node_root(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(node)
    }
}
