//! Words for people: counts with their noun in the right number ("1 range", "2 ranges") and
//! durations in the largest units that read well ("250 ms", "1.5 s", "2 min 30 s", "100 years").
//! One style for every human output (`track`, `compare`, `demo`, the live view, the report), so
//! the same interval never reads two ways.

use std::time::Duration;

/// `n` and `noun`, plural unless `n` is 1: `count(1, "range")` is "1 range". Only regular
/// plurals (an `s` added) are needed here.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A duration for people. Under a second: whole milliseconds ("250 ms"); under a minute:
/// seconds with up to three decimals ("1 s", "1.5 s"); from a minute on: the two largest
/// non-zero units of years (365.25 days, as humantime counts them), days, hours, minutes and
/// seconds, the rest left out ("1 min 30 s", "2 h", "11 years 148 days", "100 years").
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms} ms");
    }
    if ms < 60_000 {
        let text = format!("{:.3}", ms as f64 / 1000.0);
        let text = text.trim_end_matches('0').trim_end_matches('.');
        return format!("{text} s");
    }
    let mut secs = d.as_secs();
    let mut parts = Vec::new();
    for (unit, size, plural) in [
        ("year", 31_557_600, true),
        ("day", 86_400, true),
        ("h", 3_600, false),
        ("min", 60, false),
        ("s", 1, false),
    ] {
        let n = secs / size;
        secs %= size;
        if n > 0 {
            parts.push(if plural {
                count(n, unit)
            } else {
                format!("{n} {unit}")
            });
        } else if !parts.is_empty() {
            // A zero unit after the first ends the text: "2 h", not "2 h 0 min 5 s".
            break;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
}

/// [`duration`] of a number of milliseconds (as the records carry them).
pub fn millis(ms: u64) -> String {
    duration(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(count(0, "range"), "0 ranges");
        assert_eq!(count(1, "range"), "1 range");
        assert_eq!(count(2, "delta"), "2 deltas");
    }

    #[test]
    fn durations_read_in_the_largest_units() {
        for (ms, text) in [
            (1, "1 ms"),
            (250, "250 ms"),
            (999, "999 ms"),
            (1000, "1 s"),
            (1500, "1.5 s"),
            (1250, "1.25 s"),
            (59_999, "59.999 s"),
            (60_000, "1 min"),
            (90_000, "1 min 30 s"),
            (7_200_000, "2 h"),
            (7_205_000, "2 h"),
            (86_400_000, "1 day"),
            (360_000_000_000, "11 years 148 days"),
            (crate::cli::MAX_DURATION.as_millis() as u64, "100 years"),
        ] {
            assert_eq!(millis(ms), text, "{ms} ms");
        }
    }
}
