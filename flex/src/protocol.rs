//! The FlexVolume wire protocol: the calls kubelet and kube-controller-manager make (argv) and the
//! one JSON reply they read from stdout (and stderr: kubelet parses both streams as one).

use serde::Serialize;
use serde_json::{Map, Value};

/// The reply. Exit code 0 with Success, 1 otherwise.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reply {
    pub status: Status,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    Success,
    Failure,
    #[serde(rename = "Not supported")]
    NotSupported,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    pub attach: bool,
    #[serde(rename = "selinuxRelabel")]
    pub selinux_relabel: bool,
    pub supports_metrics: bool,
    /// kubelet applies fsGroup ownership itself on the bind mount.
    pub fs_group: bool,
    #[serde(rename = "requiresFSResize")]
    pub requires_fs_resize: bool,
}

impl Reply {
    pub fn success() -> Reply {
        Reply {
            status: Status::Success,
            message: String::new(),
            device: None,
            attached: None,
            capabilities: None,
        }
    }

    pub fn failure(message: impl Into<String>) -> Reply {
        Reply {
            status: Status::Failure,
            message: message.into(),
            ..Reply::success()
        }
    }

    pub fn not_supported(call: &str) -> Reply {
        Reply {
            status: Status::NotSupported,
            message: format!("{call} is not supported by flexdisk"),
            ..Reply::success()
        }
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Reply {
        self.message = message.into();
        self
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"status":"Failure","message":"flexdisk could not encode its reply"}"#.to_string()
        })
    }

    pub fn exit_code(&self) -> i32 {
        if self.status == Status::Success {
            0
        } else {
            1
        }
    }
}

/// A call, parsed from argv (without the program name).
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Init,
    Attach {
        options: Map<String, Value>,
        node: String,
    },
    WaitForAttach {
        device: String,
        options: Map<String, Value>,
    },
    IsAttached {
        options: Map<String, Value>,
        node: String,
    },
    MountDevice {
        dir: String,
        device: String,
        options: Map<String, Value>,
    },
    UnmountDevice {
        dir: String,
    },
    Detach {
        volume: String,
        node: String,
    },
    ExpandVolume {
        options: Map<String, Value>,
        new_bytes: u64,
    },
    ExpandFs {
        options: Map<String, Value>,
        device: String,
        dir: String,
        /// The size the volume was grown to: the device must show it before the filesystem grows.
        new_bytes: u64,
    },
    /// mount, unmount, getvolumename: "Not supported" (kubelet then bind-mounts the device mount,
    /// which mountdevice made read-only when the volume is).
    Unsupported(String),
    Version,
    Install(crate::install::InstallRequest),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn json_options(call: &str, text: &str) -> Result<Map<String, Value>, UsageError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(UsageError(format!(
            "{call}: the options must be a JSON object"
        ))),
        Err(e) => Err(UsageError(format!(
            "{call}: the options are not valid JSON ({} at column {})",
            match e.classify() {
                serde_json::error::Category::Eof => "unexpected end",
                _ => "syntax error",
            },
            e.column()
        ))),
    }
}

fn bytes(call: &str, v: &str) -> Result<u64, UsageError> {
    v.trim()
        .parse()
        .map_err(|_| UsageError(format!("{call}: {v:?} is not a size in bytes")))
}

fn arity(call: &str, args: &[String], want: usize, usage: &str) -> Result<(), UsageError> {
    if args.len() == want {
        Ok(())
    } else {
        Err(UsageError(format!(
            "{call} takes {want} argument{} ({usage}), got {}",
            if want == 1 { "" } else { "s" },
            args.len()
        )))
    }
}

impl Call {
    /// The volume a call is about, for the log: the PV's name where kubelet or
    /// kube-controller-manager passes it (`kubernetes.io/pvOrVolumeName`; the mount dir and
    /// detach's volume name are that name too), else the disk's. Lets an operator follow one
    /// volume through every call whatever the log's truncation of long arguments.
    pub fn volume(&self) -> Option<String> {
        let of_options = |o: &Map<String, Value>| {
            o.get("kubernetes.io/pvOrVolumeName")
                .and_then(Value::as_str)
                .or_else(|| {
                    o.get("diskURI")
                        .and_then(Value::as_str)
                        .and_then(|u| u.trim_end_matches('/').rsplit('/').next())
                })
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        match self {
            Call::Attach { options, .. }
            | Call::WaitForAttach { options, .. }
            | Call::IsAttached { options, .. }
            | Call::MountDevice { options, .. }
            | Call::ExpandVolume { options, .. }
            | Call::ExpandFs { options, .. } => of_options(options),
            Call::UnmountDevice { dir } => std::path::Path::new(dir)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned()),
            Call::Detach { volume, .. } => Some(volume.clone()),
            Call::Init | Call::Unsupported(_) | Call::Version | Call::Install(_) => None,
        }
    }

