//! Who may call what: one table, method path → [`Access`], applied once by
//! [`AccessLayer`] in front of every service.
//!
//! The layer authenticates the call the table asks for (the bearer token,
//! reloading the account on every call so a deactivation, a logout or a
//! password change acts at once; or the worker's client certificate), checks
//! the role, and puts who called in the request's extensions ([`Caller`],
//! [`AgentCaller`]), where the handlers read it. A method missing from the
//! table is refused with UNIMPLEMENTED (and a WARN): a new RPC is closed
//! until someone says who may call it.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use minispod_proto::v1::Role;
use tonic::{Request, Status};

use crate::{
    auth::{AuthState, admin_required},
    error::AppError,
    users::queries::UserRow,
    workers::{enrollment::Enrollment, queries::WorkerRow},
};

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not (sign-in itself, the public catalog,
    /// enrollment with a token in the message, health, reflection).
    Public,
    /// Anyone; a valid bearer token makes the caller known to the handler,
    /// an invalid one is ignored (the call reads as anonymous).
    MaybeUser,
    /// A signed-in, active account of any role.
    User,
    /// A signed-in, active administrator.
    Admin,
    /// A worker presenting its current client certificate.
    Agent,
}

/// Every method the server answers, by its gRPC path.
pub const TABLE: &[(&str, Access)] = {
    use Access::*;
    &[
        // grpc.health.v1: probes run before anyone signs in.
        ("/grpc.health.v1.Health/Check", Public),
        ("/grpc.health.v1.Health/Watch", Public),
        // Reflection describes the public API (grpcurl, the console's tools).
        (
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            Public,
        ),
        (
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            Public,
        ),
        // AuthService: signing in and recovering an account are public; the
        // caller's own account needs its token.
        ("/minispod.v1.AuthService/Register", Public),
        ("/minispod.v1.AuthService/Login", Public),
        ("/minispod.v1.AuthService/Refresh", Public),
        ("/minispod.v1.AuthService/Logout", Public),
        ("/minispod.v1.AuthService/GetProfile", User),
        ("/minispod.v1.AuthService/UpdateProfile", User),
        ("/minispod.v1.AuthService/ChangePassword", User),
        ("/minispod.v1.AuthService/DeactivateAccount", User),
        ("/minispod.v1.AuthService/RequestPasswordReset", Public),
        ("/minispod.v1.AuthService/ResetPassword", Public),
        ("/minispod.v1.AuthService/VerifyEmail", Public),
        ("/minispod.v1.AuthService/ResendVerification", Public),
        // CatalogService: browsing is public (administrators also see
        // inactive entries in GetService); editing is for administrators.
        ("/minispod.v1.CatalogService/ListServices", Public),
        ("/minispod.v1.CatalogService/GetService", MaybeUser),
        ("/minispod.v1.CatalogService/ListCategories", Public),
        ("/minispod.v1.CatalogService/CreateService", Admin),
        ("/minispod.v1.CatalogService/UpdateService", Admin),
        ("/minispod.v1.CatalogService/DeleteService", Admin),
        ("/minispod.v1.CatalogService/ListAllServices", Admin),
        ("/minispod.v1.CatalogService/GetCatalogStats", Admin),
        ("/minispod.v1.CatalogService/PublishServiceVersion", Admin),
        ("/minispod.v1.CatalogService/WithdrawServiceVersion", Admin),
        ("/minispod.v1.CatalogService/ListServiceVersions", Admin),
        // HistoryService.
        ("/minispod.v1.HistoryService/GetWorkerHistory", Admin),
        ("/minispod.v1.HistoryService/GetFleetHistory", Admin),
        ("/minispod.v1.HistoryService/GetSubscriptionHistory", User),
        // NotificationService: everyone's own preferences (a customer's
        // among the subscription events, checked by the handler) and test
        // notice; the outbox and the workers' thresholds are the operator's.
        (
            "/minispod.v1.NotificationService/GetNotificationPreferences",
            User,
        ),
        (
            "/minispod.v1.NotificationService/UpdateNotificationPreferences",
            User,
        ),
        (
            "/minispod.v1.NotificationService/SendTestNotification",
            User,
        ),
        ("/minispod.v1.NotificationService/ListOutboxMessages", Admin),
        ("/minispod.v1.NotificationService/RetryOutboxMessage", Admin),
        (
            "/minispod.v1.NotificationService/GetWorkerThresholds",
            Admin,
        ),
        (
            "/minispod.v1.NotificationService/SetWorkerThresholds",
            Admin,
        ),
        // SubscriptionService: customers act on their own subscriptions
        // (the handlers check ownership); suspending and fleet figures are
        // for administrators.
        ("/minispod.v1.SubscriptionService/CreateSubscription", User),
        ("/minispod.v1.SubscriptionService/ListSubscriptions", User),
        ("/minispod.v1.SubscriptionService/GetSubscription", User),
        ("/minispod.v1.SubscriptionService/UpdateSubscription", User),
        ("/minispod.v1.SubscriptionService/UpgradeSubscription", User),
        (
            "/minispod.v1.SubscriptionService/UpgradeServiceSubscriptions",
            Admin,
        ),
        ("/minispod.v1.SubscriptionService/RestartSubscription", User),
        ("/minispod.v1.SubscriptionService/DeleteSubscription", User),
        ("/minispod.v1.SubscriptionService/WatchSubscriptions", User),
        (
            "/minispod.v1.SubscriptionService/StreamSubscriptionLogs",
            User,
        ),
        (
            "/minispod.v1.SubscriptionService/SuspendSubscription",
            Admin,
        ),
        ("/minispod.v1.SubscriptionService/ResumeSubscription", Admin),
        (
            "/minispod.v1.SubscriptionService/SetSubscriptionAccess",
            User,
        ),
        (
            "/minispod.v1.SubscriptionService/GetSubscriptionStats",
            Admin,
        ),
        ("/minispod.v1.SubscriptionService/CheckSubscription", User),
        (
            "/minispod.v1.SubscriptionService/AddSubscriptionDomain",
            User,
        ),
        (
            "/minispod.v1.SubscriptionService/RemoveSubscriptionDomain",
            User,
        ),
        (
            "/minispod.v1.SubscriptionService/ListSubscriptionDomains",
            User,
        ),
        (
            "/minispod.v1.SubscriptionService/SetSubscriptionAutoUpdate",
            User,
        ),
        // UserService: account administration.
        ("/minispod.v1.UserService/CreateUser", Admin),
        ("/minispod.v1.UserService/GetUser", Admin),
        ("/minispod.v1.UserService/ListUsers", Admin),
        ("/minispod.v1.UserService/UpdateUser", Admin),
        ("/minispod.v1.UserService/DeleteUser", Admin),
        ("/minispod.v1.UserService/SetUserRole", Admin),
        ("/minispod.v1.UserService/SetUserActive", Admin),
        ("/minispod.v1.UserService/GetUserStats", Admin),
        ("/minispod.v1.UserService/BulkUpdateUsers", Admin),
        ("/minispod.v1.UserService/SetUserLimits", Admin),
        // WorkerService: the fleet is the operator's.
        ("/minispod.v1.WorkerService/ListWorkers", Admin),
        ("/minispod.v1.WorkerService/GetWorker", Admin),
        ("/minispod.v1.WorkerService/UpdateWorker", Admin),
        ("/minispod.v1.WorkerService/DeleteWorker", Admin),
        ("/minispod.v1.WorkerService/SetWorkerStatus", Admin),
        ("/minispod.v1.WorkerService/SetWorkerSchedulable", Admin),
        ("/minispod.v1.WorkerService/GetWorkerStats", Admin),
        ("/minispod.v1.WorkerService/WatchWorkers", Admin),
        ("/minispod.v1.WorkerService/CreateEnrollmentToken", Admin),
        ("/minispod.v1.WorkerService/ListEnrollmentTokens", Admin),
        ("/minispod.v1.WorkerService/RevokeEnrollmentToken", Admin),
        ("/minispod.v1.WorkerService/ListRemovedMachines", Admin),
        ("/minispod.v1.WorkerService/ReadmitMachine", Admin),
        ("/minispod.v1.WorkerService/ApproveWorkerTakeover", Admin),
        ("/minispod.v1.WorkerService/GetClusterLink", Admin),
        // AgentService: Enroll carries its own token (or a certificate the
        // enrollment judges); the rest needs the worker's certificate.
        ("/minispod.v1.AgentService/Enroll", Public),
        ("/minispod.v1.AgentService/Connect", Agent),
        ("/minispod.v1.AgentService/RenewCertificate", Agent),
        ("/minispod.v1.AgentService/ClaimTransfers", Agent),
        ("/minispod.v1.AgentService/ReportTransfer", Agent),
        // BackupService: destinations are the operator's; customers back up
        // and restore their own subscriptions, administrators any.
        ("/minispod.v1.BackupService/CreateBackupDestination", Admin),
        ("/minispod.v1.BackupService/ListBackupDestinations", Admin),
        ("/minispod.v1.BackupService/ImportBackups", Admin),
        ("/minispod.v1.BackupService/CreateBackup", User),
        ("/minispod.v1.BackupService/GetBackup", User),
        ("/minispod.v1.BackupService/ListBackups", User),
        ("/minispod.v1.BackupService/RestoreBackup", User),
        ("/minispod.v1.BackupService/GetRestore", User),
        ("/minispod.v1.BackupService/SetBackupSchedule", User),
        ("/minispod.v1.BackupService/GetBackupSchedule", User),
        ("/minispod.v1.BackupService/StartRestoreDrill", User),
        ("/minispod.v1.BackupService/ListBackupOverview", Admin),
        ("/minispod.v1.BackupService/CreateBackupDownload", User),
    ]
};

