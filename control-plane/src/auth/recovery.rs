//! What needs mail: password reset, address verification and email
//! changes, with their single-use tokens.
//!
//! A token is 256 random bits in a link's fragment (`#token=...`, so it
//! reaches neither server logs nor `Referer`); only its SHA-256 is stored.
//! It is spent once, lives for its TTL, and a newer token of the same
//! purpose supersedes the older ones. The mail is queued in the transaction
//! that makes the token: no token without its mail, no mail without its
//! token. Asking for a reset or a new verification link answers the same
//! for every address and is rate limited per client address and per email.

use minispod_proto::v1 as pb;
use tonic::{Code, Request};

use super::{
    Accounts, queries as refresh_db,
    tokens::{hash_refresh_token, new_refresh_token},
};
use crate::{
    error::{AppError, AppResult},
    mail::templates,
    rate_limit::too_many,
    store::{Tx, new_id, now_ms},
    users::{
        fields::{Email, Password},
        queries::{self as users_db, UserChanges, UserRow},
    },
    with_conn,
};

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Choose a new password.
    PasswordReset,
    /// Prove an address (a new account's, or an email change's new one).
    VerifyEmail,
}

impl Purpose {
    fn as_db(self) -> &'static str {
        match self {
            Purpose::PasswordReset => "PASSWORD_RESET",
            Purpose::VerifyEmail => "VERIFY_EMAIL",
        }
    }
}

/// Longest token accepted (ours are 47 characters).
const MAX_TOKEN_CHARS: usize = 128;

