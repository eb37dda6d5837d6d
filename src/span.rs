//! Address ranges and sets of them: [`Span`] and [`SpanSet`], and the sorted-union
//! arithmetic (union, intersection, difference) every harvest is made of. The `_into` forms
//! append to a caller's vector, so that a steady-state harvest allocates nothing.

use std::fmt;

/// A half-open address range `[start, end)` of the target's address space.
///
/// ```
/// use uffd_dirty::Span;
/// let s = Span::new(0x1000, 0x3000);
/// assert_eq!((s.len(), s.pages(4096)), (0x2000, 2));
/// assert_eq!(s.intersect(&Span::new(0x2000, 0x9000)), Some(Span::new(0x2000, 0x3000)));
/// assert_eq!(s.to_string(), "0x1000-0x3000");
/// ```
/// Laid out as C's `struct { uint64_t start, end; }` (the C API hands spans over as they are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(C)]
pub struct Span {
    /// The first address in the range.
    pub start: u64,
    /// The first address past the range.
    pub end: u64,
}

impl Span {
    /// All of user space (x86_64, 4-level page tables): what a tracker covers without
    /// ranges.
    pub const USER_ADDRESS_SPACE: Span = Span::new(0, crate::sys::abi::TASK_SIZE);

    /// The range `[start, end)`.
    pub const fn new(start: u64, end: u64) -> Self {
        Span { start, end }
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether it holds no address.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// How many pages of `page_size` bytes it holds (spans from a harvest are page-aligned).
    pub fn pages(&self, page_size: u64) -> u64 {
        self.len() / page_size
    }

    /// Whether `addr` lies in it.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// The part both spans hold, if any.
    pub fn intersect(&self, other: &Span) -> Option<Span> {
        let s = Span::new(self.start.max(other.start), self.end.min(other.end));
        (!s.is_empty()).then_some(s)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}-{:#x}", self.start, self.end)
    }
}

/// Sort and merge overlapping or touching spans.
pub fn union(mut spans: Vec<Span>) -> Vec<Span> {
    union_in_place(&mut spans);
    spans
}

/// Sort and merge overlapping or touching spans, in place (no allocation).
pub fn union_in_place(spans: &mut Vec<Span>) {
    spans.sort_unstable();
    let mut kept = 0_usize;
    for i in 0..spans.len() {
        let s = spans[i];
        if s.is_empty() {
            continue;
        }
        match kept.checked_sub(1).map(|k| &mut spans[k]) {
            Some(last) if s.start <= last.end => last.end = last.end.max(s.end),
            _ => {
                spans[kept] = s;
                kept += 1;
            }
        }
    }
    spans.truncate(kept);
}

/// A set of addresses, as sorted, disjoint, non-touching spans: the dirty pages of a
/// harvest, the memory a tracker covers. Built from any spans (merged on the way in); read
/// with [`iter`](SpanSet::iter), [`pages`](SpanSet::pages) and
/// [`page_addresses`](SpanSet::page_addresses).
///
/// ```
/// use uffd_dirty::{Span, SpanSet};
/// let set: SpanSet = [Span::new(0x3000, 0x4000), Span::new(0x1000, 0x3000)].into_iter().collect();
/// assert_eq!(set.as_slice(), &[Span::new(0x1000, 0x4000)]);
/// assert_eq!(set.pages(4096), 3);
/// assert!(set.contains(0x2fff) && !set.contains(0x4000));
/// let other = SpanSet::from(vec![Span::new(0x2000, 0x8000)]);
/// assert_eq!(set.intersection(&other).as_slice(), &[Span::new(0x2000, 0x4000)]);
/// assert_eq!(set.difference(&other).as_slice(), &[Span::new(0x1000, 0x2000)]);
/// assert_eq!(set.page_addresses(4096).collect::<Vec<_>>(), [0x1000, 0x2000, 0x3000]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SpanSet {
    spans: Vec<Span>,
}

impl SpanSet {
    /// The empty set.
    pub const fn new() -> SpanSet {
        SpanSet { spans: Vec::new() }
    }

    /// Spans that are already a sorted union (as the engine's arithmetic makes them).
    pub(crate) fn from_sorted(spans: Vec<Span>) -> SpanSet {
        let set = SpanSet { spans };
        debug_assert!(set.is_sorted_union(), "{set:?}");
        set
    }

