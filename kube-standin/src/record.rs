//! The log of requests a stand-in served, for tests to assert on.

use serde_json::Value;

/// What kind of request it was, as kube-apiserver's audit log names verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GET of one object (or of its status).
    Get,
    /// GET of a collection.
    List,
    /// GET with `watch=true`.
    Watch,
    /// POST of a new object.
    Create,
    /// PUT.
    Update,
    /// PATCH (merge or apply; see `content_type`).
    Patch,
    /// DELETE.
    Delete,
    /// POST to `pods/{name}/eviction`.
    Evict,
    /// Anything else: discovery, version, health, refused requests.
    Other,
}

impl Verb {
    /// Lower-case name, as in dump file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::Evict => "evict",
            Verb::Other => "other",
        }
    }
}

/// One request served.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw query string ("" when none).
    pub query: String,
    /// What the request did.
    pub verb: Verb,
    /// `Content-Type` of the request.
    pub content_type: Option<String>,
    /// The `fieldManager` query parameter.
    pub field_manager: Option<String>,
    /// Whether `force=true` was given.
    pub force: bool,
    /// The body, when it was JSON.
    pub body: Option<Value>,
    /// HTTP status answered (for a watch: 200 when the stream began).
    pub status: u16,
    /// The user the bearer token authenticated ("" when none did).
    pub user: String,
}
