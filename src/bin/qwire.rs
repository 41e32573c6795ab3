//! The `qwire` command (being written).
fn main() {}
