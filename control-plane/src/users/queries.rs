//! SQL of the users domain.

use minispod_proto::v1::{Role, UserOrder};
use sqlx::FromRow;

use super::fields::{role_from_db, role_to_db};
use crate::{
    error::{AppError, AppResult},
    store::{Conn, Db, Page, Tx, contains_pattern, new_id, now_ms, unique_violation},
    with_conn,
};

/// An account as stored.
#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    /// UUID.
    pub id: String,
    /// Lower-case login name.
    pub email: String,
    /// Display name.
    pub name: String,
    /// PHC string of the argon2id hash.
    pub password_hash: String,
    /// `USER` or `ADMINISTRATOR`.
    pub role: String,
    /// False when deactivated.
    pub active: bool,
    /// Access tokens carry it; bumping it kills them all.
    pub token_version: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// Unix ms of the last login.
    pub last_login_at: Option<i64>,
    /// Unix ms when the address was verified; None when not.
    pub email_verified_at: Option<i64>,
    /// An address the owner asked to change to, awaiting its link; ''.
    pub pending_email: String,
}

impl UserRow {
    /// The account's role.
    pub fn role(&self) -> Role {
        role_from_db(&self.role)
    }

    /// True for an active administrator.
    pub fn is_active_admin(&self) -> bool {
        self.active && self.role() == Role::Administrator
    }
}

const COLUMNS: &str = "id, email, name, password_hash, role, active, token_version, created_at, updated_at, last_login_at, email_verified_at, pending_email";
const EMAIL_TAKEN: &str = "a user with this email already exists";

/// Inserts an account.
pub async fn insert(
    tx: &mut Tx,
    email: &str,
    name: &str,
    password_hash: &str,
    role: Role,
) -> AppResult<UserRow> {
    let now = now_ms();
    with_conn!(&mut *tx, |c| sqlx::query_as(&format!(
        "INSERT INTO users (id, email, name, password_hash, role, active, token_version, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, TRUE, 0, $6, $6) RETURNING {COLUMNS}"
    ))
    .bind(new_id())
    .bind(email)
    .bind(name)
    .bind(password_hash)
    .bind(role_to_db(role))
    .bind(now)
    .fetch_one(c)
    .await)
    .map_err(unique_violation(EMAIL_TAKEN))
}

/// The account with this id.
pub async fn by_id<'c>(exec: impl Into<Conn<'c>>, id: &str) -> AppResult<Option<UserRow>> {
    Ok(with_conn!(exec, |c| sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM users WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(c)
    .await)?)
}

/// The account with this id, or NOT_FOUND.
pub async fn require<'c>(exec: impl Into<Conn<'c>>, id: &str) -> AppResult<UserRow> {
    by_id(exec, id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no user with id {id:?}")))
}

/// The account with this (normalised) email.
pub async fn by_email(db: &Db, email: &str) -> AppResult<Option<UserRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM users WHERE email = $1"
    ))
    .bind(email)
    .fetch_optional(c)
    .await)?)
}

/// What a listing keeps.
#[derive(Debug, Default)]
pub struct UserFilter {
    /// Substring of email or name, any case; empty keeps all.
    pub search: String,
    /// Role to keep; None keeps all.
    pub role: Option<Role>,
    /// Activity to keep; None keeps all.
    pub active: Option<bool>,
}

