//! Support code of the `demiurgic` binary that tests and xtask share (no tensor math here).
pub mod fetch;
