//! Sinks: components that deliver every change they receive to a system outside the
//! database, at least once, and confirm a change only once that system acknowledged it.
//!
//! - [`nats`]: publishes to NATS JetStream, one message per change, de-duplicated by
//!   JetStream through a `Nats-Msg-Id` built from the [`identity`] and the LSN;
//! - [`webhook`]: POSTs changes as a JSON array to a URL, signed with HMAC-SHA256.
//!
//! Both are ordinary supervised components: retries with backoff, the circuit breaker and
//! dead letters come from the supervisor. A sink classifies its errors (a refused
//! connection or a timeout is transient, a payload the receiver rejects for good is
//! permanent) and never confirms a change it could not hand over. The payload is
//! [`astha_core::Change::to_json`], the line `astha watch` prints.

pub mod identity;
pub mod nats;
pub mod webhook;

pub use nats::{NatsSink, NatsSinkConfig, StreamSetup};
pub use webhook::{WebhookSink, WebhookSinkConfig};

/// Makes `text` usable as one token of a NATS subject: `.`, `*`, `>` and whitespace
/// would split or widen the subject, so they become `_`; an empty token becomes `_`.
pub fn subject_token(text: &str) -> String {
    let token: String = text
        .chars()
        .map(|c| match c {
            '.' | '*' | '>' => '_',
            c if c.is_whitespace() || c.is_control() => '_',
            c => c,
        })
        .collect();
    if token.is_empty() {
        "_".into()
    } else {
        token
    }
}

#[cfg(test)]
mod tests {
    use super::subject_token;

    #[test]
    fn subject_tokens_cannot_split_or_widen_a_subject() {
        assert_eq!(subject_token("orders"), "orders");
        assert_eq!(subject_token("app.db"), "app_db");
        assert_eq!(subject_token("a b*>"), "a_b__");
        assert_eq!(subject_token(""), "_");
    }
}
