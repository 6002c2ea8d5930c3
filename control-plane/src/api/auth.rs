//! AuthService: sign-up, sign-in, sessions and the caller's own account.

use minispod_proto::v1::{self as pb, auth_service_server::AuthService};
use tonic::{Request, Response, Status};

use super::access::caller;
use crate::{
    auth::{Accounts, account::WithCookie, cookie, queries as refresh_db},
    error::{AppError, AppResult},
    subscriptions::Subscriptions,
    users::queries::{self as users_db, UserChanges},
};

/// The gRPC AuthService.
#[derive(Debug, Clone)]
pub struct AuthApi {
    /// Sign-in state with the account mail.
    pub(crate) auth: Accounts,
    /// Told of subscriptions an owner's own deactivation suspended.
    subs: Subscriptions,
}

impl AuthApi {
    /// The service over `auth`; subscriptions an owner's deactivation
    /// suspends are announced to `subs`.
    pub fn new(auth: Accounts, subs: Subscriptions) -> Self {
        AuthApi { auth, subs }
    }
}

/// A reply, with the `Set-Cookie` header the console's session needs.
fn reply<T>((body, set_cookie): WithCookie<T>) -> Response<T> {
    let mut response = Response::new(body);
    if let Some(v) = set_cookie {
        cookie::attach(&mut response, v);
    }
    response
}

impl AuthApi {
    async fn deactivate_account(
        &self,
        req: Request<pb::DeactivateAccountRequest>,
    ) -> AppResult<pb::DeactivateAccountResponse> {
        let user = caller(&req)?;
        let ip = self.auth.client_ip(&req);
        let r = req.into_inner();
        if r.password.is_empty() {
            return Err(AppError::invalid("password", "is required"));
        }
        self.auth
            .check_own_password(ip, &user, &r.password, "password")
            .await?;
        let mut tx = self.auth.db.begin().await?;
        users_db::guard_last_admin(&mut tx, &user, "deactivate").await?;
        let changes = UserChanges {
            active: Some(false),
            revoke_access_tokens: true,
            ..Default::default()
        };
        users_db::update(&mut tx, &user.id, &changes).await?;
        refresh_db::revoke_user(&mut tx, &user.id).await?;
        let suspended = crate::subscriptions::queries::suspend_for_owner(
            &mut tx,
            &user.id,
            "its owner's account was deactivated",
        )
        .await?;
        tx.commit().await?;
        self.subs.owner_changed([suspended]);
        tracing::info!(user_id = %user.id, "account deactivated by its owner");
        Ok(pb::DeactivateAccountResponse {})
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        Ok(reply(self.auth.register(request).await?))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        Ok(reply(self.auth.sign_in(request).await?))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        Ok(reply(self.auth.refresh(request).await?))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        Ok(reply(self.auth.logout(request).await?))
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::GetProfileResponse>, Status> {
        let user = caller(&request)?;
        Ok(Response::new(pb::GetProfileResponse {
            user: Some((&user).into()),
        }))
    }

    async fn update_profile(
        &self,
        request: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::UpdateProfileResponse>, Status> {
        let user = caller(&request)?;
        Ok(Response::new(
            self.auth.update_profile(user, request).await?,
        ))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let user = caller(&request)?;
        Ok(reply(self.auth.change_password(user, request).await?))
    }

    async fn deactivate_account(
        &self,
        request: Request<pb::DeactivateAccountRequest>,
    ) -> Result<Response<pb::DeactivateAccountResponse>, Status> {
        Ok(Response::new(
            AuthApi::deactivate_account(self, request).await?,
        ))
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        Ok(Response::new(
            self.auth.request_password_reset(request).await?,
        ))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        Ok(Response::new(self.auth.reset_password(request).await?))
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        Ok(Response::new(self.auth.verify_email(request).await?))
    }

    async fn resend_verification(
        &self,
        request: Request<pb::ResendVerificationRequest>,
    ) -> Result<Response<pb::ResendVerificationResponse>, Status> {
        Ok(Response::new(self.auth.resend_verification(request).await?))
    }
}
