//! Bit-exact ports of the two numpy routines whose *order* decides NannyML's results:
//! the legacy `RandomState` (MT19937, `permutation`, `choice(replace=False)`), which
//! scikit-learn's `StratifiedShuffleSplit(random_state=42)` draws from, and numpy's scalar
//! introsort `argsort(kind="quicksort")`, which is not stable, so the order it leaves inside
//! runs of equal scores is part of the result (the expected calibration error cuts bins
//! through such runs). numpy dispatches that argsort to SIMD kernels on AVX2/AVX-512 CPUs
//! with yet other tie orders; the scalar one is the only one a port can follow, and the
//! fixtures in `tests/fixtures/nannyml/out/portable/` were made with it.
//!
//! Pure: must not do I/O, allocate beyond its outputs, or know what the values mean.

/// numpy's `RandomState(seed)` for an integer seed: MT19937 seeded by `init_genrand`.
pub struct RandomState {
    mt: [u32; 624],
    pos: usize,
}

impl RandomState {
    pub fn new(seed: u32) -> RandomState {
        let mut mt = [0u32; 624];
        let mut s = seed;
        for (i, slot) in mt.iter_mut().enumerate() {
            *slot = s;
            s = 1_812_433_253u32
                .wrapping_mul(s ^ (s >> 30))
                .wrapping_add(i as u32 + 1);
        }
        RandomState { mt, pos: 624 }
    }

    fn twist(&mut self) {
        for i in 0..624 {
            let y = (self.mt[i] & 0x8000_0000) | (self.mt[(i + 1) % 624] & 0x7FFF_FFFF);
            let mut v = self.mt[(i + 397) % 624] ^ (y >> 1);
            if y & 1 == 1 {
                v ^= 0x9908_B0DF;
            }
            self.mt[i] = v;
        }
        self.pos = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.pos >= 624 {
            self.twist();
        }
        let mut y = self.mt[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9D2C_5680;
        y ^= (y << 15) & 0xEFC6_0000;
        y ^= y >> 18;
        y
    }

    fn next_u64(&mut self) -> u64 {
        (u64::from(self.next_u32()) << 32) | u64::from(self.next_u32())
    }

    /// A uniform integer in `0..=max` by masked rejection (numpy's `random_interval`).
    fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> shift;
        }
        loop {
            let v = if max <= u64::from(u32::MAX) {
                u64::from(self.next_u32()) & mask
            } else {
                self.next_u64() & mask
            };
            if v <= max {
                return v;
            }
        }
    }

    /// `RandomState.shuffle` of a 1-d array: Fisher–Yates from the end.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.interval(i as u64) as usize;
            items.swap(i, j);
        }
    }

    /// `RandomState.permutation(n)`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut items: Vec<usize> = (0..n).collect();
        self.shuffle(&mut items);
        items
    }

    /// `RandomState.choice(items, size, replace=False)`: the first `size` of a permutation.
    pub fn choose<T: Copy>(&mut self, items: &[T], size: usize) -> Vec<T> {
        self.permutation(items.len())
            .into_iter()
            .take(size)
            .map(|i| items[i])
            .collect()
    }
}

/// numpy's order on doubles: NaN after everything.
fn less(a: f64, b: f64) -> bool {
    a < b || (b.is_nan() && !a.is_nan())
}

const SMALL_QUICKSORT: usize = 15;

/// `np.argsort(v)` (default `kind="quicksort"`) as numpy's scalar introsort computes it,
/// ties in the same (unstable) order.
pub fn argsort(v: &[f64]) -> Vec<usize> {
    let n = v.len();
    let mut t: Vec<usize> = (0..n).collect();
    if n < 2 {
        return t;
    }
    let mut stack: Vec<(usize, usize, i64)> = Vec::new();
    let (mut pl, mut pr) = (0usize, n - 1);
    let mut depth = 2 * (usize::BITS - 1 - n.leading_zeros()) as i64;
    loop {
        if depth < 0 {
            heapsort(v, &mut t[pl..=pr]);
        } else {
            while pr - pl > SMALL_QUICKSORT {
                let pi = partition(v, &mut t, pl, pr);
                depth -= 1;
                if pi - pl < pr - pi {
                    stack.push((pi + 1, pr, depth));
                    pr = pi - 1;
                } else {
                    stack.push((pl, pi - 1, depth));
                    pl = pi + 1;
                }
            }
            insertion(v, &mut t, pl, pr);
        }
        match stack.pop() {
            Some((l, r, d)) => (pl, pr, depth) = (l, r, d),
            None => break,
        }
    }
    t
}

