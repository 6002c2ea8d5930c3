//! UserService over the network.

use minispod_proto::v1::{self as pb, user_service_client::UserServiceClient};
use tonic::{Code, Request, Status, transport::Channel};

use crate::helpers::*;

fn create_req(email: &str, role: pb::Role) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        email: email.into(),
        password: "user-password-1".into(),
        name: format!("Name of {email}"),
        role: role as i32,
    }
}

async fn create(app: &TestApp, token: &str, email: &str, role: pb::Role) -> pb::User {
    app.users()
        .create_user(authed(create_req(email, role), token))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
}

/// Calls every UserService method with `make` deciding the metadata, and
/// returns each method's status code.
async fn call_every_method(
    mut c: UserServiceClient<Channel>,
    make: impl Fn() -> Option<String>,
) -> Vec<(&'static str, Code)> {
    fn req<T>(msg: T, token: &Option<String>) -> Request<T> {
        match token {
            Some(t) => authed(msg, t),
            None => Request::new(msg),
        }
    }
    fn code<T>(r: Result<T, Status>) -> Code {
        r.map(|_| Code::Ok).unwrap_or_else(|s| s.code())
    }
    let t = make();
    let id = "00000000-0000-0000-0000-000000000000".to_string();
    vec![
        (
            "CreateUser",
            code(
                c.create_user(req(create_req("z@example.org", pb::Role::User), &t))
                    .await,
            ),
        ),
        (
            "GetUser",
            code(
                c.get_user(req(pb::GetUserRequest { id: id.clone() }, &t))
                    .await,
            ),
        ),
        (
            "ListUsers",
            code(c.list_users(req(pb::ListUsersRequest::default(), &t)).await),
        ),
        (
            "UpdateUser",
            code(
                c.update_user(req(
                    pb::UpdateUserRequest {
                        id: id.clone(),
                        ..Default::default()
                    },
                    &t,
                ))
                .await,
            ),
        ),
        (
            "DeleteUser",
            code(
                c.delete_user(req(pb::DeleteUserRequest { id: id.clone() }, &t))
                    .await,
            ),
        ),
        (
            "SetUserRole",
            code(
                c.set_user_role(req(
                    pb::SetUserRoleRequest {
                        id: id.clone(),
                        role: 1,
                    },
                    &t,
                ))
                .await,
            ),
        ),
        (
            "SetUserActive",
            code(
                c.set_user_active(req(
                    pb::SetUserActiveRequest {
                        id: id.clone(),
                        active: true,
                    },
                    &t,
                ))
                .await,
            ),
        ),
        (
            "GetUserStats",
            code(
                c.get_user_stats(req(pb::GetUserStatsRequest::default(), &t))
                    .await,
            ),
        ),
        (
            "BulkUpdateUsers",
            code(
                c.bulk_update_users(req(
                    pb::BulkUpdateUsersRequest {
                        ids: vec![id.clone()],
                        action: 1,
                    },
                    &t,
                ))
                .await,
            ),
        ),
    ]
}

