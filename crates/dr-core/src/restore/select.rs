//! The `pg_restore -L` lists of a selective restore of a backup in sections.

use std::path::Path;

use super::layout::{Section, Source};
use super::load::pg_restore_output;
use super::plan::selection;
use super::RestoreOptions;
use crate::{Error, Result};

/// The `pg_restore -L` lists of a selective restore, from the staged files: the whole
/// pre-data, the selected tables' data and post-data ([`dr_pg::select_entries`] on each
/// section's list, with the pre-data and post-data scripts together as the schema script).
/// Returns the foreign keys left out.
pub(super) async fn select_lists(
    pg_restore: &Path,
    opts: &RestoreOptions,
    pre: &mut Section<'_>,
    data: &mut Vec<Section<'_>>,
    post: &mut Section<'_>,
) -> Result<Vec<String>> {
    // Staged sections (files) only: a list is read before the section is restored.
    let path_of = |s: &Section<'_>| match &s.source {
        Source::File(p) => p.display().to_string(),
        Source::Pipe(r) => r.key.clone(),
        Source::Dump(_) | Source::Rows(_) => String::new(),
    };
    let script = |p: String| {
        pg_restore_output(
            pg_restore,
            vec!["--schema-only".into(), "--file=-".into(), p],
        )
    };
    let mut schema = script(path_of(pre)).await?;
    schema.push_str(&script(path_of(post)).await?);
    let sel = selection(opts)?;
    let mut any = false;
    for d in data.iter_mut() {
        let list = pg_restore_output(pg_restore, vec!["--list".into(), path_of(d)]).await?;
        let chosen = dr_pg::select_entries(&list, &schema, &sel).list;
        any |= !chosen.is_empty();
        d.list = Some(chosen);
    }
    data.retain(|d| d.list.as_ref().is_some_and(|l| !l.is_empty()));
    let list = pg_restore_output(pg_restore, vec!["--list".into(), path_of(post)]).await?;
    let chosen = dr_pg::select_entries(&list, &schema, &sel);
    any |= !chosen.list.is_empty();
    if !any {
        return Err(nothing_matches(opts));
    }
    for fk in &chosen.skipped_foreign_keys {
        tracing::warn!("foreign key {fk} skipped: the table it references is not restored");
    }
    post.list = Some(chosen.list);
    pre.list = None;
    Ok(chosen.skipped_foreign_keys)
}

/// `--table`/`--schema` matched nothing in the backup (said once, for both restore paths).
pub(super) fn nothing_matches(opts: &super::RestoreOptions) -> Error {
    Error::config(format!(
        "nothing in the backup matches {}",
        opts.tables
            .iter()
            .chain(opts.schemas.iter())
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .with_hint("`dr show latest` lists the tables (names are SCHEMA.TABLE)")
}
