//! A temporary directory for a test, and the database of the server that
//! keeps its state there.

use std::path::PathBuf;

/// A directory removed when dropped, and the database of the server that
/// keeps its state there: None for SQLite in the directory, or a fresh
/// PostgreSQL database when `MINISPOD_TEST_POSTGRES` names a server.
#[derive(Debug)]
pub struct TempDir(pub PathBuf, pub Option<String>);

impl TempDir {
    /// A new empty directory under the system temp dir.
    pub fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!("minispod-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p, None)
    }

    /// A new empty directory and a fresh database for a server.
    pub async fn for_server() -> TempDir {
        let mut dir = TempDir::new();
        dir.1 = minispod_control_plane::store::fresh_test_database()
            .await
            .expect("a fresh test database");
        dir
    }
}

impl Default for TempDir {
    fn default() -> TempDir {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
