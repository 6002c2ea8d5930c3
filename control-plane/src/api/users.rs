//! UserService: account administration, for administrators only.

use crate::subscriptions::{Subscriptions, limits, queries as subscriptions_db};
use minispod_proto::v1::{self as pb, user_service_server::UserService};
use tonic::{Request, Response, Status};

use super::access::caller;
use crate::users::{
    fields::{Email, Password, PersonName, parse_role},
    queries::{self as users_db, UserChanges, UserFilter},
};
use crate::{
    auth::{AuthState, queries as refresh_db},
    error::{AppError, AppResult, Violations},
    store::{Page, now_ms},
};

/// Most ids one BulkUpdateUsers call may name.
const MAX_BULK_IDS: usize = 1000;

/// The gRPC UserService.
#[derive(Debug, Clone)]
pub struct UserApi {
    auth: AuthState,
    /// Told of subscriptions an account change suspended or resumed.
    subs: Subscriptions,
}

impl UserApi {
    /// The service over `auth`; account changes that suspend or resume
    /// subscriptions are announced to `subs`.
    pub fn new(auth: AuthState, subs: Subscriptions) -> Self {
        UserApi { auth, subs }
    }

    fn require_id(id: &str) -> AppResult<()> {
        if id.trim().is_empty() {
            return Err(AppError::invalid("id", "is required"));
        }
        Ok(())
    }

    async fn create_user(&self, req: Request<pb::CreateUserRequest>) -> AppResult<pb::User> {
        let admin = caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let email = v.take("email", Email::parse(&r.email));
        let password = v.take("password", Password::parse(&r.password));
        let name = v.take("name", PersonName::parse(&r.name));
        let role = if r.role == pb::Role::Unspecified as i32 {
            Some(pb::Role::User)
        } else {
            v.take("role", parse_role(r.role))
        };
        v.finish()?;
        let (email, password, name, role) = (
            email.unwrap(),
            password.unwrap(),
            name.unwrap(),
            role.unwrap(),
        );
        if users_db::by_email(&self.auth.db, email.as_str())
            .await?
            .is_some()
        {
            return Err(AppError::AlreadyExists(
                "a user with this email already exists".into(),
            ));
        }
        let hash = self.auth.hasher.hash(password.expose()).await?;
        let mut tx = self.auth.db.begin().await?;
        let user = users_db::insert(&mut tx, email.as_str(), name.as_str(), &hash, role).await?;
        // An administrator vouches for the address of an account they make.
        let user = users_db::verify_email(&mut tx, &user.id, &user.email).await?;
        tx.commit().await?;
        tracing::info!(by = %admin.id, user_id = %user.id, role = role.as_str_name(), "user created");
        Ok((&user).into())
    }

    async fn list_users(
        &self,
        req: Request<pb::ListUsersRequest>,
    ) -> AppResult<pb::ListUsersResponse> {
        let r = req.into_inner();
        let page = Page::parse(r.page_size, &r.page_token)?;
        let role = match r.role {
            0 => None,
            n => Some(parse_role(n).map_err(|e| AppError::invalid("role", e))?),
        };
        let order = pb::UserOrder::try_from(r.order_by)
            .map_err(|_| AppError::invalid("order_by", format!("unknown order {}", r.order_by)))?;
        if r.search.chars().count() > 200 {
            return Err(AppError::invalid(
                "search",
                "must be at most 200 characters",
            ));
        }
        let filter = UserFilter {
            search: r.search.trim().to_owned(),
            role,
            active: r.active,
        };
        let (rows, total) = users_db::list(&self.auth.db, &filter, order, page).await?;
        Ok(pb::ListUsersResponse {
            users: rows.iter().map(Into::into).collect(),
            next_page_token: page.next_token(total),
            total_size: total,
        })
    }