    /// Whether the spans are sorted, non-empty, disjoint and not touching, as a set's must be.
    pub(crate) fn is_sorted_union(&self) -> bool {
        self.spans.iter().all(|s| !s.is_empty())
            && self.spans.windows(2).all(|w| w[0].end < w[1].start)
    }

    /// The spans, in address order.
    pub fn as_slice(&self) -> &[Span] {
        &self.spans
    }

    /// The spans, in address order.
    pub fn iter(&self) -> std::slice::Iter<'_, Span> {
        self.spans.iter()
    }

    /// How many separate spans it holds.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether it holds no address.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Its size in bytes.
    pub fn bytes(&self) -> u64 {
        self.spans.iter().map(Span::len).sum()
    }

    /// Its size in pages of `page_size` bytes.
    pub fn pages(&self, page_size: u64) -> u64 {
        self.bytes() / page_size
    }

    /// Whether `addr` lies in it.
    pub fn contains(&self, addr: u64) -> bool {
        let i = self.spans.partition_point(|s| s.end <= addr);
        self.spans.get(i).is_some_and(|s| s.contains(addr))
    }

    /// The address of every page in it, in order.
    pub fn page_addresses(&self, page_size: u64) -> impl Iterator<Item = u64> + '_ {
        self.spans
            .iter()
            .flat_map(move |s| (s.start..s.end).step_by(page_size as usize))
    }

    /// The addresses in both sets.
    pub fn intersection(&self, other: &SpanSet) -> SpanSet {
        SpanSet::from_sorted(intersect(&self.spans, &other.spans))
    }

    /// The addresses in this set and not in `other`.
    pub fn difference(&self, other: &SpanSet) -> SpanSet {
        SpanSet::from_sorted(subtract(&self.spans, &other.spans))
    }

    /// The addresses in either set.
    pub fn union(&self, other: &SpanSet) -> SpanSet {
        let mut all = self.spans.clone();
        all.extend_from_slice(&other.spans);
        SpanSet::from(all)
    }

    /// Add every address of `other` to this set.
    pub fn extend_from(&mut self, other: &SpanSet) {
        self.spans.extend_from_slice(&other.spans);
        union_in_place(&mut self.spans);
    }

    /// Add the addresses of `span`.
    pub fn insert(&mut self, span: Span) {
        self.spans.push(span);
        union_in_place(&mut self.spans);
    }

    /// Take the addresses of `span` out.
    pub fn remove(&mut self, span: Span) {
        self.spans = subtract(&self.spans, &[span]);
    }

    /// The spans, in address order.
    pub fn into_vec(self) -> Vec<Span> {
        self.spans
    }

    /// Empty the set, keeping its memory (for harvests that allocate nothing).
    pub fn clear(&mut self) {
        self.spans.clear();
    }

    /// The vector inside, for the engine to fill in place; it must be left a sorted union.
    pub(crate) fn vec_mut(&mut self) -> &mut Vec<Span> {
        &mut self.spans
    }
}

impl From<Vec<Span>> for SpanSet {
    /// Sort and merge `spans` (overlapping and touching ones become one).
    fn from(spans: Vec<Span>) -> SpanSet {
        SpanSet {
            spans: union(spans),
        }
    }
}

