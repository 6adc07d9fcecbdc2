//! Wall-clock helpers and the one calendar of the code base: conversions between days since the
//! epoch and civil (proleptic Gregorian, UTC) dates, and the ISO 8601 forms S3 speaks, basic
//! (`20130524T000000Z`, SigV4's `X-Amz-Date`) and extended (`2013-05-24T00:00:00.000Z`, XML
//! documents and POST policies). Only the master's leader reads the clock for durable state: it
//! writes the time into each log entry, so applying the log is deterministic.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds in a (UTC, leap-second-free) day.
pub const SECS_PER_DAY: u64 = 86_400;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian; Howard Hinnant's algorithm).
/// Any `day` is taken (day 0 is the last of the previous month); `month` must be 1 to 12.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Splits days since the epoch into a (year, month, day) civil date; inverse of
/// [`days_from_civil`].
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since the epoch of a date that exists (no February 30, no month 13), or `None`.
fn valid_days(year: i64, month: u32, day: u32) -> Option<i64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    // A day beyond its month lands in the next one and does not come back.
    (civil_from_days(days) == (year, month, day)).then_some(days)
}

/// A UTC instant split for formatting.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: i64,
    minute: i64,
    second: i64,
    /// Days since the epoch, for the weekday.
    days: i64,
}

fn civil(ms: u64) -> Civil {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(SECS_PER_DAY as i64);
    let (year, month, day) = civil_from_days(days);
    let rem = secs.rem_euclid(SECS_PER_DAY as i64);
    Civil {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem % 3600 / 60,
        second: rem % 60,
        days,
    }
}

/// Formats epoch milliseconds as ISO 8601 with milliseconds, as S3 XML documents do:
/// `2009-10-12T17:50:30.000Z`.
pub fn iso8601(ms: u64) -> String {
    let c = civil(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        ms % 1000
    )
}

/// Formats epoch milliseconds as a SigV4 timestamp (ISO 8601 basic): `20130524T000000Z`.
pub fn amz_datetime(ms: u64) -> String {
    let c = civil(ms);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Formats epoch milliseconds as an HTTP date (`Last-Modified`).
pub fn http_date(ms: u64) -> String {
    let c = civil(ms);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][c.days.rem_euclid(7) as usize];
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(c.month - 1) as usize];
    format!(
        "{weekday}, {:02} {month} {:04} {:02}:{:02}:{:02} GMT",
        c.day, c.year, c.hour, c.minute, c.second
    )
}

/// The number written with the ASCII digits `b[at..at + len]` (no sign, no space).
fn digits(b: &[u8], at: usize, len: usize) -> Option<u32> {
    let d = b.get(at..at + len)?;
    d.iter()
        .all(u8::is_ascii_digit)
        .then(|| d.iter().fold(0u32, |n, c| n * 10 + u32::from(c - b'0')))
}

/// Seconds since the epoch of a date and a time of day, all fields read from `b` at the given
/// offsets (year 4 digits, the others 2); `None` for an impossible date or time, or one before
/// 1970.
fn instant(b: &[u8], [y, mo, d, h, mi, s]: [usize; 6]) -> Option<u64> {
    let year = digits(b, y, 4)?;
    let (month, day) = (digits(b, mo, 2)?, digits(b, d, 2)?);
    let (hour, minute, second) = (digits(b, h, 2)?, digits(b, mi, 2)?, digits(b, s, 2)?);
    if year < 1970 || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = u64::try_from(valid_days(i64::from(year), month, day)?).ok()?;
    Some(days * SECS_PER_DAY + u64::from(hour * 3600 + minute * 60 + second))
}

/// Parses ISO 8601 basic `YYYYMMDDTHHMMSSZ` (SigV4's `X-Amz-Date`) into seconds since the epoch;
/// `None` for anything else, an impossible date (`20230229T000000Z`) or one before 1970.
pub fn parse_amz_datetime(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    instant(b, [0, 4, 6, 9, 11, 13])
}

/// Parses ISO 8601 extended `YYYY-MM-DDTHH:MM:SS[.fff]Z` (a POST policy's `expiration`) into
/// seconds since the epoch, the fraction dropped; `None` for anything else, an impossible date or
/// one before 1970.
pub fn parse_iso8601(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z')?;
    let (main, frac) = s.split_once('.').unwrap_or((s, ""));
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let b = main.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    instant(b, [0, 5, 8, 11, 14, 17])
}

