//! [`DateTime`]: a CAP date-time, always with an explicit UTC offset.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use chrono::{FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codes::CapVersion;
use crate::error::ValueError;

/// A CAP date-time: `2002-05-24T16:49:00-07:00`.
///
/// CAP 1.2 allows exactly `YYYY-MM-DDThh:mm:ss` followed by a `±hh:mm` offset: no fractional
/// seconds, no `Z`; the specification asks for UTC to be written `-00:00`, and its schema
/// pattern (`[-,+]\d\d:\d\d`) also admits `+00:00`, so both are read. Zero offsets are always
/// written `-00:00`. CAP 1.0 and 1.1 use `xs:dateTime`, so documents of those versions may
/// carry fractional seconds (kept, and reported by 1.2 validation); CAP 1.0 may also use `Z`.
///
/// Equality, ordering and hashing compare instants: `12:00:00-00:00` equals
/// `14:00:00+02:00`.
#[derive(Debug, Clone, Copy)]
pub struct DateTime(chrono::DateTime<FixedOffset>);

/// How strictly [`DateTime::parse_for`] reads the text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lexical {
    pub(crate) fraction: bool,
    pub(crate) zulu: bool,
}

impl Lexical {
    pub(crate) const fn for_version(version: CapVersion) -> Self {
        match version {
            CapVersion::V1_0 => Lexical {
                fraction: true,
                zulu: true,
            },
            CapVersion::V1_1 => Lexical {
                fraction: true,
                zulu: false,
            },
            CapVersion::V1_2 => Lexical {
                fraction: false,
                zulu: false,
            },
        }
    }
}

impl DateTime {
    /// Wraps a chrono date-time.
    pub const fn new(value: chrono::DateTime<FixedOffset>) -> Self {
        DateTime(value)
    }

    /// The chrono date-time, with the offset it was written with.
    pub const fn as_chrono(&self) -> chrono::DateTime<FixedOffset> {
        self.0
    }

    /// The instant in UTC.
    pub fn to_utc(&self) -> chrono::DateTime<Utc> {
        self.0.with_timezone(&Utc)
    }

    /// Whether the value has fractional seconds (not allowed in CAP 1.2).
    pub fn has_fraction(&self) -> bool {
        self.0.nanosecond() != 0
    }

    /// The same instant without fractional seconds.
    pub fn truncate_fraction(&self) -> DateTime {
        DateTime(self.0.with_nanosecond(0).unwrap_or(self.0))
    }

    /// Reads the text with the lexical rules of `version` (see the type docs).
    pub fn parse_for(text: &str, version: CapVersion) -> Result<DateTime, ValueError> {
        parse(text, Lexical::for_version(version))
    }
}

impl FromStr for DateTime {
    type Err = ValueError;

    /// Reads the strict CAP 1.2 form.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s, Lexical::for_version(CapVersion::V1_2))
    }
}

impl From<chrono::DateTime<FixedOffset>> for DateTime {
    fn from(value: chrono::DateTime<FixedOffset>) -> Self {
        DateTime(value)
    }
}

impl From<chrono::DateTime<Utc>> for DateTime {
    fn from(value: chrono::DateTime<Utc>) -> Self {
        DateTime(value.fixed_offset())
    }
}

impl PartialEq for DateTime {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for DateTime {}

impl PartialOrd for DateTime {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for DateTime {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

impl Hash for DateTime {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.timestamp().hash(state);
        self.0.timestamp_subsec_nanos().hash(state);
    }
}

impl fmt::Display for DateTime {
    /// `YYYY-MM-DDThh:mm:ss[.fff]±hh:mm`, with `-00:00` for UTC.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use chrono::Datelike;
        let d = &self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            d.year(),
            d.month(),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        )?;
        let nanos = d.nanosecond() % 1_000_000_000;
        if nanos != 0 {
            let digits = format!("{nanos:09}");
            write!(f, ".{}", digits.trim_end_matches('0'))?;
        }
        let offset = d.offset().local_minus_utc();
        let sign = if offset > 0 { '+' } else { '-' };
        let abs = offset.unsigned_abs();
        write!(f, "{sign}{:02}:{:02}", abs / 3600, (abs % 3600) / 60)
    }
}

impl Serialize for DateTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DateTime {
    /// JSON input is read leniently: fractional seconds (reported by 1.2 validation) and `Z`
    /// (normalised to `-00:00`) are accepted.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(
            &text,
            Lexical {
                fraction: true,
                zulu: true,
            },
        )
        .map_err(serde::de::Error::custom)
    }
}

