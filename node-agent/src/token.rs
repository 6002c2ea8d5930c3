//! Where the enrollment token comes from, and the rule that the agent
//! spends a token at most once.
//!
//! The token is read from `--token-file` each time the agent needs one (so
//! an operator can drop a new token in place without a restart), else from
//! `--token` / `MINISPOD_TOKEN`. After an enrollment with it, the agent
//! records the token's SHA-256 in its state directory and deletes the file
//! it came from; a recorded token is never sent again.

use std::{collections::HashSet, path::PathBuf};

use anyhow::Context;

use crate::{
    secret::Secret,
    state::{StateDir, token_hash},
};

/// The configured places of the enrollment token.
#[derive(Debug, Clone, Default)]
pub struct TokenSource {
    /// `--token-file`: read (and trimmed) each time; deleted once spent.
    pub file: Option<PathBuf>,
    /// `--token` / `MINISPOD_TOKEN`.
    pub inline: Option<Secret>,
}

/// One enrollment token and where it came from.
#[derive(Debug, Clone)]
pub struct Token {
    /// The token.
    pub value: Secret,
    /// The file it was read from, if any.
    pub file: Option<PathBuf>,
}

impl TokenSource {
    /// A token given in memory (tests, the swarm).
    pub fn inline(token: impl Into<String>) -> TokenSource {
        TokenSource {
            file: None,
            inline: Some(Secret::new(token.into())),
        }
    }

    /// True when a token can come from somewhere.
    pub fn is_configured(&self) -> bool {
        self.file.is_some() || self.inline.as_ref().is_some_and(|t| !t.is_empty())
    }

    /// The token to enroll with: the file's, else the inline one, skipping
    /// any the agent has spent (recorded in `state`) or that the control
    /// plane refused in this run (`refused`, hashes). None: no usable token.
    pub fn unspent(
        &self,
        state: &StateDir,
        refused: &HashSet<String>,
    ) -> anyhow::Result<Option<Token>> {
        let spent = state.spent_tokens()?;
        let usable = |t: &str| {
            let h = token_hash(t);
            !t.is_empty() && !spent.contains(&h) && !refused.contains(&h)
        };
        if let Some(path) = &self.file {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let t = text.trim();
                    if usable(t) {
                        return Ok(Some(Token {
                            value: Secret::new(t),
                            file: Some(path.clone()),
                        }));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("read {}", path.display()));
                }
            }
        }
        Ok(self
            .inline
            .as_ref()
            .filter(|t| usable(t.expose()))
            .map(|t| Token {
                value: t.clone(),
                file: None,
            }))
    }
}

impl Token {
    /// SHA-256 of the token, hex.
    pub fn hash(&self) -> String {
        token_hash(self.value.expose())
    }

    /// Marks the token spent: records its hash in `state`, then deletes the
    /// file it came from (unless that file is on a read-only file system,
    /// such as a Kubernetes Secret volume: the hash alone keeps the token
    /// from being sent again).
    pub fn spend(&self, state: &StateDir) -> anyhow::Result<()> {
        state.record_spent_token(self.value.expose())?;
        if let Some(path) = &self.file {
            match std::fs::remove_file(path) {
                Err(e) if deletion_failed(&e) => {
                    return Err(e).with_context(|| format!("delete {}", path.display()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem => {
                    tracing::info!(file = %path.display(), "the spent token's file is read-only (a mounted Secret?); it stays, and is never sent again");
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// True when `e`, from deleting a spent token's file, is a failure: not
/// when the file is already gone, nor when it lies on a read-only file
/// system, where its owner (Kubernetes, for a Secret) removes it.
fn deletion_failed(e: &std::io::Error) -> bool {
    !matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ReadOnlyFilesystem
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_token_is_never_offered_again_and_its_file_is_deleted() {
        let dir = std::env::temp_dir().join(format!("agent-token-{}", uuid::Uuid::new_v4()));
        let state = StateDir::open(&dir.join("state")).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "file.token\n").unwrap();
        let source = TokenSource {
            file: Some(file.clone()),
            inline: Some(Secret::new("env.token")),
        };
        let none = HashSet::new();

        let t = source.unspent(&state, &none).unwrap().unwrap();
        assert_eq!(t.value.expose(), "file.token", "the file comes first");
        t.spend(&state).unwrap();
        assert!(!file.exists(), "the token file is deleted once spent");

        let t = source.unspent(&state, &none).unwrap().unwrap();
        assert_eq!(t.value.expose(), "env.token");
        t.spend(&state).unwrap();
        assert!(source.unspent(&state, &none).unwrap().is_none());

        // Putting a spent token back changes nothing; a new one is used.
        std::fs::write(&file, "file.token").unwrap();
        assert!(source.unspent(&state, &none).unwrap().is_none());
        std::fs::write(&file, "new.token").unwrap();
        let t = source.unspent(&state, &none).unwrap().unwrap();
        assert_eq!(t.value.expose(), "new.token");
        let refused = HashSet::from([t.hash()]);
        assert!(source.unspent(&state, &refused).unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_token_file_on_a_read_only_mount_is_spent_without_deleting_it() {
        use std::io::{Error, ErrorKind};
        assert!(!deletion_failed(&Error::from(
            ErrorKind::ReadOnlyFilesystem
        )));
        assert!(!deletion_failed(&Error::from(ErrorKind::NotFound)));
        assert!(deletion_failed(&Error::from(ErrorKind::PermissionDenied)));
    }
}