/// One page of accounts and the number matching the filter.
pub async fn list(
    db: &Db,
    filter: &UserFilter,
    order: UserOrder,
    page: Page,
) -> AppResult<(Vec<UserRow>, i64)> {
    let pattern = if filter.search.is_empty() {
        String::new()
    } else {
        contains_pattern(&filter.search)
    };
    let role = filter.role.map(role_to_db).unwrap_or("");
    let clause = "($1 = '' OR lower(email) LIKE $1 ESCAPE '\\' OR lower(name) LIKE $1 ESCAPE '\\')
         AND ($2 = '' OR role = $2)
         AND ($3 IS NULL OR active = $3)";
    let order_by = match order {
        UserOrder::CreatedAtAsc => "created_at ASC, id ASC",
        UserOrder::EmailAsc => "email ASC",
        UserOrder::NameAsc => "lower(name) ASC, id ASC",
        UserOrder::CreatedAtDesc | UserOrder::Unspecified => "created_at DESC, id DESC",
    };
    let rows = with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM users WHERE {clause} ORDER BY {order_by} LIMIT $4 OFFSET $5"
    ))
    .bind(&pattern)
    .bind(role)
    .bind(filter.active)
    .bind(page.limit)
    .bind(page.offset)
    .fetch_all(c)
    .await)?;
    let total: i64 = with_conn!(db.read(), |c| sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM users WHERE {clause}"
    ))
    .bind(&pattern)
    .bind(role)
    .bind(filter.active)
    .fetch_one(c)
    .await)?;
    Ok((rows, total))
}

/// Changes set on an account; `None` leaves a column alone.
#[derive(Debug, Default)]
pub struct UserChanges<'a> {
    /// New email.
    pub email: Option<&'a str>,
    /// New name.
    pub name: Option<&'a str>,
    /// New password hash.
    pub password_hash: Option<&'a str>,
    /// New role.
    pub role: Option<Role>,
    /// New activity.
    pub active: Option<bool>,
    /// Kill every access token issued so far.
    pub revoke_access_tokens: bool,
    /// Some(true): the address is verified (an administrator vouches for
    /// it); None: a changed email is unverified, an unchanged one stays as
    /// it was.
    pub email_verified: Option<bool>,
}

