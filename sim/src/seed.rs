//! Seed salting: every seeded stream of a run (the nemesis, each client, each watcher, the
//! registry load, the failpoints) is drawn from the run seed mixed with a salt of its own, so
//! adding a stream never moves another.

/// A stable mix of the run seed with a member index and a salt (SplitMix64 steps).
pub fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
