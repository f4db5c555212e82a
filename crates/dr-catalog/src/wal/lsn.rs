//! A WAL position, written by PostgreSQL as `X/Y` (two hex numbers, high and low 32 bits).

use std::fmt;
use std::str::FromStr;

/// A position in the write-ahead log (`pg_lsn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid WAL position `{text}`: expected two hex numbers as X/Y, e.g. 0/16B3748")]
pub struct LsnError {
    pub text: String,
}

impl FromStr for Lsn {
    type Err = LsnError;

    fn from_str(text: &str) -> Result<Lsn, LsnError> {
        let err = || LsnError {
            text: text.to_string(),
        };
        let (hi, lo) = text.trim().split_once('/').ok_or_else(err)?;
        let part = |s: &str| {
            if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            u32::from_str_radix(s, 16).map_err(|_| err())
        };
        Ok(Lsn((u64::from(part(hi)?) << 32) | u64::from(part(lo)?)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_like_postgres() {
        for (text, value) in [
            ("0/0", 0u64),
            ("0/FFFFFFFF", 0xFFFF_FFFF),
            ("A/42000028", 0xA_4200_0028),
            ("FFFFFFFF/FFFFFFFF", u64::MAX),
            ("0/16B3748", 0x16B_3748),
        ] {
            let lsn: Lsn = text.parse().expect("valid");
            assert_eq!(lsn, Lsn(value));
            assert_eq!(lsn.to_string(), text);
        }
        assert_eq!(
            "a/42000028".parse::<Lsn>().expect("valid").to_string(),
            "A/42000028"
        );
    }

    #[test]
    fn refuses_what_is_not_a_position() {
        for bad in [
            "",
            "0",
            "/0",
            "0/",
            "1/2/3",
            "G/0",
            "0/123456789",
            "-1/0",
            "0x1/0",
        ] {
            let e = bad.parse::<Lsn>().expect_err("must fail");
            assert!(e.to_string().contains("X/Y"), "{bad}: {e}");
        }
    }

    #[test]
    fn round_trips_through_json() {
        let lsn = Lsn(0xA_4200_0028);
        let json = serde_json::to_string(&lsn).expect("valid");
        assert_eq!(json, "\"A/42000028\"");
        assert_eq!(serde_json::from_str::<Lsn>(&json).expect("valid"), lsn);
        assert!(serde_json::from_str::<Lsn>("\"nope\"").is_err());
    }
}
