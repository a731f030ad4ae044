//! placeholder
pub mod iceberg;