impl FromIterator<Span> for SpanSet {
    fn from_iter<I: IntoIterator<Item = Span>>(iter: I) -> SpanSet {
        SpanSet::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl<'a> IntoIterator for &'a SpanSet {
    type Item = &'a Span;
    type IntoIter = std::slice::Iter<'a, Span>;
    fn into_iter(self) -> Self::IntoIter {
        self.spans.iter()
    }
}

/// `a \ b` for two sorted unions of spans.
pub fn subtract(a: &[Span], b: &[Span]) -> Vec<Span> {
    let mut out = Vec::new();
    subtract_into(a, b, &mut out);
    out
}

/// `a ∩ b` for two sorted unions of spans.
pub fn intersect(a: &[Span], b: &[Span]) -> Vec<Span> {
    let mut out = Vec::new();
    intersect_into(a, b, &mut out);
    out
}

/// Append `a \ b` to `out` (sorted unions of spans).
pub fn subtract_into(a: &[Span], b: &[Span], out: &mut Vec<Span>) {
    let mut j = 0;
    for &s in a {
        let mut cur = s.start;
        while j < b.len() && b[j].end <= cur {
            j += 1;
        }
        let mut k = j;
        while k < b.len() && b[k].start < s.end {
            if b[k].start > cur {
                out.push(Span::new(cur, b[k].start));
            }
            cur = cur.max(b[k].end);
            k += 1;
        }
        if cur < s.end {
            out.push(Span::new(cur, s.end));
        }
    }
}

/// Whether `span` shares an address with any of `sorted` (a sorted union of spans): a binary
/// search, for a query per mapping against a long list.
pub(crate) fn overlaps(sorted: &[Span], span: Span) -> bool {
    let i = sorted.partition_point(|s| s.end <= span.start);
    sorted.get(i).is_some_and(|s| s.start < span.end)
}

/// Append `a ∩ b` to `out` (sorted unions of spans).
pub fn intersect_into(a: &[Span], b: &[Span], out: &mut Vec<Span>) {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if let Some(part) = a[i].intersect(&b[j]) {
            out.push(part);
        }
        if a[i].end <= b[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_finds_a_shared_address_only() {
        let sorted = [Span::new(0x1000, 0x3000), Span::new(0x5000, 0x6000)];
        assert!(overlaps(&sorted, Span::new(0x2000, 0x2800)));
        assert!(overlaps(&sorted, Span::new(0x4000, 0x5001)));
        assert!(!overlaps(&sorted, Span::new(0x3000, 0x5000)));
        assert!(!overlaps(&sorted, Span::new(0x6000, 0x7000)));
        assert!(!overlaps(&[], Span::new(0, 1)));
    }

    #[test]
    fn union_merges_touching_and_overlapping() {
        let u = union(vec![
            Span::new(5, 8),
            Span::new(0, 2),
            Span::new(2, 3),
            Span::new(6, 10),
            Span::new(4, 4),
        ]);
        assert_eq!(u, vec![Span::new(0, 3), Span::new(5, 10)]);
    }

    #[test]
    fn subtract_cuts_holes() {
        let a = [Span::new(0, 10), Span::new(20, 30)];
        let b = [Span::new(2, 4), Span::new(8, 22), Span::new(25, 26)];
        assert_eq!(
            subtract(&a, &b),
            vec![
                Span::new(0, 2),
                Span::new(4, 8),
                Span::new(22, 25),
                Span::new(26, 30)
            ]
        );
        assert_eq!(subtract(&a, &[]), a.to_vec());
        assert!(subtract(&a, &[Span::new(0, 40)]).is_empty());
    }

    /// Span arithmetic against sets of unit cells, over many random unions.
    #[test]
    fn span_arithmetic_matches_sets_of_cells() {
        use std::collections::BTreeSet;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let cells = |spans: &[Span]| -> BTreeSet<u64> {
            spans.iter().flat_map(|s| s.start..s.end).collect()
        };
        for _ in 0..500 {
            let mut random = || -> Vec<Span> {
                let raw: Vec<Span> = (0..next(6))
                    .map(|_| {
                        let start = next(64);
                        Span::new(start, start + next(12))
                    })
                    .collect();
                let mut u = raw.clone();
                union_in_place(&mut u);
                assert_eq!(cells(&u), cells(&raw), "union of {raw:?}");
                assert!(u.windows(2).all(|w| w[0].end < w[1].start), "{u:?}");
                u
            };
            let (a, b) = (random(), random());
            let (ca, cb) = (cells(&a), cells(&b));
            let both: BTreeSet<u64> = ca.intersection(&cb).copied().collect();
            let only_a: BTreeSet<u64> = ca.difference(&cb).copied().collect();
            assert_eq!(cells(&intersect(&a, &b)), both, "{a:?} ∩ {b:?}");
            assert_eq!(cells(&subtract(&a, &b)), only_a, "{a:?} \\ {b:?}");
            // The _into forms append, leaving what was there.
            let mark = Span::new(u64::MAX - 1, u64::MAX);
            let mut out = vec![mark];
            intersect_into(&a, &b, &mut out);
            subtract_into(&a, &b, &mut out);
            assert_eq!(out[0], mark);
            assert_eq!(cells(&out[1..]), ca, "(a ∩ b) + (a \\ b) = a");
        }
    }
}
