//! The web console's session cookie: the refresh token where no script can
//! read it.
//!
//! Login, Register and ChangePassword with `session_cookie` set the refresh
//! token as an `HttpOnly; Secure; SameSite=Strict` cookie whose path is the
//! AuthService's, so browsers send it to Refresh and Logout only. Because a
//! browser attaches cookies to requests that other pages cause, a request
//! that authenticates with the cookie must prove it comes from the console's
//! own origin: `Sec-Fetch-Site: same-origin` (every current browser sends
//! it), or, without that header, an `Origin` equal to the request's own
//! authority. Anything else is refused before the token is looked at.

use http::{HeaderMap, HeaderValue};
use tonic::{Request, Response};

use crate::error::{AppError, AppResult};

/// The cookie's name.
pub const NAME: &str = "minispod_session";
/// The path browsers send it to: AuthService's methods, nothing else.
pub const PATH: &str = "/minispod.v1.AuthService/";

/// The authority (`host[:port]`) a request was addressed to, as the HTTP
/// layer saw it (`:authority` on HTTP/2, `Host` on HTTP/1.1). Put into the
/// request's extensions by the console layer, so the CSRF check can compare
/// `Origin` with it.
#[derive(Debug, Clone)]
pub struct RequestAuthority(pub String);

/// The `Set-Cookie` value that stores `token` for `max_age_seconds`.
pub fn set(token: &str, max_age_seconds: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{NAME}={token}; Path={PATH}; Max-Age={max_age_seconds}; HttpOnly; Secure; SameSite=Strict"
    ))
    .expect("refresh tokens are URL-safe ASCII")
}

/// The `Set-Cookie` value that deletes the cookie.
pub fn clear() -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{NAME}=; Path={PATH}; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
    ))
    .expect("ASCII")
}

/// Adds `set_cookie` to a response's headers.
pub fn attach<T>(response: &mut Response<T>, set_cookie: HeaderValue) {
    response
        .metadata_mut()
        .as_mut()
        .append(http::header::SET_COOKIE, set_cookie);
}

/// The refresh token from the request's session cookie, after checking that
/// the request comes from the console's own origin. `Ok(None)` when there is
/// no cookie; PERMISSION_DENIED for a cross-origin request carrying one.
pub fn from_request<T>(request: &Request<T>) -> AppResult<Option<String>> {
    let headers = request.metadata().clone().into_headers();
    let Some(token) = find(&headers) else {
        return Ok(None);
    };
    check(request, &headers)?;
    Ok(Some(token))
}

/// PERMISSION_DENIED unless the request comes from the console's own origin
/// (for requests that ask the server to set the cookie).
pub fn require_same_origin<T>(request: &Request<T>) -> AppResult<()> {
    check(request, &request.metadata().clone().into_headers())
}

fn check<T>(request: &Request<T>, headers: &HeaderMap) -> AppResult<()> {
    let authority = request
        .extensions()
        .get::<RequestAuthority>()
        .map(|a| a.0.as_str())
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        });
    if same_origin(headers, authority) {
        Ok(())
    } else {
        Err(AppError::PermissionDenied(
            "the session cookie is accepted only from the console's own origin".into(),
        ))
    }
}

/// The cookie's value among the request's `Cookie` headers.
fn find(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == NAME)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Whether a browser sent this request from a page of the same origin.
fn same_origin(headers: &HeaderMap, authority: Option<&str>) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        return site == "same-origin";
    }
    // Browsers without Fetch Metadata still send Origin on every POST.
    match (get("origin"), authority) {
        (Some(origin), Some(authority)) => origin
            .split_once("://")
            .is_some_and(|(_, host)| host.eq_ignore_ascii_case(authority)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; minispod_session=msr_abc; b=2")]);
        assert_eq!(find(&h).as_deref(), Some("msr_abc"));
        assert_eq!(find(&headers(&[("cookie", "minispod_sessionx=1")])), None);
        assert_eq!(find(&headers(&[("cookie", "minispod_session=")])), None);
    }

    #[test]
    fn only_same_origin_requests_may_use_it() {
        let auth = Some("cp.example.org:7443");
        assert!(same_origin(
            &headers(&[("sec-fetch-site", "same-origin")]),
            auth
        ));
        for site in ["same-site", "cross-site", "none"] {
            assert!(!same_origin(&headers(&[("sec-fetch-site", site)]), auth));
        }
        // Fetch Metadata wins over a matching Origin.
        assert!(!same_origin(
            &headers(&[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://cp.example.org:7443")
            ]),
            auth
        ));
        assert!(same_origin(
            &headers(&[("origin", "https://cp.example.org:7443")]),
            auth
        ));
        assert!(!same_origin(
            &headers(&[("origin", "https://evil.example:7443")]),
            auth
        ));
        assert!(!same_origin(
            &headers(&[("origin", "https://cp.example.org:7444")]),
            auth
        ));
        // Neither header: not a browser request from our page.
        assert!(!same_origin(&headers(&[]), auth));
        assert!(!same_origin(
            &headers(&[("origin", "https://cp.example.org:7443")]),
            None
        ));
    }

    #[test]
    fn the_set_cookie_value_keeps_scripts_and_other_sites_out() {
        let v = set("msr_x", 60);
        let v = v.to_str().unwrap();
        for part in [
            "minispod_session=msr_x",
            "Path=/minispod.v1.AuthService/",
            "Max-Age=60",
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
        ] {
            assert!(v.contains(part), "{v} lacks {part}");
        }
        assert!(clear().to_str().unwrap().contains("Max-Age=0"));
    }
}
