//! A request mix: which of a section's named requests each ticket sends. The choice is a pure
//! function of the seed and the ticket's number, so a ticket that is missed (never sent) still
//! belongs to the request it would have been, and `--seed` replays the same sequence.
//!
//! Tickets go in blocks of [`BLOCK`]: each block holds each request's quota (its weight's share
//! of the block, by largest remainder) in a seeded random order. So the mix looks random to the
//! target, and every request's share is within one ticket per block of its weight, instead of
//! the ±1 % (two standard deviations at 10,000 draws) that independent draws would give.

use std::sync::Mutex;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Tickets per block.
pub const BLOCK: u64 = 1_000;

/// The most requests one mix may hold (a route is a `u16` in each record).
pub const MAX_ROUTES: usize = 1_000;

/// Picks the route (the index of the request in the mix) of each ticket.
#[derive(Debug)]
pub struct Mix {
    /// Slots per block, per route; sums to [`BLOCK`].
    quotas: Vec<u16>,
    seed: u64,
    /// The last block laid out: its number and each slot's route.
    cache: Mutex<(u64, Vec<u16>)>,
}

impl Mix {
    /// A mix of routes with these weights (finite, above 0; at most [`MAX_ROUTES`]), or `None`
    /// when there is at most one route (every ticket is route 0).
    pub fn new(weights: &[f64], seed: u64) -> Option<Self> {
        if weights.len() < 2 || weights.len() > MAX_ROUTES {
            return None;
        }
        let total: f64 = weights.iter().sum();
        if !(total.is_finite() && total > 0.0) || weights.iter().any(|w| w.is_nan() || *w <= 0.0) {
            return None;
        }
        // Largest remainder: floor of each exact quota, then one more slot to the largest
        // fractions until the block is full (ties to the earlier route).
        let exact: Vec<f64> = weights.iter().map(|w| w / total * BLOCK as f64).collect();
        let mut quotas: Vec<u16> = exact.iter().map(|q| q.floor() as u16).collect();
        let mut order: Vec<usize> = (0..weights.len()).collect();
        order.sort_by(|&a, &b| {
            let (fa, fb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
            fb.total_cmp(&fa).then(a.cmp(&b))
        });
        let mut left = BLOCK.saturating_sub(quotas.iter().map(|&q| u64::from(q)).sum());
        for &i in order.iter().cycle() {
            if left == 0 {
                break;
            }
            quotas[i] += 1;
            left -= 1;
        }
        Some(Self {
            quotas,
            seed,
            cache: Mutex::new((u64::MAX, Vec::new())),
        })
    }

    /// The route of ticket `k`.
    pub fn route(&self, k: u64) -> u16 {
        let (block, slot) = (k / BLOCK, (k % BLOCK) as usize);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != block || cache.1.len() != BLOCK as usize {
            let mut slots = Vec::with_capacity(BLOCK as usize);
            for (route, &n) in self.quotas.iter().enumerate() {
                let route = u16::try_from(route).unwrap_or(u16::MAX);
                slots.extend(std::iter::repeat_n(route, usize::from(n)));
            }
            // A different order per block, each a function of the seed and the block alone.
            let mut rng = StdRng::seed_from_u64(splitmix(self.seed ^ splitmix(block)));
            slots.shuffle(&mut rng);
            *cache = (block, slots);
        }
        cache.1.get(slot).copied().unwrap_or(0)
    }
}

/// SplitMix64's finaliser: spreads nearby numbers (blocks, seeds) over the whole range.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_match_the_weights_and_the_seed_replays_the_order() {
        let mix = Mix::new(&[6.0, 3.0, 1.0], 42).expect("mix");
        let mut counts = [0u64; 3];
        let seq: Vec<u16> = (0..10_000).map(|k| mix.route(k)).collect();
        for &r in &seq {
            counts[usize::from(r)] += 1;
        }
        assert_eq!(counts, [6_000, 3_000, 1_000]);
        // Same seed, same order, whatever was asked in between; another seed, another order.
        let again = Mix::new(&[6.0, 3.0, 1.0], 42).expect("mix");
        assert_eq!(again.route(9_999), seq[9_999]);
        let replay: Vec<u16> = (0..10_000).map(|k| again.route(k)).collect();
        assert_eq!(replay, seq);
        let other = Mix::new(&[6.0, 3.0, 1.0], 43).expect("mix");
        assert_ne!(
            (0..1_000).map(|k| other.route(k)).collect::<Vec<_>>(),
            seq[..1_000]
        );
        // Not sorted within a block: the first 100 tickets hold more than one route.
        assert!(seq[..100].iter().any(|&r| r != seq[0]));
    }

    #[test]
    fn awkward_weights_still_fill_each_block() {
        let mix = Mix::new(&[1.0, 1.0, 1.0], 7).expect("mix");
        assert_eq!(mix.quotas, [334, 333, 333]);
        let tiny = Mix::new(&[1e-9, 1.0], 7).expect("mix");
        assert_eq!(
            tiny.quotas.iter().map(|&q| u64::from(q)).sum::<u64>(),
            BLOCK
        );
        assert!(Mix::new(&[1.0], 7).is_none());
        assert!(Mix::new(&[1.0, 0.0], 7).is_none());
        assert!(Mix::new(&[1.0, f64::NAN], 7).is_none());
        assert!(Mix::new(&[f64::MAX, f64::MAX], 7).is_none());
    }
}
