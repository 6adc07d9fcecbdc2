//! Wall-clock helpers. Only the master's leader reads the clock for durable state: it writes the
//! time into each log entry, so applying the log is deterministic.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Splits days since the epoch into a (year, month, day) civil date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
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
    let days = secs.div_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let rem = secs.rem_euclid(86_400);
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

/// Formats epoch milliseconds as a SigV4 timestamp: `20130524T000000Z`.
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
}
