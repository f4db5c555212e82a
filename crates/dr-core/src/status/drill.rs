//! The newest drill of a target with WAL (`dr verify --pitr`), as `dr status` shows it: when,
//! whether it passed, and the window it proved recoverable.

use serde::Serialize;

use crate::repo::BackupEntry;

/// `last_drill` of a [`super::TargetStatus`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastDrill {
    /// The base backup drilled.
    pub backup_id: String,
    /// `passed` or `failed`.
    pub result: String,
    /// RFC 3339.
    pub verified_at: String,
    /// Where it recovered to, and why that point.
    pub point: String,
    pub chosen: String,
    /// The proven window: from the base backup's end to the last commit replayed (RFC 3339;
    /// `proven_to` absent when none was replayed or the drill failed).
    pub proven_from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proven_to: Option<String>,
    /// The dump whose exact row counts the drill reproduced, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact_counts_of: Option<String>,
    /// What a failed drill found, without data names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// The newest drill among `mine` (by when it ran).
pub fn newest<'a>(mine: impl IntoIterator<Item = &'a BackupEntry>) -> Option<LastDrill> {
    mine.into_iter()
        .filter_map(|e| {
            let v = e.verification.as_ref()?;
            let d = v.drill.as_ref()?;
            Some((v, d))
        })
        .max_by_key(|(v, _)| v.verified_at)
        .map(|(v, d)| LastDrill {
            backup_id: v.backup_id.to_string(),
            result: v.result.clone(),
            verified_at: crate::time::format(v.verified_at),
            point: d.point.clone(),
            chosen: d.chosen.clone(),
            proven_from: crate::time::format(d.from),
            proven_to: d.to.filter(|_| v.passed()).map(crate::time::format),
            exact_counts_of: d.counts_of.map(|id| id.to_string()),
            summary: v.summary.clone(),
        })
}
