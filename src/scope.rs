//! What a tracker covers: address ranges and mapping selectors, and the policy that picks
//! the pieces of the target's mappings to arm.

use crate::maps::{MappingKind, Vma};
use crate::span::Span;
use crate::sys::abi;

/// Picks mappings to track by what they are rather than where they lie.
///
/// A tracker with selectors tracks a mapping when any of them matches it (and it lies in the
/// tracker's ranges). Selection is by the mapping's current name and kind, looked at again as
/// mappings come and go.
///
/// ```
/// use uffd_dirty::{MappingKind, Selector};
/// let heap = Selector::name("[heap]");
/// let libs = Selector::name("libfoo*");
/// let shm = Selector::Kind(MappingKind::Shmem);
/// let shared = Selector::Shared;
/// # let _ = (heap, libs, shm, shared);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Selector {
    /// Mappings named so: the whole name as `/proc/PID/maps` shows it (`[heap]`,
    /// `/usr/lib/libc.so.6`, `[anon:jemalloc]`), or a glob over it or over its last path
    /// component, where `*` matches any run of characters and `?` any one (`libfoo*`,
    /// `/dev/shm/*`). Brackets are plain characters.
    Name(String),
    /// Mappings of this kind ([`MappingKind::Special`] ones are never tracked).
    Kind(MappingKind),
    /// Shared mappings (`MAP_SHARED`), of any kind: shared memory, and files mapped shared,
    /// whose writes other processes see.
    Shared,
}

impl Selector {
    /// [`Selector::Name`] of `pattern`.
    pub fn name(pattern: impl Into<String>) -> Selector {
        Selector::Name(pattern.into())
    }

    /// Whether it picks `vma`.
    pub(crate) fn matches(&self, vma: &Vma) -> bool {
        match self {
            Selector::Kind(kind) => vma.kind() == *kind,
            Selector::Shared => vma.shared,
            Selector::Name(pattern) => {
                let name = vma.display_name();
                let base = name.rsplit('/').next().unwrap_or(name);
                name == pattern || glob(pattern, name) || glob(pattern, base)
            }
        }
    }
}

/// Whether `text` matches `pattern`, where `*` is any run of characters and `?` any one.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // The classic two-pointer match with backtracking to the last star: linear in practice.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// The ranges (a sorted union) and selectors a tracker covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scope {
    pub(crate) spans: Vec<Span>,
    pub(crate) selectors: Vec<Selector>,
}

impl Default for Scope {
    /// The whole address space, every mapping.
    fn default() -> Scope {
        Scope {
            spans: vec![Span::new(0, abi::TASK_SIZE)],
            selectors: Vec::new(),
        }
    }
}

impl Scope {
    /// Whether the selectors pick `vma` (all do, without selectors).
    pub(crate) fn selects(&self, vma: &Vma) -> bool {
        self.selectors.is_empty() || self.selectors.iter().any(|s| s.matches(vma))
    }

    /// This scope narrowed to one span (its selectors kept).
    pub(crate) fn within(&self, span: Span) -> Scope {
        Scope {
            spans: vec![span],
            selectors: self.selectors.clone(),
        }
    }
}

/// One piece of a VMA chosen for tracking (the VMA clipped to the user's scope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub span: Span,
    pub vma: Vma,
}

/// The parts of `vmas` to arm: trackable VMAs the selectors pick, clipped to the ranges.
pub fn select(vmas: &[Vma], scope: &Scope) -> Vec<Selected> {
    let mut out = Vec::new();
    let picked = vmas
        .iter()
        .filter(|v| v.is_trackable_by_default() && scope.selects(v));
    for vma in picked {
        let whole = Span::new(vma.start, vma.end);
        for s in &scope.spans {
            if let Some(part) = whole.intersect(s) {
                out.push(Selected {
                    span: part,
                    vma: vma.clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::parse_line;

    fn ranges(spans: &[Span]) -> Scope {
        Scope {
            spans: spans.to_vec(),
            selectors: Vec::new(),
        }
    }

    #[test]
    fn select_clips_to_scope() {
        let vmas = vec![
            parse_line("1000-5000 rw-p 00000000 00:00 0").unwrap(),
            parse_line("5000-6000 r--p 00000000 08:01 7 /usr/lib/libfoo.so").unwrap(),
            parse_line("6000-7000 r--p 00000000 00:00 0 [vvar]").unwrap(),
            parse_line("8000-9000 rw-p 00000000 00:00 0").unwrap(),
        ];
        let s = select(&vmas, &ranges(&[Span::new(0x2000, 0x8800)]));
        let spans: Vec<_> = s.iter().map(|s| s.span).collect();
        assert_eq!(
            spans,
            vec![
                Span::new(0x2000, 0x5000),
                Span::new(0x5000, 0x6000),
                Span::new(0x8000, 0x8800)
            ]
        );
    }

    #[test]
    fn selectors_pick_by_name_glob_and_kind() {
        let vmas = vec![
            parse_line("1000-2000 rw-p 00000000 00:00 0 [heap]").unwrap(),
            parse_line("2000-3000 r-xp 00000000 08:01 7 /usr/lib/libfoo.so.1").unwrap(),
            parse_line("3000-4000 rw-s 00000000 00:01 9 /dev/shm/ring").unwrap(),
            parse_line("4000-5000 rw-p 00000000 00:00 0").unwrap(),
        ];
        let picked = |selectors: Vec<Selector>| -> Vec<u64> {
            let scope = Scope {
                selectors,
                ..Scope::default()
            };
            select(&vmas, &scope).iter().map(|p| p.span.start).collect()
        };
        assert_eq!(picked(vec![Selector::name("[heap]")]), [0x1000]);
        assert_eq!(picked(vec![Selector::name("libfoo*")]), [0x2000]);
        assert_eq!(
            picked(vec![Selector::name("/usr/lib/lib?oo.so*")]),
            [0x2000]
        );
        assert_eq!(picked(vec![Selector::name("libbar*")]), [0u64; 0]);
        assert_eq!(
            picked(vec![
                Selector::Kind(MappingKind::Shmem),
                Selector::Kind(MappingKind::Anon)
            ]),
            [0x3000, 0x4000]
        );
        assert_eq!(picked(vec![Selector::Shared]), [0x3000]);
        assert_eq!(picked(vec![]).len(), 4);
    }

    #[test]
    fn globs_match_runs_and_single_characters() {
        for (p, t, m) in [
            ("*", "", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("*.so*", "libc.so.6", true),
            ("?", "ab", false),
            ("a**b", "ab", true),
            ("*a*b*", "xxaxxbxx", true),
        ] {
            assert_eq!(glob(p, t), m, "{p} ~ {t}");
        }
    }
}