/// Parses an ISO 8601 extended calendar date `YYYY-MM-DD` into days since the epoch; `None` for
/// anything else, an impossible date or one before 1970.
pub fn parse_iso8601_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = digits(b, 0, 4)?;
    let days = valid_days(i64::from(year), digits(b, 5, 2)?, digits(b, 8, 2)?)?;
    u64::try_from(days).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_255_369_830_123), "2009-10-12T17:50:30.123Z");
        assert_eq!(
            http_date(1_255_369_830_000),
            "Mon, 12 Oct 2009 17:50:30 GMT"
        );
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(amz_datetime(1_369_353_600_000), "20130524T000000Z");
    }

    #[test]
    fn civil_conversions_round_trip_over_eight_centuries() {
        // Every day from 1600 to 2400 (leap centuries and not), and back.
        let (first, last) = (days_from_civil(1600, 1, 1), days_from_civil(2400, 12, 31));
        assert_eq!((first, last), (-135_140, 157_419));
        let mut previous = civil_from_days(first - 1);
        for days in first..=last {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
            // Each day follows the previous one in the calendar.
            let next_day = (y, m, d) == (previous.0, previous.1, previous.2 + 1);
            let next_month = d == 1 && (y, m) == (previous.0, previous.1 + 1);
            let next_year = (m, d) == (1, 1) && (previous.0 + 1, previous.1) == (y, 12);
            assert!(
                next_day || next_month || next_year,
                "{previous:?} then {y}-{m}-{d}"
            );
            previous = (y, m, d);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(valid_days(2000, 2, 29), Some(11_016));
        assert_eq!(valid_days(1900, 2, 29), None);
        assert_eq!(valid_days(2023, 4, 31), None);
        assert_eq!(valid_days(2023, 13, 1), None);
        assert_eq!(valid_days(2023, 1, 0), None);
    }

    #[test]
    fn parses_iso8601_basic() {
        assert_eq!(parse_amz_datetime("20130524T000000Z"), Some(1_369_353_600));
        assert_eq!(parse_amz_datetime("19700101T000000Z"), Some(0));
        assert!(parse_amz_datetime("20240229T235959Z").is_some());
        for bad in [
            "20230229T000000Z",
            "20130524T240000Z",
            "20130524T236000Z",
            "20130524T235960Z",
            "20131324T000000Z",
            "20130500T000000Z",
            "19691231T235959Z",
            "20130524 000000Z",
            "2013052T000000Z",
            "+0130524T000000Z",
            "2013-524T000000Z",
            "20130524T000000",
            "201\u{e9}524T000000Z",
            "",
        ] {
            assert_eq!(parse_amz_datetime(bad), None, "{bad}");
        }
        // Whatever is formatted parses back.
        for ms in [0, 951_782_400_000, 1_369_353_600_000, 4_102_444_799_000] {
            assert_eq!(parse_amz_datetime(&amz_datetime(ms)), Some(ms / 1000));
        }
    }

    #[test]
    fn parses_iso8601_extended() {
        assert_eq!(parse_iso8601("2013-05-24T00:00:00Z"), Some(1_369_353_600));
        assert_eq!(parse_iso8601("1970-01-02T00:00:00.999Z"), Some(86_400));
        assert_eq!(parse_iso8601("2015-12-30T12:00:01.5Z"), Some(1_451_476_801));
        assert_eq!(
            parse_iso8601(&iso8601(1_255_369_830_123)),
            Some(1_255_369_830)
        );
        for bad in [
            "2015-02-30T12:00:00Z",
            "2015-12-30T12:00:00",
            "2015-12-30T12:00:00.aZ",
            "2015-12-30 12:00:00Z",
            "2015/12/30T12:00:00Z",
            "1969-12-31T23:59:59Z",
            "2015-12-30T12:00:0\u{e9}Z",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
        assert_eq!(parse_iso8601_date("1970-01-01"), Some(0));
        assert_eq!(parse_iso8601_date("2000-03-01"), Some(11_017));
        assert_eq!(parse_iso8601_date("2028-02-29"), Some(21_243));
        for bad in [
            "2029-02-29",
            "2030-13-01",
            "30-01-01",
            "1969-12-31",
            "2030-1-01",
            "",
        ] {
            assert_eq!(parse_iso8601_date(bad), None, "{bad}");
        }
    }
}
