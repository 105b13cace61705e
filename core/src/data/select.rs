//! The k-th smallest of keys spread over parts (workers' shares of the
//! input), found by asking each part small questions, so no part ever sends
//! its keys: the range of its keys, then rounds of 65,536-bucket histograms
//! of the next 16 bits under the prefix found so far, until the keys left
//! under it are few enough to gather (at most [`GATHER_LIMIT`]). The
//! temporal split's boundary is such a key: `(timestamp, row)` as one u128.

use rayon::prelude::*;

/// Keys gathered whole once no more than this many are left under the prefix.
pub const GATHER_LIMIT: u64 = 1 << 16;

/// What a part answers about its keys.
pub trait KeyPart: Sync {
    /// How many keys it holds.
    fn count(&self) -> u64;
    /// The smallest and largest of its keys (`None` if it holds none).
    fn range(&self) -> Option<(u128, u128)>;
    /// Of its keys `x` with `x >> shift == prefix`, how many have each value
    /// of the 16 bits below (`(x >> (shift - 16)) & 0xffff`); `shift >= 16`.
    fn histogram(&self, prefix: u128, shift: u32) -> Vec<u64>;
    /// Its keys `x` with `x >> shift == prefix` (every key when `shift == 128`).
    fn keys_under(&self, prefix: u128, shift: u32) -> Vec<u128>;
    /// How many keys [`KeyPart::keys_under`] would return, without
    /// gathering them (a bound is checked before anything is held).
    fn count_under(&self, prefix: u128, shift: u32) -> u64;
}

/// `x >> shift`, 0 for a shift of 128.
#[inline]
pub fn high_bits(x: u128, shift: u32) -> u128 {
    x.checked_shr(shift).unwrap_or(0)
}

/// The `k`-th smallest key (0-based) over all parts, `None` if there are not
/// more than `k`. Equal keys count once each.
pub fn select_kth(parts: &[&dyn KeyPart], k: u64) -> Option<u128> {
    let n: u64 = parts.iter().map(|p| p.count()).sum();
    let range = parts
        .iter()
        .filter_map(|p| p.range())
        .reduce(|(lo, hi), (a, b)| (lo.min(a), hi.max(b)));
    let mut sel = Selection::new(k, n, range)?;
    loop {
        match sel.ask() {
            Ask::Histogram { prefix, shift } => {
                let mut counts = vec![0u64; 1 << 16];
                for p in parts {
                    counts.iter_mut().zip(p.histogram(prefix, shift)).for_each(|(a, b)| *a += b);
                }
                sel.narrow(&counts).expect("the parts' own counts");
            }
            Ask::Gather { prefix, shift } => {
                let keys = parts.iter().flat_map(|p| p.keys_under(prefix, shift)).collect();
                return Some(sel.pick(keys).expect("the parts' own keys"));
            }
        }
    }
}

/// What [`Selection`] asks every part next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Each part's [`KeyPart::histogram`], summed: answered by [`Selection::narrow`].
    Histogram { prefix: u128, shift: u32 },
    /// Each part's [`KeyPart::keys_under`], together: answered by [`Selection::pick`].
    Gather { prefix: u128, shift: u32 },
}

/// [`select_kth`] one question at a time, for a caller that asks its parts
/// over the network: the answers are checked, since they come from outside.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The rank sought among the keys left under `prefix`.
    k: u64,
    left: u64,
    prefix: u128,
    shift: u32,
}

impl Selection {
    /// The search for the `k`-th of `n` keys whose range is `range`; `None`
    /// if there are not more than `k`.
    pub fn new(k: u64, n: u64, range: Option<(u128, u128)>) -> Option<Selection> {
        let (lo, hi) = range?;
        if k >= n {
            return None;
        }
        // The bits every key shares are settled: start below them.
        let shift = 128 - (lo ^ hi).leading_zeros();
        Some(Selection {
            k,
            left: n,
            prefix: high_bits(lo, shift),
            shift,
        })
    }

    pub fn ask(&self) -> Ask {
        let (prefix, shift) = (self.prefix, self.shift);
        match self.left > GATHER_LIMIT && shift >= 16 {
            true => Ask::Histogram { prefix, shift },
            false => Ask::Gather { prefix, shift },
        }
    }

    /// The keys left under the prefix: gathering them asks for no more.
    pub fn left(&self) -> u64 {
        self.left
    }

