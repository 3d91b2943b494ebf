//! Maintenance windows: the value of the `pushroll.io/window` annotation
//! (pure).
//!
//! A rollout for a push is deferred until a window is open; this module
//! parses the annotation and answers "is a window open at `T`"
//! ([`Windows::is_open`]) and "when does the next one open"
//! ([`Windows::next_open`]). A malformed value is a [`WindowError`], never
//! an "always open".
//!
//! # Syntax
//!
//! ```text
//! windows := window (";" window)*        whitespace around items is ignored
//! window  := [DAYS] START "-" END ZONE   separated by whitespace
//! DAYS    := day-or-range ("," day-or-range)*      no DAYS: every day
//! day-or-range := DAY | DAY "-" DAY                 Fri-Mon wraps the week
//! DAY     := Mon | Tue | … | Sun | Monday | … | Sunday   (any case)
//! START, END := HH:MM | HH:MM:SS         24-hour, two digits each; END may be 24:00
//! ZONE    := an IANA time zone name (Europe/Berlin) | UTC
//! ```
//!
//! Examples: `Mon-Fri 09:00-17:00 Europe/Berlin`,
//! `Sat,Sun 10:00-12:00 UTC; 22:00-02:00 America/New_York`.
//!
//! * END earlier than START crosses midnight, and the window belongs to the
//!   day it starts on: `Fri 22:00-02:00` is Friday 22:00 to Saturday 02:00.
//! * START equal to END is an error (`00:00-24:00` is a whole day).
//! * Windows are wall-clock times in their zone. A START or END that falls
//!   in a spring-forward gap means the first instant after the gap; one in
//!   a fall-back fold means its first occurrence.
//! * Open means start inclusive, end exclusive.

use std::str::FromStr;

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp, ToSpan};

const DAY_SECS: u32 = 86_400;
const ALL_DAYS: u8 = 0b111_1111;

/// Local dates examined around an instant: from the day before (a window
/// that crossed midnight may still be open) to this many days after
/// (every window opens at least weekly).
const LOOKAHEAD_DAYS: i64 = 8;

/// Why an annotation value is not a valid list of windows. Every message
/// quotes the offending part and the window it is in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error(
        "empty window annotation; expected \"[DAYS] START-END ZONE\", e.g. \"Mon-Fri 09:00-17:00 UTC\""
    )]
    Empty,
    #[error("empty window between \";\" in {value:?}")]
    EmptyItem { value: String },
    #[error("missing time range START-END in {window:?}; expected \"[DAYS] START-END ZONE\"")]
    MissingTimeRange { window: String },
    #[error("missing time zone after {range:?} in {window:?}; expected \"[DAYS] START-END ZONE\"")]
    MissingZone { range: String, window: String },
    #[error("unexpected {token:?} in {window:?}; expected \"[DAYS] START-END ZONE\"")]
    Unexpected { token: String, window: String },
    #[error(
        "unknown day {day:?} in {window:?}; expected Mon, Tue, Wed, Thu, Fri, Sat, Sun or a full name"
    )]
    UnknownDay { day: String, window: String },
    #[error(
        "bad day list {days:?} in {window:?}; expected days or ranges separated by commas, e.g. \"Mon-Wed,Fri\""
    )]
    BadDays { days: String, window: String },
    #[error("bad time range {range:?} in {window:?}; expected START-END, e.g. \"09:00-17:00\"")]
    BadTimeRange { range: String, window: String },
    #[error(
        "bad time {time:?} in {window:?}; expected HH:MM or HH:MM:SS (two digits each, 00:00 to 24:00)"
    )]
    BadTime { time: String, window: String },
    #[error("start time {time:?} in {window:?} is not a time of day; 24:00 is allowed only as END")]
    StartAtMidnightEnd { time: String, window: String },
    #[error("empty window {window:?}: START equals END; use 00:00-24:00 for a whole day")]
    EmptyWindow { window: String },
    #[error(
        "unknown time zone {zone:?} in {window:?}; expected an IANA name such as \"Europe/Berlin\", or \"UTC\""
    )]
    UnknownZone { zone: String, window: String },
}

/// The parsed value of `pushroll.io/window`: one or more windows, open when
/// any of them is.
#[derive(Debug, Clone, PartialEq)]
pub struct Windows {
    windows: Vec<Window>,
}

