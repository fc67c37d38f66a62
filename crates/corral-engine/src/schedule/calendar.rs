//! Calendar expressions: when a schedule is due. Our own small grammar (docs/schedules.md):
//!
//! ```text
//! expr    = "hourly" [":" MIN]
//!         | "daily" [TIME]
//!         | "weekly" [DAY] [TIME]
//!         | "monthly" [1-28] [TIME]
//!         | [DAYS] TIME                      e.g. "02:00", "mon..fri 22:30", "*:0/15"
//! DAYS    = DAYITEM ("," DAYITEM)*           DAYITEM = DAY | DAY ".." DAY (may wrap: fri..mon)
//! DAY     = mon | tue | wed | thu | fri | sat | sun
//! TIME    = HOUR ":" MIN                     a missing TIME is 00:00
//! HOUR    = FIELD over 0-23, MIN = FIELD over 0-59
//! FIELD   = ITEM ("," ITEM)*                 ITEM = "*" | N | N ".." M | N "/" STEP | "*/" STEP
//! ```
//!
//! Times are wall-clock times in the host's time zone. [`Calendar::next_after`] is pure: it
//! takes the instant and the zone, so tests pin both. Across daylight-saving changes:
//! a time the clock skips (spring forward) runs as much later as the jump (02:30 → 03:30);
//! a time the clock shows twice (fall back) runs once, at the first, except for schedules
//! that run every hour, which also run in the repeated hour.

use std::fmt;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const ALL_DAYS: u8 = 0x7f;
const ALL_HOURS: u32 = (1 << 24) - 1;
const ALL_MINUTES: u64 = (1 << 60) - 1;
/// Folds and gaps of real time zones are at most a few hours: candidates this far around
/// an instant's wall-clock time are enough to find its true successor.
const SLACK: SignedDuration = SignedDuration::from_hours(3);
/// A calendar that matches nothing for this long matches nothing at all.
const HORIZON_DAYS: i32 = 366 * 8;

/// A parsed calendar expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    /// Bit 0 is Monday.
    days: u8,
    /// `monthly`: this day of each month (then `days` is all).
    month_day: Option<i8>,
    hours: u32,
    minutes: u64,
}

/// A calendar expression that does not parse: the expression and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{expr}`: {problem}")]
pub struct CalendarError {
    pub expr: String,
    pub problem: String,
}

type Parsed<T> = Result<T, String>;

fn day_index(word: &str) -> Parsed<u8> {
    DAYS.iter()
        .position(|d| *d == word)
        .map(|i| i as u8)
        .ok_or_else(|| format!("unknown day `{word}`; days are {}", DAYS.join(" ")))
}

fn parse_days(text: &str) -> Parsed<u8> {
    let mut mask = 0u8;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("empty day in `{text}`; separate days with single commas"));
        }
        match item.split_once("..") {
            Some((a, b)) => {
                if a.is_empty() || b.is_empty() {
                    return Err(format!(
                        "day range `{item}` needs a first and a last day, e.g. mon..fri"
                    ));
                }
                let (a, b) = (day_index(a)?, day_index(b)?);
                let mut d = a;
                loop {
                    mask |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => mask |= 1 << day_index(item)?,
        }
    }
    Ok(mask)
}

fn number(text: &str, what: &str, max: u32) -> Parsed<u32> {
    let n: u32 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number (the {what} field takes 0-{max}, `*`, lists, a..b, a/step)"))?;
    if n > max {
        return Err(format!("{what} {n} is out of range 0-{max}"));
    }
    Ok(n)
}

/// One time field (`*`, `5`, `8..18`, `0/15`, `*/2`, comma lists) as a bit set.
fn parse_field(text: &str, what: &str, max: u32) -> Parsed<u64> {
    if text.is_empty() {
        return Err(format!("the {what} is missing; write HH:MM, e.g. 02:00"));
    }
    let mut mask = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("empty item in the {what} field `{text}`"));
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step = number(s, "step", max)?;
                if step == 0 {
                    return Err(format!("step 0 in `{item}`; use 1 or more"));
                }
                (r, step)
            }
            None => (item, 0),
        };
        let (lo, hi) = if range == "*" {
            (0, max)
        } else if let Some((a, b)) = range.split_once("..") {
            let (a, b) = (number(a, what, max)?, number(b, what, max)?);
            if a > b {
                return Err(format!("{what} range `{range}` runs backwards; write {b}..{a}"));
            }
            (a, b)
        } else {
            let a = number(range, what, max)?;
            // `5/15`: from 5 every 15 to the end; a plain `5` is just 5.
            (a, if step > 0 { max } else { a })
        };
        let step = step.max(1);
        let mut v = lo;
        while v <= hi {
            mask |= 1 << v;
            v += step;
        }
    }
    Ok(mask)
}

