//! The one timestamp format of dr's JSON output: RFC 3339 in UTC with `Z`
//! (`2026-11-22T03:00:00Z`, fractional seconds only when there are any).

pub use dr_catalog::time::{format, rfc3339};

/// A duration as a log field: seconds rounded to the millisecond (`2.272`, never
/// `2.2716973449999998`).
pub fn seconds(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn logged_durations_have_at_most_three_decimals() {
        let d = std::time::Duration::from_nanos(2_271_697_345);
        assert_eq!(super::seconds(d).to_string(), "2.272");
        assert_eq!(super::seconds(std::time::Duration::ZERO).to_string(), "0");
    }
}