#[derive(Debug, Clone, PartialEq)]
struct Window {
    /// Bit `i` is the weekday `i` days after Monday.
    days: u8,
    /// Seconds after local midnight, `0..DAY_SECS`.
    start: u32,
    /// Seconds after local midnight, `1..=DAY_SECS`; `<= start` crosses
    /// midnight.
    end: u32,
    tz: TimeZone,
}

impl FromStr for Windows {
    type Err = WindowError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.trim().is_empty() {
            return Err(WindowError::Empty);
        }
        let windows = value
            .split(';')
            .map(|item| {
                let item = item.trim();
                if item.is_empty() {
                    Err(WindowError::EmptyItem {
                        value: value.to_owned(),
                    })
                } else {
                    parse_window(item)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Windows { windows })
    }
}

impl Windows {
    /// Whether some window is open at `at` (start inclusive, end exclusive).
    pub fn is_open(&self, at: Timestamp) -> bool {
        self.intervals(at)
            .any(|(start, end)| start <= at && at < end)
    }

    /// `at` itself when a window is open then; otherwise the earliest
    /// instant after `at` at which one opens. Always `Some` for a parsed
    /// value (every window opens at least weekly); `None` only if nothing
    /// opens within 8 days (defensive).
    pub fn next_open(&self, at: Timestamp) -> Option<Timestamp> {
        self.intervals(at)
            .filter(|&(_, end)| end > at)
            .map(|(start, _)| start.max(at))
            .min()
    }

    /// Every `[start, end)` of every window on the local dates from the day
    /// before `at` to [`LOOKAHEAD_DAYS`] after, in each window's zone.
    fn intervals(&self, at: Timestamp) -> impl Iterator<Item = (Timestamp, Timestamp)> + '_ {
        self.windows.iter().flat_map(move |w| {
            let today = w.tz.to_datetime(at).date();
            (-1..=LOOKAHEAD_DAYS).filter_map(move |k| {
                let date = today.checked_add(k.days()).ok()?;
                w.on(date)
            })
        })
    }
}

impl Window {
    /// The window's instants if it starts on local `date`. `None` when the
    /// day does not match, or when a DST gap swallows the whole window.
    fn on(&self, date: Date) -> Option<(Timestamp, Timestamp)> {
        if self.days & day_bit(date.weekday()) == 0 {
            return None;
        }
        let midnight = date.to_datetime(Time::midnight());
        let end_secs = if self.end > self.start {
            self.end
        } else {
            self.end + DAY_SECS
        };
        let start = self.instant(midnight, self.start)?;
        let end = self.instant(midnight, end_secs)?;
        (start < end).then_some((start, end))
    }

    /// The instant at wall-clock `midnight + secs` in this window's zone.
    fn instant(&self, midnight: DateTime, secs: u32) -> Option<Timestamp> {
        // Civil arithmetic: this is the wall-clock time, DST plays no part.
        let local = midnight
            .checked_add(SignedDuration::from_secs(i64::from(secs)))
            .ok()?;
        match self.tz.to_ambiguous_timestamp(local).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(local).ok(),
            AmbiguousOffset::Fold { before, .. } => before.to_timestamp(local).ok(),
            // jiff's "compatible" would give `local` read with the earlier
            // offset (02:30 in a 02:00→03:00 gap becomes 03:30); a window
            // opens when the wall clock first reaches its time, which is the
            // transition itself. `local` read with the later offset is an
            // instant just before it.
            AmbiguousOffset::Gap { before, after } => {
                let just_before = after.to_timestamp(local).ok()?;
                match self.tz.following(just_before).next() {
                    Some(transition) => Some(transition.timestamp()),
                    None => before.to_timestamp(local).ok(),
                }
            }
        }
    }
}