    async fn update_user(&self, req: Request<pb::UpdateUserRequest>) -> AppResult<pb::User> {
        let r = req.into_inner();
        Self::require_id(&r.id)?;
        let mut v = Violations::new();
        let email = r
            .email
            .as_deref()
            .and_then(|e| v.take("email", Email::parse(e)));
        let name = r
            .name
            .as_deref()
            .and_then(|n| v.take("name", PersonName::parse(n)));
        let password = r
            .password
            .as_deref()
            .and_then(|p| v.take("password", Password::parse(p)));
        v.finish()?;
        users_db::require(self.auth.db.read(), &r.id).await?;
        let hash = match &password {
            Some(p) => Some(self.auth.hasher.hash(p.expose()).await?),
            None => None,
        };
        let changes = UserChanges {
            email: email.as_ref().map(Email::as_str),
            name: name.as_ref().map(PersonName::as_str),
            password_hash: hash.as_deref(),
            revoke_access_tokens: hash.is_some(),
            // An administrator vouches for an address they set.
            email_verified: email.is_some().then_some(true),
            ..Default::default()
        };
        let mut tx = self.auth.db.begin().await?;
        let user = users_db::update(&mut tx, &r.id, &changes).await?;
        if hash.is_some() {
            refresh_db::revoke_user(&mut tx, &user.id).await?;
        }
        tx.commit().await?;
        Ok((&user).into())
    }

    async fn delete_user(&self, req: Request<pb::DeleteUserRequest>) -> AppResult<()> {
        let admin = caller(&req)?;
        let r = req.into_inner();
        Self::require_id(&r.id)?;
        let mut tx = self.auth.db.begin().await?;
        let user = users_db::require(&mut tx, &r.id).await?;
        users_db::guard_last_admin(&mut tx, &user, "delete").await?;
        let suspended = delete_user_in(&mut tx, &user.id).await?;
        tx.commit().await?;
        self.subs.owner_changed([suspended]);
        tracing::info!(by = %admin.id, user_id = %user.id, "user deleted");
        Ok(())
    }

    async fn set_user_role(&self, req: Request<pb::SetUserRoleRequest>) -> AppResult<pb::User> {
        let r = req.into_inner();
        Self::require_id(&r.id)?;
        let role = parse_role(r.role).map_err(|e| AppError::invalid("role", e))?;
        let mut tx = self.auth.db.begin().await?;
        let user = users_db::require(&mut tx, &r.id).await?;
        if role != pb::Role::Administrator {
            users_db::guard_last_admin(&mut tx, &user, "demote").await?;
        }
        let changes = UserChanges {
            role: Some(role),
            // A role change takes effect on the next request anyway (roles
            // are read from the store); the bump also ends tokens a client
            // may have cached alongside the old role.
            revoke_access_tokens: role != user.role(),
            ..Default::default()
        };
        let user = users_db::update(&mut tx, &user.id, &changes).await?;
        tx.commit().await?;
        Ok((&user).into())
    }

    async fn set_user_active(&self, req: Request<pb::SetUserActiveRequest>) -> AppResult<pb::User> {
        let r = req.into_inner();
        Self::require_id(&r.id)?;
        let mut tx = self.auth.db.begin().await?;
        let user = users_db::require(&mut tx, &r.id).await?;
        let (user, changed) = set_active(&mut tx, &user, r.active).await?;
        tx.commit().await?;
        self.subs.owner_changed(changed);
        Ok((&user).into())
    }

    async fn get_user_stats(
        &self,
        req: Request<pb::GetUserStatsRequest>,
    ) -> AppResult<pb::GetUserStatsResponse> {
        let days = match req.get_ref().recent_days {
            0 => 7,
            d @ 1..=365 => d,
            _ => {
                return Err(AppError::invalid(
                    "recent_days",
                    "must be between 0 and 365",
                ));
            }
        };
        let since = now_ms() - i64::from(days) * 86_400_000;
        let s = users_db::stats(&self.auth.db, since).await?;
        Ok(pb::GetUserStatsResponse {
            total: s.total,
            active: s.active,
            inactive: s.total - s.active,
            users: s.users,
            administrators: s.administrators,
            active_administrators: s.active_administrators,
            recent_signups: s.recent,
            recent_days: days,
        })
    }

