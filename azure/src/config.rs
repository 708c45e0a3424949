//! Cloud configuration: cloud-provider-azure's `azure.json`, read as AKS, aks-engine and CAPZ write
//! it, with the `AZURE_*` environment overrides that the workload-identity webhook and operators set.
//!
//! Parsing is done field by field from a JSON value so that every complaint names the field and
//! the file, and so that no parser message can quote a secret back.

use crate::secret::Secret;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use url::Url;

/// Where cloud-provider-azure keeps it on every node.
pub const DEFAULT_PATH: &str = "/etc/kubernetes/azure.json";
/// Where the workload-identity webhook projects the service account token.
pub const DEFAULT_FEDERATED_TOKEN_FILE: &str = "/var/run/secrets/azure/tokens/azure-identity-token";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the cloud config {path}: {source} (set --cloud-config or AZURE_CLOUD_CONFIG to its path)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the cloud config {path} is not a valid JSON object: {reason}")]
    Syntax { path: PathBuf, reason: String },
    #[error("the cloud config {path} lacks `{field}`: {hint}")]
    Missing {
        path: PathBuf,
        field: &'static str,
        hint: &'static str,
    },
    #[error("`{field}` in the cloud config {path} {reason}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        reason: String,
    },
}

/// The clouds cloud-provider-azure knows by name, plus any cloud that publishes its endpoints at
/// `resourceManagerEndpoint` (Azure Stack Hub, private clouds, the simulator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudName {
    Public,
    China,
    UsGovernment,
    /// `AzureStackCloud` or any cloud given by `resourceManagerEndpoint`.
    Custom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmType {
    /// Availability-set or standalone VMs: the node name is the VM name.
    Standard,
    /// Uniform scale sets (AKS): nodes named `<scale set><6 base-36 digits>`; plain VMs may be
    /// mixed in.
    Vmss,
    /// Flexible scale sets: their VMs are ordinary `virtualMachines` resources.
    VmssFlex,
}

/// How flexdisk proves who it is to Entra ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    ClientSecret {
        client_id: String,
        secret: Secret,
    },
    /// The VM's identity through IMDS; `client_id` picks a user-assigned one.
    ManagedIdentity {
        client_id: Option<String>,
    },
    /// A federated Kubernetes service-account token exchanged for an Entra ID token; the file is
    /// re-read for every exchange (kubelet rotates it).
    WorkloadIdentity {
        client_id: String,
        token_file: PathBuf,
    },
}

impl Auth {
    pub fn kind(&self) -> &'static str {
        match self {
            Auth::ClientSecret { .. } => "client secret",
            Auth::ManagedIdentity {
                client_id: Some(_), ..
            } => "user-assigned managed identity",
            Auth::ManagedIdentity { client_id: None } => "system-assigned managed identity",
            Auth::WorkloadIdentity { .. } => "workload identity",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from (for messages).
    pub path: PathBuf,
    pub cloud: CloudName,
    pub resource_manager_endpoint: Option<Url>,
    /// `AZURE_AUTHORITY_HOST`, as the workload-identity webhook sets it.
    pub authority_host: Option<Url>,
    pub tenant_id: String,
    pub subscription_id: String,
    pub resource_group: String,
    pub location: String,
    pub vm_type: VmType,
    pub auth: Auth,
    /// Where IMDS answers: `IMDS_ENDPOINT` (Azure Arc, proxies) or the link-local address.
    pub imds_endpoint: Url,
    /// Whether the file itself carries a client secret (then it should be readable by root only).
    pub file_holds_secret: bool,
    /// Things worth a warning in the log (a world-readable file holding a secret).
    pub warnings: Vec<String>,
}

/// Reads the environment; a function so tests can pass their own.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Config {
    /// Reads `path` and applies the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &process_env)
    }

    pub fn load_with(path: &Path, env: Env) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(path, &text, env)?;
        if let Some(w) = world_readable_secret(path, config.file_holds_secret) {
            config.warnings.push(w);
        }
        Ok(config)
    }

    /// Parses the file's text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str, env: Env) -> Result<Config, ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            // serde's category and position only: its full message can quote values.
            reason: format!(
                "{} at line {} column {}",
                match e.classify() {
                    serde_json::error::Category::Eof => "unexpected end of file",
                    serde_json::error::Category::Syntax => "syntax error",
                    _ => "unreadable data",
                },
                e.line(),
                e.column()
            ),
        })?;
        let Value::Object(map) = value else {
            return Err(ConfigError::Syntax {
                path: path.to_path_buf(),
                reason: "the top level must be an object".into(),
            });
        };
        Fields {
            path,
            map: &map,
            env,
        }
        .config()
    }
}

struct Fields<'a> {
    path: &'a Path,
    map: &'a Map<String, Value>,
    env: Env<'a>,
}