/// The rule for a method path, None when the table has none.
pub fn rule(path: &str) -> Option<Access> {
    TABLE.iter().find(|(p, _)| *p == path).map(|(_, a)| *a)
}

/// The signed-in account behind a call (User, Admin, and MaybeUser with a
/// valid token), as of this call.
#[derive(Debug, Clone)]
pub struct Caller(pub UserRow);

/// The worker behind an Agent call, its certificate checked.
#[derive(Debug, Clone)]
pub struct AgentCaller(pub WorkerRow);

/// The account [`AccessLayer`] put in the request (INTERNAL when the method
/// is not a User or Admin one: a mistake in the table, not the caller's).
pub fn caller<T>(request: &Request<T>) -> Result<UserRow, AppError> {
    request
        .extensions()
        .get::<Caller>()
        .map(|c| c.0.clone())
        .ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!("this method has no authenticated caller"))
        })
}

/// The account of a MaybeUser call, if its token was valid.
pub fn maybe_caller<T>(request: &Request<T>) -> Option<&UserRow> {
    request.extensions().get::<Caller>().map(|c| &c.0)
}

/// The worker [`AccessLayer`] put in an Agent request.
pub fn agent<T>(request: &Request<T>) -> Result<WorkerRow, AppError> {
    request
        .extensions()
        .get::<AgentCaller>()
        .map(|c| c.0.clone())
        .ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!("this method has no authenticated worker"))
        })
}

