//! Account fields parsed once at the edge ("parse, don't validate").

use minispod_proto::v1::Role;

/// A syntactically valid email address, trimmed and lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Parses an address: one `@`, a non-empty local part, a dotted domain
    /// of letters, digits and dashes, no spaces, at most 254 characters.
    pub fn parse(s: &str) -> Result<Email, String> {
        let s = s.trim().to_lowercase();
        if s.is_empty() {
            return Err("is required".into());
        }
        if s.len() > 254 {
            return Err("must be at most 254 characters".into());
        }
        let Some((local, domain)) = s.split_once('@') else {
            return Err("is not an email address".into());
        };
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
            && !local.starts_with('.')
            && !local.ends_with('.');
        let domain_ok = domain.contains('.')
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if local_ok && domain_ok {
            Ok(Email(s))
        } else {
            Err("is not an email address".into())
        }
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password within the length bounds (the upper bound caps hashing work).
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

/// Longest email Login looks at, in bytes: an account's address has at most
/// 254 (`Email::parse`); the rest is slack for what a form may add around it.
pub const MAX_EMAIL_BYTES: usize = 1024;
/// Fewest characters of a password.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Most characters of a password.
pub const MAX_PASSWORD_CHARS: usize = 128;

impl Password {
    /// Parses a new password: 8 to 128 characters, not only spaces.
    pub fn parse(s: &str) -> Result<Password, String> {
        let n = s.chars().count();
        if n < MIN_PASSWORD_CHARS {
            return Err(format!("must be at least {MIN_PASSWORD_CHARS} characters"));
        }
        if n > MAX_PASSWORD_CHARS {
            return Err(format!("must be at most {MAX_PASSWORD_CHARS} characters"));
        }
        if s.trim().is_empty() {
            return Err("must not be blank".into());
        }
        Ok(Password(s.to_owned()))
    }

    /// The password.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A display name: 1 to 100 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    /// Parses a display name.
    pub fn parse(s: &str) -> Result<PersonName, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("is required".into());
        }
        if s.chars().count() > 100 {
            return Err("must be at most 100 characters".into());
        }
        if s.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(PersonName(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A role a user can hold (never UNSPECIFIED).
pub fn parse_role(value: i32) -> Result<Role, String> {
    match Role::try_from(value) {
        Ok(Role::User) => Ok(Role::User),
        Ok(Role::Administrator) => Ok(Role::Administrator),
        Ok(Role::Unspecified) => Err("must be ROLE_USER or ROLE_ADMINISTRATOR".into()),
        Err(_) => Err(format!("unknown role {value}")),
    }
}

/// The role's name as stored.
pub fn role_to_db(role: Role) -> &'static str {
    match role {
        Role::Administrator => "ADMINISTRATOR",
        _ => "USER",
    }
}

/// The stored role name as a role.
pub fn role_from_db(s: &str) -> Role {
    match s {
        "ADMINISTRATOR" => Role::Administrator,
        _ => Role::User,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse(" Ada@Example.ORG ").unwrap().as_str(),
            "ada@example.org"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.org",
            "ada@example",
            "a b@example.org",
            "ada@-x.org",
            "ada@x..org",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Email::parse(&format!("{}@example.org", "a".repeat(65))).is_err());
    }

    #[test]
    fn passwords_have_bounds_and_hide_in_debug() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse(&"x".repeat(129)).is_err());
        assert!(Password::parse("        ").is_err());
        let p = Password::parse("correct horse").unwrap();
        assert_eq!(format!("{p:?}"), "Password(***)");
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(PersonName::parse("  Ada ").unwrap().as_str(), "Ada");
        assert!(PersonName::parse("   ").is_err());
        assert!(PersonName::parse(&"n".repeat(101)).is_err());
        assert!(PersonName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn roles_exclude_unspecified_and_unknown() {
        assert_eq!(parse_role(2), Ok(Role::Administrator));
        assert!(parse_role(0).is_err());
        assert!(parse_role(99).is_err());
        assert_eq!(
            role_from_db(role_to_db(Role::Administrator)),
            Role::Administrator
        );
    }
}
