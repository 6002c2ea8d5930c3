//! The placeholder syntax: `${NAME}` in upper snake case, `$${` for a
//! literal `${`; listing, expanding and checking the placeholders of a text.

use std::collections::{BTreeMap, BTreeSet};

use super::names::is_upper_snake;
use crate::error::Violations;

/// The placeholder naming component `component`'s host: upper case, dashes
/// as underscores, then `_HOST` ("db" gives `DB_HOST`, "my-db" `MY_DB_HOST`).
pub fn host_placeholder(component: &str) -> String {
    format!("{}_HOST", component.to_ascii_uppercase().replace('-', "_"))
}

/// One piece of a text with placeholders.
enum Piece<'a> {
    /// Literal text (an escaped `$${` comes out as `${`).
    Text(&'a str),
    /// A `${NAME}` placeholder's name.
    Name(&'a str),
}

/// Splits `text` into literal text and placeholder names.
fn pieces(text: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(found) = text[pos..].find("${") {
        let at = pos + found;
        // `$${` is an escape: everything before the first `$`, then `${`.
        if at > pos && text.as_bytes()[at - 1] == b'$' {
            out.push(Piece::Text(&text[pos..at - 1]));
            out.push(Piece::Text("${"));
            pos = at + 2;
            continue;
        }
        out.push(Piece::Text(&text[pos..at]));
        let start = at + 2;
        let Some(len) = text[start..].find('}') else {
            return Err(format!(
                "unclosed \"${{\" at character {} (write \"$${{\" for a literal \"${{\")",
                text[..at].chars().count() + 1
            ));
        };
        let name = &text[start..start + len];
        if !is_upper_snake(name, 64) {
            return Err(format!(
                "\"${{{name}}}\" is not a placeholder: names are 1 to 64 upper-case \
                 letters, digits and underscores, starting with a letter"
            ));
        }
        out.push(Piece::Name(name));
        pos = start + len + 1;
    }
    out.push(Piece::Text(&text[pos..]));
    Ok(out)
}

/// The names of the `${NAME}` placeholders of `text`, in order (repeats
/// included); `$${` is a literal `${`. Err says what is malformed: an
/// unclosed `${` or a name that is not upper snake case.
pub fn placeholders(text: &str) -> Result<Vec<String>, String> {
    Ok(pieces(text)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Name(n) => Some(n.to_owned()),
            Piece::Text(_) => None,
        })
        .collect())
}

/// `text` with every placeholder replaced by its value in `values` and each
/// `$${` by `${`. Err names a placeholder `values` lacks, or says what is
/// malformed.
pub fn expand(text: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for p in pieces(text)? {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Name(n) => match values.get(n) {
                Some(v) => out.push_str(v),
                None => return Err(format!("unknown placeholder ${{{n}}}")),
            },
        }
    }
    Ok(out)
}

/// Records a violation per malformed or unknown placeholder of `text`.
pub(super) fn check_placeholders(
    text: &str,
    known: &BTreeSet<String>,
    forbidden: &BTreeSet<String>,
    why_forbidden: &str,
    field: &str,
    v: &mut Violations,
) {
    match placeholders(text) {
        Err(e) => v.add(field, e),
        Ok(names) => {
            let mut reported = BTreeSet::new();
            for n in names {
                if !reported.insert(n.clone()) {
                    continue;
                }
                if forbidden.contains(&n) {
                    v.add(field, format!("${{{n}}} {why_forbidden}"));
                } else if !known.contains(&n) {
                    v.add(
                        field,
                        format!(
                            "unknown placeholder ${{{n}}}: not a variable, generated value, \
                             built-in or component host"
                        ),
                    );
                }
            }
        }
    }
}
