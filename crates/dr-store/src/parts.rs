//! How large the parts of a multipart upload may be, per backend, and the one part size dr
//! picks within those limits: for a stream of any length ([`PartLimits::stream_plan`]: a
//! fixed part size, the stream cut into objects of bounded size) or for one object of a
//! known estimated size ([`PartLimits::part_size_for`]).

const MIB: u64 = 1024 * 1024;

/// The largest object one CopyObject request copies (S3's limit). `dr undelete` copies an
/// original version back with it, so no object of a stream is larger.
pub const MAX_COPY_BYTES: u64 = 5 * 1024 * MIB;

/// Parts of one stream held in memory at once, at most: those the upload has in flight (2)
/// and one more, either being filled by the encoder or waiting in its channel for room in
/// the upload (`dr_stream::encode_into_parts`, `MultipartUpload::ready`) — see
/// [`StreamPlan::buffered_bytes`].
pub const PARTS_BUFFERED_PER_STREAM: u64 = 3;

/// The part size of a stream of unknown length (a dump's section, a base backup's tar),
/// unless `backup.part_size_mib` sets one: three such parts per stream (see
/// [`PARTS_BUFFERED_PER_STREAM`]) keep one stream's peak RSS under 64 MiB — with 8 MiB parts
/// it measured 65.1 MiB on one machine — and an object of 5 GiB is 853 of them, under the
/// 1,000 parts some providers allow. Smaller than [`PartLimits::preferred_min_part`], which
/// sizes one object of known size (a WAL segment is one PUT up to 8 MiB stored).
pub const STREAM_PART: u64 = 6 * MIB;

/// How one stream of unknown length is stored: parts of `part_size`, at most
/// `parts_per_object` of them in one object; a longer stream continues in the next object.
/// Nothing here depends on the stream's length: memory is the same at any database size.
///
/// ```
/// let plan = dr_store::PartLimits::S3.with_max_parts(1000).stream_plan(None);
/// assert_eq!(plan.part_size, 6 << 20);
/// assert!(plan.object_bytes() <= dr_store::MAX_COPY_BYTES);
/// assert_eq!(plan.objects_for(1 << 40), (1u64 << 40).div_ceil(plan.object_bytes()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPlan {
    /// Every part but an object's last one has exactly this size (R2 requires it).
    pub part_size: u64,
    /// Parts of one object: within the store's `max_parts`, and few enough that an object
    /// stays within [`MAX_COPY_BYTES`].
    pub parts_per_object: u64,
}

impl StreamPlan {
    /// The size of every object of a stream but its last.
    pub fn object_bytes(&self) -> u64 {
        self.part_size.saturating_mul(self.parts_per_object)
    }

    /// How many objects a stream of `stream_bytes` is stored as (an empty stream: one).
    pub fn objects_for(&self, stream_bytes: u64) -> u64 {
        stream_bytes.div_ceil(self.object_bytes()).max(1)
    }

    /// The most stored bytes one stream holds in memory: [`PARTS_BUFFERED_PER_STREAM`]
    /// parts.
    pub fn buffered_bytes(&self) -> u64 {
        self.part_size.saturating_mul(PARTS_BUFFERED_PER_STREAM)
    }
}

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

    /// These limits with the most parts per upload a provider allows (`[repository.s3]
    /// max_parts`, 1..=10,000): dr plans for 90 % of them.
    pub fn with_max_parts(self, max_parts: u64) -> PartLimits {
        let max_parts = max_parts.clamp(1, PartLimits::S3.max_parts);
        PartLimits {
            max_parts,
            planned_parts: (max_parts * 9 / 10).max(1),
            ..self
        }
    }

    /// How a stream of unknown length (a `pg_dump` section) is stored: parts of
    /// [`STREAM_PART`] (or `configured_mib`, `backup.part_size_mib`, within the limits),
    /// cut into objects of at most `max_parts` parts and at most [`MAX_COPY_BYTES`]. The
    /// database's size plays no part: memory per stream is the same at 1 GB and at 1 TB.
    pub fn stream_plan(&self, configured_mib: Option<u64>) -> StreamPlan {
        let part_size = match configured_mib {
            Some(m) => m
                .saturating_mul(MIB)
                .clamp(self.min_part.div_ceil(MIB) * MIB, self.max_part),
            None => STREAM_PART.clamp(self.min_part, self.max_part),
        };
        let parts_per_object = self.max_parts.min(MAX_COPY_BYTES / part_size.max(1)).max(1);
        StreamPlan {
            part_size,
            parts_per_object,
        }
    }

    /// The one part size of an upload of one object: large enough that `planned_parts` parts hold twice
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
    fn a_terabyte_stream_is_planned_as_a_gigabyte_one_with_1000_parts() {
        const GB: u64 = 1_000_000_000;
        let limits = PartLimits::S3.with_max_parts(1000);
        let small = limits.stream_plan(None);
        // The plan takes no size: 1 GB and 1 TB get the same parts and the same memory.
        assert_eq!(small.part_size, 6 * MIB);
        assert_eq!(
            small.parts_per_object, 853,
            "5 GiB / 6 MiB: CopyObject's limit, under max_parts"
        );
        assert!(
            small.buffered_bytes() == 18 * MIB,
            "{}",
            small.buffered_bytes()
        );
        assert_eq!(small.objects_for(GB), 1);
        let objects = small.objects_for(1000 * GB);
        assert_eq!(objects, (1000 * GB).div_ceil(853 * 6 * MIB));
        assert!(objects * small.object_bytes() >= 1000 * GB);
        assert!(small.object_bytes() <= MAX_COPY_BYTES);
        assert!(small.parts_per_object <= limits.max_parts);
        // A provider with 100 parts: smaller objects, the same memory.
        let few = PartLimits::S3.with_max_parts(100).stream_plan(None);
        assert_eq!((few.part_size, few.parts_per_object), (6 * MIB, 100));
        assert_eq!(few.buffered_bytes(), small.buffered_bytes());
        // 10,000 parts: CopyObject's 5 GiB still bounds each object.
        let aws = PartLimits::S3.stream_plan(None);
        assert_eq!(aws.object_bytes(), 853 * 6 * MIB);
        assert!(aws.object_bytes() <= MAX_COPY_BYTES);
        // One part per object, the smallest part: a test's knob.
        let tiny = PartLimits::S3.with_max_parts(1).stream_plan(Some(1));
        assert_eq!((tiny.part_size, tiny.parts_per_object), (5 * MIB, 1));
        assert_eq!(tiny.objects_for(0), 1);
        assert_eq!(tiny.objects_for(11 * MIB), 3);
        // The largest part: one per object.
        let huge = PartLimits::S3.stream_plan(Some(u64::MAX));
        assert_eq!((huge.part_size, huge.parts_per_object), (5 * 1024 * MIB, 1));
    }

    #[test]
    fn max_parts_plans_single_objects_within_it() {
        let scaleway = PartLimits::S3.with_max_parts(1000);
        assert_eq!((scaleway.max_parts, scaleway.planned_parts), (1000, 900));
        let tb = 1024 * 1024 * MIB;
        let p = scaleway.part_size_for(tb, None);
        assert!(p * 1000 >= 2 * tb, "{p}");
        assert_eq!(PartLimits::S3.with_max_parts(0).max_parts, 1);
        assert_eq!(PartLimits::S3.with_max_parts(1).planned_parts, 1);
        assert_eq!(PartLimits::S3.with_max_parts(20_000), PartLimits::S3);
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
