//! The bootstrap administrator, made on the first start.

use std::path::Path;

use anyhow::Context;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;

use crate::{
    auth::AuthState,
    config::LoginArgs,
    users::{
        fields::{Email, Password},
        queries as users_db,
    },
};

/// The file a generated bootstrap password is written to (mode 0600).
pub const ADMIN_PASSWORD_FILE: &str = "admin.password";

/// Creates the bootstrap administrator when the store has no administrator
/// at all: `--admin-email` (default `admin@minispod.local`) with
/// `--admin-password`, or a generated password written to
/// `<data-dir>/admin.password` (0600) and printed only to a terminal (under
/// systemd stdout is the journal). Once any administrator exists, nothing is
/// created, so deleting or renaming this account does not bring it back.
pub(super) async fn bootstrap_admin(
    auth: &AuthState,
    args: &LoginArgs,
    data_dir: &Path,
) -> anyhow::Result<()> {
    if users_db::count_admins(auth.db.read()).await? > 0 {
        return Ok(());
    }
    let email = Email::parse(
        args.admin_email
            .as_deref()
            .unwrap_or("admin@minispod.local"),
    )
    .map_err(|why| anyhow::anyhow!("--admin-email {why}"))?;
    if users_db::by_email(&auth.db, email.as_str())
        .await?
        .is_some()
    {
        tracing::warn!(email = %email.as_str(), "no administrator exists, but the bootstrap email belongs to a user; not promoting it (give --admin-email another address)");
        return Ok(());
    }
    let given = args.admin_password.clone();
    let generated = given.is_none();
    let password = match given {
        Some(p) => {
            Password::parse(p.expose()).map_err(|why| anyhow::anyhow!("--admin-password {why}"))?
        }
        None => {
            let mut raw = [0u8; 18];
            rand::rng().fill_bytes(&mut raw);
            Password::parse(&URL_SAFE_NO_PAD.encode(raw)).expect("24 characters")
        }
    };
    let hash = auth.hasher.hash(password.expose()).await?;
    let mut tx = auth.db.begin().await?;
    let user = users_db::insert(
        &mut tx,
        email.as_str(),
        "Administrator",
        &hash,
        minispod_proto::v1::Role::Administrator,
    )
    .await?;
    // The operator chose the address; nobody could verify it by mail yet.
    let user = users_db::verify_email(&mut tx, &user.id, &user.email).await?;
    if generated {
        // Written before the commit: if it cannot be kept, nobody would
        // know the password, so the account is not created either.
        let path = data_dir.join(ADMIN_PASSWORD_FILE);
        minispod_support::write_private(&path, format!("{}\n", password.expose()).as_bytes())
            .with_context(|| format!("write {}", path.display()))?;
    }
    tx.commit().await?;
    tracing::info!(user_id = %user.id, email = %user.email, "created the bootstrap administrator");
    if generated {
        let path = data_dir.join(ADMIN_PASSWORD_FILE);
        tracing::info!(file = %path.display(), "the bootstrap administrator's generated password is in this file (mode 0600)");
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            println!(
                "\n  MiniSpod bootstrap administrator\n    email:    {}\n    password: {}\n  Also in {} (mode 0600); change it after logging in.\n",
                user.email,
                password.expose(),
                path.display()
            );
        }
    }
    Ok(())
}