/// Makes a token for `user_id` to `email`, superseding older ones of the
/// same purpose, and returns its secret.
async fn new_token(
    tx: &mut Tx,
    user_id: &str,
    purpose: Purpose,
    email: &str,
    ttl: std::time::Duration,
) -> AppResult<String> {
    let now = now_ms();
    with_conn!(&mut *tx, |c| sqlx::query(
        "UPDATE account_tokens SET used_at = $3
         WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL"
    )
    .bind(user_id)
    .bind(purpose.as_db())
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    let (secret, hash) = new_refresh_token();
    with_conn!(&mut *tx, |c| {
        sqlx::query(
        "INSERT INTO account_tokens (id, user_id, purpose, token_hash, email, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)"
    )
    .bind(new_id())
    .bind(user_id)
    .bind(purpose.as_db())
    .bind(&hash)
    .bind(email)
    .bind(now)
    .bind(now + ttl.as_millis() as i64)
    .execute(c)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(secret)
}

/// Spends the token `secret` of `purpose`: (user id, email it was sent
/// to). INVALID_ARGUMENT on field `token` when it is unknown, spent,
/// superseded or expired.
async fn spend_token(tx: &mut Tx, secret: &str, purpose: Purpose) -> AppResult<(String, String)> {
    let bad = || {
        AppError::invalid(
            "token",
            "is not valid: it was used, replaced by a newer one, or has expired; ask for a new link",
        )
    };
    if secret.is_empty() {
        return Err(AppError::invalid("token", "is required"));
    }
    if secret.chars().count() > MAX_TOKEN_CHARS {
        return Err(bad());
    }
    let now = now_ms();
    let row: Option<(String, String)> = with_conn!(&mut *tx, |c| sqlx::query_as(
        "UPDATE account_tokens SET used_at = $3
         WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3
         RETURNING user_id, email"
    )
    .bind(hash_refresh_token(secret))
    .bind(purpose.as_db())
    .bind(now)
    .fetch_optional(c)
    .await)?;
    row.ok_or_else(bad)
}

/// Deletes account tokens that expired before `before_ms`.
pub async fn delete_expired(tx: &mut Tx, before_ms: i64) -> AppResult<u64> {
    Ok(with_conn!(&mut *tx, |c| sqlx::query(
        "DELETE FROM account_tokens WHERE expires_at < $1"
    )
    .bind(before_ms)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?)
}

impl Accounts {
    /// Rate limits a mail-sending request from `ip` for `email`.
    async fn limit_mail_request<T>(&self, req: &Request<T>, email: &str) -> AppResult<()> {
        let ip = self.client_ip(req);
        self.limiter.attempt(ip).await?;
        self.mail
            .limiter
            .take(&super::account::account_key(email))
            .await
            .map_err(|wait| AppError::ResourceExhausted {
                message: "too many mails asked for this address; try again later".into(),
                retry_after: Some(wait),
            })
    }

    /// Queues the verification mail of `email` for `user` in `tx`.
    pub(crate) async fn queue_verification(
        &self,
        tx: &mut Tx,
        user: &UserRow,
        email: &str,
        change: bool,
    ) -> AppResult<()> {
        let mail = &self.mail.mail;
        let token = new_token(tx, &user.id, Purpose::VerifyEmail, email, mail.verify_ttl()).await?;
        let link = mail.link(&format!("/verify-email#token={token}"));
        let rendered = if change {
            templates::confirm_email_change(&user.name, email, &link, mail.verify_ttl())
        } else {
            templates::verify_email(&user.name, email, &link, mail.verify_ttl())
        };
        mail.queue_mail(tx, "verify_email", email, &rendered).await
    }

    pub(crate) async fn request_password_reset(
        &self,
        req: Request<pb::RequestPasswordResetRequest>,
    ) -> AppResult<pb::RequestPasswordResetResponse> {
        self.mail.mail.require_configured()?;
        if req.get_ref().email.len() > crate::users::fields::MAX_EMAIL_BYTES {
            return Err(AppError::invalid("email", "is not a valid address"));
        }
        let email =
            Email::parse(&req.get_ref().email).map_err(|e| AppError::invalid("email", e))?;
        self.limit_mail_request(&req, email.as_str()).await?;
        // The lookup and the write happen after the answer, so its timing
        // says nothing about whether the account exists.
        let api = self.clone();
        tokio::spawn(async move {
            if let Err(e) = api.queue_password_reset(email.as_str()).await {
                tracing::warn!(error = %e, "cannot queue a password reset mail");
            }
        });
        Ok(pb::RequestPasswordResetResponse {})
    }

    /// Makes a reset token for the active account with `email`, if there is
    /// one, and queues its mail in the same transaction.
    async fn queue_password_reset(&self, email: &str) -> AppResult<()> {
        let user = users_db::by_email(&self.db, email).await?;
        // Unknown and deactivated accounts get nothing.
        let Some(user) = user.filter(|u| u.active) else {
            return Ok(());
        };
        let mail = &self.mail.mail;
        let mut tx = self.db.begin().await?;
        let token = new_token(
            &mut tx,
            &user.id,
            Purpose::PasswordReset,
            &user.email,
            mail.reset_ttl(),
        )
        .await?;
        let link = mail.link(&format!("/reset-password#token={token}"));
        let rendered = templates::password_reset(&user.name, &link, mail.reset_ttl());
        mail.queue_mail(&mut tx, "password_reset", &user.email, &rendered)
            .await?;
        tx.commit().await?;
        mail.wake();
        tracing::info!(user_id = %user.id, "password reset link queued");
        Ok(())
    }

    pub(crate) async fn reset_password(
        &self,
        req: Request<pb::ResetPasswordRequest>,
    ) -> AppResult<pb::ResetPasswordResponse> {
        let ip = self.client_ip(&req);
        self.limiter.attempt(ip).await?;
        let r = req.into_inner();
        let password =
            Password::parse(&r.new_password).map_err(|e| AppError::invalid("new_password", e))?;
        if r.token.chars().count() > MAX_TOKEN_CHARS {
            return Err(AppError::invalid("token", "is not valid"));
        }
        let hash = self.hasher.hash(password.expose()).await?;
        let mut tx = self.db.begin().await?;
        let (user_id, email) = spend_token(&mut tx, &r.token, Purpose::PasswordReset).await?;
        let user = users_db::require(&mut tx, &user_id).await?;
        if !user.active {
            return Err(AppError::FailedPrecondition(
                "the account is deactivated".into(),
            ));
        }
        let changes = UserChanges {
            password_hash: Some(&hash),
            revoke_access_tokens: true,
            ..Default::default()
        };
        let user = users_db::update(&mut tx, &user.id, &changes).await?;
        refresh_db::revoke_user(&mut tx, &user.id).await?;
        // The link reached this address: it is proven, if it still is the
        // account's.
        let user = if user.email_verified_at.is_none() && user.email == email {
            users_db::verify_email(&mut tx, &user.id, &email).await?
        } else {
            user
        };
        let mail = &self.mail.mail;
        let notice = templates::password_was_reset(&user.name, &mail.link("/login"));
        mail.queue_mail(&mut tx, "password_changed", &user.email, &notice)
            .await?;
        tx.commit().await?;
        mail.wake();
        tracing::info!(user_id = %user.id, "password reset; every session ended");
        Ok(pb::ResetPasswordResponse {})
    }

    pub(crate) async fn verify_email(
        &self,
        req: Request<pb::VerifyEmailRequest>,
    ) -> AppResult<pb::VerifyEmailResponse> {
        let ip = self.client_ip(&req);
        self.limiter.attempt(ip).await?;
        let r = req.into_inner();
        let mut tx = self.db.begin().await?;
        let (user_id, email) = spend_token(&mut tx, &r.token, Purpose::VerifyEmail).await?;
        let user = users_db::require(&mut tx, &user_id).await?;
        let changing = user.email != email;
        if changing && user.pending_email != email {
            // A newer change replaced this one.
            return Err(AppError::invalid(
                "token",
                "is for an email change that was replaced by a newer one",
            ));
        }
        let user = users_db::verify_email(&mut tx, &user.id, &email).await?;
        tx.commit().await?;
        tracing::info!(user_id = %user.id, email_change = changing, "email address verified");
        Ok(pb::VerifyEmailResponse {
            user: Some((&user).into()),
        })
    }

    pub(crate) async fn resend_verification(
        &self,
        req: Request<pb::ResendVerificationRequest>,
    ) -> AppResult<pb::ResendVerificationResponse> {
        self.mail.mail.require_configured()?;
        let email =
            Email::parse(&req.get_ref().email).map_err(|e| AppError::invalid("email", e))?;
        self.limit_mail_request(&req, email.as_str()).await?;
        // As for a reset: the work happens after the answer.
        let api = self.clone();
        tokio::spawn(async move {
            if let Err(e) = api.queue_resend(email.as_str()).await {
                tracing::warn!(error = %e, "cannot queue a verification mail");
            }
        });
        Ok(pb::ResendVerificationResponse {})
    }

    /// A new link for the account `email` names, if it waits for one: to
    /// its unconfirmed address, or to its pending new one (`email` may be
    /// either).
    async fn queue_resend(&self, email: &str) -> AppResult<()> {
        let db = &self.db;
        let (user, to, change) = match users_db::by_email(db, email).await? {
            Some(u) if u.email_verified_at.is_none() => {
                let to = u.email.clone();
                (u, to, false)
            }
            Some(u) if !u.pending_email.is_empty() => {
                let to = u.pending_email.clone();
                (u, to, true)
            }
            _ => match users_db::by_pending_email(db, email).await? {
                Some(u) => (u, email.to_owned(), true),
                None => return Ok(()),
            },
        };
        if !user.active {
            return Ok(());
        }
        let mut tx = db.begin().await?;
        self.queue_verification(&mut tx, &user, &to, change).await?;
        tx.commit().await?;
        self.mail.mail.wake();
        Ok(())
    }

    /// Rate limits an email change of `user` to `new_email` as a password
    /// reset is: per account, and per address (the address's bucket is the
    /// one resets and new links spend). Call it before the change's
    /// transaction: with replicas the buckets are written in the store.
    pub(crate) async fn limit_email_change(
        &self,
        user: &UserRow,
        new_email: &str,
    ) -> AppResult<()> {
        let limiter = &self.mail.limiter;
        let account = format!("email-change|{}", user.id);
        limiter
            .take(&account)
            .await
            .map_err(|wait| too_many("email changes for this account", wait))?;
        if let Err(wait) = limiter.take(&super::account::account_key(new_email)).await {
            limiter.give_back(&account).await;
            return Err(AppError::ResourceExhausted {
                message: "too many mails asked for this address; try again later".into(),
                retry_after: Some(wait),
            });
        }
        Ok(())
    }

    /// An email change asked for by a signed-in user, with mail configured:
    /// the new address becomes pending and the old one gets a notice. The
    /// new address gets a confirmation link, or, when another account
    /// holds it, a notice that nothing changed (no link, the asking
    /// account not named). The caller gets the same answer either way, so
    /// it learns nothing about who holds an address.
    pub(crate) async fn request_email_change(
        &self,
        tx: &mut Tx,
        user: &UserRow,
        new_email: &str,
    ) -> AppResult<UserRow> {
        if new_email == user.email {
            return users_db::set_pending_email(tx, &user.id, "").await;
        }
        let holder = users_db::by_email(&self.db, new_email).await?;
        let updated = users_db::set_pending_email(tx, &user.id, new_email).await?;
        let mail = &self.mail.mail;
        match holder {
            Some(holder) => {
                let notice =
                    templates::email_already_held(&holder.name, new_email, &mail.link("/login"));
                mail.queue_mail(tx, "email_already_held", new_email, &notice)
                    .await?;
            }
            None => {
                self.queue_verification(tx, &updated, new_email, true)
                    .await?;
            }
        }
        let notice = templates::email_change_notice(&user.name, new_email, mail.public_url());
        mail.queue_mail(tx, "email_change_notice", &user.email, &notice)
            .await?;
        Ok(updated)
    }
}

/// FAILED_PRECONDITION (EMAIL_NOT_VERIFIED) for an unverified account when
/// sign-in needs a verified address.
pub fn check_verified(user: &UserRow, required: bool) -> AppResult<()> {
    if required && user.email_verified_at.is_none() {
        return Err(AppError::refused(
            Code::FailedPrecondition,
            "EMAIL_NOT_VERIFIED",
            "confirm your email address first: open the link mailed to you, or ask for a new one",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unverified_accounts_sign_in_only_when_it_is_not_required() {
        let mut user = UserRow {
            id: "u".into(),
            email: "a@b.org".into(),
            name: "A".into(),
            password_hash: String::new(),
            role: "USER".into(),
            active: true,
            token_version: 0,
            created_at: 0,
            updated_at: 0,
            last_login_at: None,
            email_verified_at: None,
            pending_email: String::new(),
        };
        assert!(check_verified(&user, false).is_ok());
        let refused = check_verified(&user, true).unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert_eq!(refused.reason(), Some("EMAIL_NOT_VERIFIED"));
        user.email_verified_at = Some(1);
        assert!(check_verified(&user, true).is_ok());
    }
}