    async fn bulk_update_users(
        &self,
        req: Request<pb::BulkUpdateUsersRequest>,
    ) -> AppResult<pb::BulkUpdateUsersResponse> {
        let admin = caller(&req)?;
        let r = req.into_inner();
        let action = match pb::BulkUserAction::try_from(r.action) {
            Ok(pb::BulkUserAction::Unspecified) | Err(_) => {
                return Err(AppError::invalid(
                    "action",
                    "must be ACTIVATE, DEACTIVATE or DELETE",
                ));
            }
            Ok(a) => a,
        };
        // The size first: the request is bounded before any work on it.
        if r.ids.len() > MAX_BULK_IDS {
            return Err(AppError::invalid(
                "ids",
                format!("must name at most {MAX_BULK_IDS} users"),
            ));
        }
        let mut seen = std::collections::HashSet::with_capacity(r.ids.len());
        let ids: Vec<String> = r
            .ids
            .into_iter()
            .filter(|id| seen.insert(id.clone()))
            .collect();
        if ids.is_empty() {
            return Err(AppError::invalid("ids", "must name at least one user"));
        }

        // One transaction: every change lands or none does. Per-id refusals
        // (unknown id, last administrator) are reported, not fatal.
        let mut tx = self.auth.db.begin().await?;
        let mut results = Vec::with_capacity(ids.len());
        let mut changed = Vec::new();
        for id in ids {
            let outcome = match users_db::by_id(&mut tx, &id).await? {
                None => Err(AppError::NotFound("no such user".into())),
                Some(user) => match action {
                    pb::BulkUserAction::Activate => {
                        set_active(&mut tx, &user, true).await.map(|(_, c)| c)
                    }
                    pb::BulkUserAction::Deactivate => {
                        set_active(&mut tx, &user, false).await.map(|(_, c)| c)
                    }
                    pb::BulkUserAction::Delete => {
                        match users_db::guard_last_admin(&mut tx, &user, "delete").await {
                            Ok(()) => delete_user_in(&mut tx, &user.id).await.map(Some),
                            Err(e) => Err(e),
                        }
                    }
                    pb::BulkUserAction::Unspecified => unreachable!("refused above"),
                },
            };
            results.push(match outcome {
                Ok(c) => {
                    changed.extend(c);
                    pb::BulkUserResult {
                        id,
                        ok: true,
                        ..Default::default()
                    }
                }
                Err(AppError::Internal(e)) => return Err(AppError::Internal(e)),
                Err(e) => pb::BulkUserResult {
                    id,
                    ok: false,
                    code: crate::error::code_name(e.code()).to_owned(),
                    message: e.to_string(),
                },
            });
        }
        tx.commit().await?;
        self.subs.owner_changed(changed);
        let succeeded = results.iter().filter(|r| r.ok).count() as i32;
        tracing::info!(by = %admin.id, action = action.as_str_name(), succeeded, "bulk user update");
        Ok(pb::BulkUpdateUsersResponse {
            failed: results.len() as i32 - succeeded,
            succeeded,
            results,
        })
    }
}

/// Deletes user `id` inside `tx`, suspending their subscriptions first
/// (announce them after the commit).
async fn delete_user_in(
    tx: &mut crate::store::Tx,
    id: &str,
) -> AppResult<subscriptions_db::OwnerChange> {
    let suspended =
        subscriptions_db::suspend_for_owner(tx, id, "its owner's account was deleted").await?;
    users_db::delete(tx, id).await?;
    Ok(suspended)
}

