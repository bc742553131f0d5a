//! When a game day runs: a cron [`Schedule`] in a time zone (croner, chrono-tz), and the
//! allowed [`Window`] it may run in.

use std::fmt;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed cron schedule and its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The expression as written.
    pub expr: String,
    cron: Cron,
    /// The time zone the expression is read in.
    pub tz: Tz,
    /// Does the expression have a seconds field (6 fields)? Kubernetes cannot express that.
    pub has_seconds: bool,
}

/// Parses an IANA time zone name; `None` is UTC.
pub fn parse_tz(name: Option<&str>) -> Result<Tz, String> {
    match name {
        None => Ok(Tz::UTC),
        Some(n) => n.parse::<Tz>().map_err(|_| {
            format!("unknown time zone {n:?}: expected an IANA name like Europe/Berlin or UTC")
        }),
    }
}

impl Schedule {
    /// Parses `expr` (5 fields, 6 with leading seconds, or an `@` nickname) in time zone `tz`
    /// (IANA name; `None` is UTC).
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Self, String> {
        let tz = parse_tz(tz)?;
        let trimmed = expr.trim();
        let fields = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "cron expression {expr:?} has {fields} fields: expected 5 (minute hour \
                 day-of-month month day-of-week) or 6 (a leading seconds field)"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(trimmed)
            .map_err(|e| format!("invalid cron expression {expr:?}: {e}"))?;
        Ok(Self {
            expr: trimmed.to_string(),
            cron,
            tz,
            has_seconds: !trimmed.starts_with('@') && fields == 6,
        })
    }

    /// The first occurrence strictly after `t`; `None` if there is none (an impossible date
    /// like 30 February).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // croner keeps the start's fraction of a second; occurrences are whole seconds.
        let t0 = t.with_nanosecond(0).unwrap_or(t);
        // croner searches in local wall time: in a repeated hour (daylight saving ends) it may
        // answer with the earlier instant of an ambiguous time. Only instants after `t` count.
        let mut from = t0;
        for _ in 0..4 {
            let next = self
                .cron
                .find_next_occurrence(&from.with_timezone(&self.tz), false)
                .ok()?
                .with_timezone(&Utc);
            if next > t {
                return Some(next);
            }
            // The same wall time's later instant (the second pass through the hour)?
            let local = next.with_timezone(&self.tz).naive_local();
            if let Some(later) = self.tz.from_local_datetime(&local).latest()
                && later.with_timezone(&Utc) > t
            {
                return Some(later.with_timezone(&Utc));
            }
            // Past the repeated period (an hour at most in practice), then search again.
            from = from.max(next) + chrono::Duration::hours(1);
        }
        None
    }

    /// The next `n` occurrences after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    /// Is the expression something Kubernetes' CronJob parser reads too: 5 fields or a
    /// nickname, no croner extensions (`L`, `W`, `#`)? The reason when not.
    pub fn kubernetes_compatible(&self) -> Result<(), String> {
        if self.has_seconds {
            return Err(format!(
                "cron expression {:?} has a seconds field, which a Kubernetes CronJob cannot \
                 express (its schedules have minute precision): use 5 fields, or run it with \
                 `rattle schedule` instead",
                self.expr
            ));
        }
        if let Some(nick) = self.expr.strip_prefix('@') {
            let known = [
                "yearly", "annually", "monthly", "weekly", "daily", "midnight", "hourly",
            ];
            if !known.contains(&nick.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "cron nickname {:?} is not one Kubernetes knows ({})",
                    self.expr,
                    known.map(|k| format!("@{k}")).join(", ")
                ));
            }
            return Ok(());
        }
        let upper = self.expr.to_ascii_uppercase();
        // Kubernetes reads day-of-week 0-6 only (croner also takes 7 for Sunday).
        if let Some(dow) = upper.split_whitespace().nth(4)
            && dow
                .split([',', '-', '/'])
                .any(|part| part.parse::<u32>().is_ok_and(|n| n > 6))
        {
            return Err(format!(
                "day-of-week field {dow:?} uses 7, which a Kubernetes CronJob does not accept: \
                 write Sunday as 0 or SUN"
            ));
        }
        // Month and day names contain no L, W or # except ...: check per field, ignoring names.
        for field in upper.split_whitespace() {
            let stripped: String = field
                .split([',', '-', '/'])
                .filter(|part| !is_name(part))
                .collect();
            if stripped.contains(['L', 'W', '#']) {
                return Err(format!(
                    "cron field {field:?} uses a croner extension (L, W or #) that a Kubernetes \
                     CronJob does not understand"
                ));
            }
        }
        Ok(())
    }
}

