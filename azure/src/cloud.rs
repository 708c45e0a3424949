//! Endpoints of the cloud: where Resource Manager is, where Entra ID is, which audience to ask for.
//!
//! Named clouds have fixed endpoints. A cloud given by `resourceManagerEndpoint` (Azure Stack Hub,
//! private clouds) publishes the rest at `{resourceManagerEndpoint}/metadata/endpoints`, which is
//! read the way cloud-provider-azure reads it.

use crate::config::{CloudName, Config};
use crate::error::AzureError;
use serde::Deserialize;
use url::Url;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEndpoints {
    pub resource_manager: Url,
    /// Entra ID's authority host (https).
    pub authority_host: Url,
    /// The audience of Resource Manager tokens.
    pub audience: String,
}

impl CloudEndpoints {
    /// The OAuth scope for Resource Manager.
    pub fn scope(&self) -> String {
        format!("{}/.default", self.audience.trim_end_matches('/'))
    }

    /// The endpoints of a cloud known by name, `None` for a custom one.
    pub fn named(cloud: &CloudName) -> Option<CloudEndpoints> {
        let (rm, login, audience) = match cloud {
            CloudName::Public => (
                "https://management.azure.com/",
                "https://login.microsoftonline.com/",
                "https://management.azure.com/",
            ),
            CloudName::China => (
                "https://management.chinacloudapi.cn/",
                "https://login.chinacloudapi.cn/",
                "https://management.chinacloudapi.cn/",
            ),
            CloudName::UsGovernment => (
                "https://management.usgovcloudapi.net/",
                "https://login.microsoftonline.us/",
                "https://management.usgovcloudapi.net/",
            ),
            CloudName::Custom => return None,
        };
        Some(CloudEndpoints {
            resource_manager: Url::parse(rm).ok()?,
            authority_host: Url::parse(login).ok()?,
            audience: audience.to_string(),
        })
    }

    /// The endpoints for `config`: by name, or from the cloud's metadata document. An
    /// `AZURE_AUTHORITY_HOST` from the environment wins over both.
    pub async fn resolve(config: &Config, http: &reqwest::Client) -> Result<Self, AzureError> {
        let mut endpoints = match (
            &config.resource_manager_endpoint,
            Self::named(&config.cloud),
        ) {
            (None, Some(named)) => named,
            (Some(rm), _) => Self::discover(rm, http).await?,
            (None, None) => {
                return Err(AzureError::other(format!(
                    "{}: a custom cloud needs resourceManagerEndpoint",
                    config.path.display()
                )))
            }
        };
        if let Some(host) = &config.authority_host {
            endpoints.authority_host = host.clone();
        }
        Ok(endpoints)
    }

    async fn discover(rm: &Url, http: &reqwest::Client) -> Result<Self, AzureError> {
        let mut url = rm.join("metadata/endpoints").map_err(|e| {
            AzureError::other(format!(
                "resourceManagerEndpoint {rm} cannot be joined: {e}"
            ))
        })?;
        url.set_query(Some("api-version=2019-05-01"));
        let fail = |why: String| AzureError::Transient {
            message: format!("cannot read the cloud's endpoints from {url}: {why}"),
        };
        let rsp = http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !rsp.status().is_success() {
            return Err(fail(format!("HTTP {}", rsp.status())));
        }
        let body = rsp.bytes().await.map_err(|e| fail(e.to_string()))?;
        Self::from_metadata(rm, &body).map_err(|why| AzureError::other(format!("{url}: {why}")))
    }

