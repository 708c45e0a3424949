//! Entra ID credentials from azure_identity 1.x, and the adapter that lets azure_mgmt_compute
//! (built on azure_core 0.21) use them.

use crate::cloud::CloudEndpoints;
use crate::config::{Auth, Config};
use crate::error::AzureError;
use crate::transport::ImdsRedirect;
use azure_core_1::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core_1::credentials::TokenCredential as TokenCredential1;
use azure_core_1::http::{ClientOptions, Transport};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId,
};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// The projected service-account token, read afresh for every exchange: kubelet rotates the file,
/// and azure_identity's own workload credential would keep a copy for ten minutes.
#[derive(Debug)]
struct TokenFile(PathBuf);

#[async_trait::async_trait]
impl ClientAssertion for TokenFile {
    async fn secret(
        &self,
        _: Option<azure_core_1::http::ClientMethodOptions<'_>>,
    ) -> azure_core_1::Result<String> {
        let path = self.0.clone();
        let read = tokio::task::spawn_blocking(move || std::fs::read_to_string(&path)).await;
        match read {
            Ok(Ok(token)) => Ok(token.trim().to_string()),
            Ok(Err(e)) => Err(azure_core_1::Error::with_message(
                azure_core_1::error::ErrorKind::Credential,
                format!(
                    "cannot read the federated token file {}: {e}",
                    self.0.display()
                ),
            )),
            Err(e) => Err(azure_core_1::Error::with_message(
                azure_core_1::error::ErrorKind::Credential,
                format!("reading the federated token file was cancelled: {e}"),
            )),
        }
    }
}

/// A credential for Resource Manager, usable by azure_core 0.21 clients.
#[derive(Clone)]
pub struct ArmCredential {
    inner: Arc<dyn TokenCredential1>,
    kind: &'static str,
}

impl fmt::Debug for ArmCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArmCredential")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl ArmCredential {
    /// Builds the credential `config` asks for. Nothing is fetched yet.
    pub fn new(config: &Config, cloud: &CloudEndpoints) -> Result<Self, AzureError> {
        crate::transport::install_crypto_provider();
        let client_options = ClientOptions {
            transport: Some(Transport::new(Arc::new(ImdsRedirect {
                inner: azure_core_1::http::new_http_client(None),
                imds: config.imds_endpoint.clone(),
            }))),
            cloud: Some(Arc::new(CloudConfiguration::Custom({
                let mut c = CustomConfiguration::default();
                c.authority_host = cloud
                    .authority_host
                    .as_str()
                    .trim_end_matches('/')
                    .to_string();
                c
            }))),
            ..ClientOptions::default()
        };
        let refuse = |e: azure_core_1::Error| AzureError::Unauthorized {
            message: format!("cannot set up the {} credential: {e}", config.auth.kind()),
        };
        let inner: Arc<dyn TokenCredential1> = match &config.auth {
            Auth::ClientSecret { client_id, secret } => ClientSecretCredential::new(
                &config.tenant_id,
                client_id.clone(),
                azure_core_1::credentials::Secret::new(secret.expose().to_string()),
                Some(ClientSecretCredentialOptions { client_options }),
            )
            .map_err(refuse)?,
            Auth::ManagedIdentity { client_id } => {
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                    client_options,
                }))
                .map_err(refuse)?
            }
            Auth::WorkloadIdentity {
                client_id,
                token_file,
            } => ClientAssertionCredential::new(
                config.tenant_id.clone(),
                client_id.clone(),
                TokenFile(token_file.clone()),
                Some(ClientAssertionCredentialOptions { client_options }),
            )
            .map_err(refuse)?,
        };
        Ok(ArmCredential {
            inner,
            kind: config.auth.kind(),
        })
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// A token for `scope`, for callers outside the SDK clients.
    pub async fn token(&self, scope: &str) -> Result<azure_core::auth::Secret, AzureError> {
        azure_core::auth::TokenCredential::get_token(self, &[scope])
            .await
            .map(|t| t.token)
            .map_err(|e| AzureError::Unauthorized {
                message: e.to_string(),
            })
    }
}

#[async_trait::async_trait]
impl azure_core::auth::TokenCredential for ArmCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
    ) -> azure_core::Result<azure_core::auth::AccessToken> {
        let token = self.inner.get_token(scopes, None).await.map_err(|e| {
            azure_core::Error::message(
                azure_core::error::ErrorKind::Credential,
                format!("{} could not get a token: {e}", self.kind),
            )
        })?;
        Ok(azure_core::auth::AccessToken::new(
            azure_core::auth::Secret::new(token.token.secret().to_string()),
            token.expires_on,
        ))
    }

    async fn clear_cache(&self) -> azure_core::Result<()> {
        Ok(())
    }
}