fn parse_window(window: &str) -> Result<Window, WindowError> {
    let tokens: Vec<&str> = window.split_whitespace().collect();
    // Days and zones start with a letter, times with a digit: the first
    // token starting with a digit is the time range, which tells a missing
    // DAYS (allowed) from a missing ZONE (not).
    let Some(at) = tokens
        .iter()
        .position(|t| t.starts_with(|c: char| c.is_ascii_digit()))
    else {
        return Err(WindowError::MissingTimeRange {
            window: window.to_owned(),
        });
    };
    let (before, rest) = tokens.split_at(at);
    let (range, after) = (rest[0], &rest[1..]);
    let unexpected = |token: &str| WindowError::Unexpected {
        token: token.to_owned(),
        window: window.to_owned(),
    };
    let days = match before {
        [] => ALL_DAYS,
        [days] => parse_days(days, window)?,
        [_, extra, ..] => return Err(unexpected(extra)),
    };
    let (start, end) = parse_range(range, window)?;
    let tz = match after {
        [] => {
            return Err(WindowError::MissingZone {
                range: range.to_owned(),
                window: window.to_owned(),
            });
        }
        [zone] => parse_zone(zone, window)?,
        [_, extra, ..] => return Err(unexpected(extra)),
    };
    Ok(Window {
        days,
        start,
        end,
        tz,
    })
}

const DAY_NAMES: [(&str, &str, Weekday); 7] = [
    ("Mon", "Monday", Weekday::Monday),
    ("Tue", "Tuesday", Weekday::Tuesday),
    ("Wed", "Wednesday", Weekday::Wednesday),
    ("Thu", "Thursday", Weekday::Thursday),
    ("Fri", "Friday", Weekday::Friday),
    ("Sat", "Saturday", Weekday::Saturday),
    ("Sun", "Sunday", Weekday::Sunday),
];

fn day_bit(day: Weekday) -> u8 {
    1 << day.to_monday_zero_offset()
}

fn parse_days(days: &str, window: &str) -> Result<u8, WindowError> {
    let bad = || WindowError::BadDays {
        days: days.to_owned(),
        window: window.to_owned(),
    };
    let day = |name: &str| {
        if name.is_empty() {
            return Err(bad());
        }
        DAY_NAMES
            .iter()
            .find(|(short, long, _)| {
                name.eq_ignore_ascii_case(short) || name.eq_ignore_ascii_case(long)
            })
            .map(|&(_, _, day)| day)
            .ok_or_else(|| WindowError::UnknownDay {
                day: name.to_owned(),
                window: window.to_owned(),
            })
    };
    let mut mask = 0;
    for part in days.split(',') {
        match part.split_once('-') {
            None => mask |= day_bit(day(part)?),
            Some((_, last)) if last.contains('-') => return Err(bad()),
            Some((first, last)) => {
                let (mut d, last) = (day(first)?, day(last)?);
                // Walks forward, so Fri-Mon is Fri, Sat, Sun, Mon.
                mask |= day_bit(d);
                while d != last {
                    d = d.next();
                    mask |= day_bit(d);
                }
            }
        }
    }
    Ok(mask)
}

fn parse_range(range: &str, window: &str) -> Result<(u32, u32), WindowError> {
    let (start, end) = range
        .split_once('-')
        .ok_or_else(|| WindowError::BadTimeRange {
            range: range.to_owned(),
            window: window.to_owned(),
        })?;
    let (start_secs, end_secs) = (parse_time(start, window)?, parse_time(end, window)?);
    if start_secs == DAY_SECS {
        return Err(WindowError::StartAtMidnightEnd {
            time: start.to_owned(),
            window: window.to_owned(),
        });
    }
    if start_secs == end_secs {
        return Err(WindowError::EmptyWindow {
            window: window.to_owned(),
        });
    }
    Ok((start_secs, end_secs))
}

/// `HH:MM` or `HH:MM:SS` as seconds after midnight, `24:00` as [`DAY_SECS`].
fn parse_time(time: &str, window: &str) -> Result<u32, WindowError> {
    let bad = || WindowError::BadTime {
        time: time.to_owned(),
        window: window.to_owned(),
    };
    let two_digits = |part: &str| -> Result<u32, WindowError> {
        match part.as_bytes() {
            [a @ b'0'..=b'9', b @ b'0'..=b'9'] => {
                Ok(u32::from(a - b'0') * 10 + u32::from(b - b'0'))
            }
            _ => Err(bad()),
        }
    };
    let parts: Vec<&str> = time.split(':').collect();
    let (h, m, s) = match parts[..] {
        [h, m] => (two_digits(h)?, two_digits(m)?, 0),
        [h, m, s] => (two_digits(h)?, two_digits(m)?, two_digits(s)?),
        _ => return Err(bad()),
    };
    let secs = h * 3600 + m * 60 + s;
    if m > 59 || s > 59 || secs > DAY_SECS {
        return Err(bad());
    }
    Ok(secs)
}

