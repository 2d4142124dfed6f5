//! `detcd-sim`: run seeded fault scenarios against the detcd node inside madsim.
fn main() {}
