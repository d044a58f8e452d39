//! The wall clock and the one date format AWS puts in events.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (`wasi:clocks/wall-clock`).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

thread_local! {
    /// The last second written, and how: events come many to a second.
    static LAST: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// `ms` as API Gateway's `requestTime`: `03/Dec/2026:10:00:00 +0000` (always UTC).
pub fn aws_request_time(ms: u64) -> String {
    let secs = ms / 1000;
    LAST.with_borrow_mut(|(at, text)| {
        if *at != secs {
            *text = format_request_time(secs);
            *at = secs;
        }
        text.clone()
    })
}

fn format_request_time(secs: u64) -> String {
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{day:02}/{}/{year:04}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Year, month (1–12) and day (1–31) of a day count since 1970-01-01, in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`), so no date crate is needed.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_times_follow_the_clock_across_the_remembered_second() {
        // 2026-12-03 10:00:00 UTC, the same second again, the next one, and a leap day.
        let at = 1_796_292_000_000;
        assert_eq!(aws_request_time(at), "03/Dec/2026:10:00:00 +0000");
        assert_eq!(aws_request_time(at + 999), "03/Dec/2026:10:00:00 +0000");
        assert_eq!(aws_request_time(at + 1000), "03/Dec/2026:10:00:01 +0000");
        assert_eq!(
            aws_request_time(951_782_400_000),
            "29/Feb/2000:00:00:00 +0000"
        );
        assert_eq!(aws_request_time(at), "03/Dec/2026:10:00:00 +0000");
    }
}