/// Applies `changes` to the account `id`; NOT_FOUND when there is none.
pub async fn update(tx: &mut Tx, id: &str, changes: &UserChanges<'_>) -> AppResult<UserRow> {
    with_conn!(&mut *tx, |c| sqlx::query_as(&format!(
        "UPDATE users SET
            email = COALESCE($2, email),
            name = COALESCE($3, name),
            password_hash = COALESCE($4, password_hash),
            role = COALESCE($5, role),
            active = COALESCE($6, active),
            token_version = token_version + $7,
            updated_at = $8,
            email_verified_at = CASE
                WHEN $9 THEN COALESCE(email_verified_at, $8)
                WHEN $2 IS NOT NULL AND $2 <> email THEN NULL
                ELSE email_verified_at END,
            pending_email = CASE WHEN $2 IS NOT NULL AND $2 <> email THEN '' ELSE pending_email END
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(changes.email)
    .bind(changes.name)
    .bind(changes.password_hash)
    .bind(changes.role.map(role_to_db))
    .bind(changes.active)
    .bind(i64::from(changes.revoke_access_tokens))
    .bind(now_ms())
    .bind(changes.email_verified == Some(true))
    .fetch_optional(c)
    .await)
    .map_err(unique_violation(EMAIL_TAKEN))?
    .ok_or_else(|| AppError::NotFound(format!("no user with id {id:?}")))
}

/// Records a successful login.
pub async fn touch_login(tx: &mut Tx, id: &str) -> AppResult<()> {
    with_conn!(&mut *tx, |c| sqlx::query(
        "UPDATE users SET last_login_at = $2 WHERE id = $1"
    )
    .bind(id)
    .bind(now_ms())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Deletes an account (its refresh tokens go with it); false when absent.
pub async fn delete(tx: &mut Tx, id: &str) -> AppResult<bool> {
    let done = with_conn!(&mut *tx, |c| sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Administrators in the store, active or not.
pub async fn count_admins<'c>(exec: impl Into<Conn<'c>>) -> AppResult<i64> {
    Ok(with_conn!(exec, |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM users WHERE role = 'ADMINISTRATOR'",
    )
    .fetch_one(c)
    .await)?)
}

/// Number of active administrators.
pub async fn count_active_admins<'c>(exec: impl Into<Conn<'c>>) -> AppResult<i64> {
    Ok(with_conn!(exec, |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM users WHERE role = 'ADMINISTRATOR' AND active = TRUE",
    )
    .fetch_one(c)
    .await)?)
}

/// Fails with FAILED_PRECONDITION when `user` is the last active
/// administrator and the change would stop it being one. Call inside the
/// write transaction that makes the change, so two changes cannot both pass.
pub async fn guard_last_admin(tx: &mut Tx, user: &UserRow, what: &str) -> AppResult<()> {
    if user.is_active_admin() && count_active_admins(&mut *tx).await? <= 1 {
        return Err(AppError::FailedPrecondition(format!(
            "cannot {what} the last active administrator"
        )));
    }
    Ok(())
}

/// Account totals.
#[derive(Debug, Default, FromRow)]
pub struct UserStats {
    /// All accounts.
    pub total: i64,
    /// Active accounts.
    pub active: i64,
    /// ROLE_USER accounts.
    pub users: i64,
    /// ROLE_ADMINISTRATOR accounts.
    pub administrators: i64,
    /// Active administrators.
    pub active_administrators: i64,
    /// Accounts created since the cut-off.
    pub recent: i64,
}

/// Account totals, counting sign-ups since `since_ms`.
pub async fn stats(db: &Db, since_ms: i64) -> AppResult<UserStats> {
    Ok(with_conn!(db.read(), |c| {
        sqlx::query_as(
        "SELECT COUNT(*) AS total,
                COALESCE(SUM(CASE WHEN active THEN 1 ELSE 0 END), 0) AS active,
                COALESCE(SUM(CASE WHEN role = 'USER' THEN 1 ELSE 0 END), 0) AS users,
                COALESCE(SUM(CASE WHEN role = 'ADMINISTRATOR' THEN 1 ELSE 0 END), 0) AS administrators,
                COALESCE(SUM(CASE WHEN role = 'ADMINISTRATOR' AND active THEN 1 ELSE 0 END), 0) AS active_administrators,
                COALESCE(SUM(CASE WHEN created_at >= $1 THEN 1 ELSE 0 END), 0) AS recent
         FROM users",
    )
    .bind(since_ms)
    .fetch_one(c)
    .await
    })?)
}

/// Proves `email` for the account `id`: it becomes the login name (an
/// email change) and is marked verified. ALREADY_EXISTS when another
/// account took the address meanwhile.
pub async fn verify_email(tx: &mut Tx, id: &str, email: &str) -> AppResult<UserRow> {
    with_conn!(&mut *tx, |c| sqlx::query_as(&format!(
        "UPDATE users SET email = $2, email_verified_at = $3, updated_at = $3,
            pending_email = CASE WHEN pending_email = $2 THEN '' ELSE pending_email END
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(email)
    .bind(now_ms())
    .fetch_optional(c)
    .await)
    .map_err(unique_violation(EMAIL_TAKEN))?
    .ok_or_else(|| AppError::NotFound(format!("no user with id {id:?}")))
}

/// Records the address the owner asked to change to ('' for none).
pub async fn set_pending_email(tx: &mut Tx, id: &str, email: &str) -> AppResult<UserRow> {
    with_conn!(&mut *tx, |c| sqlx::query_as(&format!(
        "UPDATE users SET pending_email = $2, updated_at = $3 WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(email)
    .bind(now_ms())
    .fetch_optional(c)
    .await)?
    .ok_or_else(|| AppError::NotFound(format!("no user with id {id:?}")))
}

/// The account waiting to change to `email`, if any.
pub async fn by_pending_email(db: &Db, email: &str) -> AppResult<Option<UserRow>> {
    Ok(with_conn!(db.read(), |c| sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM users WHERE pending_email = $1 ORDER BY updated_at DESC LIMIT 1"
    ))
    .bind(email)
    .fetch_optional(c)
    .await)?)
}
