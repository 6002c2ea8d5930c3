//! The caller's own account and sessions: sign-up, sign-in, refresh,
//! logout, profile and password.

use http::HeaderValue;
use minispod_proto::v1 as pb;
use tonic::Request;

use super::{Accounts, cookie, password::Lane, queries as refresh_db, tokens::hash_refresh_token};
use crate::{
    error::{AppError, AppResult, Violations},
    store::now_ms,
    users::{
        fields::{Email, Password, PersonName},
        queries::{self as users_db, UserChanges, UserRow},
    },
};

fn invalid_credentials() -> AppError {
    AppError::Unauthenticated("invalid email or password".into())
}

/// A reply, with the `Set-Cookie` header the console's session needs.
pub type WithCookie<T> = (T, Option<HeaderValue>);

/// Refuses a request asking for the session cookie from another origin (a
/// same-site page could otherwise plant its own session in the console).
fn check_cookie_request<T>(req: &Request<T>, session_cookie: bool) -> AppResult<()> {
    if session_cookie {
        cookie::require_same_origin(req)?;
    }
    Ok(())
}

impl Accounts {
    /// For a console session (`session_cookie`), moves the refresh token out
    /// of `tokens` into a `Set-Cookie` value; otherwise leaves it in place.
    pub(crate) fn deliver(
        &self,
        tokens: &mut pb::TokenPair,
        session_cookie: bool,
    ) -> Option<HeaderValue> {
        if !session_cookie {
            return None;
        }
        let token = std::mem::take(&mut tokens.refresh_token);
        Some(cookie::set(&token, self.refresh_ttl.as_secs()))
    }
}

impl Accounts {
    /// Checks a signed-in user's own password (`field` names it in the
    /// error), counted in the same buckets as a Login of that account and
    /// hashed outside Login's reserved share of the hasher.
    pub(crate) async fn check_own_password(
        &self,
        ip: Option<std::net::IpAddr>,
        user: &UserRow,
        password: &str,
        field: &str,
    ) -> AppResult<()> {
        if password.chars().count() > crate::users::fields::MAX_PASSWORD_CHARS {
            return Err(AppError::invalid(field, "is wrong"));
        }
        let key = account_key(&user.email);
        self.limiter.begin(&key, ip).await?;
        let right = self
            .hasher
            .verify(Lane::Other, password, Some(&user.password_hash))
            .await?;
        self.limiter.finish(&key, ip, right).await;
        if right {
            Ok(())
        } else {
            Err(AppError::invalid(field, "is wrong"))
        }
    }

    pub(crate) async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> AppResult<WithCookie<pb::RegisterResponse>> {
        if !self.registration_open {
            return Err(AppError::PermissionDenied(
                "registration is closed on this control plane; ask an administrator for an account"
                    .into(),
            ));
        }
        check_cookie_request(&req, req.get_ref().session_cookie)?;
        let ip = self.client_ip(&req);
        self.limiter.attempt(ip).await?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let email = v.take("email", Email::parse(&r.email));
        let password = v.take("password", Password::parse(&r.password));
        let name = v.take("name", PersonName::parse(&r.name));
        v.finish()?;
        let (email, password, name) = (email.unwrap(), password.unwrap(), name.unwrap());
        if users_db::by_email(&self.db, email.as_str())
            .await?
            .is_some()
        {
            return Err(AppError::AlreadyExists(
                "a user with this email already exists".into(),
            ));
        }
        let hash = self.hasher.hash(password.expose()).await?;
        let mut tx = self.db.begin().await?;
        let user = users_db::insert(
            &mut tx,
            email.as_str(),
            name.as_str(),
            &hash,
            pb::Role::User,
        )
        .await?;
        // With mail, the address gets its link; when sign-in needs it, no
        // session starts until the link is used.
        let mail = self.mail.mail.clone();
        if mail.configured() {
            self.queue_verification(&mut tx, &user, &user.email, false)
                .await?;
        }
        if mail.require_verification() {
            tx.commit().await?;
            mail.wake();
            tracing::info!(user_id = %user.id, "user registered; address to be verified");
            let body = pb::RegisterResponse {
                user: Some((&user).into()),
                verification_required: true,
                ..Default::default()
            };
            return Ok((body, None));
        }
        let mut tokens = self.start_session(&mut tx, &user, None).await?;
        tx.commit().await?;
        mail.wake();
        tracing::info!(user_id = %user.id, "user registered");
        let set_cookie = self.deliver(&mut tokens, r.session_cookie);
        let body = pb::RegisterResponse {
            user: Some((&user).into()),
            access_token: tokens.access_token.clone(),
            refresh_token: tokens.refresh_token.clone(),
            tokens: Some(tokens),
            verification_required: false,
        };
        Ok((body, set_cookie))
    }