pub(crate) fn parse(text: &str, rules: Lexical) -> Result<DateTime, ValueError> {
    let err = |reason: &'static str| ValueError::DateTime {
        value: text.to_owned(),
        reason,
    };
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        part.iter().try_fold(0u32, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let shape_ok = b.len() >= 19
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':';
    let fields = (
        digits(0..4),
        digits(5..7),
        digits(8..10),
        digits(11..13),
        digits(14..16),
        digits(17..19),
    );
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = fields
    else {
        return Err(err(
            "expected the form YYYY-MM-DDThh:mm:ss followed by an offset",
        ));
    };
    if !shape_ok {
        return Err(err(
            "expected the form YYYY-MM-DDThh:mm:ss followed by an offset",
        ));
    }
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let len = frac.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return Err(err("a '.' must be followed by digits"));
        }
        if !rules.fraction {
            return Err(err("fractional seconds are not allowed in CAP 1.2"));
        }
        for (i, c) in frac.bytes().take(len.min(9)).enumerate() {
            nanos += u32::from(c - b'0') * 10u32.pow(8 - i as u32);
        }
        rest = &frac[len..];
    }
    let offset_secs = match rest.as_bytes() {
        [] => return Err(err("the UTC offset is missing (write -00:00 for UTC)")),
        [b'Z'] if rules.zulu => 0,
        [b'Z'] => {
            return Err(err(
                "the 'Z' time zone designator is not allowed; write -00:00 for UTC",
            ));
        }
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) =>
        {
            let hours = i32::from(h1 - b'0') * 10 + i32::from(h2 - b'0');
            let minutes = i32::from(m1 - b'0') * 10 + i32::from(m2 - b'0');
            if hours > 14 || minutes > 59 || (hours == 14 && minutes != 0) {
                return Err(err("the UTC offset is out of range (-14:00 to +14:00)"));
            }
            let secs = hours * 3600 + minutes * 60;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return Err(err("expected a ±hh:mm UTC offset after the time")),
    };
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)
        .ok_or_else(|| err("no such calendar date"))?;
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)
        .filter(|_| second < 60)
        .ok_or_else(|| err("no such time of day"))?;
    let offset = FixedOffset::east_opt(offset_secs)
        .ok_or_else(|| err("the UTC offset is out of range (-14:00 to +14:00)"))?;
    let local = NaiveDateTime::new(date, time);
    let value = offset
        .from_local_datetime(&local)
        .single()
        .ok_or_else(|| err("no such instant"))?;
    Ok(DateTime(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(s: &str) -> DateTime {
        s.parse().unwrap()
    }

    #[test]
    fn reads_and_writes_the_cap_form() {
        assert_eq!(
            dt("2003-06-17T14:57:00-07:00").to_string(),
            "2003-06-17T14:57:00-07:00"
        );
        assert_eq!(
            dt("2003-06-17T14:57:00+05:30").to_string(),
            "2003-06-17T14:57:00+05:30"
        );
    }

    #[test]
    fn utc_is_written_minus_zero() {
        assert_eq!(
            dt("2003-06-17T14:57:00+00:00").to_string(),
            "2003-06-17T14:57:00-00:00"
        );
        assert_eq!(
            dt("2003-06-17T14:57:00-00:00").to_string(),
            "2003-06-17T14:57:00-00:00"
        );
    }

    #[test]
    fn compares_instants() {
        assert_eq!(
            dt("2003-06-17T12:00:00-00:00"),
            dt("2003-06-17T14:00:00+02:00")
        );
        assert!(dt("2003-06-17T12:00:00-00:00") < dt("2003-06-17T12:00:01-00:00"));
    }

    #[test]
    fn cap12_rejects_z_fractions_and_missing_offsets() {
        let reason = |s: &str| match s.parse::<DateTime>().unwrap_err() {
            ValueError::DateTime { reason, .. } => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reason("2003-06-17T14:57:00Z"),
            "the 'Z' time zone designator is not allowed; write -00:00 for UTC"
        );
        assert_eq!(
            reason("2003-06-17T14:57:00.5-07:00"),
            "fractional seconds are not allowed in CAP 1.2"
        );
        assert_eq!(
            reason("2003-06-17T14:57:00"),
            "the UTC offset is missing (write -00:00 for UTC)"
        );
        assert_eq!(
            reason("2003-06-17 14:57:00-07:00"),
            "expected the form YYYY-MM-DDThh:mm:ss followed by an offset"
        );
        assert_eq!(reason("2003-02-30T14:57:00-07:00"), "no such calendar date");
        assert_eq!(reason("2003-02-03T24:57:00-07:00"), "no such time of day");
        assert_eq!(
            reason("2003-02-03T14:57:00+15:00"),
            "the UTC offset is out of range (-14:00 to +14:00)"
        );
        assert_eq!(
            reason("2003-02-03T14:57:00-0700"),
            "expected a ±hh:mm UTC offset after the time"
        );
    }

    #[test]
    fn older_versions_allow_fractions_and_cap10_allows_z() {
        let v = DateTime::parse_for("2003-06-17T14:57:00.25-07:00", CapVersion::V1_1).unwrap();
        assert!(v.has_fraction());
        assert_eq!(v.to_string(), "2003-06-17T14:57:00.25-07:00");
        assert_eq!(
            v.truncate_fraction().to_string(),
            "2003-06-17T14:57:00-07:00"
        );
        assert!(DateTime::parse_for("2003-06-17T14:57:00Z", CapVersion::V1_1).is_err());
        let z = DateTime::parse_for("2003-06-17T14:57:00Z", CapVersion::V1_0).unwrap();
        assert_eq!(z.to_string(), "2003-06-17T14:57:00-00:00");
    }

    #[test]
    fn never_panics_on_odd_text() {
        for s in [
            "",
            "2003",
            "2003-06-17T14:57:00-07:0",
            "2003-06-17T14:57:00.-07:00",
            "é003-06-17T14:57:00-07:00",
            "2003-06-17T14:57:00.1234567890123-07:00",
        ] {
            let _ = s.parse::<DateTime>();
            let _ = DateTime::parse_for(s, CapVersion::V1_0);
        }
    }

    #[test]
    fn json_is_the_cap_string() {
        let v = dt("2003-06-17T14:57:00-07:00");
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            "\"2003-06-17T14:57:00-07:00\""
        );
        let back: DateTime = serde_json::from_str("\"2003-06-17T21:57:00Z\"").unwrap();
        assert_eq!(back, v);
    }
}