fn parse_zone(zone: &str, window: &str) -> Result<TimeZone, WindowError> {
    if zone.eq_ignore_ascii_case("UTC") {
        return Ok(TimeZone::UTC);
    }
    jiff::tz::db()
        .get(zone)
        .map_err(|_| WindowError::UnknownZone {
            zone: zone.to_owned(),
            window: window.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `days` as seven characters Monday first, `x` for a day in the set.
    fn mask(days: &str) -> u8 {
        days.chars()
            .enumerate()
            .filter(|&(_, c)| c == 'x')
            .fold(0, |m, (i, _)| m | 1 << i)
    }

    fn secs(hms: &str) -> u32 {
        parse_time(hms, "test").unwrap()
    }

    /// One parsed window: days, start, end, zone.
    type Expected = (&'static str, &'static str, &'static str, &'static str);

    #[test]
    fn parses_valid_values() {
        #[rustfmt::skip]
        let rows: &[(&str, &[Expected])] = &[
            ("Mon-Fri 09:00-17:00 Europe/Berlin", &[("xxxxx..", "09:00", "17:00", "Europe/Berlin")]),
            ("Sat,Sun 10:00-12:00 UTC", &[(".....xx", "10:00", "12:00", "UTC")]),
            ("22:00-02:00 America/New_York", &[("xxxxxxx", "22:00", "02:00", "America/New_York")]),
            ("Mon-Wed,Fri 08:00-09:30 Asia/Kolkata", &[("xxx.x..", "08:00", "09:30", "Asia/Kolkata")]),
            ("Fri-Mon 20:00-06:00 UTC", &[("x...xxx", "20:00", "06:00", "UTC")]),
            ("Sun-Tue 20:00-06:00 UTC", &[("xx....x", "20:00", "06:00", "UTC")]),
            ("mon-fri 09:00-17:00 utc", &[("xxxxx..", "09:00", "17:00", "UTC")]),
            ("Monday,Wednesday 09:00-10:00 UTC", &[("x.x....", "09:00", "10:00", "UTC")]),
            ("SATURDAY-sunday 00:00-24:00 Pacific/Auckland", &[(".....xx", "00:00", "24:00", "Pacific/Auckland")]),
            ("Thu-Thu 09:00-10:00 UTC", &[("...x...", "09:00", "10:00", "UTC")]),
            ("Tue,Tue,tue 09:00-10:00 UTC", &[(".x.....", "09:00", "10:00", "UTC")]),
            ("00:00-24:00:00 UTC", &[("xxxxxxx", "00:00", "24:00", "UTC")]),
            ("10:00:30-10:00:45 UTC", &[("xxxxxxx", "10:00:30", "10:00:45", "UTC")]),
            ("23:59:59-00:00:01 America/Argentina/Buenos_Aires", &[("xxxxxxx", "23:59:59", "00:00:01", "America/Argentina/Buenos_Aires")]),
            ("Sun 02:30-04:00 Europe/Berlin", &[("......x", "02:30", "04:00", "Europe/Berlin")]),
            ("Mon\t09:00-10:00\t UTC", &[("x......", "09:00", "10:00", "UTC")]),
            (
                "  Sat,Sun 10:00-12:00 UTC ;Mon-Fri 18:00-19:00 Asia/Kolkata;  Wed 06:00-07:00   Pacific/Auckland  ",
                &[
                    (".....xx", "10:00", "12:00", "UTC"),
                    ("xxxxx..", "18:00", "19:00", "Asia/Kolkata"),
                    ("..x....", "06:00", "07:00", "Pacific/Auckland"),
                ],
            ),
        ];
        for &(value, expected) in rows {
            let parsed: Windows = value.parse().unwrap_or_else(|e| panic!("{value:?}: {e}"));
            let got: Vec<_> = parsed
                .windows
                .iter()
                .map(|w| (w.days, w.start, w.end, w.tz.iana_name().map(str::to_owned)))
                .collect();
            let want: Vec<_> = expected
                .iter()
                .map(|&(d, s, e, z)| (mask(d), secs(s), secs(e), Some(z.to_owned())))
                .collect();
            assert_eq!(got, want, "{value:?}");
        }
    }

    #[test]
    fn rejects_invalid_values() {
        // (value, a substring of the error message)
        #[rustfmt::skip]
        let rows: &[(&str, &str)] = &[
            ("", "empty window annotation"),
            ("  \t ", "empty window annotation"),
            ("Mon 09:00-10:00 UTC;;Tue 09:00-10:00 UTC", r#"empty window between ";" in "Mon 09:00-10:00 UTC;;Tue"#),
            ("Mon 09:00-10:00 UTC; ", r#"empty window between ";""#),
            ("Mnday-Fri 09:00-17:00 UTC", r#"unknown day "Mnday" in "Mnday-Fri 09:00-17:00 UTC""#),
            ("Tues 09:00-10:00 UTC", r#"unknown day "Tues""#),
            ("Mon,,Tue 09:00-10:00 UTC", r#"bad day list "Mon,,Tue""#),
            ("Mon- 09:00-10:00 UTC", r#"bad day list "Mon-""#),
            ("Mon-Tue-Wed 09:00-10:00 UTC", r#"bad day list "Mon-Tue-Wed""#),
            ("Mon-Fri 25:00-26:00 UTC", r#"bad time "25:00" in "Mon-Fri 25:00-26:00 UTC""#),
            ("9:00-17:00 UTC", r#"bad time "9:00""#),
            ("Mon 09:60-10:00 UTC", r#"bad time "09:60""#),
            ("Mon 09:00-10:00:60 UTC", r#"bad time "10:00:60""#),
            ("Mon 09:00-24:01 UTC", r#"bad time "24:01""#),
            ("Mon 09:00-10:00:5 UTC", r#"bad time "10:00:5""#),
            ("Mon 09:00-10:00:00:00 UTC", r#"bad time "10:00:00:00""#),
            ("Mon 09:00-17:00x UTC", r#"bad time "17:00x""#),
            ("Mon 24:00-02:00 UTC", r#"start time "24:00" in "Mon 24:00-02:00 UTC" is not a time of day"#),
            ("Mon 09:00 UTC", r#"bad time range "09:00""#),
            ("Mon-Fri UTC", r#"missing time range START-END in "Mon-Fri UTC""#),
            ("Mon-Fri 09:00-17:00", r#"missing time zone after "09:00-17:00" in "Mon-Fri 09:00-17:00""#),
            ("09:00-17:00 Mars/Olympus", r#"unknown time zone "Mars/Olympus" in "09:00-17:00 Mars/Olympus""#),
            ("Mon 09:00-17:00 UTC; Tue 09:00-17:00 Moon/Base", r#"unknown time zone "Moon/Base" in "Tue 09:00-17:00 Moon/Base""#),
            ("Mon 09:00-09:00 UTC", "empty window \"Mon 09:00-09:00 UTC\": START equals END; use 00:00-24:00 for a whole day"),
            ("12:00-12:00:00 UTC", "START equals END"),
            ("00:00-00:00 UTC", "START equals END"),
            ("Mon 09:00-17:00 UTC extra", r#"unexpected "extra" in "Mon 09:00-17:00 UTC extra""#),
            ("Mon Fri 09:00-17:00 UTC", r#"unexpected "Fri""#),
        ];
        for &(value, needle) in rows {
            match value.parse::<Windows>() {
                Ok(w) => panic!("{value:?} parsed as {w:?}"),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains(needle), "{value:?}: {msg:?} lacks {needle:?}");
                }
            }
        }
    }

    #[test]
    fn equality_follows_the_value() {
        let a: Windows = "Mon 09:00-10:00 Europe/Berlin".parse().unwrap();
        assert_eq!(a, "monday 09:00:00-10:00 Europe/Berlin".parse().unwrap());
        assert_eq!(a.clone(), a);
        assert_ne!(a, "Mon 09:00-10:00 Asia/Tokyo".parse().unwrap());
        assert_ne!(a, "Tue 09:00-10:00 Europe/Berlin".parse().unwrap());
    }

    /// Expected instants computed by hand from the zones' offsets:
    /// Europe/Berlin +01 (CET) / +02 (CEST), switching 2026-03-29 01:00Z
    /// and 2026-10-25 01:00Z; America/New_York -05 / -04, switching
    /// 2026-03-08 07:00Z and 2026-11-01 06:00Z; Asia/Kolkata +05:30;
    /// Pacific/Auckland +13 until 2026-04-04 14:00Z, +12 until
    /// 2026-09-26 14:00Z, then +13. 2026-03-29, 2026-10-25, 2026-03-08 and
    /// 2026-11-01 are Sundays.
    #[test]
    fn open_and_next_open() {
        const BERLIN_SPRING_GAP: &str = "Sun 02:30-04:00 Europe/Berlin";
        const BERLIN_WEEKDAYS: &str = "Mon-Fri 09:00-17:00 Europe/Berlin";
        const BERLIN_FOLD: &str = "Sun 02:30-02:45 Europe/Berlin";
        const BERLIN_SUNDAY: &str = "Sun 00:00-24:00 Europe/Berlin";
        const NY_SPRING: &str = "Sun 01:00-03:00 America/New_York";
        const NY_GAP_END: &str = "Sun 01:00-02:30 America/New_York";
        const NY_FALL: &str = "Sun 01:30-02:00 America/New_York";
        const NY_NIGHTLY: &str = "22:00-02:00 America/New_York";
        const FRIDAY_NIGHT: &str = "Fri 22:00-02:00 UTC";
        const WEEKEND_NIGHTS: &str = "Fri-Mon 20:00-06:00 UTC";
        const SEVERAL: &str = "Sat,Sun 10:00-12:00 UTC; Mon-Fri 18:00-19:00 Asia/Kolkata; Wed 06:00-07:00 Pacific/Auckland";
        const KOLKATA: &str = "Mon-Wed,Fri 08:00-09:30 Asia/Kolkata";
        const AUCKLAND_MONDAY: &str = "Mon 08:00-09:00 Pacific/Auckland";
        const AUCKLAND_SWALLOWED: &str = "Sun 02:15-02:45 Pacific/Auckland";
        const SATURDAY_EVENING: &str = "Sat 18:00-24:00 UTC";
        const SECONDS: &str = "10:00:30-10:00:45 UTC";
        const ALWAYS: &str = "00:00-24:00 Europe/Berlin";

        // (windows, at, open at `at`, next opening at or after `at`)
        #[rustfmt::skip]
        let rows: &[(&str, &str, bool, &str)] = &[
            // Start inside the spring-forward gap: opens when the clock jumps to 03:00.
            (BERLIN_SPRING_GAP, "2026-03-29T00:30:00Z", false, "2026-03-29T01:00:00Z"),
            (BERLIN_SPRING_GAP, "2026-03-29T00:59:59Z", false, "2026-03-29T01:00:00Z"),
            (BERLIN_SPRING_GAP, "2026-03-29T01:00:00Z", true, "2026-03-29T01:00:00Z"),
            (BERLIN_SPRING_GAP, "2026-03-29T01:59:59Z", true, "2026-03-29T01:59:59Z"),
            (BERLIN_SPRING_GAP, "2026-03-29T02:00:00Z", false, "2026-04-05T00:30:00Z"),
            // Weekdays, across the spring forward and the fall back.
            (BERLIN_WEEKDAYS, "2026-03-27T07:59:59Z", false, "2026-03-27T08:00:00Z"),
            (BERLIN_WEEKDAYS, "2026-03-27T08:00:00Z", true, "2026-03-27T08:00:00Z"),
            (BERLIN_WEEKDAYS, "2026-03-27T16:00:00Z", false, "2026-03-30T07:00:00Z"),
            (BERLIN_WEEKDAYS, "2026-03-28T12:00:00Z", false, "2026-03-30T07:00:00Z"),
            (BERLIN_WEEKDAYS, "2026-03-30T14:59:59Z", true, "2026-03-30T14:59:59Z"),
            (BERLIN_WEEKDAYS, "2026-03-30T15:00:00Z", false, "2026-03-31T07:00:00Z"),
            (BERLIN_WEEKDAYS, "2026-10-23T15:00:00Z", false, "2026-10-26T08:00:00Z"),
            (BERLIN_WEEKDAYS, "2026-10-26T15:59:59Z", true, "2026-10-26T15:59:59Z"),
            (BERLIN_WEEKDAYS, "2026-10-26T16:00:00Z", false, "2026-10-27T08:00:00Z"),
            // Fall back: 02:30-02:45 happens twice; only the first (CEST) counts.
            (BERLIN_FOLD, "2026-10-25T00:29:59Z", false, "2026-10-25T00:30:00Z"),
            (BERLIN_FOLD, "2026-10-25T00:30:00Z", true, "2026-10-25T00:30:00Z"),
            (BERLIN_FOLD, "2026-10-25T00:45:00Z", false, "2026-11-01T01:30:00Z"),
            (BERLIN_FOLD, "2026-10-25T01:35:00Z", false, "2026-11-01T01:30:00Z"),
            // A whole local Sunday, 23 hours long on the spring-forward day.
            (BERLIN_SUNDAY, "2026-03-28T22:59:59Z", false, "2026-03-28T23:00:00Z"),
            (BERLIN_SUNDAY, "2026-03-28T23:00:00Z", true, "2026-03-28T23:00:00Z"),
            (BERLIN_SUNDAY, "2026-03-29T21:59:59Z", true, "2026-03-29T21:59:59Z"),
            (BERLIN_SUNDAY, "2026-03-29T22:00:00Z", false, "2026-04-04T22:00:00Z"),
            // New York spring forward: 01:00 EST to 03:00 EDT is one hour.
            (NY_SPRING, "2026-03-08T05:59:59Z", false, "2026-03-08T06:00:00Z"),
            (NY_SPRING, "2026-03-08T06:59:59Z", true, "2026-03-08T06:59:59Z"),
            (NY_SPRING, "2026-03-08T07:00:00Z", false, "2026-03-15T05:00:00Z"),
            // END inside the gap: closes when the clock jumps to 03:00.
            (NY_GAP_END, "2026-03-08T06:59:59Z", true, "2026-03-08T06:59:59Z"),
            (NY_GAP_END, "2026-03-08T07:00:00Z", false, "2026-03-15T05:00:00Z"),
            // New York fall back: opens at the first 01:30 (EDT); 02:00 exists only in EST.
            (NY_FALL, "2026-11-01T05:29:59Z", false, "2026-11-01T05:30:00Z"),
            (NY_FALL, "2026-11-01T05:30:00Z", true, "2026-11-01T05:30:00Z"),
            (NY_FALL, "2026-11-01T06:59:59Z", true, "2026-11-01T06:59:59Z"),
            (NY_FALL, "2026-11-01T07:00:00Z", false, "2026-11-08T06:30:00Z"),
            // Every night across midnight, seen after midnight (the window began yesterday).
            (NY_NIGHTLY, "2026-07-01T05:00:00Z", true, "2026-07-01T05:00:00Z"),
            (NY_NIGHTLY, "2026-07-01T06:00:00Z", false, "2026-07-02T02:00:00Z"),
            (NY_NIGHTLY, "2026-07-02T02:00:00Z", true, "2026-07-02T02:00:00Z"),
            (NY_NIGHTLY, "2026-11-01T05:59:59Z", true, "2026-11-01T05:59:59Z"),
            (NY_NIGHTLY, "2026-11-01T06:30:00Z", true, "2026-11-01T06:30:00Z"),
            (NY_NIGHTLY, "2026-11-01T07:00:00Z", false, "2026-11-02T03:00:00Z"),
            // Friday night belongs to Friday: open on Saturday morning, not on Friday morning.
            (FRIDAY_NIGHT, "2026-03-27T01:00:00Z", false, "2026-03-27T22:00:00Z"),
            (FRIDAY_NIGHT, "2026-03-27T21:59:59Z", false, "2026-03-27T22:00:00Z"),
            (FRIDAY_NIGHT, "2026-03-28T01:00:00Z", true, "2026-03-28T01:00:00Z"),
            (FRIDAY_NIGHT, "2026-03-28T02:00:00Z", false, "2026-04-03T22:00:00Z"),
            // Fri-Mon wraps the week; Monday's night ends on Tuesday morning.
            (WEEKEND_NIGHTS, "2026-03-29T03:00:00Z", true, "2026-03-29T03:00:00Z"),
            (WEEKEND_NIGHTS, "2026-03-30T20:00:00Z", true, "2026-03-30T20:00:00Z"),
            (WEEKEND_NIGHTS, "2026-03-31T05:59:59Z", true, "2026-03-31T05:59:59Z"),
            (WEEKEND_NIGHTS, "2026-03-31T06:00:00Z", false, "2026-04-03T20:00:00Z"),
            (WEEKEND_NIGHTS, "2026-04-01T12:00:00Z", false, "2026-04-03T20:00:00Z"),
            (WEEKEND_NIGHTS, "2026-04-02T21:00:00Z", false, "2026-04-03T20:00:00Z"),
            // Several windows in three zones: the earliest opening wins.
            (SEVERAL, "2026-04-01T00:00:00Z", false, "2026-04-01T12:30:00Z"),
            (SEVERAL, "2026-04-01T13:00:00Z", true, "2026-04-01T13:00:00Z"),
            (SEVERAL, "2026-04-01T13:30:00Z", false, "2026-04-02T12:30:00Z"),
            (SEVERAL, "2026-04-03T13:30:00Z", false, "2026-04-04T10:00:00Z"),
            (SEVERAL, "2026-04-05T12:00:00Z", false, "2026-04-06T12:30:00Z"),
            (SEVERAL, "2026-04-07T13:30:00Z", false, "2026-04-07T18:00:00Z"),
            (SEVERAL, "2026-04-07T18:30:00Z", true, "2026-04-07T18:30:00Z"),
            // A half-hour zone; Thursday is not in Mon-Wed,Fri.
            (KOLKATA, "2026-03-30T02:29:59Z", false, "2026-03-30T02:30:00Z"),
            (KOLKATA, "2026-03-30T02:30:00Z", true, "2026-03-30T02:30:00Z"),
            (KOLKATA, "2026-03-30T04:00:00Z", false, "2026-03-31T02:30:00Z"),
            (KOLKATA, "2026-04-01T04:00:00Z", false, "2026-04-03T02:30:00Z"),
            (KOLKATA, "2026-04-02T03:00:00Z", false, "2026-04-03T02:30:00Z"),
            // Monday in Auckland is still Sunday in UTC.
            (AUCKLAND_MONDAY, "2026-07-05T19:59:59Z", false, "2026-07-05T20:00:00Z"),
            (AUCKLAND_MONDAY, "2026-07-05T20:30:00Z", true, "2026-07-05T20:30:00Z"),
            (AUCKLAND_MONDAY, "2026-07-06T20:30:00Z", false, "2026-07-12T20:00:00Z"),
            (AUCKLAND_MONDAY, "2026-03-29T19:30:00Z", true, "2026-03-29T19:30:00Z"),
            // Both ends in Auckland's spring-forward gap (02:00→03:00): no window that Sunday.
            (AUCKLAND_SWALLOWED, "2026-09-26T13:00:00Z", false, "2026-10-03T13:15:00Z"),
            (AUCKLAND_SWALLOWED, "2026-09-26T14:00:00Z", false, "2026-10-03T13:15:00Z"),
            // 24:00 ends at midnight, exclusive.
            (SATURDAY_EVENING, "2026-03-28T18:00:00Z", true, "2026-03-28T18:00:00Z"),
            (SATURDAY_EVENING, "2026-03-28T23:59:59Z", true, "2026-03-28T23:59:59Z"),
            (SATURDAY_EVENING, "2026-03-29T00:00:00Z", false, "2026-04-04T18:00:00Z"),
            // Seconds.
            (SECONDS, "2026-05-05T10:00:29Z", false, "2026-05-05T10:00:30Z"),
            (SECONDS, "2026-05-05T10:00:30Z", true, "2026-05-05T10:00:30Z"),
            (SECONDS, "2026-05-05T10:00:44Z", true, "2026-05-05T10:00:44Z"),
            (SECONDS, "2026-05-05T10:00:45Z", false, "2026-05-06T10:00:30Z"),
            // Always open, even inside the gap and the fold.
            (ALWAYS, "2026-03-29T01:30:00Z", true, "2026-03-29T01:30:00Z"),
            (ALWAYS, "2026-10-25T01:30:00Z", true, "2026-10-25T01:30:00Z"),
        ];
        for &(value, at, open, next) in rows {
            let windows: Windows = value.parse().unwrap();
            let at_ts: Timestamp = at.parse().unwrap();
            let next_ts: Timestamp = next.parse().unwrap();
            assert_eq!(windows.is_open(at_ts), open, "is_open({at}) for {value:?}");
            assert_eq!(
                windows.next_open(at_ts),
                Some(next_ts),
                "next_open({at}) for {value:?}"
            );
        }
    }
}
