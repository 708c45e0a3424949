//! Entra ID's token endpoint (`POST {login}/{tenant}/oauth2/v2.0/token`) for the control plane's
//! service principal: client secret, or a federated client assertion (workload identity).

use crate::http::{parse_query, Outcome, Request, Response};
use crate::simulator::Simulator;
use crate::tokens::{Assertion, Claims};
use serde_json::json;
use std::sync::Arc;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub const EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

fn oauth_error(status: u16, error: &str, code: u32, description: &str) -> Response {
    Response::json(
        status,
        &json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}"),
            "error_codes": [code],
            "timestamp": Simulator::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
            "trace_id": uuid::Uuid::new_v4().to_string(),
            "correlation_id": uuid::Uuid::new_v4().to_string(),
        }),
    )
}

pub async fn handle(sim: Arc<Simulator>, req: Request) -> Outcome {
    serve(&sim, &req).into()
}

fn serve(sim: &Simulator, req: &Request) -> Response {
    let segs: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let tenant = segs.first().copied().unwrap_or_default();
    let rest = &segs[1.min(segs.len())..];
    let known_tenant = tenant.eq_ignore_ascii_case(&sim.world.tenant);
    match (req.method.as_str(), rest) {
        ("GET", ["v2.0", ".well-known", "openid-configuration"]) if known_tenant => {
            let base = format!("{}/{}", sim.login_url(), sim.world.tenant);
            Response::json(
                200,
                &json!({
                    "issuer": format!("{base}/v2.0"),
                    "token_endpoint": format!("{base}/oauth2/v2.0/token"),
                    "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
                    "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                    "response_types_supported": ["code", "id_token", "token"],
                }),
            )
        }
        ("POST", ["oauth2", "v2.0", "token"]) if known_tenant => token(sim, req),
        (_, ["oauth2", "v2.0", "token"]) | (_, ["v2.0", ".well-known", "openid-configuration"]) if !known_tenant => {
            oauth_error(
                400,
                "invalid_request",
                90002,
                &format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID."),
            )
        }
        _ => oauth_error(404, "invalid_request", 900561, "The endpoint only accepts POST requests to /{tenant}/oauth2/v2.0/token."),
    }
}

fn token(sim: &Simulator, req: &Request) -> Response {
    let ctype = req.header("content-type").unwrap_or_default();
    if !ctype
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return oauth_error(
            400,
            "invalid_request",
            900144,
            "The request body must be application/x-www-form-urlencoded.",
        );
    }
    let form = parse_query(&String::from_utf8_lossy(&req.body));
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if field("grant_type") != Some("client_credentials") {
        return oauth_error(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type; only client_credentials is supported here.",
        );
    }
    let Some(client_id) = field("client_id") else {
        return oauth_error(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    if !client_id.eq_ignore_ascii_case(&sim.world.client_id) {
        return oauth_error(
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'.",
                sim.world.tenant
            ),
        );
    }
    let Some(scope) = field("scope") else {
        return oauth_error(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        );
    };
    let Some(resource) = client_credentials_resource(scope) else {
        return oauth_error(
            400,
            "invalid_scope",
            1002012,
            &format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        );
    };
    let resource = resource.as_str();
    let now = Simulator::now().timestamp();
    let secret = sim.lock().client_secret.clone();
    match (field("client_secret"), field("client_assertion_type"), field("client_assertion")) {
        (Some(given), _, _) => {
            if given != secret {
                return oauth_error(
                    401,
                    "invalid_client",
                    7000215,
                    &format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."),
                );
            }
        }
        (None, Some(JWT_BEARER), Some(assertion)) => {
            let Ok(a) = sim.signer.verify::<Assertion>(assertion, now) else {
                return oauth_error(
                    400,
                    "invalid_client",
                    700024,
                    "Client assertion is not within its valid time range or its signature is invalid.",
                );
            };
            if !a.aud.iter().any(|x| x == EXCHANGE_AUDIENCE) {
                return oauth_error(
                    400,
                    "invalid_client",
                    700212,
                    &format!("No matching federated identity record found for presented assertion audience '{}'.", a.aud.join(",")),
                );
            }
            if !sim.world.federated.iter().any(|f| f.issuer == a.iss && f.subject == a.sub) {
                return oauth_error(
                    400,
                    "invalid_client",
                    70021,
                    &format!("No matching federated identity record found for presented assertion. Assertion Issuer: '{}'. Assertion Subject: '{}'.", a.iss, a.sub),
                );
            }
        }
        _ => {
            return oauth_error(
                401,
                "invalid_client",
                7000216,
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
            )
        }
    }
    let lifetime = sim.world.token_lifetime_secs as i64;
    let claims = Claims {
        aud: resource.to_string(),
        iss: format!("https://sts.windows.net/{}/", sim.world.tenant),
        tid: sim.world.tenant.clone(),
        appid: sim.world.client_id.clone(),
        oid: sim.world.client_id.clone(),
        iat: now,
        nbf: now,
        exp: now + lifetime,
    };
    Response::json(
        200,
        &json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": sim.signer.sign(&claims),
        }),
    )
}

/// A service-account token for the first federated credential, as the cluster's issuer signs it.
pub fn federated_assertion(sim: &Simulator, lifetime_secs: i64) -> Option<String> {
    let cred = sim.world.federated.first()?;
    let now = Simulator::now().timestamp();
    Some(sim.signer.sign(&Assertion {
        iss: cred.issuer.clone(),
        sub: cred.subject.clone(),
        aud: vec![EXCHANGE_AUDIENCE.into()],
        iat: now,
        exp: now + lifetime_secs,
    }))
}

/// The resource a client-credentials `scope` asks for: one `<resource>/.default` among
/// space-separated scopes, beside which Entra ID takes the OpenID Connect scopes MSAL adds to
/// every request (`openid`, `profile`, `offline_access`; MSAL Go's confidential client sends them).
/// A resource whose ID ends in a slash is asked with a double one
/// (`https://management.core.windows.net//.default`, what azcore's ARM pipeline sends for that
/// audience): its token's audience keeps the one slash. (Microsoft identity platform: "Scopes for
/// a web API accepting v1.0 tokens".)
fn client_credentials_resource(scope: &str) -> Option<String> {
    let mut resources = scope
        .split(' ')
        .filter(|s| !s.is_empty() && !matches!(*s, "openid" | "profile" | "offline_access"));
    let one = resources.next()?;
    if resources.next().is_some() {
        return None;
    }
    let resource = one.strip_suffix(".default")?;
    if resource.is_empty() {
        return None;
    }
    Some(match resource.strip_suffix("//") {
        Some(base) => format!("{base}/"),
        None => resource.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::client_credentials_resource as r;

    #[test]
    fn client_credentials_scopes() {
        let arm = "https://management.azure.com/";
        assert_eq!(
            r("https://management.azure.com/.default").as_deref(),
            Some(arm)
        );
        assert_eq!(
            r("https://management.core.windows.net//.default openid offline_access profile")
                .as_deref(),
            Some("https://management.core.windows.net/")
        );
        assert_eq!(r("openid profile"), None);
        assert_eq!(r("https://management.azure.com/user_impersonation"), None);
        assert_eq!(
            r("https://management.azure.com/.default https://graph.microsoft.com/.default"),
            None
        );
        assert_eq!(r(".default"), None);
    }
}
