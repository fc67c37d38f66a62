//! VM names. The rule keeps names safe to use as path components: 1-63 characters of
//! `[A-Za-z0-9._-]`, not starting with `.` or `-` (so no `..`, no `/`, no option-lookalikes).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty; use 1-63 characters of A-Z a-z 0-9 . _ -")]
    Empty,
    #[error("name {0:?} is {1} characters long; the limit is 63")]
    TooLong(String, usize),
    #[error("name {0:?} starts with {1:?}; start it with a letter, digit or _")]
    BadStart(String, char),
    #[error("name {0:?} contains {1:?}; use only A-Z a-z 0-9 . _ -")]
    BadChar(String, char),
}

/// A validated VM name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmName(String);

impl VmName {
    pub fn new(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        let n = s.chars().count();
        if n > 63 {
            return Err(NameError::TooLong(s.to_string(), n));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c))) {
            return Err(NameError::BadChar(s.to_string(), c));
        }
        let first = s.chars().next().expect("non-empty");
        if first == '.' || first == '-' {
            return Err(NameError::BadStart(s.to_string(), first));
        }
        Ok(VmName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for VmName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VmName::new(s)
    }
}

impl AsRef<str> for VmName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for VmName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for VmName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        VmName::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_names() {
        for n in ["a", "web1", "lab-pc.07", "_x", "A_b-c.d", &"x".repeat(63)] {
            assert!(VmName::new(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(VmName::new(""), Err(NameError::Empty));
        assert!(matches!(VmName::new(&"x".repeat(64)), Err(NameError::TooLong(_, 64))));
        assert!(matches!(VmName::new(".hidden"), Err(NameError::BadStart(_, '.'))));
        assert!(matches!(VmName::new("-rf"), Err(NameError::BadStart(_, '-'))));
        assert!(matches!(VmName::new("../etc"), Err(NameError::BadChar(_, '/'))));
        assert!(matches!(VmName::new("a b"), Err(NameError::BadChar(_, ' '))));
        assert!(matches!(VmName::new("é"), Err(NameError::BadChar(_, 'é'))));
        assert!(matches!(VmName::new(".."), Err(NameError::BadStart(_, '.'))));
    }
}
