//! Prometheus's duration strings (`1m30s`, `2h`, `90d`), as flags, query parameters and Thanos's
//! objstore `http_config` spell them.

/// A Prometheus duration string in ms: integer amounts with units in decreasing order, each unit
/// at most once (`1m30s`, units `ms s m h d w y`, or a bare `0`). `None` when invalid.
///
/// ```
/// use engine::duration::parse_prometheus_duration as d;
/// assert_eq!(d("1m30s"), Some(90_000));
/// assert_eq!(d("2h"), Some(7_200_000));
/// assert_eq!(d("30s1m"), None);
/// assert_eq!(d("1.5s"), None);
/// ```
pub fn parse_prometheus_duration(s: &str) -> Option<i64> {
    const UNITS: [(&str, i64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(0);
    }
    let mut rest = s;
    let mut next_unit = 0usize;
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        rest = &rest[letters..];
        let idx = UNITS.iter().position(|(u, _)| *u == unit)?;
        if idx < next_unit {
            return None;
        }
        next_unit = idx + 1;
        total = total.checked_add(n.checked_mul(UNITS[idx].1)?)?;
    }
    Some(total)
}
