//! Authentication: who is calling, sessions and accounts (the AuthService
//! itself is in `crate::api::auth`; which method needs what, in
//! `crate::api::access`).
//!
//! A request is authenticated by its `authorization: Bearer <JWT>` header:
//! the token's signature, algorithm, issuer, audience and expiry are checked,
//! then the account is loaded, so a deactivated account or a token issued
//! before a password change (token version bump) is refused at once rather
//! than when the token expires. Tokens name their session (refresh-token
//! family), and a session ended by Logout ends its access tokens too.

pub mod account;
pub mod cookie;
pub mod password;
pub mod queries;
pub mod recovery;
pub mod tokens;

use std::{net::IpAddr, sync::Arc, time::Duration};

use minispod_proto::v1::{Role, TokenPair};
use tonic::Request;

use self::{
    password::PasswordHasher,
    tokens::{AccessTokens, new_refresh_token},
};
use crate::{
    error::{AppError, AppResult},
    mail::Mail,
    rate_limit::{Cidr, LoginLimiter, RateLimiter, client_address},
    store::{Db, Tx, new_id, now_ms, timestamp},
    users::queries::{self as users_db, UserRow},
};

/// What every service needs to authenticate callers and open sessions.
#[derive(Clone, Debug)]
pub struct AuthState {
    /// The store.
    pub db: Db,
    /// Access-token keys.
    pub tokens: Arc<AccessTokens>,
    /// Lifetime of refresh tokens.
    pub refresh_ttl: Duration,
    /// Absolute lifetime of a session, however often it is refreshed.
    pub session_max_age: Duration,
    /// Bounded argon2id hashing.
    pub hasher: PasswordHasher,
    /// Login and Register rate limits.
    pub limiter: Arc<LoginLimiter>,
    /// Proxies whose `x-forwarded-for` names the client (`--trusted-proxy`).
    pub trusted_proxies: Arc<[Cidr]>,
    /// Whether anyone may Register (`--close-registration` turns it off).
    pub registration_open: bool,
}

/// What the AuthService needs to send account mail (verification links,
/// password resets): the mail handle and the per-address limit. Given to
/// the AuthService alone, not to every service through [`AuthState`].
#[derive(Clone, Debug)]
pub struct AccountMail {
    /// Mail: the outbox, SMTP and the account links.
    pub mail: Mail,
    /// Mails asked for per email address (password reset, new links).
    pub limiter: Arc<RateLimiter>,
}

/// The account flows (sign-up, sign-in, sessions, profile, recovery and
/// address verification, in `account.rs` and `recovery.rs`): sign-in state
/// with the account mail. Only the AuthService holds one; every other
/// service has the [`AuthState`] alone.
#[derive(Clone, Debug)]
pub struct Accounts {
    /// Sign-in state: the store, token keys, the hasher, the limits.
    pub auth: AuthState,
    /// Account mail and its per-address limit.
    pub mail: AccountMail,
}

impl std::ops::Deref for Accounts {
    type Target = AuthState;

    fn deref(&self) -> &AuthState {
        &self.auth
    }
}

impl AuthState {
    /// The active account behind the request's bearer token.
    pub async fn caller<T>(&self, request: &Request<T>) -> AppResult<UserRow> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| AppError::Unauthenticated("missing authorization header".into()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| {
                AppError::Unauthenticated("authorization must be `Bearer <access token>`".into())
            })?;
        let claims = self.tokens.verify(token.trim())?;
        let user = users_db::by_id(self.db.read(), &claims.sub)
            .await?
            .ok_or_else(|| AppError::Unauthenticated("the account no longer exists".into()))?;
        if !user.active {
            return Err(AppError::Unauthenticated(
                "the account is deactivated".into(),
            ));
        }
        if user.token_version != claims.ver {
            return Err(AppError::Unauthenticated(
                "access token revoked; sign in again".into(),
            ));
        }
        // Checked last: a deactivated account says so, not just that its
        // sessions ended.
        if let Some(sid) = &claims.sid
            && !queries::family_is_live(self.db.read(), sid).await?
        {
            return Err(AppError::Unauthenticated(
                "the session was ended; sign in again".into(),
            ));
        }
        Ok(user)
    }

    /// The client's address (see [`client_ip`]).
    pub fn client_ip<T>(&self, request: &Request<T>) -> Option<IpAddr> {
        client_ip(request, &self.trusted_proxies)
    }

    /// Opens a session for `user` inside `tx`, or continues one: a new
    /// refresh token in `family` (family id and when the session began; a
    /// new family when None) and an access token. Neither outlives the
    /// session's absolute age.
    pub async fn start_session(
        &self,
        tx: &mut Tx,
        user: &UserRow,
        family: Option<(&str, i64)>,
    ) -> AppResult<TokenPair> {
        let now = now_ms();
        let (family, started) = match family {
            Some((id, started)) => (id.to_owned(), started),
            None => (new_id(), now),
        };
        let session_end = started.saturating_add(self.session_max_age.as_millis() as i64);
        let (refresh, hash) = new_refresh_token();
        let refresh_expires = (now + self.refresh_ttl.as_millis() as i64).min(session_end);
        queries::insert(tx, &user.id, &family, &hash, refresh_expires, started).await?;
        let (access, access_exp) = self.tokens.issue_for_session(
            &user.id,
            user.token_version,
            Some(&family),
            (session_end / 1000).max(0) as u64,
        )?;
        Ok(TokenPair {
            access_token: access,
            access_token_expires_at: Some(prost_types::Timestamp {
                seconds: access_exp as i64,
                nanos: 0,
            }),
            refresh_token: refresh,
            refresh_token_expires_at: Some(timestamp(refresh_expires)),
        })
    }
}

/// Who asked for a stream (a watch, a log stream), to ask again while it
/// runs, every `--stream-caller-recheck`: the stream ends soon after the
/// account is deactivated, demoted (for `admin`) or deleted, its sessions
/// ended, or the access token expired.
#[derive(Debug, Clone)]
pub struct CallerCheck {
    /// The auth state that judges.
    pub auth: AuthState,
    /// The request's metadata (its bearer token).
    pub credentials: tonic::metadata::MetadataMap,
    /// How often. One value for every stream (the flag's, default 5 s: a
    /// deactivated or demoted administrator's fleet view ends within
    /// seconds, as before, at one store read per open stream every 5 s;
    /// the subscriptions' streams used 30 s before and now follow it).
    pub every: Duration,
    /// Whether the caller must still be an administrator.
    pub admin: bool,
}

impl CallerCheck {
    /// Err when the caller may no longer call (signed out, deactivated,
    /// no longer an administrator when `admin`...).
    pub async fn still_allowed(&self) -> Result<(), tonic::Status> {
        let mut probe = Request::new(());
        *probe.metadata_mut() = self.credentials.clone();
        let user = self.auth.caller(&probe).await?;
        if self.admin && user.role() != Role::Administrator {
            return Err(admin_required().into());
        }
        Ok(())
    }
}

/// The refusal of an administrator's method to anyone else.
pub fn admin_required() -> AppError {
    AppError::PermissionDenied("this method requires ROLE_ADMINISTRATOR".into())
}

/// The client's address: the TCP peer, or when that is a trusted proxy the
/// right-most untrusted hop of its `x-forwarded-for`.
pub fn client_ip<T>(request: &Request<T>, trusted_proxies: &[Cidr]) -> Option<IpAddr> {
    let forwarded = request
        .metadata()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    client_address(
        request.remote_addr().map(|a| a.ip()),
        forwarded,
        trusted_proxies,
    )
}