    pub(crate) async fn sign_in(
        &self,
        req: Request<pb::LoginRequest>,
    ) -> AppResult<WithCookie<pb::LoginResponse>> {
        check_cookie_request(&req, req.get_ref().session_cookie)?;
        // Sizes first: nothing oversized reaches a limiter, a lookup or the
        // hasher (a limiter keyed by a 1 MB email would keep it in memory).
        reject_oversized(&req.get_ref().email, &req.get_ref().password)?;
        let ip = self.client_ip(&req);
        self.limiter.attempt(ip).await?;
        let r = req.into_inner();
        let mut v = Violations::new();
        if r.email.trim().is_empty() {
            v.add("email", "is required");
        }
        if r.password.is_empty() {
            v.add("password", "is required");
        }
        v.finish()?;
        // An email that cannot exist is checked against the dummy hash like
        // an unknown one, so the answer looks the same. The per-account
        // buckets are keyed by a hash: fixed size whatever was typed.
        let key = account_key(&r.email);
        self.limiter.begin(&key, ip).await?;
        let user = match Email::parse(&r.email) {
            Ok(email) => users_db::by_email(&self.db, email.as_str()).await?,
            Err(_) => None,
        };
        let password_ok = if r.password.chars().count() > crate::users::fields::MAX_PASSWORD_CHARS {
            false
        } else {
            self.hasher
                .verify(
                    Lane::Login,
                    &r.password,
                    user.as_ref().map(|u| u.password_hash.as_str()),
                )
                .await?
        };
        self.limiter.finish(&key, ip, password_ok).await;
        let Some(user) = user.filter(|_| password_ok) else {
            return Err(invalid_credentials());
        };
        if !user.active {
            return Err(AppError::Unauthenticated(
                "the account is deactivated".into(),
            ));
        }
        // Said only to whoever knows the password.
        super::recovery::check_verified(&user, self.mail.mail.require_verification())?;
        let mut tx = self.db.begin().await?;
        users_db::touch_login(&mut tx, &user.id).await?;
        let mut tokens = self.start_session(&mut tx, &user, None).await?;
        tx.commit().await?;
        let user = users_db::require(self.db.read(), &user.id).await?;
        let set_cookie = self.deliver(&mut tokens, r.session_cookie);
        let body = pb::LoginResponse {
            access_token: tokens.access_token.clone(),
            refresh_token: tokens.refresh_token.clone(),
            tokens: Some(tokens),
            user: Some((&user).into()),
        };
        Ok((body, set_cookie))
    }

    pub(crate) async fn refresh(
        &self,
        req: Request<pb::RefreshRequest>,
    ) -> AppResult<WithCookie<pb::RefreshResponse>> {
        let (presented, from_cookie) = presented_refresh_token(&req, &req.get_ref().refresh_token)?;
        let hash = hash_refresh_token(&presented);
        let mut tx = self.db.begin().await?;
        let Some(row) = refresh_db::by_hash(&mut tx, &hash).await? else {
            return Err(AppError::Unauthenticated("invalid refresh token".into()));
        };
        if row.revoked_at.is_some() {
            return Err(AppError::Unauthenticated("refresh token revoked".into()));
        }
        if row.used_at.is_some() || !refresh_db::mark_used(&mut tx, &row.id).await? {
            // A spent token presented again: someone holds a copy. End the
            // whole session family so neither copy works any more.
            let revoked = refresh_db::revoke_family(&mut tx, &row.family_id).await?;
            tx.commit().await?;
            tracing::warn!(user_id = %row.user_id, revoked, "refresh token reuse detected; session family revoked");
            return Err(AppError::Unauthenticated(
                "refresh token reuse detected; the session was revoked".into(),
            ));
        }
        if row.expires_at < now_ms() {
            return Err(AppError::Unauthenticated("refresh token expired".into()));
        }
        // Rows from before session ages were kept count from the session's
        // latest token.
        let started = row.session_started_at.unwrap_or_else(now_ms);
        if started.saturating_add(self.session_max_age.as_millis() as i64) <= now_ms() {
            return Err(AppError::Unauthenticated(
                "the session reached its maximum age; sign in again".into(),
            ));
        }
        let user = users_db::by_id(&mut tx, &row.user_id)
            .await?
            .filter(|u| u.active)
            .ok_or_else(|| AppError::Unauthenticated("the account is deactivated".into()))?;
        let mut tokens = self
            .start_session(&mut tx, &user, Some((&row.family_id, started)))
            .await?;
        tx.commit().await?;
        let set_cookie = self.deliver(&mut tokens, from_cookie);
        let body = pb::RefreshResponse {
            access_token: tokens.access_token.clone(),
            refresh_token: tokens.refresh_token.clone(),
            tokens: Some(tokens),
        };
        Ok((body, set_cookie))
    }

