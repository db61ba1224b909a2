//! Human-readable durations: `"90s"`, `"30m"`, `"1h"`, `"1h30m"`, `"1d"`.

use std::time::Duration;

const UNITS: &[(char, u64)] = &[('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

/// Parse one or more `<integer><unit>` parts (units `d`, `h`, `m`, `s`, largest first), e.g. `"1h30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let hint = "write a duration such as \"90s\", \"30m\", \"1h\", \"1h30m\" or \"1d\" \
                (units d, h, m, s)";
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(format!("the duration is empty; {hint}"));
    }
    let mut total: u64 = 0;
    let mut last_unit = u64::MAX;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(format!("{text:?} is not a duration; {hint}"));
        }
        let (number, after) = rest.split_at(digits);
        let mut chars = after.chars();
        let unit = chars.next();
        let Some(&(_, secs)) = UNITS.iter().find(|(u, _)| Some(*u) == unit) else {
            return Err(format!("{text:?} lacks a unit after {number}; {hint}"));
        };
        if secs >= last_unit {
            return Err(format!(
                "{text:?} repeats a unit or lists a smaller one first; {hint}"
            ));
        }
        last_unit = secs;
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is too large; {hint}"))?;
        total = n
            .checked_mul(secs)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{text:?} is too large; {hint}"))?;
        rest = chars.as_str();
    }
    Ok(Duration::from_secs(total))
}

/// Format whole seconds the way [`parse_duration`] reads them, largest units first (`"1h30m"`, `"0s"`).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for &(unit, size) in UNITS {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d2h3m4s"), Ok(Duration::from_secs(93_784)));
        assert_eq!(parse_duration("3600s"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn rejects_garbage_with_a_hint() {
        for bad in [
            "",
            "1",
            "h",
            "1x",
            "1h1h",
            "1m1h",
            "-5s",
            "1.5h",
            "1 h",
            "99999999999999999999s",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("\"1h30m\""), "{bad:?}: {err}");
        }
    }

    #[test]
    fn format_round_trips() {
        for secs in [0, 1, 59, 60, 61, 3600, 5400, 86_400, 90_061, 604_800] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{secs}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
    }
}
