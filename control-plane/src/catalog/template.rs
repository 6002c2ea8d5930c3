//! Deployable catalog templates: the placeholder syntax, the rules of a
//! template (checked when an administrator saves one), the rules of a
//! customer's variable values (checked when they subscribe), and the figures
//! a catalog entry derives from its template.
//!
//! Placeholders are `${NAME}` with NAME in upper snake case; `$${` writes a
//! literal `${`. A name is a variable, a generated value, a built-in
//! ([`BUILT_INS`]) or a component's host ([`host_placeholder`]).

mod components;
mod derived;
mod names;
mod placeholders;
mod validate;
mod values;

pub use components::{FORBIDDEN_MOUNTS, MAX_ID, run_as};
pub use derived::{Derived, derived, exposed};
pub use placeholders::{expand, host_placeholder, placeholders};
pub use validate::validate;
pub use values::{secret_names, validate_values};

/// The placeholders every subscription defines: its name, its host name and
/// its `https://` URL.
pub const BUILT_INS: [&str; 3] = ["SUBSCRIPTION_NAME", "DOMAIN", "PUBLIC_URL"];

/// Most components in a template.
pub const MAX_COMPONENTS: usize = 8;
/// Most characters of a customer's variable value.
pub const MAX_VALUE_CHARS: usize = 1000;
/// Length of a generated value whose `length` is 0.
pub const DEFAULT_GENERATED_LENGTH: usize = 32;

#[cfg(test)]
mod tests;