/// Median of three, then Hoare partition of `t[pl..=pr]`; returns the pivot's place.
fn partition(v: &[f64], t: &mut [usize], pl: usize, pr: usize) -> usize {
    let pm = pl + ((pr - pl) >> 1);
    if less(v[t[pm]], v[t[pl]]) {
        t.swap(pm, pl);
    }
    if less(v[t[pr]], v[t[pm]]) {
        t.swap(pr, pm);
    }
    if less(v[t[pm]], v[t[pl]]) {
        t.swap(pm, pl);
    }
    let vp = v[t[pm]];
    let (mut pi, mut pj) = (pl, pr - 1);
    t.swap(pm, pj);
    loop {
        pi += 1;
        while less(v[t[pi]], vp) {
            pi += 1;
        }
        pj -= 1;
        while less(vp, v[t[pj]]) {
            pj -= 1;
        }
        if pi >= pj {
            break;
        }
        t.swap(pi, pj);
    }
    t.swap(pi, pr - 1);
    pi
}

fn insertion(v: &[f64], t: &mut [usize], pl: usize, pr: usize) {
    for pi in pl + 1..=pr {
        let vi = t[pi];
        let vp = v[vi];
        let mut pj = pi;
        while pj > pl && less(vp, v[t[pj - 1]]) {
            t[pj] = t[pj - 1];
            pj -= 1;
        }
        t[pj] = vi;
    }
}

/// numpy's `aheapsort_` on the slice `t` (1-based heap over it).
fn heapsort(v: &[f64], t: &mut [usize]) {
    let mut n = t.len();
    let sift = |t: &mut [usize], mut i: usize, n: usize, tmp: usize| {
        let mut j = i << 1;
        while j <= n {
            if j < n && less(v[t[j - 1]], v[t[j]]) {
                j += 1;
            }
            if less(v[tmp], v[t[j - 1]]) {
                t[i - 1] = t[j - 1];
                i = j;
                j += j;
            } else {
                break;
            }
        }
        t[i - 1] = tmp;
    };
    for l in (1..=n >> 1).rev() {
        let tmp = t[l - 1];
        sift(t, l, n, tmp);
    }
    while n > 1 {
        let tmp = t[n - 1];
        t[n - 1] = t[0];
        n -= 1;
        sift(t, 1, n, tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `np.random.RandomState(seed).permutation(10)` from numpy 2.4.6.
    #[test]
    fn random_state_matches_numpy() {
        let mut rs = RandomState::new(42);
        assert_eq!(rs.permutation(10), vec![8, 1, 5, 0, 7, 2, 9, 4, 3, 6]);
        let mut rs = RandomState::new(0);
        assert_eq!(rs.permutation(10), vec![2, 8, 4, 9, 1, 6, 7, 3, 0, 5]);
    }

    #[test]
    fn argsort_sorts_and_keeps_numpys_tie_order() {
        // np.argsort([3, 1, 2, 1, 3, 0, 2, 1]) → [5, 1, 3, 7, 2, 6, 0, 4] (insertion sort path).
        let v = [3.0, 1.0, 2.0, 1.0, 3.0, 0.0, 2.0, 1.0];
        assert_eq!(argsort(&v), vec![5, 1, 3, 7, 2, 6, 0, 4]);
        // A long tied vector goes through partitioning: the tie order of numpy's scalar
        // path (from `reference_impl.np_argsort_quicksort`, itself checked against numpy).
        let v: Vec<f64> = (0..5000)
            .map(|i| ((i * 7919) % 101) as f64 / 100.0)
            .collect();
        let t = argsort(&v);
        assert_eq!(
            t[..12],
            [
                0, 2222, 1212, 2323, 404, 4040, 4646, 2424, 3939, 2525, 4848, 2626
            ]
        );
        assert_eq!(t[2500..2506], [4864, 4965, 4460, 1430, 3551, 1733]);
        assert_eq!(t[4995..], [4476, 1345, 1648, 436, 3567]);
        assert!(t.windows(2).all(|w| v[w[0]] <= v[w[1]]));
        let mut seen = t.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..5000).collect::<Vec<_>>());
    }
}
