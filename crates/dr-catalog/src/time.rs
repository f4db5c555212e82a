//! The one timestamp format of dr's JSON: RFC 3339 in UTC with `Z`
//! (`2026-11-22T03:00:00Z`, fractional seconds only when there are any).

use chrono::{DateTime, SecondsFormat, Utc};

/// `2026-11-22T03:00:00Z`.
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// `#[serde(with = "crate::time::rfc3339")]` for a `DateTime<Utc>` field.
pub mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    #[test]
    fn utc_with_z() {
        let t = chrono::Utc
            .with_ymd_and_hms(2026, 11, 22, 3, 0, 0)
            .single()
            .expect("time");
        assert_eq!(super::format(t), "2026-11-22T03:00:00Z");
    }
}
