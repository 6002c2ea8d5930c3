//! Accounts: their fields, their SQL and the administrators' UserService.

pub mod fields;
pub mod queries;

use minispod_proto::v1 as pb;

use crate::store::timestamp;
use queries::UserRow;

impl From<&UserRow> for pb::User {
    fn from(u: &UserRow) -> Self {
        pb::User {
            id: u.id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            role: u.role() as i32,
            active: u.active,
            created_at: Some(timestamp(u.created_at)),
            updated_at: Some(timestamp(u.updated_at)),
            last_login_at: u.last_login_at.map(timestamp),
            email_verified: u.email_verified_at.is_some(),
            pending_email: u.pending_email.clone(),
        }
    }
}
