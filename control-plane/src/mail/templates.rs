//! The texts of the mails, in plain words, each with a text and an HTML
//! body and a link into the console. Every value put into HTML is escaped.

/// A mail ready to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body.
    pub html: String,
}

/// `s` with HTML's special characters escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A mail of a greeting, paragraphs, an optional button (label, link) and
/// a closing line: the one layout every message uses.
pub fn compose(
    subject: &str,
    greeting_name: &str,
    paragraphs: &[String],
    action: Option<(&str, &str)>,
    closing: &str,
) -> Rendered {
    let greeting = if greeting_name.is_empty() {
        "Hello,".to_owned()
    } else {
        format!("Hello {greeting_name},")
    };
    let mut text = format!("{greeting}\n\n");
    let mut html = format!(
        "<!doctype html><html><body style=\"font-family:system-ui,sans-serif;line-height:1.5;color:#1f2328;max-width:36rem\">\n<p>{}</p>\n",
        escape(&greeting)
    );
    for p in paragraphs {
        text.push_str(p);
        text.push_str("\n\n");
        html.push_str(&format!("<p>{}</p>\n", escape(p)));
    }
    if let Some((label, link)) = action {
        text.push_str(&format!("{label}:\n{link}\n\n"));
        html.push_str(&format!(
            "<p><a href=\"{0}\" style=\"display:inline-block;padding:.5rem 1rem;background:#0969da;color:#fff;border-radius:6px;text-decoration:none\">{1}</a></p>\n<p style=\"font-size:.85rem;color:#59636e\">Or open this address: {0}</p>\n",
            escape(link),
            escape(label)
        ));
    }
    if !closing.is_empty() {
        text.push_str(closing);
        text.push('\n');
        html.push_str(&format!(
            "<p style=\"font-size:.85rem;color:#59636e\">{}</p>\n",
            escape(closing)
        ));
    }
    text.push_str("\n-- \nMiniSpod\n");
    html.push_str("<p style=\"font-size:.85rem;color:#59636e\">MiniSpod</p>\n</body></html>\n");
    Rendered {
        subject: subject.to_owned(),
        text,
        html,
    }
}

fn minutes(ttl: std::time::Duration) -> String {
    let m = ttl.as_secs().div_ceil(60);
    if m >= 120 && m.is_multiple_of(60) {
        format!("{} hours", m / 60)
    } else if m == 1 {
        "1 minute".to_owned()
    } else {
        format!("{m} minutes")
    }
}

/// The link to set a new password.
pub fn password_reset(name: &str, link: &str, ttl: std::time::Duration) -> Rendered {
    compose(
        "Reset your MiniSpod password",
        name,
        &[
            "Somebody, hopefully you, asked to reset the password of your MiniSpod account."
                .to_owned(),
            format!(
                "The link below lets you choose a new one. It works once, for {}, and signing in with the new password ends every other session.",
                minutes(ttl)
            ),
        ],
        Some(("Choose a new password", link)),
        "If you did not ask for this, ignore this mail: your password stays as it is.",
    )
}

/// Tells the owner their password was reset.
pub fn password_was_reset(name: &str, console: &str) -> Rendered {
    compose(
        "Your MiniSpod password was changed",
        name,
        &[
            "The password of your MiniSpod account was just reset with a link sent to this address, and every session was signed out.".to_owned(),
        ],
        Some(("Sign in", console)),
        "If this was not you, reset your password again at once and tell your administrator.",
    )
}

/// The link that proves a new account's address.
pub fn verify_email(name: &str, email: &str, link: &str, ttl: std::time::Duration) -> Rendered {
    compose(
        "Confirm your email address for MiniSpod",
        name,
        &[format!(
            "Please confirm that {email} is your address by opening the link below. It works for {}.",
            minutes(ttl)
        )],
        Some(("Confirm my address", link)),
        "If you did not sign up for MiniSpod, ignore this mail.",
    )
}

/// The link that confirms an email change, sent to the new address.
pub fn confirm_email_change(
    name: &str,
    new_email: &str,
    link: &str,
    ttl: std::time::Duration,
) -> Rendered {
    compose(
        "Confirm your new email address for MiniSpod",
        name,
        &[format!(
            "You asked to sign in to MiniSpod as {new_email} from now on. Open the link below to confirm; until then your old address stays in use. The link works for {}.",
            minutes(ttl)
        )],
        Some(("Confirm the new address", link)),
        "If you did not ask for this, ignore this mail.",
    )
}

/// Tells the old address that a change to another one was asked for.
pub fn email_change_notice(name: &str, new_email: &str, console: &str) -> Rendered {
    compose(
        "Your MiniSpod email address is being changed",
        name,
        &[format!(
            "Somebody signed in to your MiniSpod account asked to change its email address to {new_email}. A confirmation link went to that address; the change takes effect when it is used."
        )],
        Some(("Open MiniSpod", console)),
        "If this was not you, sign in, change your password, and tell your administrator.",
    )
}

/// To the holder of an address another account asked to change to: no
/// link, nothing changed; the account that asked is not named.
pub fn email_already_held(name: &str, email: &str, console: &str) -> Rendered {
    compose(
        "Somebody tried to move a MiniSpod account to your address",
        name,
        &[format!(
            "Somebody signed in to another MiniSpod account asked to change its email address to {email}. This address already belongs to your account, so nothing was changed and no confirmation link was sent."
        )],
        Some(("Open MiniSpod", console)),
        "If this was you, sign in with this address instead. Otherwise you need not do anything.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_bodies_escape_what_users_typed() {
        let m = verify_email(
            "<script>alert(1)</script>",
            "a@b.org",
            "https://x/verify-email#token=a&b",
            std::time::Duration::from_secs(86_400),
        );
        assert!(!m.html.contains("<script>"), "{}", m.html);
        assert!(m.html.contains("&lt;script&gt;"));
        assert!(m.html.contains("https://x/verify-email#token=a&amp;b"));
        assert!(m.text.contains("https://x/verify-email#token=a&b"));
        assert!(m.text.contains("24 hours"), "{}", m.text);
    }

    #[test]
    fn durations_read_as_people_say_them() {
        use std::time::Duration;
        assert_eq!(minutes(Duration::from_secs(1800)), "30 minutes");
        assert_eq!(minutes(Duration::from_secs(7200)), "2 hours");
        assert_eq!(minutes(Duration::from_secs(60)), "1 minute");
    }
}