impl Fields<'_> {
    fn invalid(&self, field: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            field,
            reason: reason.into(),
        }
    }

    fn missing(&self, field: &'static str, hint: &'static str) -> ConfigError {
        ConfigError::Missing {
            path: self.path.to_path_buf(),
            field,
            hint,
        }
    }

    /// A string field; absent, null and "" are all "not set", as in cloud-provider-azure.
    fn string(&self, field: &'static str) -> Result<Option<String>, ConfigError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(other) => {
                Err(self.invalid(field, format!("must be a string, found {}", kind_of(other))))
            }
        }
    }

    fn boolean(&self, field: &'static str) -> Result<bool, ConfigError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.invalid(
                field,
                format!("must be true or false, found {}", kind_of(other)),
            )),
        }
    }

    /// The environment wins over the file.
    fn string_or_env(&self, field: &'static str, var: &str) -> Result<Option<String>, ConfigError> {
        match (self.env)(var) {
            Some(v) => Ok(Some(v)),
            None => self.string(field),
        }
    }

    fn required(
        &self,
        field: &'static str,
        var: &str,
        hint: &'static str,
    ) -> Result<String, ConfigError> {
        self.string_or_env(field, var)?
            .ok_or_else(|| self.missing(field, hint))
    }

    fn url(&self, field: &'static str, value: Option<String>) -> Result<Option<Url>, ConfigError> {
        value
            .map(|v| {
                let u = Url::parse(&v)
                    .map_err(|e| self.invalid(field, format!("is not a URL ({e}): {v}")))?;
                if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
                    return Err(self.invalid(field, format!("must be an http(s) URL: {v}")));
                }
                Ok(u)
            })
            .transpose()
    }

    fn config(&self) -> Result<Config, ConfigError> {
        let resource_manager_endpoint = self.url(
            "resourceManagerEndpoint",
            self.string("resourceManagerEndpoint")?,
        )?;
        let cloud = match self
            .string_or_env("cloud", "AZURE_ENVIRONMENT")?
            .map(|c| c.to_ascii_uppercase())
            .as_deref()
        {
            None | Some("AZUREPUBLICCLOUD") if resource_manager_endpoint.is_none() => {
                CloudName::Public
            }
            Some("AZURECHINACLOUD") if resource_manager_endpoint.is_none() => CloudName::China,
            Some("AZUREUSGOVERNMENTCLOUD") if resource_manager_endpoint.is_none() => {
                CloudName::UsGovernment
            }
            Some("AZURESTACKCLOUD") if resource_manager_endpoint.is_none() => {
                return Err(self.missing(
                    "resourceManagerEndpoint",
                    "AzureStackCloud publishes its endpoints there; set it to the cloud's Resource Manager URL",
                ))
            }
            Some("AZUREPUBLICCLOUD" | "AZURECHINACLOUD" | "AZUREUSGOVERNMENTCLOUD"
                | "AZURESTACKCLOUD")
            | None => CloudName::Custom,
            Some(other) => {
                return Err(self.invalid(
                    "cloud",
                    format!(
                        "names an unknown cloud {other:?}: use AzurePublicCloud, AzureChinaCloud, \
                         AzureUSGovernmentCloud, or AzureStackCloud with resourceManagerEndpoint"
                    ),
                ))
            }
        };
        let subscription_id = self.required(
            "subscriptionId",
            "AZURE_SUBSCRIPTION_ID",
            "the subscription that holds the cluster's disks and VMs",
        )?;
        let resource_group = self.required(
            "resourceGroup",
            "AZURE_RESOURCE_GROUP",
            "the resource group of the cluster's VMs (on AKS, the MC_ node resource group)",
        )?;
        let location = self.required(
            "location",
            "AZURE_LOCATION",
            "the region of the cluster, e.g. westeurope",
        )?;
        let vm_type = match self
            .string("vmType")?
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("standard") => VmType::Standard,
            Some("vmss") => VmType::Vmss,
            Some("vmssflex") => VmType::VmssFlex,
            Some(other) => {
                return Err(self.invalid(
                    "vmType",
                    format!("is {other:?}: use standard, vmss or vmssflex"),
                ))
            }
        };
        let tenant = self.string_or_env("tenantId", "AZURE_TENANT_ID")?;
        let auth = self.auth()?;
        let tenant_id = match (&auth, tenant) {
            (_, Some(t)) => t,
            (Auth::ManagedIdentity { .. }, None) => String::new(),
            (_, None) => {
                return Err(self.missing(
                    "tenantId",
                    "the Entra ID tenant of the service principal or workload identity",
                ))
            }
        };
        if !tenant_id.is_empty()
            && !tenant_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(self.invalid("tenantId", "must be a tenant ID (GUID) or domain name"));
        }
        let imds_endpoint = match (self.env)("IMDS_ENDPOINT") {
            Some(v) => Url::parse(&v).map_err(|e| {
                self.invalid(
                    "IMDS_ENDPOINT",
                    format!("(environment) is not a URL ({e}): {v}"),
                )
            })?,
            None => Url::parse("http://169.254.169.254/")
                .map_err(|e| self.invalid("IMDS_ENDPOINT", e.to_string()))?,
        };
        let authority_host = match (self.env)("AZURE_AUTHORITY_HOST") {
            Some(v) => Some(Url::parse(&v).map_err(|e| {
                self.invalid(
                    "AZURE_AUTHORITY_HOST",
                    format!("(environment) is not a URL ({e}): {v}"),
                )
            })?),
            None => None,
        };
        Ok(Config {
            path: self.path.to_path_buf(),
            cloud,
            resource_manager_endpoint,
            authority_host,
            tenant_id,
            subscription_id,
            resource_group,
            location,
            vm_type,
            auth,
            imds_endpoint,
            file_holds_secret: self
                .string("aadClientSecret")?
                .is_some_and(|s| !s.eq_ignore_ascii_case("msi")),
            warnings: Vec::new(),
        })
    }

    /// cloud-provider-azure's order: workload identity, then managed identity, then the service
    /// principal's secret. The webhook's variables (`AZURE_FEDERATED_TOKEN_FILE`) and an explicit
    /// `AZURE_CLIENT_SECRET` win over the file.
    fn auth(&self) -> Result<Auth, ConfigError> {
        let env_client = (self.env)("AZURE_CLIENT_ID");
        if let Some(token_file) = (self.env)("AZURE_FEDERATED_TOKEN_FILE") {
            let client_id = env_client.or(self.string("aadClientId")?).ok_or_else(|| {
                self.missing(
                    "aadClientId",
                    "the workload identity's client ID (or AZURE_CLIENT_ID)",
                )
            })?;
            return Ok(Auth::WorkloadIdentity {
                client_id,
                token_file: token_file.into(),
            });
        }
        if let Some(secret) = (self.env)("AZURE_CLIENT_SECRET") {
            let client_id = env_client.or(self.string("aadClientId")?).ok_or_else(|| {
                self.missing(
                    "aadClientId",
                    "the service principal's client ID (or AZURE_CLIENT_ID)",
                )
            })?;
            return Ok(Auth::ClientSecret {
                client_id,
                secret: Secret::new(secret),
            });
        }
        if self.boolean("useFederatedWorkloadIdentityExtension")? {
            let client_id = env_client.or(self.string("aadClientId")?).ok_or_else(|| {
                self.missing(
                    "aadClientId",
                    "useFederatedWorkloadIdentityExtension needs the workload identity's client ID",
                )
            })?;
            let token_file = self
                .string("aadFederatedTokenFile")?
                .unwrap_or_else(|| DEFAULT_FEDERATED_TOKEN_FILE.to_string());
            return Ok(Auth::WorkloadIdentity {
                client_id,
                token_file: token_file.into(),
            });
        }
        if self.boolean("useManagedIdentityExtension")? {
            let client_id = env_client.or(self.string("userAssignedIdentityID")?);
            if let Some(id) = &client_id {
                if id.starts_with('/') {
                    return Err(self.invalid(
                        "userAssignedIdentityID",
                        "must be the identity's client ID (a GUID), not its resource ID",
                    ));
                }
            }
            return Ok(Auth::ManagedIdentity { client_id });
        }
        let client_id = env_client.or(self.string("aadClientId")?).ok_or_else(|| {
            self.missing(
                "aadClientId",
                "set aadClientId and aadClientSecret (a service principal), \
                 useManagedIdentityExtension (the VM's identity) or \
                 useFederatedWorkloadIdentityExtension (workload identity)",
            )
        })?;
        if client_id.eq_ignore_ascii_case("msi") {
            return Err(self.invalid(
                "aadClientId",
                "is \"msi\" but useManagedIdentityExtension is not true: set it to use the VM's identity",
            ));
        }
        let secret = self.string("aadClientSecret")?.ok_or_else(|| {
            self.missing(
                "aadClientSecret",
                "the service principal's secret (or AZURE_CLIENT_SECRET); for a managed identity set useManagedIdentityExtension",
            )
        })?;
        Ok(Auth::ClientSecret {
            client_id,
            secret: Secret::new(secret),
        })
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(unix)]
fn world_readable_secret(path: &Path, holds_secret: bool) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (holds_secret && mode & 0o004 != 0).then(|| {
        format!(
            "{} holds a client secret and is readable by every user (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        )
    })
}

#[cfg(not(unix))]
fn world_readable_secret(_: &Path, _: bool) -> Option<String> {
    None
}
