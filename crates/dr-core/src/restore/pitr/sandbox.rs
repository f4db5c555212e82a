//! The throwaway server of `dr restore --at … --to URL`: the base backup unpacked into a
//! private directory under the temp dir, recovered to the point with the archive's WAL,
//! promoted there, and left running on a private Unix socket for the dump; then stopped and
//! removed, whatever happened (an error, a signal: [`Sandbox::remove`], and, should the run
//! end any other way, the drop of its parts).
//!
//! Why promoted, not kept paused as a hot standby: both serve `pg_dump --snapshot`, but a
//! promoted server is a plain primary, which is what dr's dump and counting (`dr backup`'s)
//! are written and tested against, and `latest` has no point to pause at (PostgreSQL
//! promotes at the end of the archive). Promoting is safe here: the sandbox runs with
//! `archive_mode = off`, so its new timeline's WAL and history file never leave its
//! directory, which is deleted — the archive only ever sees the production server's WAL.
//!
//! The server listens on no TCP port and on a socket in a directory only dr (or, when dr runs
//! as root, the `postgres` user it runs the server as) can enter; the socket trusts local
//! connections through an `hba_file` of its own (the production `pg_hba.conf` may ask for
//! passwords or peer names dr cannot give). `ssl` is off (no TCP),
//! `synchronous_standby_names` empty (nothing waits for a standby that is not there) and
//! `autovacuum` off: a promoted copy of a busy server would start vacuuming its largest
//! tables at once, beside the dump that reads them, for a server that is removed after.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dr_pg::ConnInfo;

use super::start::{self, Reached, Started};
use super::{unpack, write_settings, Planned, Then};
use crate::{human_bytes, Context, Error, Kind, Result};

/// The port of the sandbox's socket (no TCP: nothing else can be on it).
const PORT: u16 = 5432;

/// The sandbox's own `pg_hba.conf`, in its data directory.
const HBA: &str = "dr-sandbox-hba.conf";

/// A recovered, promoted, running throwaway server. Fields drop in order: the server is
/// stopped before its directory is removed.
pub(crate) struct Sandbox {
    server: Option<Started>,
    dir: Option<tempfile::TempDir>,
    conn: ConnInfo,
    pub(crate) reached: Reached,
}

/// What a sandbox is made from.
pub(crate) struct Recipe<'a> {
    pub(crate) planned: &'a Planned,
    /// Where its directory is made (`--temp-dir`, `restore.temp_dir`).
    pub(crate) temp_dir: &'a Path,
    /// How the server runs `dr wal fetch` (see `PitrOptions::fetch_argv`).
    pub(crate) fetch_argv: &'a [String],
    /// The database to connect to, and the roles to try (the target's user first).
    pub(crate) database: &'a str,
    pub(crate) users: &'a [String],
    /// Disk it needs: checked before anything is written.
    pub(crate) bytes_needed: u64,
    /// An LSN target stops before the record at it, not after (a dump's snapshot position).
    pub(crate) exclusive: bool,
}

/// A base backup unpacked into a sandbox's directory, not yet recovering. Dropped, the
/// directory is removed.
pub(crate) struct Unpacked {
    dir: tempfile::TempDir,
    /// How long the download and unpack took.
    pub(crate) seconds: f64,
}

