//! Parallel where it pays. Handing work to the rayon pool costs a wake-up of a pool thread
//! and a wait for it (tens of microseconds, and pool threads that spin afterwards); a
//! day's window of a few thousand values is done on the calling thread before the pool
//! has woken. These helpers run on all cores only when the work is at least
//! [`MIN_PARALLEL_VALUES`] values, and on the calling thread otherwise, with the same
//! results in the same order either way.
//!
//! Pure: must not do I/O or know what the values mean.

use rayon::prelude::*;

/// The size (values touched) from which spreading the work over the pool pays.
pub const MIN_PARALLEL_VALUES: usize = 100_000;

/// Whether work on `values` values is worth the pool.
pub fn worth(values: usize) -> bool {
    values >= MIN_PARALLEL_VALUES
}

/// `items.iter().filter_map(f)`, on all cores when `parallel`.
pub fn filter_map<T: Sync, R: Send>(
    items: &[T],
    parallel: bool,
    f: impl Fn(&T) -> Option<R> + Sync + Send,
) -> Vec<R> {
    if parallel {
        items.par_iter().filter_map(f).collect()
    } else {
        items.iter().filter_map(f).collect()
    }
}

/// `items.into_iter().map(f).collect::<Result<_, _>>()`, on all cores when `parallel`.
pub fn try_map<T: Send, R: Send, E: Send>(
    items: Vec<T>,
    parallel: bool,
    f: impl Fn(T) -> Result<R, E> + Sync + Send,
) -> Result<Vec<R>, E> {
    if parallel {
        items.into_par_iter().map(f).collect()
    } else {
        items.into_iter().map(f).collect()
    }
}

/// Both closures' results, the two run on two cores when `parallel`.
pub fn join<A: Send, B: Send>(
    parallel: bool,
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if parallel {
        rayon::join(a, b)
    } else {
        (a(), b())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both paths give the same values in the same order.
    #[test]
    fn both_paths_agree() {
        let items: Vec<u32> = (0..1000).collect();
        let odd = |x: &u32| (x % 2 == 1).then_some(x * 3);
        assert_eq!(
            filter_map(&items, true, odd),
            filter_map(&items, false, odd)
        );
        let half = |x: u32| if x < 2000 { Ok(x / 2) } else { Err(x) };
        assert_eq!(
            try_map(items.clone(), true, half),
            try_map(items.clone(), false, half)
        );
        assert_eq!(try_map(vec![1, 5000, 7000], false, half), Err(5000));
        assert_eq!(join(true, || 1, || "b"), join(false, || 1, || "b"));
        assert!(!worth(MIN_PARALLEL_VALUES - 1) && worth(MIN_PARALLEL_VALUES));
    }
}
