//! Project automation (placeholder until ci lands).
fn main() {}
