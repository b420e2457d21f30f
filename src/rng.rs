//! Explicit, seeded randomness. Every random draw in the crate takes an RNG derived here from
//! `(seed, stream, epoch, index)`, so results never depend on thread timing.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The RNG type used throughout the crate (portable and reproducible across platforms).
pub type Rng = ChaCha8Rng;

/// Named independent streams so that, e.g., view augmentation and patch sampling never share draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    Init = 1,
    Shuffle = 2,
    Views = 3,
    Patches = 4,
    Synthetic = 5,
    Eval = 6,
    Other = 7,
}

/// SplitMix64 finaliser: a good 64-bit mixer.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fresh RNG for one `(seed, stream, epoch, index)` tuple.
pub fn rng_for(seed: u64, stream: Stream, epoch: u64, index: u64) -> Rng {
    let s = mix(mix(mix(mix(seed) ^ stream as u64) ^ epoch) ^ index);
    Rng::seed_from_u64(s)
}
