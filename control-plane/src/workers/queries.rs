//! SQL of the worker fleet and of enrollment tokens, by topic.

mod listing;
mod machines;
mod records;
mod replicas;
mod state;
mod tokens;

pub use listing::*;
pub use machines::*;
pub use records::*;
pub use replicas::*;
pub use state::*;
pub use tokens::*;
