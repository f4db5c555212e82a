//! Write-ahead log arithmetic: positions (`Lsn`), segment file names (`SegmentName`), and
//! what the repository knows about archived WAL. Pure, like the rest of the catalog.
//!
//! PostgreSQL names each WAL segment `TTTTTTTTXXXXXXXXYYYYYYYY`: timeline, then the segment
//! number split into a "log id" (`XXXXXXXX`) and the segment within it (`YYYYYYYY`), where a
//! log id spans 4 GiB of WAL. See `docs/design/PITR.md`.

pub mod continuity;
pub mod history;
mod lsn;
pub mod plan;
mod record;
pub mod retention;
mod segment;

pub use lsn::{Lsn, LsnError};
pub use record::{
    join, keys, split, RecordError, Switch, WalIdentity, WalKind, WalRecord, RECORD_FORMAT,
};
pub use segment::{SegmentError, SegmentName, SegmentSize, WalFile};
