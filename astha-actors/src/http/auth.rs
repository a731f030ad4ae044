//! Bearer-token check shared by every handler.

use actix_web::{HttpRequest, HttpResponse};

/// The 401 response to send, unless the request carries the configured token (or none
/// is set).
pub(crate) fn denied(req: &HttpRequest, token: Option<&str>) -> Option<HttpResponse> {
    let expected = token?;
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Constant-time comparison: the token is a secret.
    let ok = given.is_some_and(|g| {
        g.len() == expected.len()
            && g.bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    (!ok).then(|| {
        HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", "Bearer"))
            .body("missing or wrong bearer token\n")
    })
}