    /// The parts' histograms, summed, under the asked prefix.
    pub fn narrow(&mut self, counts: &[u64]) -> Result<(), String> {
        if counts.len() != 1 << 16 {
            return Err(format!("a histogram of {} buckets, not 65,536", counts.len()));
        }
        if counts.iter().try_fold(0u64, |a, &c| a.checked_add(c)) != Some(self.left) {
            return Err(format!("a histogram that does not count the {} keys left", self.left));
        }
        let (mut k, mut bucket) = (self.k, 0usize);
        while k >= counts[bucket] {
            k -= counts[bucket];
            bucket += 1;
        }
        self.k = k;
        self.left = counts[bucket];
        self.shift -= 16;
        self.prefix = (self.prefix << 16) | bucket as u128;
        Ok(())
    }

    /// The sought key, from the parts' keys under the asked prefix.
    pub fn pick(&self, mut keys: Vec<u128>) -> Result<u128, String> {
        if keys.len() as u64 != self.left || keys.iter().any(|&x| high_bits(x, self.shift) != self.prefix) {
            return Err(format!("{} keys gathered, not the {} left under the prefix", keys.len(), self.left));
        }
        keys.par_sort_unstable();
        Ok(keys[self.k as usize])
    }
}

/// The keys of the temporal split for rows with these timestamps, the first
/// of them being row `first_row` of the input: `(timestamp, row)` as one
/// u128 that sorts the same way (the timestamp's sign bit flipped).
pub struct TemporalKeys<'a> {
    pub timestamps: &'a [i64],
    pub first_row: u64,
}

impl TemporalKeys<'_> {
    /// The key of the `i`-th of these rows.
    #[inline]
    pub fn key(&self, i: usize) -> u128 {
        temporal_key(self.timestamps[i], self.first_row + i as u64)
    }

    fn keys(&self) -> impl ParallelIterator<Item = u128> + '_ {
        (0..self.timestamps.len())
            .into_par_iter()
            .with_min_len(1 << 16)
            .map(|i| self.key(i))
    }
}

/// `(timestamp, row)` as one u128 in the same order.
#[inline]
pub fn temporal_key(timestamp: i64, row: u64) -> u128 {
    (((timestamp as u64) ^ (1 << 63)) as u128) << 64 | row as u128
}

impl KeyPart for TemporalKeys<'_> {
    fn count(&self) -> u64 {
        self.timestamps.len() as u64
    }

    fn range(&self) -> Option<(u128, u128)> {
        self.keys().fold(|| None, fold_range).reduce(|| None, merge_range)
    }

    fn histogram(&self, prefix: u128, shift: u32) -> Vec<u64> {
        self.keys()
            .filter(|&x| high_bits(x, shift) == prefix)
            .fold(
                || vec![0u64; 1 << 16],
                |mut h, x| {
                    h[((x >> (shift - 16)) & 0xffff) as usize] += 1;
                    h
                },
            )
            .reduce(
                || vec![0u64; 1 << 16],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            )
    }

    fn keys_under(&self, prefix: u128, shift: u32) -> Vec<u128> {
        self.keys().filter(|&x| high_bits(x, shift) == prefix).collect()
    }

    fn count_under(&self, prefix: u128, shift: u32) -> u64 {
        self.keys().filter(|&x| high_bits(x, shift) == prefix).count() as u64
    }
}

/// Keys held as they are: a user block's hold-out keys, say.
pub struct KeysPart<'a>(pub &'a [u128]);

impl KeyPart for KeysPart<'_> {
    fn count(&self) -> u64 {
        self.0.len() as u64
    }

    fn range(&self) -> Option<(u128, u128)> {
        self.0.iter().copied().fold(None, fold_range)
    }

    fn histogram(&self, prefix: u128, shift: u32) -> Vec<u64> {
        let mut h = vec![0u64; 1 << 16];
        for &x in self.0.iter().filter(|&&x| high_bits(x, shift) == prefix) {
            h[((x >> (shift - 16)) & 0xffff) as usize] += 1;
        }
        h
    }

    fn keys_under(&self, prefix: u128, shift: u32) -> Vec<u128> {
        self.0.iter().copied().filter(|&x| high_bits(x, shift) == prefix).collect()
    }

    fn count_under(&self, prefix: u128, shift: u32) -> u64 {
        self.0.iter().filter(|&&x| high_bits(x, shift) == prefix).count() as u64
    }
}

