//! Cross-crate integration tests live in `tests/tests/`. This library holds what the
//! benchmark binary and the fault harness share:
//!
//! - [`bench`]: the suites of `astha-bench` (capture overhead, latency, throughput,
//!   memory) and the baseline trigger shapes they compare against;
//! - [`fault`]: the record formats of the fault-harness processes and the checker that
//!   proves no committed change was lost after `kill -9`.

pub mod bench;
pub mod fault;