fn parse_time(text: &str) -> Parsed<(u32, u64)> {
    let parts: Vec<&str> = text.split(':').collect();
    match parts.as_slice() {
        [h, m] => Ok((parse_field(h, "hour", 23)? as u32, parse_field(m, "minute", 59)?)),
        [_, _, _] => Err(format!(
            "`{text}` has seconds; write HH:MM (schedules run to the minute)"
        )),
        _ => Err(format!("`{text}` is not a time; write HH:MM, e.g. 02:00 or *:0/15")),
    }
}

fn looks_like_time(word: &str) -> bool {
    word.contains(':')
}

impl Calendar {
    pub fn parse(expr: &str) -> Result<Calendar, CalendarError> {
        Calendar::parse_inner(expr).map_err(|problem| CalendarError {
            expr: expr.trim().to_string(),
            problem,
        })
    }

    fn parse_inner(expr: &str) -> Parsed<Calendar> {
        let lower = expr.to_lowercase();
        let words: Vec<&str> = lower.split_whitespace().collect();
        let midnight = (1u32, 1u64);
        let at = |w: Option<&&str>| -> Parsed<(u32, u64)> { w.map(|w| parse_time(w)).unwrap_or(Ok(midnight)) };
        let too_many = |rest: &[&str], form: &str| -> Parsed<()> {
            match rest.first() {
                None => Ok(()),
                Some(w) => Err(format!("unexpected `{w}`; the form is `{form}`")),
            }
        };
        let Some(first) = words.first() else {
            return Err("the calendar is empty; write e.g. `daily 02:00` or `mon..fri 22:30`".into());
        };
        let mut cal = Calendar {
            days: ALL_DAYS,
            month_day: None,
            hours: 1,
            minutes: 1,
        };
        match *first {
            "hourly" => {
                cal.hours = ALL_HOURS;
                if let Some(w) = words.get(1) {
                    let m = w
                        .strip_prefix(':')
                        .ok_or_else(|| format!("`hourly {w}`: give the minute as `:MM`, e.g. `hourly :15`"))?;
                    cal.minutes = parse_field(m, "minute", 59)?;
                }
                too_many(words.get(2..).unwrap_or(&[]), "hourly :MM")?;
            }
            "daily" => {
                (cal.hours, cal.minutes) = at(words.get(1))?;
                too_many(words.get(2..).unwrap_or(&[]), "daily HH:MM")?;
            }
            "weekly" => {
                let mut i = 1;
                cal.days = 1;
                if let Some(w) = words.get(1).filter(|w| !looks_like_time(w)) {
                    if w.contains(',') || w.contains("..") {
                        return Err(format!(
                            "`weekly` takes one day, not `{w}`; for several write `{w} HH:MM`"
                        ));
                    }
                    cal.days = 1 << day_index(w)?;
                    i = 2;
                }
                (cal.hours, cal.minutes) = at(words.get(i))?;
                too_many(words.get(i + 1..).unwrap_or(&[]), "weekly DAY HH:MM")?;
            }
            "monthly" => {
                let mut i = 1;
                cal.month_day = Some(1);
                if let Some(w) = words.get(1).filter(|w| !looks_like_time(w)) {
                    let d: u32 = w
                        .parse()
                        .map_err(|_| format!("`monthly {w}`: the day of the month is a number 1-28"))?;
                    if !(1..=28).contains(&d) {
                        return Err(format!(
                            "day {d} of the month: use 1-28 (every month has those days, so it never skips a month)"
                        ));
                    }
                    cal.month_day = Some(d as i8);
                    i = 2;
                }
                (cal.hours, cal.minutes) = at(words.get(i))?;
                too_many(words.get(i + 1..).unwrap_or(&[]), "monthly DAY HH:MM")?;
            }
            w if looks_like_time(w) => {
                (cal.hours, cal.minutes) = parse_time(w)?;
                too_many(&words[1..], "[DAYS] HH:MM")?;
            }
            w => {
                let is_days = w.contains(',') || w.contains("..") || DAYS.contains(&w);
                if !is_days {
                    return Err(format!(
                        "`{w}` is neither a day ({}) nor one of hourly, daily, weekly, monthly",
                        DAYS.join(" ")
                    ));
                }
                cal.days = parse_days(w)?;
                (cal.hours, cal.minutes) = at(words.get(1))?;
                too_many(words.get(2..).unwrap_or(&[]), "DAYS HH:MM")?;
            }
        }
        Ok(cal)
    }

    fn day_matches(&self, d: Date) -> bool {
        match self.month_day {
            Some(md) => d.day() == md,
            None => self.days & (1 << d.weekday().to_monday_zero_offset()) != 0,
        }
    }

    /// The first minute of the day at or after `from` (hour, minute), if any.
    fn first_time_from(&self, h0: u32, m0: u32) -> Option<(u32, u32)> {
        (h0..24).filter(|h| self.hours & (1 << h) != 0).find_map(|h| {
            let from = if h == h0 { m0 } else { 0 };
            (from..60).find(|m| self.minutes & (1 << m) != 0).map(|m| (h, m))
        })
    }

