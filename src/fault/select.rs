//! Seeded selection of targets by [`Mode`]: which of the matching candidates a fault acts on.
//!
//! Generic over the candidate type so that processes, pods, workloads and nodes go through the
//! same rules, and the blast radius of every fault kind is bounded in one place. It lives with
//! the fault kinds because they alone call it, when a fault fires (its targets do not exist
//! before then); the plan only carries each fault's seed. Choices are random but reproducible:
//! the caller sorts the candidates by a stable key (pid, namespace/name) and passes the fault's
//! seeded generator, so the same candidates and the same `--seed` give the same picks. Picks are
//! returned in candidate order, not in draw order, so a plan reads the same way as the candidate
//! list it came from.

use rand::RngExt;
use rand::rngs::StdRng;

use crate::experiment::{Mode, Percent};

/// Why a mode selects nothing from the candidates. Messages are fragments meant to follow a
/// description of what was matched ("processes matching ...: fixed: 3 needs ...").
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SelectError {
    /// Nothing matched the selector, so there is nothing to choose from.
    #[error("no candidates to choose from")]
    NoCandidates,
    /// `fixed: 0` asks for nothing, which would make the fault a silent no-op.
    #[error("fixed: 0 selects none")]
    FixedZero,
    /// `fixed: N` with fewer than N candidates: acting on fewer would misreport the blast radius.
    #[error("fixed: {wanted} needs {wanted} candidates but only {available} match")]
    NotEnough {
        /// The N of `fixed: N`.
        wanted: u32,
        /// How many candidates there were.
        available: usize,
    },
    /// `percent`/`max-percent` of this many candidates rounds down to zero.
    #[error("{mode} {percent} of {candidates} candidates selects none")]
    PercentSelectsNone {
        /// `percent` or `max-percent`, as written in the experiment file.
        mode: &'static str,
        /// The percentage asked for.
        percent: Percent,
        /// How many candidates there were.
        candidates: usize,
    },
}

/// Chooses from `candidates` (sorted by a stable key by the caller) what `mode` allows, drawing
/// from `rng`. Never returns an empty selection: a mode that selects nothing is an error.
///
/// - `one`: one at random; `all`: every candidate;
/// - `fixed: N`: exactly N distinct candidates at random, an error if fewer match or N is 0;
/// - `percent: P`: floor(len × P / 100) at random, an error if that is 0;
/// - `max-percent: P`: a random count in 1..=floor(len × P / 100), an error if that is 0.
pub fn choose<T>(candidates: Vec<T>, mode: &Mode, rng: &mut StdRng) -> Result<Vec<T>, SelectError> {
    let len = candidates.len();
    if len == 0 {
        return Err(SelectError::NoCandidates);
    }
    let count = match *mode {
        Mode::One => 1,
        Mode::All => return Ok(candidates),
        Mode::Fixed(0) => return Err(SelectError::FixedZero),
        Mode::Fixed(n) => {
            let n_usize = usize::try_from(n).unwrap_or(usize::MAX);
            if n_usize > len {
                return Err(SelectError::NotEnough {
                    wanted: n,
                    available: len,
                });
            }
            n_usize
        }
        Mode::Percent(p) => percent_of(len, p, "percent")?,
        Mode::MaxPercent(p) => {
            let max = percent_of(len, p, "max-percent")?;
            rng.random_range(1..=max)
        }
    };
    let mut picked = vec![false; len];
    for i in rand::seq::index::sample(rng, len, count) {
        picked[i] = true;
    }
    Ok(candidates
        .into_iter()
        .zip(picked)
        .filter_map(|(c, keep)| keep.then_some(c))
        .collect())
}