/// What the layer judges with.
#[derive(Clone)]
struct Judge {
    auth: AuthState,
    enrollment: Enrollment,
}

impl Judge {
    /// The account behind `request`'s bearer token, which must be an
    /// administrator when `admin`.
    async fn user(&self, request: &Request<()>, admin: bool) -> Result<Caller, AppError> {
        let user = self.auth.caller(request).await?;
        if admin && user.role() != Role::Administrator {
            return Err(admin_required());
        }
        Ok(Caller(user))
    }

    /// Checks `head` against `access`; Ok with what to put in the request.
    async fn admit(&self, access: Access, head: &http::Request<()>) -> Result<Admitted, AppError> {
        // A tonic request over the same headers and connection facts (peer
        // address, client certificate) as the call.
        let mut copy = http::Request::new(());
        *copy.headers_mut() = head.headers().clone();
        *copy.extensions_mut() = head.extensions().clone();
        let probe = Request::from_http(copy);
        match access {
            Access::Public => Ok(Admitted::Nobody),
            Access::MaybeUser if !head.headers().contains_key("authorization") => {
                Ok(Admitted::Nobody)
            }
            Access::MaybeUser => match self.user(&probe, false).await {
                Ok(c) => Ok(Admitted::User(Box::new(c))),
                // A bad or expired token reads the public side.
                Err(AppError::Unauthenticated(_)) => Ok(Admitted::Nobody),
                Err(e) => Err(e),
            },
            Access::User => self
                .user(&probe, false)
                .await
                .map(|c| Admitted::User(Box::new(c))),
            Access::Admin => self
                .user(&probe, true)
                .await
                .map(|c| Admitted::User(Box::new(c))),
            Access::Agent => {
                let (_, worker) = self.enrollment.authenticate_peer(&probe).await?;
                Ok(Admitted::Agent(Box::new(AgentCaller(worker))))
            }
        }
    }
}

enum Admitted {
    Nobody,
    User(Box<Caller>),
    Agent(Box<AgentCaller>),
}

/// Applies [`TABLE`] to every call (see the module's documentation).
#[derive(Clone)]
pub struct AccessLayer {
    judge: Judge,
}

impl AccessLayer {
    /// Judges bearer tokens with `auth` and worker certificates with
    /// `enrollment`.
    pub fn new(auth: AuthState, enrollment: Enrollment) -> Self {
        AccessLayer {
            judge: Judge { auth, enrollment },
        }
    }
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = AccessService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessService {
            inner,
            judge: self.judge.clone(),
        }
    }
}

/// See [`AccessLayer`].
#[derive(Clone)]
pub struct AccessService<S> {
    inner: S,
    judge: Judge,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for AccessService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(access) = rule(request.uri().path()) else {
            tracing::warn!(
                method = %request.uri().path(),
                "refused a call to a method missing from the access table"
            );
            let status = Status::unimplemented(format!(
                "{} is not a method of this server",
                request.uri().path()
            ));
            return Box::pin(std::future::ready(Ok(status.into_http())));
        };
        if access == Access::Public {
            return Box::pin(self.inner.call(request));
        }
        // The service that was polled ready serves this call; a clone waits
        // for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let judge = self.judge.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let head = http::Request::from_parts(parts, ());
            let admitted = judge.admit(access, &head).await;
            let (mut parts, ()) = head.into_parts();
            match admitted {
                Ok(Admitted::Nobody) => {}
                Ok(Admitted::User(caller)) => {
                    parts.extensions.insert(*caller);
                }
                Ok(Admitted::Agent(worker)) => {
                    parts.extensions.insert(*worker);
                }
                Err(e) => return Ok(Status::from(e).into_http()),
            }
            inner.call(http::Request::from_parts(parts, body)).await
        })
    }
}
