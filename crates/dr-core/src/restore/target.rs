//! The destination: its server, whether the database exists and holds objects, the roles
//! it lacks, and room for the temp archive.

use std::collections::BTreeSet;
use std::path::Path;

use dr_catalog::BackupDetails;
use dr_pg::{ConnInfo, ServerVersion};

use super::RestoreOptions;
use crate::{human_bytes, Error, Kind, Result};

pub(super) struct TargetState {
    pub(super) conn: ConnInfo,
    pub(super) exists: bool,
    pub(super) user_objects: i64,
    pub(super) major: u32,
}

impl TargetState {
    /// The target can take this backup as asked: a server at least as new, and an empty
    /// database unless `--clean`/`--force` (a dry run only reports).
    pub(super) fn check_accepts(&self, server_major: u32, opts: &RestoreOptions) -> Result<()> {
        if self.major < server_major {
            return Err(Error::new(
                Kind::Refused,
                format!(
                    "the target server is PostgreSQL {} but the backup comes from PostgreSQL {server_major}",
                    self.major
                ),
            )
            .with_hint(format!(
                "restore into a server of major {server_major} or newer"
            )));
        }
        if self.exists && self.user_objects > 0 && !opts.clean && !opts.force && !opts.dry_run {
            return Err(Error::new(
                Kind::Refused,
                format!(
                    "refusing to restore into {}: it already holds {} user objects",
                    self.conn, self.user_objects
                ),
            )
            .with_hint("restore into a new database name (it is created for you), or pass --clean to drop and recreate the objects the backup contains, or --force to restore on top"));
        }
        Ok(())
    }

    /// Every role owning the backup's objects exists on the target server.
    pub(super) async fn check_owners(&self, details: &BackupDetails) -> Result<()> {
        if details.owners.is_empty() {
            return Ok(());
        }
        let admin = self.conn.connect_admin().await?;
        let have: BTreeSet<String> = dr_pg::target::role_names(&admin)
            .await
            .map_err(|e| Error::from(e).context(format!("listing roles on {}", self.conn)))?;
        let missing: Vec<&str> = details
            .owners
            .iter()
            .filter(|o| !have.contains(o.as_str()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(Error::new(
                Kind::Refused,
                format!(
                    "the backup's objects are owned by roles the target server lacks: {}",
                    missing.join(", ")
                ),
            )
            .with_hint("pass --with-globals to create the missing roles from the backup (existing roles are never altered), or --no-owner to make the restoring user own everything"));
        }
        Ok(())
    }
}

pub(super) async fn inspect_target(conn: ConnInfo) -> Result<TargetState> {
    let admin = conn.connect_admin().await?;
    let version = ServerVersion::query(&admin).await?;
    let inspecting = |e: dr_pg::PgError| Error::from(e).context(format!("inspecting {conn}"));
    let exists = dr_pg::target::database_exists(&admin, conn.dbname())
        .await
        .map_err(inspecting)?;
    let mut user_objects = 0;
    if exists {
        let client = conn.connect().await?;
        user_objects = dr_pg::target::user_object_count(&client)
            .await
            .map_err(inspecting)?;
    }
    Ok(TargetState {
        conn,
        exists,
        user_objects,
        major: version.major,
    })
}

/// Room for `needed` bytes of `what` ("the decrypted archive") in `dir`.
pub(super) fn check_space(dir: &Path, needed: u64, what: &str) -> Result<()> {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(s) => {
            let avail = s.blocks_available().saturating_mul(s.fragment_size());
            // 5% margin: the archive size is exact, the file system's bookkeeping is not.
            if avail < needed + needed / 20 {
                // Not "unavailable": retrying will not make room.
                return Err(Error::new(
                    Kind::Failed,
                    format!(
                        "not enough space in {}: {} is needed for {what}, {} is free",
                        dir.display(),
                        human_bytes(needed),
                        human_bytes(avail)
                    ),
                )
                .with_hint(
                    "pass --temp-dir DIR on a larger file system (or set restore.temp_dir)",
                ));
            }
            Ok(())
        }
        Err(e) => Err(Error::new(
            Kind::Failed,
            format!("cannot use temp dir {}: {e}", dir.display()),
        )
        .with_hint("pass --temp-dir DIR")),
    }
}