#[tokio::test]
async fn every_method_refuses_anonymous_callers_and_plain_users() {
    let app = spawn_app().await;
    let (_, user_token) = app.register("plain@example.org", "plain-password").await;
    for (method, code) in call_every_method(app.users(), || None).await {
        assert_eq!(code, Code::Unauthenticated, "{method} without a token");
    }
    for (method, code) in call_every_method(app.users(), || Some(user_token.clone())).await {
        assert_eq!(code, Code::PermissionDenied, "{method} as ROLE_USER");
    }
    // Nothing was written by the refused calls.
    let admin = app.admin_token().await;
    let stats = app
        .users()
        .get_user_stats(authed(pb::GetUserStatsRequest::default(), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.total, 2);
}

#[tokio::test]
async fn administrators_create_get_update_and_delete_users() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let u = create(&app, &admin, "Grace@Example.org", pb::Role::Administrator).await;
    assert_eq!(
        (u.email.as_str(), u.role),
        ("grace@example.org", pb::Role::Administrator as i32)
    );

    let got = app
        .users()
        .get_user(authed(pb::GetUserRequest { id: u.id.clone() }, &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.user.unwrap(), u);

    let updated = app
        .users()
        .update_user(authed(
            pb::UpdateUserRequest {
                id: u.id.clone(),
                name: Some("Grace Hopper".into()),
                email: Some("grace@navy.example".into()),
                password: Some("cobol-1959-pw".into()),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.email.as_str()),
        ("Grace Hopper", "grace@navy.example")
    );
    app.login("grace@navy.example", "cobol-1959-pw")
        .await
        .expect("new password set by admin");

    app.users()
        .delete_user(authed(pb::DeleteUserRequest { id: u.id.clone() }, &admin))
        .await
        .unwrap();
    expect_code(
        app.users()
            .get_user(authed(pb::GetUserRequest { id: u.id.clone() }, &admin))
            .await,
        Code::NotFound,
    );
    expect_code(
        app.login("grace@navy.example", "cobol-1959-pw").await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn invalid_input_not_found_and_conflicts_get_their_codes() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let users = || app.users();
    let bad = pb::CreateUserRequest {
        email: "nope".into(),
        password: "x".into(),
        name: "".into(),
        role: 7,
    };
    let s = expect_code(
        users().create_user(authed(bad, &admin)).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["email", "password", "name", "role"]);
    expect_code(
        users()
            .create_user(authed(create_req(ADMIN_EMAIL, pb::Role::User), &admin))
            .await,
        Code::AlreadyExists,
    );

    let u = create(&app, &admin, "b@example.org", pb::Role::User).await;
    let missing = "0190aaaa-0000-7000-8000-000000000000".to_string();
    expect_code(
        users()
            .get_user(authed(
                pb::GetUserRequest {
                    id: missing.clone(),
                },
                &admin,
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        users()
            .get_user(authed(pb::GetUserRequest { id: "".into() }, &admin))
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        users()
            .update_user(authed(
                pb::UpdateUserRequest {
                    id: missing.clone(),
                    name: Some("N".into()),
                    ..Default::default()
                },
                &admin,
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        users()
            .update_user(authed(
                pb::UpdateUserRequest {
                    id: u.id.clone(),
                    email: Some(ADMIN_EMAIL.into()),
                    ..Default::default()
                },
                &admin,
            ))
            .await,
        Code::AlreadyExists,
    );
    expect_code(
        users()
            .update_user(authed(
                pb::UpdateUserRequest {
                    id: u.id.clone(),
                    password: Some("short".into()),
                    ..Default::default()
                },
                &admin,
            ))
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        users()
            .delete_user(authed(
                pb::DeleteUserRequest {
                    id: missing.clone(),
                },
                &admin,
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        users()
            .set_user_role(authed(
                pb::SetUserRoleRequest {
                    id: missing.clone(),
                    role: 1,
                },
                &admin,
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        users()
            .set_user_role(authed(
                pb::SetUserRoleRequest {
                    id: u.id.clone(),
                    role: 0,
                },
                &admin,
            ))
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        users()
            .set_user_active(authed(
                pb::SetUserActiveRequest {
                    id: missing.clone(),
                    active: false,
                },
                &admin,
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        users()
            .get_user_stats(authed(pb::GetUserStatsRequest { recent_days: 400 }, &admin))
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        users()
            .bulk_update_users(authed(
                pb::BulkUpdateUsersRequest {
                    ids: vec![u.id.clone()],
                    action: 0,
                },
                &admin,
            ))
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        users()
            .bulk_update_users(authed(
                pb::BulkUpdateUsersRequest {
                    ids: vec![],
                    action: 1,
                },
                &admin,
            ))
            .await,
        Code::InvalidArgument,
    );
    let list = |r: pb::ListUsersRequest| async { users().list_users(authed(r, &admin)).await };
    expect_code(
        list(pb::ListUsersRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    expect_code(
        list(pb::ListUsersRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    expect_code(
        list(pb::ListUsersRequest {
            role: 9,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    expect_code(
        list(pb::ListUsersRequest {
            order_by: 42,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
}

#[tokio::test]
async fn list_users_searches_filters_orders_and_pages() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    for i in 0..7 {
        create(
            &app,
            &admin,
            &format!("member{i}@example.org"),
            pb::Role::User,
        )
        .await;
    }
    let other = create(&app, &admin, "zed@corp.example", pb::Role::Administrator).await;
    app.users()
        .set_user_active(authed(
            pb::SetUserActiveRequest {
                id: other.id.clone(),
                active: false,
            },
            &admin,
        ))
        .await
        .unwrap();
    let list = |r: pb::ListUsersRequest| {
        let mut c = app.users();
        let admin = admin.clone();
        async move { c.list_users(authed(r, &admin)).await.unwrap().into_inner() }
    };

    let all = list(pb::ListUsersRequest::default()).await;
    assert_eq!(all.total_size, 9);
    // Newest first by default.
    assert_eq!(all.users[0].email, "zed@corp.example");

    let search = list(pb::ListUsersRequest {
        search: "MEMBER".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(search.total_size, 7);
    let admins = list(pb::ListUsersRequest {
        role: pb::Role::Administrator as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(admins.total_size, 2);
    let inactive = list(pb::ListUsersRequest {
        active: Some(false),
        ..Default::default()
    })
    .await;
    assert_eq!(
        inactive
            .users
            .iter()
            .map(|u| u.email.as_str())
            .collect::<Vec<_>>(),
        ["zed@corp.example"]
    );
    // LIKE wildcards in the search are literal.
    let wildcard = list(pb::ListUsersRequest {
        search: "%".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(wildcard.total_size, 0);

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(pb::ListUsersRequest {
            page_size: 4,
            page_token: token.clone(),
            order_by: pb::UserOrder::EmailAsc as i32,
            ..Default::default()
        })
        .await;
        assert!(page.users.len() <= 4);
        seen.extend(page.users.into_iter().map(|u| u.email));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    assert_eq!(seen.len(), 9);
}

#[tokio::test]
async fn roles_and_activity_change_and_take_effect_at_once() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let u = create(&app, &admin, "promo@example.org", pb::Role::User).await;
    let (token, _) = app
        .login("promo@example.org", "user-password-1")
        .await
        .unwrap();
    expect_code(
        app.users()
            .list_users(authed(pb::ListUsersRequest::default(), &token))
            .await,
        Code::PermissionDenied,
    );

    let promoted = app
        .users()
        .set_user_role(authed(
            pb::SetUserRoleRequest {
                id: u.id.clone(),
                role: pb::Role::Administrator as i32,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(promoted.role, pb::Role::Administrator as i32);
    let (token, _) = app
        .login("promo@example.org", "user-password-1")
        .await
        .unwrap();
    app.users()
        .list_users(authed(pb::ListUsersRequest::default(), &token))
        .await
        .expect("now an administrator");

    // Deactivation: the live access token is refused at once.
    app.users()
        .set_user_active(authed(
            pb::SetUserActiveRequest {
                id: u.id.clone(),
                active: false,
            },
            &admin,
        ))
        .await
        .unwrap();
    expect_code(
        app.users()
            .list_users(authed(pb::ListUsersRequest::default(), &token))
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        app.login("promo@example.org", "user-password-1").await,
        Code::Unauthenticated,
    );
    app.users()
        .set_user_active(authed(
            pb::SetUserActiveRequest {
                id: u.id.clone(),
                active: true,
            },
            &admin,
        ))
        .await
        .unwrap();
    app.login("promo@example.org", "user-password-1")
        .await
        .expect("reactivated");
}

#[tokio::test]
async fn the_last_active_administrator_is_protected() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let me = app
        .auth()
        .get_profile(authed(pb::GetProfileRequest {}, &admin))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let users = || app.users();
    expect_code(
        users()
            .delete_user(authed(pb::DeleteUserRequest { id: me.id.clone() }, &admin))
            .await,
        Code::FailedPrecondition,
    );
    expect_code(
        users()
            .set_user_role(authed(
                pb::SetUserRoleRequest {
                    id: me.id.clone(),
                    role: pb::Role::User as i32,
                },
                &admin,
            ))
            .await,
        Code::FailedPrecondition,
    );
    expect_code(
        users()
            .set_user_active(authed(
                pb::SetUserActiveRequest {
                    id: me.id.clone(),
                    active: false,
                },
                &admin,
            ))
            .await,
        Code::FailedPrecondition,
    );
    // An inactive administrator does not count.
    let sleeper = create(&app, &admin, "sleeper@example.org", pb::Role::Administrator).await;
    users()
        .set_user_active(authed(
            pb::SetUserActiveRequest {
                id: sleeper.id.clone(),
                active: false,
            },
            &admin,
        ))
        .await
        .unwrap();
    expect_code(
        users()
            .set_user_role(authed(
                pb::SetUserRoleRequest {
                    id: me.id.clone(),
                    role: pb::Role::User as i32,
                },
                &admin,
            ))
            .await,
        Code::FailedPrecondition,
    );
    // With a second active administrator the first may step down.
    users()
        .set_user_active(authed(
            pb::SetUserActiveRequest {
                id: sleeper.id.clone(),
                active: true,
            },
            &admin,
        ))
        .await
        .unwrap();
    users()
        .set_user_role(authed(
            pb::SetUserRoleRequest {
                id: me.id.clone(),
                role: pb::Role::User as i32,
            },
            &admin,
        ))
        .await
        .expect("no longer the last");
}

#[tokio::test]
async fn bulk_updates_report_each_id_in_one_transaction() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let me = app
        .auth()
        .get_profile(authed(pb::GetProfileRequest {}, &admin))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let a = create(&app, &admin, "a@example.org", pb::Role::User).await;
    let b = create(&app, &admin, "b@example.org", pb::Role::User).await;
    let missing = "0190aaaa-0000-7000-8000-000000000000".to_string();

    let r = app
        .users()
        .bulk_update_users(authed(
            pb::BulkUpdateUsersRequest {
                ids: vec![
                    a.id.clone(),
                    b.id.clone(),
                    a.id.clone(),
                    missing.clone(),
                    me.id.clone(),
                ],
                action: pb::BulkUserAction::Deactivate as i32,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.succeeded, r.failed), (2, 2));
    let codes: Vec<_> = r
        .results
        .iter()
        .map(|x| (x.id.clone(), x.ok, x.code.clone()))
        .collect();
    assert_eq!(
        codes,
        [
            (a.id.clone(), true, String::new()),
            (b.id.clone(), true, String::new()),
            (missing.clone(), false, "NOT_FOUND".into()),
            (me.id.clone(), false, "FAILED_PRECONDITION".into()),
        ]
    );
    expect_code(
        app.login("a@example.org", "user-password-1").await,
        Code::Unauthenticated,
    );

    let r = app
        .users()
        .bulk_update_users(authed(
            pb::BulkUpdateUsersRequest {
                ids: vec![a.id.clone(), b.id.clone()],
                action: pb::BulkUserAction::Activate as i32,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.succeeded, 2);
    app.login("a@example.org", "user-password-1")
        .await
        .expect("activated");

    let r = app
        .users()
        .bulk_update_users(authed(
            pb::BulkUpdateUsersRequest {
                ids: vec![a.id.clone(), b.id.clone()],
                action: pb::BulkUserAction::Delete as i32,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.succeeded, 2);
    let stats = app
        .users()
        .get_user_stats(authed(pb::GetUserStatsRequest::default(), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.total, 1);
}

#[tokio::test]
async fn user_stats_count_roles_states_and_recent_signups() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    app.register("s1@example.org", "password-s1").await;
    let s2 = create(&app, &admin, "s2@example.org", pb::Role::User).await;
    create(&app, &admin, "s3@example.org", pb::Role::Administrator).await;
    app.users()
        .set_user_active(authed(
            pb::SetUserActiveRequest {
                id: s2.id,
                active: false,
            },
            &admin,
        ))
        .await
        .unwrap();
    let s = app
        .users()
        .get_user_stats(authed(pb::GetUserStatsRequest::default(), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            s.total,
            s.active,
            s.inactive,
            s.users,
            s.administrators,
            s.active_administrators,
            s.recent_signups,
            s.recent_days
        ),
        (4, 3, 1, 2, 2, 2, 4, 7)
    );
}

#[tokio::test]
async fn a_bulk_request_is_bounded_before_duplicates_are_folded() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let status = expect_code(
        app.users()
            .bulk_update_users(authed(
                pb::BulkUpdateUsersRequest {
                    ids: vec!["same-id".into(); 1001],
                    action: pb::BulkUserAction::Deactivate as i32,
                },
                &admin,
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["ids"]);
}