fn fold_range(r: Option<(u128, u128)>, x: u128) -> Option<(u128, u128)> {
    Some(r.map_or((x, x), |(lo, hi)| (lo.min(x), hi.max(x))))
}

fn merge_range(a: Option<(u128, u128)>, b: Option<(u128, u128)>) -> Option<(u128, u128)> {
    match (a, b) {
        (Some((a0, a1)), Some((b0, b1))) => Some((a0.min(b0), a1.max(b1))),
        (x, None) | (None, x) => x,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn by_sorting(ts: &[i64], k: usize) -> u128 {
        let mut keys: Vec<u128> = (0..ts.len()).map(|i| temporal_key(ts[i], i as u64)).collect();
        keys.sort_unstable();
        keys[k]
    }

    #[test]
    fn the_kth_key_over_parts_is_the_kth_of_all_keys_sorted() {
        let mut s = SplitMix64::new(11);
        // Spread timestamps (histogram rounds), many ties (gathering by row),
        // negative ones (the sign flip), and one value everywhere.
        let cases: Vec<Vec<i64>> = vec![
            (0..300_000).map(|_| 1_000_000_000 + (s.next_u64() % 90_000_000) as i64).collect(),
            (0..300_000).map(|_| (s.next_u64() % 3) as i64).collect(),
            (0..200_000).map(|_| (s.next_u64() % 2_000_001) as i64 - 1_000_000).collect(),
            vec![42; 100_000],
        ];
        for ts in &cases {
            let n = ts.len();
            let cuts = [0, n / 3, n / 3 + 1, n];
            let parts: Vec<TemporalKeys> = cuts
                .windows(2)
                .map(|w| TemporalKeys {
                    timestamps: &ts[w[0]..w[1]],
                    first_row: w[0] as u64,
                })
                .collect();
            let refs: Vec<&dyn KeyPart> = parts.iter().map(|p| p as &dyn KeyPart).collect();
            for k in [0, 1, n / 2, n * 4 / 5, n - 1] {
                assert_eq!(select_kth(&refs, k as u64), Some(by_sorting(ts, k)), "k = {k}");
            }
            assert_eq!(select_kth(&refs, n as u64), None);
        }
        assert_eq!(select_kth(&[], 0), None);
    }

    #[test]
    fn a_selection_refuses_answers_that_do_not_add_up() {
        // 100,000 keys 0..100,000: a histogram round, then a gather.
        let n = 100_000u64;
        let mut sel = Selection::new(70_000, n, Some((0, n as u128 - 1))).unwrap();
        let Ask::Histogram { prefix, shift } = sel.ask() else {
            panic!("a histogram first")
        };
        let keys: Vec<u128> = (0..n as u128).collect();
        let part = KeysPart(&keys);
        let h = part.histogram(prefix, shift);
        assert!(sel.clone().narrow(&h[..100]).unwrap_err().contains("buckets"));
        let mut short = h.clone();
        short[0] -= 1;
        assert!(sel.clone().narrow(&short).unwrap_err().contains("keys left"));
        sel.narrow(&h).unwrap();
        let Ask::Gather { prefix, shift } = sel.ask() else {
            panic!("then a gather")
        };
        let mut under = part.keys_under(prefix, shift);
        assert_eq!(under.len() as u64, sel.left());
        assert_eq!(part.count_under(prefix, shift), sel.left());
        let ts: Vec<i64> = (0..1000).map(|t| t % 7).collect();
        let temporal = TemporalKeys {
            timestamps: &ts,
            first_row: 0,
        };
        for (prefix, shift) in [(0, 128), (temporal.key(3) >> 64, 64), (temporal.key(3) >> 70, 70)] {
            let under = temporal.keys_under(prefix, shift).len() as u64;
            assert!(under > 100, "{under} keys under the prefix");
            assert_eq!(temporal.count_under(prefix, shift), under);
        }
        assert!(sel.pick(under[1..].to_vec()).is_err(), "a key missing");
        under[0] = u128::MAX;
        assert!(sel.pick(under.clone()).is_err(), "a key from outside the prefix");
        assert_eq!(sel.pick(part.keys_under(prefix, shift)), Ok(70_000));
        assert!(Selection::new(5, 5, Some((0, 4))).is_none() && Selection::new(0, 0, None).is_none());
    }
}
