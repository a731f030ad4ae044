//! Bearer-token check shared by every handler.

use actix_web::{HttpRequest, HttpResponse};

/// `Err(401 response)` unless the request carries the configured token (or none is set).
pub(crate) fn check(req: &HttpRequest, token: Option<&str>) -> Result<(), HttpResponse> {
    let Some(expected) = token else {
        return Ok(());
    };
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
    if ok {
        Ok(())
    } else {
        Err(HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", "Bearer"))
            .body("missing or wrong bearer token\n"))
    }
}
