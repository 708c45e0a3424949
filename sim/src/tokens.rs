//! Access tokens: JWTs signed (HS256) with a key only this simulator holds, so ARM accepts exactly
//! the tokens its own Entra ID and IMDS endpoints issued.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub aud: String,
    pub iss: String,
    pub tid: String,
    /// Application (client) id of the caller.
    pub appid: String,
    /// Object id of the caller's principal.
    pub oid: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum TokenError {
    #[error("the access token is malformed")]
    Malformed,
    #[error("the access token's signature is invalid")]
    BadSignature,
    #[error("the access token has expired")]
    Expired,
}

pub struct Signer {
    key: Vec<u8>,
}

impl Signer {
    pub fn new(key: Vec<u8>) -> Signer {
        Signer { key }
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }

    /// A secret for `label`, derived from the signing key (hex, 128 bits).
    pub fn derive(&self, label: &str) -> String {
        let mut mac = self.mac();
        mac.update(label.as_bytes());
        mac.finalize().into_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Signs any claims set as a compact JWT.
    pub fn sign<T: Serialize>(&self, claims: &T) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(format!("{header}.{payload}").as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{header}.{payload}.{sig}")
    }

    /// The claims of a token this signer made, if it is intact and `now` is within its lifetime.
    pub fn verify<T: DeserializeOwned + Expiring>(
        &self,
        token: &str,
        now: i64,
    ) -> Result<T, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(format!("{h}.{p}").as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| TokenError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| TokenError::Malformed)?;
        let claims: T = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        if now >= claims.expires() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

pub trait Expiring {
    fn expires(&self) -> i64;
}

impl Expiring for Claims {
    fn expires(&self) -> i64 {
        self.exp
    }
}

impl Expiring for Assertion {
    fn expires(&self) -> i64 {
        self.exp
    }
}

/// A service-account token as a cluster's OIDC issuer signs it, for workload identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Assertion {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub iat: i64,
    pub exp: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            aud: "https://management.azure.com/".into(),
            iss: "https://sts.windows.net/t/".into(),
            tid: "t".into(),
            appid: "a".into(),
            oid: "o".into(),
            iat: 0,
            nbf: 0,
            exp,
        }
    }

    #[test]
    fn accepts_own_tokens_and_refuses_forged_or_expired_ones() {
        let s = Signer::new(b"k1".to_vec());
        let t = s.sign(&claims(100));
        assert_eq!(s.verify::<Claims>(&t, 50), Ok(claims(100)));
        assert_eq!(s.verify::<Claims>(&t, 100), Err(TokenError::Expired));
        let other = Signer::new(b"k2".to_vec());
        assert_eq!(
            other.verify::<Claims>(&t, 50),
            Err(TokenError::BadSignature)
        );
        assert_eq!(s.verify::<Claims>("abc", 50), Err(TokenError::Malformed));
    }
}