    pub(crate) async fn logout(
        &self,
        req: Request<pb::LogoutRequest>,
    ) -> AppResult<WithCookie<pb::LogoutResponse>> {
        let (presented, from_cookie) = presented_refresh_token(&req, &req.get_ref().refresh_token)?;
        let r = req.into_inner();
        let mut tx = self.db.begin().await?;
        let row = refresh_db::by_hash(&mut tx, &hash_refresh_token(&presented))
            .await?
            .ok_or_else(|| AppError::Unauthenticated("invalid refresh token".into()))?;
        if r.all_sessions {
            // Ending every session is for whoever holds a live one: a spent,
            // revoked or expired token (a stale copy) may not do it.
            if row.used_at.is_some() || row.revoked_at.is_some() || row.expires_at < now_ms() {
                return Err(AppError::Unauthenticated(
                    "ending every session needs a live refresh token".into(),
                ));
            }
            refresh_db::revoke_user(&mut tx, &row.user_id).await?;
        } else {
            refresh_db::revoke_family(&mut tx, &row.family_id).await?;
        }
        tx.commit().await?;
        Ok((pb::LogoutResponse {}, from_cookie.then(cookie::clear)))
    }

    pub(crate) async fn update_profile(
        &self,
        user: UserRow,
        req: Request<pb::UpdateProfileRequest>,
    ) -> AppResult<pb::UpdateProfileResponse> {
        let ip = self.client_ip(&req);
        let r = req.into_inner();
        let mut v = Violations::new();
        let name = r
            .name
            .as_deref()
            .and_then(|n| v.take("name", PersonName::parse(n)));
        let email = r
            .email
            .as_deref()
            .and_then(|e| v.take("email", Email::parse(e)));
        if email.is_some() && r.current_password.is_empty() {
            v.add("current_password", "is required to change the email");
        }
        v.finish()?;
        if email.is_some() {
            self.check_own_password(ip, &user, &r.current_password, "current_password")
                .await?;
        }
        // With mail, a new address takes effect once its link is used.
        let mail = self.mail.mail.clone();
        let (direct_email, pending_email) = match &email {
            Some(e) if mail.configured() => (None, Some(e.as_str())),
            Some(e) => (Some(e.as_str()), None),
            None => (None, None),
        };
        if let Some(new_email) = pending_email.filter(|e| *e != user.email) {
            self.limit_email_change(&user, new_email).await?;
        }
        let changes = UserChanges {
            name: name.as_ref().map(PersonName::as_str),
            email: direct_email,
            ..Default::default()
        };
        let mut tx = self.db.begin().await?;
        let mut user = users_db::update(&mut tx, &user.id, &changes).await?;
        if let Some(new_email) = pending_email {
            user = self.request_email_change(&mut tx, &user, new_email).await?;
        }
        tx.commit().await?;
        mail.wake();
        Ok(pb::UpdateProfileResponse {
            user: Some((&user).into()),
        })
    }

    pub(crate) async fn change_password(
        &self,
        user: UserRow,
        req: Request<pb::ChangePasswordRequest>,
    ) -> AppResult<WithCookie<pb::ChangePasswordResponse>> {
        check_cookie_request(&req, req.get_ref().session_cookie)?;
        let ip = self.client_ip(&req);
        let r = req.into_inner();
        let new =
            Password::parse(&r.new_password).map_err(|e| AppError::invalid("new_password", e))?;
        self.check_own_password(ip, &user, &r.current_password, "current_password")
            .await?;
        let hash = self.hasher.hash(new.expose()).await?;
        let mut tx = self.db.begin().await?;
        let changes = UserChanges {
            password_hash: Some(&hash),
            revoke_access_tokens: true,
            ..Default::default()
        };
        let user = users_db::update(&mut tx, &user.id, &changes).await?;
        refresh_db::revoke_user(&mut tx, &user.id).await?;
        let mut tokens = self.start_session(&mut tx, &user, None).await?;
        tx.commit().await?;
        let set_cookie = self.deliver(&mut tokens, r.session_cookie);
        let body = pb::ChangePasswordResponse {
            access_token: tokens.access_token.clone(),
            refresh_token: tokens.refresh_token.clone(),
            tokens: Some(tokens),
        };
        Ok((body, set_cookie))
    }
}

/// INVALID_ARGUMENT for an email or password longer than any account's.
fn reject_oversized(email: &str, password: &str) -> AppResult<()> {
    let mut v = Violations::new();
    if email.len() > crate::users::fields::MAX_EMAIL_BYTES {
        v.add("email", "is longer than any email address");
    }
    if password.chars().count() > crate::users::fields::MAX_PASSWORD_CHARS {
        v.add(
            "password",
            format!(
                "must be at most {} characters",
                crate::users::fields::MAX_PASSWORD_CHARS
            ),
        );
    }
    v.finish()
}

/// The rate limiter's key for an account: SHA-256 of the address as typed,
/// trimmed and lowercased.
pub(crate) fn account_key(email: &str) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(email.trim().to_lowercase().as_bytes());
    minispod_support::hex(&digest)
}

/// The refresh token a Refresh or Logout presents: the request's field, or
/// else the console's session cookie (same-origin requests only). The flag
/// says it came from the cookie, so the answer goes back into it.
fn presented_refresh_token<T>(req: &Request<T>, field: &str) -> AppResult<(String, bool)> {
    if !field.is_empty() {
        return Ok((field.to_owned(), false));
    }
    match cookie::from_request(req)? {
        Some(token) => Ok((token, true)),
        None => Err(AppError::invalid(
            "refresh_token",
            "is required (or the console's session cookie)",
        )),
    }
}
