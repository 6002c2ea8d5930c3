//! Access tokens (JWT, HS256 pinned, issuer and audience checked) and
//! refresh tokens (opaque random secrets, stored as SHA-256).

use std::{path::Path, time::Duration};

use anyhow::Context;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{AppError, AppResult};

/// `iss` of every access token.
pub const ISSUER: &str = "minispod";
/// `aud` of every access token.
pub const AUDIENCE: &str = "minispod-api";
/// Prefix that makes refresh tokens recognisable in leaked-secret scans.
const REFRESH_PREFIX: &str = "msr_";

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The user's token version when issued; a bump kills the token.
    pub ver: i64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Token id.
    pub jti: String,
    /// The session (refresh-token family) the token belongs to: when it
    /// ends (Logout, reuse detected), so does the token. Tokens from before
    /// sessions were tracked have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// Signs and checks access tokens.
#[derive(Clone)]
pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Lifetime of a new token.
    pub ttl: Duration,
}

impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl AccessTokens {
    /// Keys from a secret of at least 32 bytes.
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        AccessTokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    /// A token for `user_id` at `version`, and its expiry (Unix seconds).
    pub fn issue(&self, user_id: &str, version: i64) -> AppResult<(String, u64)> {
        self.issue_for_session(user_id, version, None, u64::MAX)
    }

    /// A token for `user_id` at `version` in session `sid`, expiring after
    /// the TTL or at `not_after` (Unix seconds), whichever comes first.
    pub fn issue_for_session(
        &self,
        user_id: &str,
        version: i64,
        sid: Option<&str>,
        not_after: u64,
    ) -> AppResult<(String, u64)> {
        let now = unix_now();
        let exp = (now + self.ttl.as_secs().max(1))
            .min(not_after)
            .max(now + 1);
        let claims = Claims {
            sub: user_id.to_owned(),
            ver: version,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now,
            exp,
            jti: uuid::Uuid::new_v4().to_string(),
            sid: sid.map(str::to_owned),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .context("sign access token")?;
        Ok((token, exp))
    }

    /// The claims of a valid token; UNAUTHENTICATED otherwise.
    pub fn verify(&self, token: &str) -> AppResult<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                let why = match e.kind() {
                    ErrorKind::ExpiredSignature => "access token expired",
                    _ => "invalid access token",
                };
                AppError::Unauthenticated(why.into())
            })
    }
}

/// Loads the signing secret from `path`, creating 32 random bytes there on
/// first start (mode 0600).
pub fn load_or_create_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.exists() {
        let s = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        anyhow::ensure!(
            s.len() >= 32,
            "{} holds fewer than 32 bytes",
            path.display()
        );
        return Ok(s);
    }
    let mut secret = vec![0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    crate::pki::write_private(path, &secret)?;
    Ok(secret)
}

/// A new refresh token: the secret for the client and its hash for the store.
pub fn new_refresh_token() -> (String, Vec<u8>) {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = format!("{REFRESH_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
    let hash = hash_refresh_token(&token);
    (token, hash)
}

/// The stored form of a refresh token. A plain SHA-256 suffices: the token
/// has 256 bits of entropy, so there is nothing to brute-force.
pub fn hash_refresh_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> AccessTokens {
        AccessTokens::new(&[7u8; 32], Duration::from_secs(60))
    }

    #[test]
    fn issued_tokens_verify() {
        let (t, _) = keys().issue("u1", 3).unwrap();
        let c = keys().verify(&t).unwrap();
        assert_eq!((c.sub.as_str(), c.ver), ("u1", 3));
    }

    #[test]
    fn tokens_from_another_key_or_algorithm_are_refused() {
        let (t, _) = AccessTokens::new(&[8u8; 32], Duration::from_secs(60))
            .issue("u1", 0)
            .unwrap();
        assert!(keys().verify(&t).is_err());
        // alg=none with the same claims.
        let claims = keys().verify(&keys().issue("u1", 0).unwrap().0).unwrap();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        assert!(keys().verify(&format!("{header}.{body}.")).is_err());
    }

    #[test]
    fn wrong_audience_and_expired_tokens_are_refused() {
        let mut c = keys().verify(&keys().issue("u1", 0).unwrap().0).unwrap();
        c.aud = "someone-else".into();
        let k = EncodingKey::from_secret(&[7u8; 32]);
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &c, &k).unwrap();
        assert!(keys().verify(&t).is_err());
        c.aud = AUDIENCE.into();
        c.exp = unix_now() - 3600;
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &c, &k).unwrap();
        assert!(
            matches!(keys().verify(&t), Err(AppError::Unauthenticated(m)) if m.contains("expired"))
        );
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let (a, ha) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert!(a.starts_with("msr_"));
        assert_eq!(hash_refresh_token(&a), ha);
    }
}