impl Unpacked {
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Sandbox {
    /// Make the sandbox: room checked, base backup unpacked, recovery to the point,
    /// promotion, a connection. On failure nothing is left (the server stopped, the directory
    /// removed; its server log copied next to it when recovery failed, and named).
    pub(crate) async fn recover(ctx: &Context, r: &Recipe<'_>) -> Result<Sandbox> {
        let unpacked = Self::unpack(ctx, r).await?;
        Self::recover_from(ctx, r, unpacked).await
    }

    /// The first half of [`Sandbox::recover`]: room checked, the base backup unpacked into
    /// the sandbox's directory (removed when the result is dropped). A drill checks the
    /// files here, before recovery changes them.
    pub(crate) async fn unpack(ctx: &Context, r: &Recipe<'_>) -> Result<Unpacked> {
        let p = r.planned;
        check_reachable(r.temp_dir)?;
        super::super::target::check_space(
            r.temp_dir,
            r.bytes_needed,
            "the sandbox (the base backup and the WAL it replays)",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("dr-sandbox-")
            .tempdir_in(r.temp_dir)
            .map_err(|e| {
                Error::new(
                    Kind::Failed,
                    format!(
                        "cannot create the sandbox directory in {}: {e}",
                        r.temp_dir.display()
                    ),
                )
                .with_hint("pass --temp-dir DIR (or set restore.temp_dir) on a file system with room for the base backup")
            })?;
        let path = dir.path().to_path_buf();
        tracing::info!(
            "sandbox: restoring base backup {} ({}) into {}",
            p.manifest.id,
            human_bytes(
                p.manifest
                    .object(dr_catalog::ObjectRole::BaseTar)
                    .map_or(0, |o| o.raw_bytes)
            ),
            path.display()
        );
        let clock = Instant::now();
        unpack::base_into(ctx, &p.manifest, &path)
            .await
            .map_err(|e| {
                e.context(format!(
                    "restoring base backup {} into the sandbox",
                    p.manifest.id
                ))
            })?;
        Ok(Unpacked {
            dir,
            seconds: clock.elapsed().as_secs_f64(),
        })
    }

    /// The second half of [`Sandbox::recover`]: recovery settings, the server started,
    /// recovery to the point, promotion, a connection.
    pub(crate) async fn recover_from(
        ctx: &Context,
        r: &Recipe<'_>,
        unpacked: Unpacked,
    ) -> Result<Sandbox> {
        let p = r.planned;
        let Unpacked { dir, .. } = unpacked;
        let path = dir.path().to_path_buf();
        write_settings(
            &path,
            &p.target,
            &p.chosen,
            r.fetch_argv,
            Then::Promote,
            r.exclusive,
        )?;
        let hba = path.join(HBA);
        std::fs::write(
            &hba,
            "# dr restore --at --to: the sandbox's socket is in a private directory\nlocal all all trust\n",
        )
        .map_err(|e| Error::new(Kind::Failed, format!("writing {}: {e}", hba.display())))?;
        let extra = format!(
            "-c port={PORT} -c hba_file='{}' -c ssl=off -c synchronous_standby_names='' -c autovacuum=off",
            hba.display()
        );
        let bin = crate::restore::target_pg_bin_dir(&ctx.config, &p.target);
        tracing::info!(
            "sandbox: recovering to {} (WAL from the repository)",
            p.chosen.target
        );
        let (server, reached) = match start::recover_and_keep(
            ctx,
            &path,
            p.manifest.server_major,
            bin,
            &p.chosen,
            &extra,
        )
        .await
        {
            Ok(v) => v,
            Err(e) => return Err(keep_log(e, &path, r.temp_dir)),
        };
        tracing::info!(
            "sandbox: recovery reached the point in {:.1} s: {}",
            reached.seconds,
            reached.stopped
        );
        let conn = match connect(ctx, &server, r.database, r.users).await {
            Ok(c) => c,
            Err(e) => {
                let e = keep_log(e, &path, r.temp_dir);
                server.stop("immediate").await;
                return Err(e);
            }
        };
        Ok(Sandbox {
            server: Some(server),
            dir: Some(dir),
            conn,
            reached,
        })
    }

    /// The recovered database, on the sandbox's socket.
    pub(crate) fn conn(&self) -> &ConnInfo {
        &self.conn
    }

    /// Stop the server (immediately: nothing in it is kept) and remove the directory.
    pub(crate) async fn remove(mut self) {
        if let Some(server) = self.server.take() {
            server.stop("immediate").await;
        }
        if let Some(dir) = self.dir.take() {
            let shown = dir.path().display().to_string();
            match tokio::task::spawn_blocking(move || dir.close()).await {
                Ok(Ok(())) => tracing::info!("sandbox: stopped and removed {shown}"),
                Ok(Err(e)) => {
                    tracing::warn!("sandbox: could not remove {shown}: {e}; remove it by hand")
                }
                Err(e) => {
                    tracing::warn!("sandbox: could not remove {shown}: {e}; remove it by hand")
                }
            }
        }
    }
}

/// When dr runs as root the sandbox's server runs as `postgres`, which must be able to enter
/// every directory above the sandbox's: said now, not as a server that does not start.
fn check_reachable(temp_dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !dr_sandbox::is_root() {
        return Ok(());
    }
    // Without a postgres user the hand-over fails, saying so.
    let Some((uid, gid)) = dr_sandbox::lookup_user("postgres") else {
        return Ok(());
    };
    let dir = std::path::absolute(temp_dir).unwrap_or_else(|_| temp_dir.to_path_buf());
    for d in dir.ancestors() {
        let Ok(meta) = std::fs::metadata(d) else {
            continue;
        };
        if !enterable(meta.mode(), meta.uid() == uid, meta.gid() == gid) {
            return Err(Error::new(
                Kind::Failed,
                format!(
                    "the sandbox's server runs as the postgres user (dr runs as root), which cannot enter {} (mode {:o}); nothing was done",
                    d.display(),
                    meta.mode() & 0o7777
                ),
            )
            .with_hint("pass --temp-dir DIR (or set restore.temp_dir) where the postgres user can reach it, e.g. /var/tmp"));
        }
    }
    Ok(())
}

/// Whether a directory of `mode` can be entered by a user who owns it, is in its group, or
/// neither.
fn enterable(mode: u32, owner: bool, group: bool) -> bool {
    if owner {
        mode & 0o100 != 0
    } else if group {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// A connection to `database` as the first of `users` the server knows, once it accepts
/// connections (right after promotion it may still be starting up).
async fn connect(
    ctx: &Context,
    server: &Started,
    database: &str,
    users: &[String],
) -> Result<ConnInfo> {
    let began = Instant::now();
    loop {
        let mut last = None;
        for user in users {
            let conn = ConnInfo::unix_socket(server.socket_dir(), PORT, user, database);
            match conn.connect().await {
                Ok(_) => return Ok(conn),
                Err(e) => last = Some((user, e)),
            }
        }
        let Some((user, e)) = last else {
            return Err(Error::new(
                Kind::Failed,
                "no role to connect to the sandbox as",
            ));
        };
        let starting =
            e.to_string().contains("starting up") || e.to_string().contains("not yet accepting");
        if !starting || began.elapsed() > Duration::from_secs(60) {
            return Err(Error::from(e)
                .context(format!(
                    "connecting to database `{database}` of the recovered sandbox as {user}"
                ))
                .with_hint(
                    "the database or role may not exist at that point (created later?): choose a later --at, or check the target's url",
                ));
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(300)) => {}
            () = ctx.cancel.cancelled() => {
                return Err(Error::new(Kind::Interrupted, "the restore was interrupted by a signal while the sandbox started"));
            }
        }
    }
}

/// The sandbox's server log outlives the sandbox when recovery failed: copied next to the
/// sandbox's directory, and named in the error.
fn keep_log(mut e: Error, dir: &Path, temp_dir: &Path) -> Error {
    let log = dir.join(start::LOG);
    let name = dir
        .file_name()
        .map(|n| format!("{}.log", n.to_string_lossy()))
        .unwrap_or_else(|| "dr-sandbox.log".into());
    let kept: PathBuf = temp_dir.join(name);
    let from = log.display().to_string();
    if std::fs::copy(&log, &kept).is_ok() {
        e.message = e.message.replace(&from, &kept.display().to_string());
        e.details.push(format!(
            "the sandbox's server log is kept at {}",
            kept.display()
        ));
    }
    e.details
        .push("the sandbox was stopped and removed; nothing was restored".to_string());
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_entered_through_the_bits_of_who_one_is() {
        assert!(enterable(0o755, false, false));
        assert!(!enterable(0o700, false, false));
        assert!(enterable(0o700, true, false));
        assert!(enterable(0o750, false, true));
        assert!(!enterable(0o750, false, false));
        // The owner's bits decide for the owner, even when others may enter.
        assert!(!enterable(0o011, true, true));
    }

    #[test]
    fn a_kept_log_replaces_the_removed_one_in_the_error() {
        let temp = tempfile::tempdir().expect("temp");
        let dir = temp.path().join("dr-sandbox-abc");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join(start::LOG), "FATAL: x\n").expect("log");
        let e = Error::new(
            Kind::Integrity,
            format!("recovery ended (log: {})", dir.join(start::LOG).display()),
        );
        let e = keep_log(e, &dir, temp.path());
        let kept = temp.path().join("dr-sandbox-abc.log");
        assert!(kept.is_file());
        assert!(
            e.message.contains(&kept.display().to_string()),
            "{}",
            e.message
        );
        assert!(e.details.iter().any(|d| d.contains("stopped and removed")));
    }
}
