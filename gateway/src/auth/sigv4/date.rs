//! The `Date` header a SigV4 request may be timed by instead of `X-Amz-Date`: every form HTTP
//! and mail dates come in. The three of RFC 7231 (IMF-fixdate, RFC 850, asctime), and RFC 2822's
//! with a numeric or named zone: botocore, asked to sign with a `Date` header, writes it with
//! Python's `email.utils.formatdate`, `Tue, 03 Dec 2024 19:00:00 -0000`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tinydfs_proto::time::{civil_from_days, days_from_civil, SECS_PER_DAY};

/// The instant a `Date` header names; `None` if it is no date.
pub(super) fn parse_http_date(s: &str) -> Option<SystemTime> {
    if let Ok(t) = httpdate::parse_http_date(s) {
        return Some(t);
    }
    let secs = mail_date(s.trim())?;
    Some(if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .unwrap_or(UNIX_EPOCH)
    })
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const LONG_DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// Seconds since the epoch of an RFC 2822 date (`[Day,] d Mon yyyy hh:mm[:ss] zone`, two- and
/// three-digit years and a trailing comment allowed, as the RFC's obsolete syntax allows), or of
/// an RFC 850 one (`Sunday, 06-Nov-94 08:49:37 zone`) with any zone.
fn mail_date(s: &str) -> Option<i64> {
    // A trailing comment: `-0000 (UTC)`.
    let s = match s.rfind('(') {
        Some(i) if s.ends_with(')') => s[..i].trim_end(),
        _ => s,
    };
    let s = match s.split_once(',') {
        Some((day, rest)) => {
            let day = day.trim().to_ascii_lowercase();
            if !DAYS.contains(&day.as_str()) && !LONG_DAYS.contains(&day.as_str()) {
                return None;
            }
            rest
        }
        None => s,
    };
    let mut tokens = s.split_whitespace();
    let first = tokens.next()?;
    let (day, month, year) = match first.split('-').collect::<Vec<_>>()[..] {
        [d, m, y] => (d, m, y),
        [_] => (first, tokens.next()?, tokens.next()?),
        _ => return None,
    };
    let (time, zone) = (tokens.next()?, tokens.next()?);
    if tokens.next().is_some() {
        return None;
    }
    let day: u32 = number(day, 1, 2)?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as u32 + 1;
    let year: i64 = match year.len() {
        2 => {
            let y: i64 = number(year, 2, 2)?;
            if y < 50 {
                2000 + y
            } else {
                1900 + y
            }
        }
        3 => 1900 + number::<i64>(year, 3, 3)?,
        _ => number(year, 4, 4)?,
    };
    let days = days_from_civil(year, month, day);
    if civil_from_days(days) != (year, month, day) {
        return None; // 30 February and the like
    }
    let mut hms = time.split(':');
    let hour: i64 = number(hms.next()?, 1, 2)?;
    let minute: i64 = number(hms.next()?, 2, 2)?;
    let second: i64 = match hms.next() {
        Some(s) => number(s, 2, 2)?,
        None => 0,
    };
    // A leap second is the last second of its minute.
    if hms.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let offset = zone_offset(zone)?;
    Some(days * SECS_PER_DAY as i64 + hour * 3600 + minute * 60 + second.min(59) - offset)
}

/// A zone's offset from UTC in seconds: `+hhmm` / `-hhmm` (`-0000` is UTC, with nothing known
/// of the local zone), UT, GMT, UTC, Z, and the US zones RFC 2822 keeps.
fn zone_offset(zone: &str) -> Option<i64> {
    if let Some(sign) = zone
        .strip_prefix('+')
        .map(|_| 1)
        .or(zone.strip_prefix('-').map(|_| -1))
    {
        let digits = &zone[1..];
        let hhmm: i64 = number(digits, 4, 4)?;
        let (h, m) = (hhmm / 100, hhmm % 100);
        if m > 59 {
            return None;
        }
        return Some(sign * (h * 3600 + m * 60));
    }
    let hours = match zone.to_ascii_uppercase().as_str() {
        "GMT" | "UT" | "UTC" | "Z" => 0,
        "EDT" => -4,
        "EST" | "CDT" => -5,
        "CST" | "MDT" => -6,
        "MST" | "PDT" => -7,
        "PST" => -8,
        _ => return None,
    };
    Some(hours * 3600)
}

/// Decimal digits only, `min..=max` of them.
fn number<T: std::str::FromStr>(s: &str, min: usize, max: usize) -> Option<T> {
    ((min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> Option<u64> {
        parse_http_date(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs())
    }

    #[test]
    fn every_form_clients_send() {
        // 1994-11-06T08:49:37Z, RFC 7231's example, in every form.
        let t = Some(784_111_777);
        for s in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            // Python's email.utils.formatdate, as botocore sends it.
            "Sun, 06 Nov 1994 08:49:37 -0000",
            "Sun, 06 Nov 1994 08:49:37 +0000",
            "Sun, 6 Nov 1994 08:49:37 UT",
            "6 Nov 1994 08:49:37 Z",
            "Sun, 06 Nov 1994 09:49:37 +0100",
            "Sun, 06 Nov 1994 03:19:37 -0530",
            "Sun, 06 Nov 1994 00:49:37 PST",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 -0000 (UTC)",
            "sun, 06 nov 1994 08:49:37 gmt",
            "Sunday, 06-Nov-94 08:49:37 -0000",
        ] {
            assert_eq!(secs(s), t, "{s}");
        }
        assert_eq!(secs("Tue, 1 Jan 2030 00:00 +0000"), Some(1_893_456_000));
        assert_eq!(secs("Thu, 01 Jan 2015 00:00:00 -0000"), Some(1_420_070_400));
    }

    #[test]
    fn what_is_no_date() {
        for s in [
            "",
            "yesterday",
            "Sun, 31 Feb 2021 00:00:00 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Nov 1994 08:49:37 +01",
            "Sun, 06 Nov 1994 08:49:37 +0160",
            "Sun, 06 Nov 1994 08:49:37 CET",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
            "Someday, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 8:4:37 GMT",
            "Sun, 06 Nov +994 08:49:37 GMT",
            "20130524T000000Z",
        ] {
            assert_eq!(secs(s), None, "{s}");
        }
    }
}
