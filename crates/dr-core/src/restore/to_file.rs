//! `--to-file DIR` for a backup in sections: every section decrypted into a directory, with
//! a README saying the restore order.

use std::path::{Path, PathBuf};

use dr_catalog::{Manifest, ObjectRecord};
use dr_stream::Identities;

use super::fetch::fetch_files;
use super::layout::{data_file, Sections, POST_FILE, PRE_FILE};
use crate::{Context, Error, Kind, Result};

/// `--to-file DIR` must name a new or empty directory: nothing there is overwritten.
pub(super) fn check_output_dir(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::config(format!(
                    "--to-file {}: the directory is not empty; nothing was changed",
                    dir.display()
                ))
                .with_hint("a backup in sections is written as one file per section into a directory: name a new or empty one"));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::config(format!(
            "--to-file {}: {e}; nothing was changed",
            dir.display()
        ))
        .with_hint("a backup in sections is written into a directory: name a new or empty one")),
    }
}

/// `--to-file DIR`: every section decrypted into `DIR` (mode 0600 files), and a README
/// saying the restore order with the exact commands. On failure what was written is removed.
pub(super) async fn write_dir(
    ctx: &Context,
    m: &Manifest,
    s: &Sections<'_>,
    identities: &Identities,
    dir: &Path,
    jobs: u32,
) -> Result<()> {
    let created = !dir.exists();
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::new(Kind::Failed, format!("creating {}: {e}", dir.display())))?;
    }
    let mut files: Vec<(&ObjectRecord, PathBuf)> = vec![(s.pre, dir.join(PRE_FILE))];
    for (i, d) in s.data.iter().enumerate() {
        files.push((d, dir.join(data_file(i + 1))));
    }
    files.push((s.post, dir.join(POST_FILE)));
    let result = fetch_files(ctx, &files, identities, jobs, true)
        .await
        .and_then(|()| {
            super::fetch::write_file_atomically(&dir.join("README.txt"), readme(m, s).as_bytes())
        });
    if let Err(e) = result {
        for (_, p) in &files {
            let _ = std::fs::remove_file(p);
        }
        if created {
            let _ = std::fs::remove_dir(dir);
        }
        return Err(e);
    }
    tracing::info!("backup {} written to {}", m.id, dir.display());
    Ok(())
}

fn readme(m: &Manifest, s: &Sections<'_>) -> String {
    let n = s.data.len();
    format!(
        "Backup {id} of `{target}` (PostgreSQL {version}), decrypted by dr {dr}.\n\
         \n\
         pg_restore archives (pg_dump -Fc), one per section. Restore them in this order,\n\
         into an empty database, from this directory (PGURL: the database's URL; add\n\
         --no-owner --no-acl when the backup's roles do not exist on the server):\n\
         \n\
         1. the schema (pre-data):\n\
         \x20  pg_restore --exit-on-error -d \"$PGURL\" {pre}\n\
         2. the data: {n} stream(s), one after the other or all at once:\n\
         \x20  for f in 2-data-*.dump; do pg_restore --exit-on-error -d \"$PGURL\" \"$f\"; done\n\
         3. indexes, constraints, triggers, policies (post-data):\n\
         \x20  pg_restore --exit-on-error -d \"$PGURL\" {post}\n\
         \x20  (not -j: alone, this archive cannot order foreign keys between the same\n\
         \x20  tables, and parallel workers can deadlock on them)\n\
         \n\
         These files hold the whole database unencrypted: delete them when done.\n",
        id = m.id,
        target = m.target,
        version = m.server_version,
        dr = env!("CARGO_PKG_VERSION"),
        pre = PRE_FILE,
        post = POST_FILE,
    )
}
