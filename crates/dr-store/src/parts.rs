//! How large the parts of a multipart upload may be, per backend, and the one part size dr
//! picks within those limits.

const MIB: u64 = 1024 * 1024;

/// A backend's multipart limits, and how dr plans within them. Get a store's with
/// [`crate::ObjectStore::part_limits`].
///
/// ```
/// let limits = dr_store::PartLimits::S3;
/// let part = limits.part_size_for(100 << 30, None); // a 100 GiB database
/// assert!(part * limits.max_parts >= 2 * (100 << 30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartLimits {
    /// The smallest non-final part the backend accepts.
    pub min_part: u64,
    /// The largest part the backend accepts.
    pub max_part: u64,
    /// The most parts one upload may have.
    pub max_parts: u64,
    /// dr plans for this many parts, fewer than `max_parts`, so an estimate that is off
    /// still fits.
    pub planned_parts: u64,
    /// The smallest part size dr picks by itself (larger than `min_part`: fewer requests).
    pub preferred_min_part: u64,
}

impl PartLimits {
    /// S3 and the services compatible with it (R2, MinIO, SeaweedFS): parts of 5 MiB to
    /// 5 GiB, at most 10,000 of them. dr plans for 9,000 parts of at least 8 MiB.
    pub const S3: PartLimits = PartLimits {
        min_part: 5 * MIB,
        max_part: 5 * 1024 * MIB,
        max_parts: 10_000,
        planned_parts: 9_000,
        preferred_min_part: 8 * MIB,
    };

    /// The one part size of an upload: large enough that `planned_parts` parts hold twice
    /// the database size (a dump can outgrow the on-disk size when TOAST compression is
    /// undone), rounded to MiB. R2 needs all non-trailing parts equal, so it is fixed up
    /// front. `configured_mib` (`backup.part_size_mib`) wins, kept within the limits.
    pub fn part_size_for(&self, database_bytes: u64, configured_mib: Option<u64>) -> u64 {
        if let Some(m) = configured_mib {
            return m
                .saturating_mul(MIB)
                .clamp(self.min_part.div_ceil(MIB) * MIB, self.max_part);
        }
        let needed = database_bytes.saturating_mul(2) / self.planned_parts;
        let rounded = needed.div_ceil(MIB).saturating_mul(MIB);
        rounded.clamp(self.preferred_min_part, self.max_part)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_covers_the_database_in_10000_parts() {
        let s3 = PartLimits::S3;
        assert_eq!(s3.part_size_for(0, None), 8 * MIB);
        assert_eq!(s3.part_size_for(1024 * MIB, None), 8 * MIB);
        let tb = 1024 * 1024 * MIB;
        let p = s3.part_size_for(tb, None);
        assert!(p * 10_000 >= 2 * tb && p.is_multiple_of(MIB), "{p}");
        assert_eq!(s3.part_size_for(u64::MAX, None), 5 * 1024 * MIB);
        assert_eq!(s3.part_size_for(0, Some(16)), 16 * MIB);
    }

    #[test]
    fn a_configured_part_size_stays_within_the_limits() {
        let s3 = PartLimits::S3;
        assert_eq!(s3.part_size_for(0, Some(1)), 5 * MIB);
        assert_eq!(s3.part_size_for(0, Some(0)), 5 * MIB);
        assert_eq!(s3.part_size_for(0, Some(1 << 20)), 5 * 1024 * MIB);
        assert_eq!(s3.part_size_for(0, Some(u64::MAX)), 5 * 1024 * MIB);
    }
}
