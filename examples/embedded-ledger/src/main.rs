//! Placeholder; written once the core compiles.
fn main() {}