/// floor(len × p / 100), never more than `len`, an error when it is 0.
fn percent_of(len: usize, p: Percent, mode: &'static str) -> Result<usize, SelectError> {
    // The epsilon keeps products like 30% of 10 from landing a hair under 3 in floating point
    // and flooring to 2; it is far below the 1/len granularity that matters.
    let exact = len as f64 * p.get() / 100.0 + 1e-9;
    let n = (exact.floor() as usize).min(len);
    if n == 0 {
        return Err(SelectError::PercentSelectsNone {
            mode,
            percent: p,
            candidates: len,
        });
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use rand::SeedableRng;

    use super::*;

    fn pct(p: f64) -> Percent {
        Percent::new(p).unwrap_or_else(|| panic!("test percentage {p} out of range"))
    }

    fn pick(n: usize, mode: Mode, seed: u64) -> Result<Vec<usize>, SelectError> {
        let mut rng = StdRng::seed_from_u64(seed);
        choose((0..n).collect(), &mode, &mut rng)
    }

    #[test]
    fn counts_per_mode() {
        assert_eq!(pick(10, Mode::One, 1).map(|v| v.len()), Ok(1));
        assert_eq!(pick(10, Mode::All, 1), Ok((0..10).collect()));
        assert_eq!(pick(10, Mode::Fixed(4), 1).map(|v| v.len()), Ok(4));
        assert_eq!(pick(4, Mode::Fixed(4), 1), Ok(vec![0, 1, 2, 3]));
        assert_eq!(
            pick(10, Mode::Percent(pct(30.0)), 1).map(|v| v.len()),
            Ok(3)
        );
        assert_eq!(pick(3, Mode::Percent(pct(50.0)), 1).map(|v| v.len()), Ok(1));
        assert_eq!(
            pick(7, Mode::Percent(pct(100.0)), 1).map(|v| v.len()),
            Ok(7)
        );
        for seed in 0..50 {
            let n = pick(10, Mode::MaxPercent(pct(50.0)), seed).map(|v| v.len());
            assert!(matches!(n, Ok(1..=5)), "seed {seed}: {n:?}");
        }
    }

    #[test]
    fn max_percent_reaches_both_ends() {
        let counts: BTreeSet<usize> = (0..200)
            .filter_map(|seed| pick(10, Mode::MaxPercent(pct(40.0)), seed).ok())
            .map(|v| v.len())
            .collect();
        assert_eq!(counts, BTreeSet::from([1, 2, 3, 4]));
    }

    #[test]
    fn picks_keep_candidate_order() {
        let picks = pick(100, Mode::Fixed(10), 7).unwrap_or_default();
        assert_eq!(picks.len(), 10);
        assert!(picks.windows(2).all(|w| w[0] < w[1]), "{picks:?}");
    }

    #[test]
    fn same_seed_same_picks() {
        for mode in [
            Mode::One,
            Mode::Fixed(3),
            Mode::Percent(pct(25.0)),
            Mode::MaxPercent(pct(60.0)),
        ] {
            assert_eq!(pick(20, mode, 42), pick(20, mode, 42), "{mode:?}");
        }
    }

    #[test]
    fn different_seeds_differ() {
        let picks: BTreeSet<Vec<usize>> = (0..20)
            .filter_map(|seed| pick(20, Mode::Fixed(3), seed).ok())
            .collect();
        // 1140 possible triples; twenty seeds colliding into one would mean the seed is ignored.
        assert!(picks.len() > 1, "{picks:?}");
        let ones: BTreeSet<Vec<usize>> = (0..20)
            .filter_map(|seed| pick(20, Mode::One, seed).ok())
            .collect();
        assert!(ones.len() > 1, "{ones:?}");
    }

    #[test]
    fn errors() {
        assert_eq!(pick(0, Mode::One, 1), Err(SelectError::NoCandidates));
        assert_eq!(pick(0, Mode::All, 1), Err(SelectError::NoCandidates));
        assert_eq!(pick(5, Mode::Fixed(0), 1), Err(SelectError::FixedZero));
        assert_eq!(
            pick(2, Mode::Fixed(3), 1),
            Err(SelectError::NotEnough {
                wanted: 3,
                available: 2
            })
        );
        let err = pick(3, Mode::Percent(pct(10.0)), 1);
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err("percent 10% of 3 candidates selects none".to_string())
        );
        let err = pick(3, Mode::MaxPercent(pct(30.0)), 1);
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err("max-percent 30% of 3 candidates selects none".to_string())
        );
        assert!(pick(3, Mode::Percent(pct(0.0)), 1).is_err());
    }

    fn any_mode() -> impl Strategy<Value = Mode> {
        prop_oneof![
            Just(Mode::One),
            Just(Mode::All),
            (0u32..40).prop_map(Mode::Fixed),
            (0.0f64..=100.0).prop_map(|p| Mode::Percent(pct(p))),
            (0.0f64..=100.0).prop_map(|p| Mode::MaxPercent(pct(p))),
        ]
    }

    proptest! {
        #[test]
        fn never_more_than_the_mode_allows(len in 0usize..40, mode in any_mode(), seed: u64) {
            let mut rng = StdRng::seed_from_u64(seed);
            let result = choose((0..len).collect::<Vec<_>>(), &mode, &mut rng);
            if let Ok(picks) = result {
                let allowed = match mode {
                    Mode::One => 1,
                    Mode::All => len,
                    Mode::Fixed(n) => n as usize,
                    Mode::Percent(p) | Mode::MaxPercent(p) => {
                        (len as f64 * p.get() / 100.0 + 1e-9).floor() as usize
                    }
                };
                prop_assert!(!picks.is_empty());
                prop_assert!(picks.len() <= allowed);
                if matches!(mode, Mode::One | Mode::All | Mode::Fixed(_) | Mode::Percent(_)) {
                    prop_assert_eq!(picks.len(), allowed);
                }
                let distinct: BTreeSet<_> = picks.iter().collect();
                prop_assert_eq!(distinct.len(), picks.len());
                prop_assert!(picks.iter().all(|&i| i < len));
            } else {
                let percent_none = |p: Percent| (len as f64 * p.get() / 100.0 + 1e-9) < 1.0;
                prop_assert!(
                    len == 0
                        || matches!(mode, Mode::Fixed(n) if n == 0 || n as usize > len)
                        || matches!(mode, Mode::Percent(p) | Mode::MaxPercent(p) if percent_none(p))
                );
            }
        }
    }
}