    /// The first wall-clock minute at or after `from` that the calendar matches.
    fn next_civil(&self, from: DateTime) -> Option<DateTime> {
        // Round up to a whole minute.
        let mut start = from.time();
        let mut date = from.date();
        if start.second() != 0 || start.subsec_nanosecond() != 0 {
            match from.checked_add(SignedDuration::from_secs(60)) {
                Ok(dt) => {
                    date = dt.date();
                    start = Time::new(dt.hour(), dt.minute(), 0, 0).ok()?;
                }
                Err(_) => return None,
            }
        }
        let (mut h0, mut m0) = (start.hour() as u32, start.minute() as u32);
        for _ in 0..HORIZON_DAYS {
            if self.day_matches(date) {
                if let Some((h, m)) = self.first_time_from(h0, m0) {
                    return Some(date.at(h as i8, m as i8, 0, 0));
                }
            }
            date = date.tomorrow().ok()?;
            (h0, m0) = (0, 0);
        }
        None
    }

    /// The instants a wall-clock time stands for in `tz`: none skipped (a gap moves it later
    /// by the gap), both passes of a repeated hour only for schedules that run every hour.
    fn instants(&self, dt: DateTime, tz: &TimeZone) -> Vec<Timestamp> {
        let ts = |o: jiff::tz::Offset| o.to_timestamp(dt).ok();
        match tz.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Unambiguous { offset } => ts(offset).into_iter().collect(),
            AmbiguousOffset::Gap { before, .. } => ts(before).into_iter().collect(),
            AmbiguousOffset::Fold { before, after } => {
                let mut v: Vec<Timestamp> = ts(before).into_iter().collect();
                if self.hours == ALL_HOURS {
                    v.extend(ts(after));
                }
                v
            }
        }
    }

    /// The first time strictly after `t` at which the calendar is due, in time zone `tz`.
    /// `None` only for calendars that match nothing within years (cannot be written).
    pub fn next_after(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = t.to_zoned(tz.clone()).datetime();
        let mut cursor = local.checked_sub(SLACK).ok()?;
        let mut best: Option<Timestamp> = None;
        while let Some(dt) = self.next_civil(cursor) {
            if let Some(b) = best {
                let limit = b.to_zoned(tz.clone()).datetime().checked_add(SLACK).ok()?;
                if dt > limit {
                    break;
                }
            }
            for i in self.instants(dt, tz) {
                if i > t && best.is_none_or(|b| i < b) {
                    best = Some(i);
                }
            }
            cursor = dt.checked_add(SignedDuration::from_secs(60)).ok()?;
        }
        best
    }

    /// The next `n` due times after `t`.
    pub fn upcoming(&self, t: Timestamp, tz: &TimeZone, n: usize) -> Vec<Timestamp> {
        let mut out = Vec::with_capacity(n);
        let mut t = t;
        while out.len() < n {
            match self.next_after(t, tz) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }
}

/// `0,15,30,45` / `08..18` / `*`: a bit set as the grammar writes it.
fn field_text(mask: u64, max: u32) -> String {
    let all = if max == 59 { ALL_MINUTES } else { ALL_HOURS as u64 };
    if mask == all {
        return "*".into();
    }
    let vals: Vec<u32> = (0..=max).filter(|v| mask & (1 << v) != 0).collect();
    let mut parts = vec![];
    let mut i = 0;
    while i < vals.len() {
        let mut j = i;
        while j + 1 < vals.len() && vals[j + 1] == vals[j] + 1 {
            j += 1;
        }
        if j >= i + 2 {
            parts.push(format!("{:02}..{:02}", vals[i], vals[j]));
        } else {
            for v in &vals[i..=j] {
                parts.push(format!("{v:02}"));
            }
        }
        i = j + 1;
    }
    parts.join(",")
}

/// The normalised form: `mon..fri 22:30`, `*:00,15,30,45`, `monthly 1 00:00`.
impl fmt::Display for Calendar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = self.month_day {
            write!(f, "monthly {d} ")?;
        } else if self.days != ALL_DAYS {
            let mut parts = vec![];
            let mut i = 0;
            while i < 7 {
                if self.days & (1 << i) == 0 {
                    i += 1;
                    continue;
                }
                let mut j = i;
                while j + 1 < 7 && self.days & (1 << (j + 1)) != 0 {
                    j += 1;
                }
                match j - i {
                    0 => parts.push(DAYS[i].to_string()),
                    1 => parts.push(format!("{},{}", DAYS[i], DAYS[j])),
                    _ => parts.push(format!("{}..{}", DAYS[i], DAYS[j])),
                }
                i = j + 1;
            }
            write!(f, "{} ", parts.join(","))?;
        }
        write!(
            f,
            "{}:{}",
            field_text(self.hours as u64, 23),
            field_text(self.minutes, 59)
        )
    }
}

#[cfg(test)]
#[path = "calendar_tests.rs"]
mod tests;