fn is_name(part: &str) -> bool {
    const NAMES: [&str; 19] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC", "MON",
        "TUE", "WED", "THU", "FRI", "SAT", "SUN",
    ];
    NAMES.contains(&part)
}

/// The allowed window: days of the week and a time of day range, in a time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Open on these days (index 0 = Monday).
    pub days: [bool; 7],
    /// Opening, minutes after midnight.
    pub from: u32,
    /// Closing, minutes after midnight; below `from` when the window runs past midnight.
    pub to: u32,
    /// The time zone.
    pub tz: Tz,
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn parse_day(s: &str) -> Result<usize, String> {
    let l = s.trim().to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|d| l == *d || (l.len() > 3 && l.starts_with(d) && full_day(d) == l))
        .ok_or_else(|| format!("unknown day {s:?}: expected mon, tue, wed, thu, fri, sat or sun"))
}

fn full_day(short: &str) -> String {
    match short {
        "mon" => "monday",
        "tue" => "tuesday",
        "wed" => "wednesday",
        "thu" => "thursday",
        "fri" => "friday",
        "sat" => "saturday",
        _ => "sunday",
    }
    .to_string()
}

/// Parses day items: `mon`, `Monday`, `mon-fri` (a range may wrap: `fri-mon`).
pub fn parse_days(items: &[String]) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    for item in items {
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse_day(a)?, parse_day(b)?);
                let mut d = a;
                loop {
                    days[d] = true;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days[parse_day(item)?] = true,
        }
    }
    if !days.iter().any(|d| *d) {
        return Err("no day given".into());
    }
    Ok(days)
}

/// Parses `HH:MM` (24-hour) into minutes after midnight.
pub fn parse_hhmm(s: &str) -> Result<u32, String> {
    let bad = || format!("invalid time {s:?}: expected HH:MM, like 09:30 or 16:00");
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl Window {
    /// Is the window open at `t`?
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        let local = t.with_timezone(&self.tz);
        let minute = local.hour() * 60 + local.minute();
        let wd = local.weekday().num_days_from_monday() as usize;
        if self.from < self.to {
            self.days[wd] && (self.from..self.to).contains(&minute)
        } else {
            let prev = (wd + 6) % 7;
            (self.days[wd] && minute >= self.from) || (self.days[prev] && minute < self.to)
        }
    }

    /// When the window next opens at or after `t` (`t` itself if open); searched minute by
    /// minute over the next eight days.
    pub fn next_open(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.contains(t) {
            return Some(t);
        }
        let start = t.with_second(0)?.with_nanosecond(0)?;
        (1..=8 * 24 * 60)
            .map(|i| start + chrono::Duration::minutes(i))
            .find(|c| self.contains(*c))
    }

    /// When the window closes after `t`, if it is open at `t`.
    pub fn closes_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !self.contains(t) {
            return None;
        }
        let start = t.with_second(0)?.with_nanosecond(0)?;
        (1..=8 * 24 * 60)
            .map(|i| start + chrono::Duration::minutes(i))
            .find(|c| !self.contains(*c))
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days: Vec<&str> = DAY_NAMES
            .iter()
            .zip(self.days)
            .filter(|(_, on)| *on)
            .map(|(d, _)| *d)
            .collect();
        let days = if days.len() == 7 {
            "every day".to_string()
        } else if self.days == [true, true, true, true, true, false, false] {
            "mon-fri".to_string()
        } else {
            days.join(",")
        };
        write!(
            f,
            "{days} {:02}:{:02}-{:02}:{:02} {}",
            self.from / 60,
            self.from % 60,
            self.to / 60,
            self.to % 60,
            self.tz.name()
        )
    }
}

