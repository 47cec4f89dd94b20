//! Chunks: consecutive runs of rows an estimate is made for, cut by size as NannyML's
//! `SizeBasedChunker(incomplete="keep")` cuts them — full chunks in file order, then the
//! remainder as one smaller chunk — so chunk `k` here is NannyML's chunk `k`.
//!
//! Pure: must not do I/O or look at the rows.

use std::ops::Range;

/// The row ranges of `rows` rows cut into chunks of `size` (the last one may be smaller).
pub fn by_size(rows: usize, size: usize) -> Vec<Range<usize>> {
    let size = size.max(1);
    (0..rows)
        .step_by(size)
        .map(|start| start..(start + size).min(rows))
        .collect()
}

/// NannyML's key of a chunk: `[first:last]`.
pub fn key(range: &Range<usize>) -> String {
    format!("[{}:{}]", range.start, range.end.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remainder_is_kept_as_a_last_chunk() {
        let c = by_size(50_000, 20_000);
        assert_eq!(c, vec![0..20_000, 20_000..40_000, 40_000..50_000]);
        assert_eq!(
            c.iter().map(key).collect::<Vec<_>>(),
            ["[0:19999]", "[20000:39999]", "[40000:49999]"]
        );
        assert_eq!(by_size(12, 6), vec![0..6, 6..12]);
        assert!(by_size(0, 6).is_empty());
    }
}
