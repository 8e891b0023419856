//! A tiny seeded pseudo-random generator (SplitMix64) for workloads and fault schedules.
//!
//! The core may not use OS randomness: every random choice in tests comes from a seed, so a
//! failure is reproduced by its seed alone.

/// SplitMix64: 64 bits of state, full period, good enough for test workloads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator starting from `seed` (any value, zero included).
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (0 when `n` is 0). Uses a 128-bit multiply, so the bias is negligible.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A value in `lo..=hi` (`lo` when `hi < lo`).
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = (hi as i128 - lo as i128 + 1) as u64;
        (lo as i128 + i128::from(self.below(span))) as i64
    }

    /// True with probability `p_num / p_den` (false when `p_den` is 0).
    pub fn chance(&mut self, p_num: u64, p_den: u64) -> bool {
        p_den > 0 && self.below(p_den) < p_num
    }

    /// A uniformly chosen element, or `None` for an empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        items.get(self.below(items.len() as u64) as usize)
    }

    /// An index chosen with probability proportional to its weight (0 if all weights are 0).
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut x = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if x < u64::from(w) {
                return i;
            }
            x -= u64::from(w);
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn same_seed_same_sequence_and_bounds_hold() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            assert!(a.below(10) < 10);
            let x = a.between(-3, 3);
            assert!((-3..=3).contains(&x));
            b.below(10);
            b.between(-3, 3);
        }
        assert!(!a.chance(0, 5));
        assert!(a.chance(5, 5));
        assert_eq!(a.weighted(&[0, 0, 4]), 2);
    }
}