/// Activates or deactivates `user` inside `tx`; deactivation ends every
/// session and access token of the user, and spares the last administrator.
/// Returns the user and what it did to their subscriptions (announce it
/// after the commit).
async fn set_active(
    tx: &mut crate::store::Tx,
    user: &users_db::UserRow,
    active: bool,
) -> AppResult<(users_db::UserRow, Option<subscriptions_db::OwnerChange>)> {
    if !active {
        users_db::guard_last_admin(tx, user, "deactivate").await?;
    }
    let changes = UserChanges {
        active: Some(active),
        revoke_access_tokens: !active && user.active,
        ..Default::default()
    };
    let updated = users_db::update(tx, &user.id, &changes).await?;
    let changed = if !active {
        refresh_db::revoke_user(tx, &user.id).await?;
        Some(
            subscriptions_db::suspend_for_owner(
                tx,
                &user.id,
                "its owner's account was deactivated",
            )
            .await?,
        )
    } else if !user.active {
        Some(subscriptions_db::resume_for_owner(tx, &user.id).await?)
    } else {
        None
    };
    Ok((updated, changed))
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let user = UserApi::create_user(self, request).await?;
        Ok(Response::new(pb::CreateUserResponse { user: Some(user) }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        Self::require_id(&request.get_ref().id)?;
        let user = users_db::require(self.auth.db.read(), &request.get_ref().id).await?;
        let share = {
            let mut tx = self.auth.db.begin().await?;
            limits::share(&mut tx, &self.subs.settings().tenant, &user.id).await?
        };
        Ok(Response::new(pb::GetUserResponse {
            user: Some((&user).into()),
            share: Some(share),
        }))
    }

    async fn set_user_limits(
        &self,
        request: Request<pb::SetUserLimitsRequest>,
    ) -> Result<Response<pb::SetUserLimitsResponse>, Status> {
        let admin = caller(&request)?;
        let r = request.into_inner();
        Self::require_id(&r.id)?;
        let overrides = r.limits.unwrap_or_default();
        limits::validate(&overrides)?;
        let mut tx = self.auth.db.begin().await?;
        // Inside the transaction: a user deleted meanwhile is NOT_FOUND,
        // never a row of limits for nobody.
        users_db::require(&mut tx, &r.id).await?;
        limits::set_overrides(&mut tx, &r.id, &overrides).await?;
        let share = limits::share(&mut tx, &self.subs.settings().tenant, &r.id).await?;
        tx.commit().await.map_err(AppError::from)?;
        tracing::info!(by = %admin.id, user_id = %r.id, ?overrides, "tenant limits set");
        // The namespace's quota follows the limits: the reconciler applies
        // it on the customer's next pass.
        let ids = subscriptions_db::ids_of_user(&self.auth.db, &r.id).await?;
        self.subs.enqueue(ids);
        Ok(Response::new(pb::SetUserLimitsResponse {
            share: Some(share),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        Ok(Response::new(UserApi::list_users(self, request).await?))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let user = UserApi::update_user(self, request).await?;
        Ok(Response::new(pb::UpdateUserResponse { user: Some(user) }))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        UserApi::delete_user(self, request).await?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn set_user_role(
        &self,
        request: Request<pb::SetUserRoleRequest>,
    ) -> Result<Response<pb::SetUserRoleResponse>, Status> {
        let user = UserApi::set_user_role(self, request).await?;
        Ok(Response::new(pb::SetUserRoleResponse { user: Some(user) }))
    }

    async fn set_user_active(
        &self,
        request: Request<pb::SetUserActiveRequest>,
    ) -> Result<Response<pb::SetUserActiveResponse>, Status> {
        let user = UserApi::set_user_active(self, request).await?;
        Ok(Response::new(pb::SetUserActiveResponse {
            user: Some(user),
        }))
    }

    async fn get_user_stats(
        &self,
        request: Request<pb::GetUserStatsRequest>,
    ) -> Result<Response<pb::GetUserStatsResponse>, Status> {
        Ok(Response::new(UserApi::get_user_stats(self, request).await?))
    }

    async fn bulk_update_users(
        &self,
        request: Request<pb::BulkUpdateUsersRequest>,
    ) -> Result<Response<pb::BulkUpdateUsersResponse>, Status> {
        Ok(Response::new(
            UserApi::bulk_update_users(self, request).await?,
        ))
    }
}
