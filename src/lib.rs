//! qwire
#![warn(missing_docs)]
pub mod protocol;
