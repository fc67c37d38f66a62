//! Calendar grammar and `next_after`, with explicit time zones (POSIX TZ strings, so the
//! results do not depend on the machine's zone or its tz database).

use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::*;

fn utc() -> TimeZone {
    TimeZone::UTC
}
/// Central Europe: CET, CEST from the last Sunday of March 02:00 to the last Sunday of
/// October 03:00 (2025: 30 March, 26 October).
fn berlin() -> TimeZone {
    TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap()
}
/// US Eastern: 2025-03-09 02:00 → 03:00, 2025-11-02 02:00 → 01:00.
fn new_york() -> TimeZone {
    TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").unwrap()
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn next(expr: &str, after: &str, tz: &TimeZone) -> String {
    let cal = Calendar::parse(expr).unwrap();
    cal.next_after(ts(after), tz).unwrap().to_string()
}

fn series(expr: &str, after: &str, tz: &TimeZone, n: usize) -> Vec<String> {
    Calendar::parse(expr)
        .unwrap()
        .upcoming(ts(after), tz, n)
        .iter()
        .map(|t| t.to_string())
        .collect()
}

#[test]
fn forms_parse_to_their_normalised_text() {
    let cases = [
        ("daily 02:00", "02:00"),
        ("daily", "00:00"),
        ("2:5", "02:05"),
        ("hourly", "*:00"),
        ("hourly :15", "*:15"),
        ("*:0/15", "*:00,15,30,45"),
        ("*/6:30", "00,06,12,18:30"),
        ("8..18:00", "08..18:00"),
        ("9,12,17:00", "09,12,17:00"),
        ("mon..fri 22:30", "mon..fri 22:30"),
        ("Sat,Sun 03:00", "sat,sun 03:00"),
        ("mon,wed..fri 01:00", "mon,wed..fri 01:00"),
        ("fri..mon 04:00", "mon,fri..sun 04:00"),
        ("mon..sun 01:00", "01:00"),
        ("sat", "sat 00:00"),
        ("weekly", "mon 00:00"),
        ("weekly sun 03:15", "sun 03:15"),
        ("weekly 03:15", "mon 03:15"),
        ("monthly", "monthly 1 00:00"),
        ("monthly 15 04:00", "monthly 15 04:00"),
        ("monthly 05:00", "monthly 1 05:00"),
        ("  daily   02:00  ", "02:00"),
        ("*:*", "*:*"),
    ];
    for (expr, norm) in cases {
        let c = Calendar::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        assert_eq!(c.to_string(), norm, "{expr}");
        // The normal form parses to the same calendar.
        assert_eq!(Calendar::parse(norm).unwrap(), c, "{norm}");
    }
}

#[test]
fn errors_say_what_is_wrong() {
    let cases = [
        (
            "mon..fir 22:30",
            "`mon..fir 22:30`: unknown day `fir`; days are mon tue wed thu fri sat sun",
        ),
        ("", "the calendar is empty"),
        ("dialy 02:00", "`dialy` is neither a day"),
        ("daily 25:00", "hour 25 is out of range 0-23"),
        ("daily 02:60", "minute 60 is out of range 0-59"),
        ("daily 02:00:00", "has seconds"),
        ("daily 2am", "not a time"),
        ("daily 02:00 03:00", "unexpected `03:00`"),
        ("mon.. 02:00", "needs a first and a last day"),
        ("mon,,tue 02:00", "empty day"),
        ("weekly mon,tue 02:00", "takes one day"),
        ("monthly 31", "use 1-28"),
        ("monthly first", "a number 1-28"),
        ("hourly 15", "`hourly :15`"),
        ("*:0/0", "step 0"),
        ("18..8:00", "runs backwards"),
        ("x:00", "`x` is not a number"),
        ("02:", "the minute is missing"),
    ];
    for (expr, want) in cases {
        let e = Calendar::parse(expr).unwrap_err().to_string();
        assert!(e.contains(want), "{expr:?}: {e}");
    }
}

#[test]
fn next_after_in_utc() {
    let z = utc();
    // Strictly after: at the due time itself, the next one is a day later.
    assert_eq!(next("daily 02:00", "2025-06-02T01:59:59Z", &z), "2025-06-02T02:00:00Z");
    assert_eq!(next("daily 02:00", "2025-06-02T02:00:00Z", &z), "2025-06-03T02:00:00Z");
    assert_eq!(
        next("daily 02:00", "2025-06-02T02:00:00.001Z", &z),
        "2025-06-03T02:00:00Z"
    );
    // 2025-06-06 is a Friday.
    assert_eq!(
        next("mon..fri 22:30", "2025-06-06T23:00:00Z", &z),
        "2025-06-09T22:30:00Z"
    );
    assert_eq!(
        next("mon..fri 22:30", "2025-06-06T22:00:00Z", &z),
        "2025-06-06T22:30:00Z"
    );
    assert_eq!(
        next("sat,sun 03:00", "2025-06-02T00:00:00Z", &z),
        "2025-06-07T03:00:00Z"
    );
    assert_eq!(
        next("fri..mon 04:00", "2025-06-09T05:00:00Z", &z),
        "2025-06-13T04:00:00Z"
    );
    assert_eq!(
        series("*:0/15", "2025-06-02T10:07:00Z", &z, 3),
        ["2025-06-02T10:15:00Z", "2025-06-02T10:30:00Z", "2025-06-02T10:45:00Z"]
    );
    assert_eq!(next("hourly", "2025-06-02T10:00:00Z", &z), "2025-06-02T11:00:00Z");
    assert_eq!(next("hourly :15", "2025-06-02T10:20:00Z", &z), "2025-06-02T11:15:00Z");
    assert_eq!(next("weekly", "2025-06-02T00:00:00Z", &z), "2025-06-09T00:00:00Z");
    assert_eq!(
        next("weekly sun 03:15", "2025-06-02T00:00:00Z", &z),
        "2025-06-08T03:15:00Z"
    );
    assert_eq!(next("8..18:00", "2025-06-02T18:00:00Z", &z), "2025-06-03T08:00:00Z");
}

#[test]
fn month_and_year_boundaries() {
    let z = utc();
    assert_eq!(next("daily 00:00", "2025-12-31T23:59:30Z", &z), "2026-01-01T00:00:00Z");
    assert_eq!(next("monthly", "2025-12-01T00:00:00Z", &z), "2026-01-01T00:00:00Z");
    assert_eq!(
        series("monthly 28 04:00", "2025-01-29T00:00:00Z", &z, 3),
        ["2025-02-28T04:00:00Z", "2025-03-28T04:00:00Z", "2025-04-28T04:00:00Z"]
    );
    // Leap day: an ordinary day for daily schedules.
    assert_eq!(
        series("daily 12:00", "2028-02-28T13:00:00Z", &z, 2),
        ["2028-02-29T12:00:00Z", "2028-03-01T12:00:00Z"]
    );
    // 2025-12-31 is a Wednesday; the next Monday is in 2026.
    assert_eq!(next("mon 06:00", "2025-12-31T00:00:00Z", &z), "2026-01-05T06:00:00Z");
}

#[test]
fn local_time_follows_the_zone() {
    // 22:30 in Berlin is 20:30Z in summer and 21:30Z in winter.
    assert_eq!(
        next("mon..fri 22:30", "2025-06-02T00:00:00Z", &berlin()),
        "2025-06-02T20:30:00Z"
    );
    assert_eq!(
        next("mon..fri 22:30", "2025-01-06T00:00:00Z", &berlin()),
        "2025-01-06T21:30:00Z"
    );
    // The day is the local day: Monday 00:30 in Berlin is still Sunday in UTC.
    assert_eq!(
        next("mon 00:30", "2025-06-01T12:00:00Z", &berlin()),
        "2025-06-01T22:30:00Z"
    );
}

#[test]
fn spring_forward_runs_a_skipped_time_later_once() {
    let z = berlin();
    // 2025-03-30: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist and runs at 03:30 CEST.
    assert_eq!(
        series("daily 02:30", "2025-03-29T12:00:00Z", &z, 3),
        [
            "2025-03-30T01:30:00Z", // 03:30 CEST
            "2025-03-31T00:30:00Z", // 02:30 CEST
            "2025-04-01T00:30:00Z",
        ]
    );
    // Times around the gap are unaffected.
    assert_eq!(next("daily 01:30", "2025-03-29T12:00:00Z", &z), "2025-03-30T00:30:00Z");
    assert_eq!(next("daily 03:30", "2025-03-29T12:00:00Z", &z), "2025-03-30T01:30:00Z");
    // Every 15 minutes: 01:45 CET, then 03:00 CEST, no duplicates of the skipped hour.
    assert_eq!(
        series("*:0/15", "2025-03-30T00:30:00Z", &z, 4),
        [
            "2025-03-30T00:45:00Z",
            "2025-03-30T01:00:00Z",
            "2025-03-30T01:15:00Z",
            "2025-03-30T01:30:00Z"
        ]
    );
    let ny = new_york();
    // 2025-03-09 02:15 EST does not exist: 03:15 EDT.
    assert_eq!(next("daily 02:15", "2025-03-08T12:00:00Z", &ny), "2025-03-09T07:15:00Z");
}

#[test]
fn fall_back_runs_fixed_times_once_and_hourly_in_both_passes() {
    let z = berlin();
    // 2025-10-26: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
    assert_eq!(
        series("daily 02:30", "2025-10-25T12:00:00Z", &z, 2),
        ["2025-10-26T00:30:00Z", "2025-10-27T01:30:00Z"],
        "once, at the first 02:30"
    );
    assert_eq!(
        series("*:30", "2025-10-25T23:45:00Z", &z, 3),
        [
            "2025-10-26T00:30:00Z", // 02:30 CEST
            "2025-10-26T01:30:00Z", // 02:30 CET
            "2025-10-26T02:30:00Z", // 03:30 CET
        ],
        "hourly keeps its hour"
    );
    let ny = new_york();
    // 2025-11-02: 01:30 happens twice (EDT, then EST).
    assert_eq!(next("daily 01:30", "2025-11-01T12:00:00Z", &ny), "2025-11-02T05:30:00Z");
    assert_eq!(next("daily 01:30", "2025-11-02T05:30:00Z", &ny), "2025-11-03T06:30:00Z");
}

#[test]
fn a_year_of_hourly_and_daily_runs_across_both_changes() {
    let z = berlin();
    let start = ts("2025-01-01T00:00:00Z");
    let end = ts("2026-01-01T00:00:00Z");
    // Hourly: every run exactly an hour after the one before, all year.
    let hourly = Calendar::parse("hourly").unwrap();
    let mut t = start;
    let mut n = 0;
    loop {
        let next = hourly.next_after(t, &z).unwrap();
        if next >= end {
            break;
        }
        if n > 0 {
            assert_eq!(next.as_second() - t.as_second(), 3600, "after {t}");
        }
        t = next;
        n += 1;
    }
    assert_eq!(n, 365 * 24 - 1, "every hour of the year after its first instant");
    // Daily at 02:30: one run per local day, 365 in all.
    let daily = Calendar::parse("daily 02:30").unwrap();
    let runs = daily.upcoming(start, &z, 400);
    let in_year: Vec<_> = runs.iter().filter(|r| **r < end).collect();
    assert_eq!(in_year.len(), 365);
    let mut days: Vec<_> = in_year.iter().map(|r| r.to_zoned(z.clone()).date()).collect();
    days.dedup();
    assert_eq!(days.len(), 365);
}

#[test]
fn the_system_tz_database_agrees_when_present() {
    // Only where the machine has the IANA database; the POSIX rules above are the contract.
    let Ok(real) = TimeZone::get("Europe/Berlin") else {
        return;
    };
    for (expr, after) in [
        ("daily 02:30", "2025-03-29T12:00:00Z"),
        ("daily 02:30", "2025-10-25T12:00:00Z"),
        ("*:30", "2025-10-26T00:30:00Z"),
    ] {
        assert_eq!(
            next(expr, after, &real),
            next(expr, after, &berlin()),
            "{expr} after {after}"
        );
    }
}
