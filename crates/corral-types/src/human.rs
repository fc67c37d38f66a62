//! Human-readable sizes (`512M`, `2G`, `1.5T`, `4096`) and durations (`90s`, `1m`, `1h30m`,
//! `500ms`). Both accept a plain integer in TOML/JSON too (bytes, seconds), and serialise
//! back to the short human form when that form is exact.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseHumanError {
    #[error("{0:?} is not a size; write a number with an optional unit K, M, G or T (binary: 1K = 1024 bytes), e.g. 512M or 2G")]
    Size(String),
    #[error("{0:?} is not a duration; write numbers with units ms, s, m, h or d, e.g. 90s, 1m or 1h30m")]
    Duration(String),
    #[error("{0:?} is not a percentage; write a number followed by %, e.g. 10%")]
    Percent(String),
}

/// A size in bytes. Units are binary (K = 1024), as in QEMU and qemu-img.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

const UNITS: [(char, u32); 5] = [('K', 10), ('M', 20), ('G', 30), ('T', 40), ('P', 50)];

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
    pub fn mib(self) -> u64 {
        self.0 >> 20
    }
}

impl FromStr for ByteSize {
    type Err = ParseHumanError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseHumanError::Size(s.to_string());
        let t = s.trim();
        let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
        let t = t.strip_suffix(['i']).unwrap_or(t); // accept "GiB"
        let (num, shift) = match t.chars().last() {
            Some(c) if c.is_ascii_alphabetic() => {
                let up = c.to_ascii_uppercase();
                let shift = UNITS.iter().find(|(u, _)| *u == up).ok_or_else(err)?.1;
                (&t[..t.len() - 1], shift)
            }
            _ => (t, 0),
        };
        let num = num.trim();
        if num.is_empty() || num.starts_with(['-', '+']) {
            return Err(err());
        }
        if let Ok(n) = num.parse::<u64>() {
            return n.checked_mul(1u64 << shift).map(ByteSize).ok_or_else(err);
        }
        let f: f64 = num.parse().map_err(|_| err())?;
        let v = f * (1u64 << shift) as f64;
        if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
            return Err(err());
        }
        Ok(ByteSize(v.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for &(u, shift) in UNITS.iter().rev() {
            let unit = 1u64 << shift;
            if b >= unit && b.is_multiple_of(unit) {
                return write!(f, "{}{}", b / unit, u);
            }
        }
        write!(f, "{b}")
    }
}

