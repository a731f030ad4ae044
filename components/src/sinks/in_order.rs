//! The second half of a pipelined publish, shared by the broker sinks (Kafka, RabbitMQ):
//! every change of a batch is handed to the broker first, then the acknowledgements are
//! awaited in send order, so a batch costs one round trip instead of one per change.
//!
//! It promises that a change is confirmed only when it and every change before it were
//! acknowledged: the first acknowledgement that fails confirms exactly the changes before
//! it, and an error that stopped the sending fails the first change not sent. It never
//! sends, retries or resets anything: the caller decides what a failure costs its
//! connection ([`Unconfirmed::at`]).

use std::future::Future;

use astha_actors::{BatchError, ComponentError};

/// Where a batch stopped being confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// An acknowledgement failed (or was refused) for a change that was sent.
    Acknowledging,
    /// Every sent change was acknowledged; sending had stopped on an error.
    Sending,
}

/// A batch confirmed only in part: the error for the supervisor, and where it came from.
pub(crate) struct Unconfirmed {
    pub error: BatchError,
    /// Read by the Kafka sink only (a built-without-Kafka RabbitMQ sink has no use for it).
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub at: Stage,
}

/// Awaits `pending` (each acknowledgement with its change's LSN, in send order) with
/// `confirm`; see the module docs. `send_error` is what stopped the sending, if anything.
pub(crate) async fn confirm_in_order<A, F, Fut>(
    pending: Vec<(A, i64)>,
    send_error: Option<ComponentError>,
    mut confirm: F,
) -> Result<(), Unconfirmed>
where
    F: FnMut(A, i64) -> Fut,
    Fut: Future<Output = Result<(), ComponentError>>,
{
    let sent = pending.len();
    for (handled, (ack, lsn)) in pending.into_iter().enumerate() {
        if let Err(error) = confirm(ack, lsn).await {
            return Err(Unconfirmed {
                error: BatchError { handled, error },
                at: Stage::Acknowledging,
            });
        }
    }
    match send_error {
        None => Ok(()),
        Some(error) => Err(Unconfirmed {
            error: BatchError {
                handled: sent,
                error,
            },
            at: Stage::Sending,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(ok: bool) -> impl Future<Output = Result<(), ComponentError>> {
        std::future::ready(if ok {
            Ok(())
        } else {
            Err(ComponentError::transient("nack"))
        })
    }

    #[tokio::test]
    async fn the_first_failed_acknowledgement_confirms_the_prefix() {
        let pending = vec![(true, 1), (true, 2), (false, 3), (true, 4)];
        let err = confirm_in_order(pending, None, |ok, _| ack(ok))
            .await
            .err()
            .unwrap();
        assert_eq!((err.error.handled, err.at), (2, Stage::Acknowledging));
        // The failed acknowledgement wins over a later send error.
        let pending = vec![(false, 1)];
        let stopped = Some(ComponentError::permanent("too large"));
        let err = confirm_in_order(pending, stopped, |ok, _| ack(ok))
            .await
            .err()
            .unwrap();
        assert_eq!((err.error.handled, err.at), (0, Stage::Acknowledging));
    }

    #[tokio::test]
    async fn a_send_error_fails_the_first_change_not_sent() {
        let mut seen = Vec::new();
        let pending = vec![(true, 7), (true, 8)];
        let stopped = Some(ComponentError::permanent("too large"));
        let err = confirm_in_order(pending, stopped, |ok, lsn| {
            seen.push(lsn);
            ack(ok)
        })
        .await
        .err()
        .unwrap();
        assert_eq!(seen, vec![7, 8], "in send order");
        assert_eq!((err.error.handled, err.at), (2, Stage::Sending));
        assert!(!err.error.error.is_retriable());
        assert!(
            confirm_in_order(Vec::<(bool, i64)>::new(), None, |ok, _| ack(ok))
                .await
                .is_ok()
        );
    }
}