/// `2026-11-25 10:00:00 CET` in a zone, for people.
pub fn local(t: DateTime<Utc>, tz: Tz) -> String {
    tz.from_utc_datetime(&t.naive_utc())
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn five_and_six_fields() {
        let s = Schedule::parse("0 10 * * MON-FRI", Some("Europe/Berlin")).unwrap();
        assert!(!s.has_seconds);
        // Wed 2026-11-25 09:30 UTC = 10:30 CET: next is Thu 10:00 CET = 09:00 UTC.
        assert_eq!(
            s.next_after(utc("2026-11-25T09:30:00Z")),
            Some(utc("2026-11-26T09:00:00Z"))
        );
        let s = Schedule::parse("*/2 * * * * *", None).unwrap();
        assert!(s.has_seconds);
        assert_eq!(
            s.upcoming(utc("2026-11-25T00:00:00Z"), 2),
            vec![utc("2026-11-25T00:00:02Z"), utc("2026-11-25T00:00:04Z")]
        );
        assert!(s.kubernetes_compatible().is_err());
        assert!(
            Schedule::parse("@daily", None)
                .unwrap()
                .kubernetes_compatible()
                .is_ok()
        );
        assert!(
            Schedule::parse("0 10 L * *", None)
                .unwrap()
                .kubernetes_compatible()
                .is_err()
        );
        assert!(
            Schedule::parse("0 3 * * 5-7", None)
                .unwrap()
                .kubernetes_compatible()
                .is_err()
        );
        assert!(
            Schedule::parse("*/7 * * * 1", None)
                .unwrap()
                .kubernetes_compatible()
                .is_ok()
        );
        assert!(
            Schedule::parse("0 10 * JUL-DEC SAT", None)
                .unwrap()
                .kubernetes_compatible()
                .is_ok()
        );
    }

    #[test]
    fn bad_schedules_are_refused() {
        for bad in ["", "* * *", "61 * * * *", "* * * * * * * *", "0 10 * * XYZ"] {
            assert!(Schedule::parse(bad, None).is_err(), "{bad:?}");
        }
        assert!(Schedule::parse("0 10 * * *", Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn dst_is_followed() {
        // 10:00 Berlin is 09:00 UTC in winter and 08:00 UTC in summer.
        let s = Schedule::parse("0 10 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            s.next_after(utc("2026-03-28T12:00:00Z")),
            Some(utc("2026-03-29T08:00:00Z"))
        );
    }

    #[test]
    fn the_repeated_hour_never_yields_a_past_instant() {
        // Berlin, 2026-10-25: 02:00-03:00 happens twice (00:00-01:00 UTC in CEST, 01:00-02:00
        // UTC in CET). From 02:10 of the second pass, 02:30 is 01:30 UTC, not 00:30 UTC.
        let s = Schedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            s.next_after(utc("2026-10-25T01:10:00Z")),
            Some(utc("2026-10-25T01:30:00Z"))
        );
        for start in [
            "2026-10-25T00:10:00Z",
            "2026-10-25T00:45:00Z",
            "2026-10-25T01:45:00Z",
        ] {
            let t = utc(start);
            let n = s.next_after(t).unwrap();
            assert!(n > t, "{start}: {n}");
        }
    }

    #[test]
    fn windows() {
        let w = Window {
            days: parse_days(&["mon-fri".into()]).unwrap(),
            from: parse_hhmm("10:00").unwrap(),
            to: parse_hhmm("16:00").unwrap(),
            tz: Tz::UTC,
        };
        assert_eq!(w.to_string(), "mon-fri 10:00-16:00 UTC");
        // 2026-11-25 is a Wednesday.
        assert!(w.contains(utc("2026-11-25T10:00:00Z")));
        assert!(w.contains(utc("2026-11-25T15:59:59Z")));
        assert!(!w.contains(utc("2026-11-25T16:00:00Z")));
        assert!(!w.contains(utc("2026-11-28T12:00:00Z"))); // Saturday
        assert_eq!(
            w.next_open(utc("2026-11-27T17:00:00Z")),
            Some(utc("2026-11-30T10:00:00Z"))
        );
        assert_eq!(
            w.closes_after(utc("2026-11-25T12:34:56Z")),
            Some(utc("2026-11-25T16:00:00Z"))
        );
        let night = Window {
            days: parse_days(&["fri".into()]).unwrap(),
            from: parse_hhmm("22:00").unwrap(),
            to: parse_hhmm("02:00").unwrap(),
            tz: Tz::UTC,
        };
        assert!(night.contains(utc("2026-11-27T23:00:00Z")));
        assert!(night.contains(utc("2026-11-28T01:59:00Z")));
        assert!(!night.contains(utc("2026-11-28T23:00:00Z")));
        assert!(parse_days(&["funday".into()]).is_err());
        assert_eq!(
            parse_days(&["Saturday".into(), "sun".into()]).unwrap()[5..],
            [true, true]
        );
        assert_eq!(
            parse_days(&["sat-mon".into()]).unwrap(),
            [true, false, false, false, false, true, true]
        );
        for bad in ["24:00", "9", "10:5", "aa:bb", "10:60"] {
            assert!(parse_hhmm(bad).is_err(), "{bad}");
        }
    }
}