    pub fn parse(argv: &[String]) -> Result<Call, UsageError> {
        let Some((name, args)) = argv.split_first() else {
            return Err(UsageError("no call given; kubelet calls flexdisk with init, attach, waitforattach, isattached, mountdevice, unmountdevice or detach".into()));
        };
        let name = name.as_str();
        Ok(match name {
            "init" => {
                arity(name, args, 0, "none")?;
                Call::Init
            }
            "attach" => {
                // Older kubelets call attach without the node name; the node is required here.
                arity(name, args, 2, "<json options> <node name>")?;
                Call::Attach {
                    options: json_options(name, &args[0])?,
                    node: args[1].clone(),
                }
            }
            "waitforattach" => {
                arity(name, args, 2, "<device> <json options>")?;
                Call::WaitForAttach {
                    device: args[0].clone(),
                    options: json_options(name, &args[1])?,
                }
            }
            "isattached" => {
                arity(name, args, 2, "<json options> <node name>")?;
                Call::IsAttached {
                    options: json_options(name, &args[0])?,
                    node: args[1].clone(),
                }
            }
            "mountdevice" => {
                arity(name, args, 3, "<device mount dir> <device> <json options>")?;
                Call::MountDevice {
                    dir: args[0].clone(),
                    device: args[1].clone(),
                    options: json_options(name, &args[2])?,
                }
            }
            "unmountdevice" => {
                arity(name, args, 1, "<device mount dir>")?;
                Call::UnmountDevice {
                    dir: args[0].clone(),
                }
            }
            "detach" => {
                arity(name, args, 2, "<volume name> <node name>")?;
                Call::Detach {
                    volume: args[0].clone(),
                    node: args[1].clone(),
                }
            }
            "expandvolume" => {
                arity(
                    name,
                    args,
                    4,
                    "<json options> <device mount path> <new size> <old size>",
                )?;
                Call::ExpandVolume {
                    options: json_options(name, &args[0])?,
                    new_bytes: bytes(name, &args[2])?,
                }
            }
            "expandfs" => {
                arity(
                    name,
                    args,
                    5,
                    "<json options> <device> <device mount path> <new size> <old size>",
                )?;
                Call::ExpandFs {
                    options: json_options(name, &args[0])?,
                    device: args[1].clone(),
                    dir: args[2].clone(),
                    new_bytes: bytes(name, &args[3])?,
                }
            }
            "install" => Call::Install(crate::install::InstallRequest::parse(args)?),
            "mount" | "unmount" | "getvolumename" => Call::Unsupported(name.to_string()),
            "version" | "--version" => Call::Version,
            other => return Err(UsageError(format!("unknown call {other:?}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn replies_are_what_kubelet_reads() {
        assert_eq!(Reply::success().to_json(), r#"{"status":"Success"}"#);
        assert_eq!(
            Reply::not_supported("mount").to_json(),
            r#"{"status":"Not supported","message":"mount is not supported by flexdisk"}"#
        );
        let r = Reply {
            device: Some("3".into()),
            ..Reply::success()
        };
        assert_eq!(r.to_json(), r#"{"status":"Success","device":"3"}"#);
        assert_eq!(Reply::failure("x").exit_code(), 1);
    }

    #[test]
    fn every_volume_call_names_its_volume_for_the_log() {
        let uri = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/disk-1";
        let named = format!(r#"{{"diskURI":"{uri}","kubernetes.io/pvOrVolumeName":"pv-1"}}"#);
        let unnamed = format!(r#"{{"diskURI":"{uri}"}}"#);
        let volume = |a: &[&str]| Call::parse(&argv(a)).expect("call").volume();
        let pv = Some("pv-1".to_string());
        assert_eq!(volume(&["attach", &named, "node-a"]), pv);
        assert_eq!(
            volume(&["attach", &unnamed, "node-a"]),
            Some("disk-1".into())
        );
        assert_eq!(volume(&["waitforattach", "/dev/sdc", &named]), pv);
        assert_eq!(volume(&["isattached", &named, "node-a"]), pv);
        assert_eq!(volume(&["mountdevice", "/m/pv-1", "/dev/sdc", &named]), pv);
        assert_eq!(
            volume(&["unmountdevice", "/var/lib/kubelet/plugins/m/pv-1"]),
            pv
        );
        assert_eq!(volume(&["detach", "pv-1", "node-a"]), pv);
        assert_eq!(volume(&["init"]), None);
        assert_eq!(volume(&["attach", "{}", "node-a"]), None);
    }

    #[test]
    fn calls_parse_and_bad_ones_say_why() {
        assert_eq!(Call::parse(&argv(&["init"])), Ok(Call::Init));
        let c = Call::parse(&argv(&["attach", r#"{"diskURI":"x"}"#, "node-a"])).expect("attach");
        assert!(matches!(c, Call::Attach { node, .. } if node == "node-a"));
        assert!(Call::parse(&argv(&["attach", "{", "n"]))
            .expect_err("json")
            .0
            .contains("not valid JSON"));
        assert!(Call::parse(&argv(&["attach", "[]", "n"]))
            .expect_err("object")
            .0
            .contains("JSON object"));
        assert!(Call::parse(&argv(&["detach", "pv"]))
            .expect_err("arity")
            .0
            .contains("takes 2 arguments"));
        assert!(Call::parse(&argv(&["init", "extra"])).is_err());
        assert!(Call::parse(&argv(&["frobnicate"]))
            .expect_err("unknown")
            .0
            .contains("unknown call"));
        assert!(Call::parse(&[]).is_err());
        assert_eq!(
            Call::parse(&argv(&["mount", "/x", "{}"])),
            Ok(Call::Unsupported("mount".into()))
        );
        let e = Call::parse(&argv(&["expandvolume", "{}", "/p", "ten", "1"])).expect_err("size");
        assert!(e.0.contains("not a size in bytes"));
        assert!(matches!(
            Call::parse(&argv(&[
                "expandvolume",
                "{}",
                "/p",
                "2147483648",
                "1073741824"
            ])),
            Ok(Call::ExpandVolume {
                new_bytes: 2147483648,
                ..
            })
        ));
        assert!(Call::parse(&argv(&["install", "/x"])).is_err());
    }
}
