//! The bearer-token check every handler makes first.
//!
//! Owns the one copy of the expected token: its SHA-256 digest, made once at start.
//! Promises: the `Bearer` scheme matches in any case (RFC 7235 §2.1); the comparison
//! takes the same time whatever the token's content or length, because what is compared
//! is two 32-byte digests, in constant time (`subtle`). Never logs or echoes a token.

use actix_web::http::header::{self, HeaderMap};
use actix_web::{HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The token a request must carry, kept as its digest.
#[derive(Clone)]
pub(crate) struct Token([u8; 32]);

impl Token {
    pub(crate) fn new(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    fn matches(&self, given: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        given.ct_eq(&self.0).into()
    }
}

/// The token of an `Authorization: Bearer <token>` header, the scheme in any case.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_matches(' '))
}

/// The 401 response to send, unless the request carries the configured token (or none
/// is set). `query_token` is a `?token=` value, for the endpoints a browser's
/// `EventSource` opens (it cannot set headers).
pub(crate) fn denied(
    req: &HttpRequest,
    token: Option<&Token>,
    query_token: Option<&str>,
) -> Option<HttpResponse> {
    let expected = token?;
    let given = bearer(req.headers()).or(query_token);
    let ok = given.is_some_and(|g| expected.matches(g));
    (!ok).then(|| {
        HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
            .body("missing or wrong bearer token\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn check(authorization: Option<&str>, query: Option<&str>) -> bool {
        let mut req = TestRequest::default();
        if let Some(value) = authorization {
            req = req.insert_header((header::AUTHORIZATION, value));
        }
        denied(&req.to_http_request(), Some(&Token::new("s3cret")), query).is_none()
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_exact() {
        for ok in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER s3cret",
            "bEaReR  s3cret",
        ] {
            assert!(check(Some(ok), None), "{ok}");
        }
        for bad in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Bearer S3CRET",
            "Basic s3cret",
            "Bearers3cret",
            "s3cret",
            "Bearer ",
        ] {
            assert!(!check(Some(bad), None), "{bad}");
        }
        assert!(!check(None, None));
        assert!(check(None, Some("s3cret")));
        assert!(!check(None, Some("wrong")));
        let open = TestRequest::default().to_http_request();
        assert!(denied(&open, None, None).is_none(), "no token configured");
    }
}