impl ByteSize {
    /// Rounded form for tables: `1.5G`, `512M`, `300K`.
    pub fn approx(self) -> String {
        let b = self.0 as f64;
        for &(u, shift) in UNITS.iter().rev() {
            let unit = (1u64 << shift) as f64;
            if b >= unit {
                let v = b / unit;
                return if v >= 10.0 || v.fract() < 0.05 {
                    format!("{:.0}{}", v, u)
                } else {
                    format!("{:.1}{}", v, u)
                };
            }
        }
        format!("{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"512M\" or \"2G\", or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("{v} is not a size: it is negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written for people: `90s`, `1m`, `1h30m`, `250ms`, or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl From<HumanDuration> for Duration {
    fn from(h: HumanDuration) -> Duration {
        h.0
    }
}

impl FromStr for HumanDuration {
    type Err = ParseHumanError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseHumanError::Duration(s.to_string());
        let t = s.trim();
        if t.is_empty() {
            return Err(err());
        }
        if let Ok(secs) = t.parse::<u64>() {
            return Ok(HumanDuration(Duration::from_secs(secs)));
        }
        let mut total = Duration::ZERO;
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
            if digits == 0 {
                return Err(err());
            }
            let n: f64 = rest[..digits].parse().map_err(|_| err())?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let secs = match &rest[..unit_len] {
                "ms" => 0.001,
                "s" | "sec" | "secs" => 1.0,
                "m" | "min" | "mins" => 60.0,
                "h" | "hr" | "hours" => 3600.0,
                "d" | "days" => 86400.0,
                _ => return Err(err()),
            };
            rest = &rest[unit_len..];
            total += Duration::try_from_secs_f64(n * secs).map_err(|_| err())?;
        }
        Ok(HumanDuration(total))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_millis() != 0 || d.as_secs() == 0 {
            return write!(f, "{}ms", d.as_millis());
        }
        let mut s = d.as_secs();
        let mut out = String::new();
        for (unit, len) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
            if s >= len {
                out.push_str(&format!("{}{}", s / len, unit));
                s %= len;
            }
        }
        f.write_str(&out)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"90s\" or \"1m\", or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                Ok(HumanDuration(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                u64::try_from(v)
                    .map(|v| HumanDuration(Duration::from_secs(v)))
                    .map_err(|_| E::custom(format!("{v} is not a duration: it is negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A percentage written `10%` (or a plain number, taken as percent). Used for ratios in the
/// host config, such as `disk.consolidate_ratio`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Percent(pub f64);

impl FromStr for Percent {
    type Err = ParseHumanError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let n = t.strip_suffix('%').unwrap_or(t).trim();
        match n.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(Percent(v)),
            _ => Err(ParseHumanError::Percent(s.to_string())),
        }
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Percent;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a percentage such as \"10%\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Percent, E> {
                Ok(Percent(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Percent, E> {
                format!("{v}").parse().map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Percent, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let p = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(p("512M"), Ok(512 << 20));
        assert_eq!(p("2G"), Ok(2 << 30));
        assert_eq!(p("2g"), Ok(2 << 30));
        assert_eq!(p("2GiB"), Ok(2 << 30));
        assert_eq!(p("1.5G"), Ok(3 << 29));
        assert_eq!(p("4096"), Ok(4096));
        assert_eq!(p("64K"), Ok(65536));
        for bad in ["", "G", "-1G", "12X", "1..5G", "lots", "99999999999999999999T"] {
            assert!(p(bad).is_err(), "{bad:?} should fail");
        }
        assert_eq!(ByteSize(512 << 20).to_string(), "512M");
        assert_eq!(ByteSize(3 << 29).to_string(), "1536M");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        assert_eq!(ByteSize(3 << 29).approx(), "1.5G");
    }

    #[test]
    fn durations() {
        let p = |s: &str| s.parse::<HumanDuration>().map(|d| d.0);
        assert_eq!(p("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(p("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(p("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(p("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(p("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(p("60"), Ok(Duration::from_secs(60)));
        for bad in ["", "s", "5x", "-5s", "1m5", "m5"] {
            assert!(p(bad).is_err(), "{bad:?} should fail");
        }
        assert_eq!(HumanDuration(Duration::from_secs(5400)).to_string(), "1h30m");
        assert_eq!(HumanDuration(Duration::from_millis(1500)).to_string(), "1500ms");
    }

    #[test]
    fn percents() {
        let p = |s: &str| s.parse::<Percent>().map(|v| v.0);
        assert_eq!(p("10%"), Ok(10.0));
        assert_eq!(p("2.5 %"), Ok(2.5));
        assert_eq!(p("40"), Ok(40.0));
        for bad in ["", "%", "-1%", "ten%", "NaN%", "inf"] {
            assert!(p(bad).is_err(), "{bad:?} should fail");
        }
        assert_eq!(Percent(10.0).to_string(), "10%");
    }

    #[test]
    fn serde_forms() {
        #[derive(Deserialize)]
        struct T {
            a: ByteSize,
            b: ByteSize,
            c: HumanDuration,
        }
        let t: T = toml::from_str("a = \"1G\"\nb = 4096\nc = \"2m\"").unwrap();
        assert_eq!((t.a.0, t.b.0, t.c.0.as_secs()), (1 << 30, 4096, 120));
        let e = toml::from_str::<T>("a = \"1Q\"\nb = 1\nc = 1")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("line 1") && e.contains("not a size"), "{e}");
    }
}