    /// Reads the metadata document (sans I/O, for tests). At the api-version asked (2019-05-01)
    /// Resource Manager answers an array of clouds, each with its `name` and `resourceManager`
    /// (cloud-provider-azure's pkg/azclient/cloud.go reads the same); the entry for `rm` is the
    /// one naming it, else the only one. The older single-object form (Azure Stack Hub's
    /// `2015-01-01`, and servers that ignore the api-version) is read too.
    pub fn from_metadata(rm: &Url, body: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Document {
            Clouds(Vec<Metadata>),
            One(Metadata),
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Metadata {
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            resource_manager: Option<String>,
            authentication: Authentication,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Authentication {
            login_endpoint: String,
            #[serde(default)]
            audiences: Vec<String>,
        }
        let doc: Document = serde_json::from_slice(body)
            .map_err(|e| format!("not a cloud metadata document ({e})"))?;
        let m = match doc {
            Document::One(m) => m,
            Document::Clouds(mut clouds) => {
                let same = |u: &str| {
                    u.trim_end_matches('/')
                        .eq_ignore_ascii_case(rm.as_str().trim_end_matches('/'))
                };
                match clouds
                    .iter()
                    .position(|c| c.resource_manager.as_deref().is_some_and(same))
                {
                    Some(i) => clouds.swap_remove(i),
                    None if clouds.len() == 1 => clouds.remove(0),
                    None => {
                        let names: Vec<&str> =
                            clouds.iter().filter_map(|c| c.name.as_deref()).collect();
                        return Err(format!(
                            "none of its {} clouds ({}) names {rm} as its resourceManager",
                            clouds.len(),
                            names.join(", ")
                        ));
                    }
                }
            }
        };
        let login = &m.authentication.login_endpoint;
        let mut authority_host =
            Url::parse(login).map_err(|e| format!("loginEndpoint {login:?} is not a URL ({e})"))?;
        // ADFS-style login endpoints end in a path (…/adfs); Entra ID clients add the tenant.
        authority_host.set_path("/");
        let audience = m
            .authentication
            .audiences
            .first()
            .cloned()
            .ok_or("authentication.audiences is empty")?;
        Ok(CloudEndpoints {
            resource_manager: rm.clone(),
            authority_host,
            audience,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_clouds() {
        let p = CloudEndpoints::named(&CloudName::Public).expect("public");
        assert_eq!(p.scope(), "https://management.azure.com/.default");
        let c = CloudEndpoints::named(&CloudName::China).expect("china");
        assert_eq!(c.authority_host.as_str(), "https://login.chinacloudapi.cn/");
        let g = CloudEndpoints::named(&CloudName::UsGovernment).expect("gov");
        assert_eq!(
            g.resource_manager.as_str(),
            "https://management.usgovcloudapi.net/"
        );
        assert!(CloudEndpoints::named(&CloudName::Custom).is_none());
    }

    #[test]
    fn azure_stack_metadata() {
        let rm = Url::parse("https://management.local.azurestack.external/").expect("url");
        let body = br#"{"galleryEndpoint":"https://x/","graphEndpoint":"https://graph.windows.net/",
            "authentication":{"loginEndpoint":"https://login.microsoftonline.com/",
            "audiences":["https://management.contoso.onmicrosoft.com/4de154de-f8a8-4017-af41-df619da68155"]}}"#;
        let e = CloudEndpoints::from_metadata(&rm, body).expect("parses");
        assert_eq!(
            e.authority_host.as_str(),
            "https://login.microsoftonline.com/"
        );
        assert_eq!(
            e.scope(),
            "https://management.contoso.onmicrosoft.com/4de154de-f8a8-4017-af41-df619da68155/.default"
        );
        let bad = CloudEndpoints::from_metadata(
            &rm,
            br#"{"authentication":{"loginEndpoint":"x","audiences":[]}}"#,
        );
        assert!(bad.expect_err("bad").contains("loginEndpoint"));
    }

    #[test]
    fn array_form_picks_the_cloud_of_the_endpoint() {
        let rm = Url::parse("https://management.azure.com/").expect("url");
        let body = br#"[{"name":"AzureChinaCloud","resourceManager":"https://management.chinacloudapi.cn/",
            "authentication":{"loginEndpoint":"https://login.chinacloudapi.cn","audiences":["https://management.core.chinacloudapi.cn/"]}},
            {"name":"AzureCloud","resourceManager":"https://management.azure.com",
            "authentication":{"loginEndpoint":"https://login.microsoftonline.com","tenant":"common",
            "audiences":["https://management.core.windows.net/","https://management.azure.com/"]}}]"#;
        let e = CloudEndpoints::from_metadata(&rm, body).expect("parses");
        assert_eq!(
            e.authority_host.as_str(),
            "https://login.microsoftonline.com/"
        );
        assert_eq!(e.scope(), "https://management.core.windows.net/.default");
        let other = Url::parse("https://management.contoso.example/").expect("url");
        let err = CloudEndpoints::from_metadata(&other, body).expect_err("no match");
        assert!(err.contains("AzureChinaCloud, AzureCloud"), "{err}");
        // One cloud that does not name its resource manager (Azure Stack Hub) is taken.
        let one = br#"[{"name":"AzureStackCloud","authentication":{"loginEndpoint":"https://adfs.local.azurestack.external/adfs",
            "audiences":["https://management.adfs.azurestack.local/x"]}}]"#;
        let e = CloudEndpoints::from_metadata(&other, one).expect("parses");
        assert_eq!(
            e.authority_host.as_str(),
            "https://adfs.local.azurestack.external/"
        );
    }
}
