//! One step of a sectioned restore: a section's `pg_restore`, fed through a pipe from the
//! store (SHA-256, age, zstd on a blocking thread), from a staged file, or straight from a
//! `pg_dump` of a live server (the sandbox of a point-in-time restore). Any failure stops
//! every stream ([`Stopper`]) and is returned as the cause.

use std::io::Write;
use std::path::Path;

use dr_pg::{ChildProcess, ConnInfo};

use super::fetch::decode_into;
use super::layout::{DumpCommand, Load, Section, Source};
use super::load::error_lines;
use super::stop::Stopper;
use crate::{Error, Kind, Result};

pub(super) struct Run<'r> {
    pub(super) l: &'r Load<'r>,
    pub(super) pg_restore: &'r Path,
    /// Where a list for a piped section is written.
    pub(super) dir: &'r Path,
    /// pg_restore's arguments common to every section.
    pub(super) base: &'r [String],
    pub(super) child_conn: &'r ConnInfo,
    pub(super) stop: &'r Stopper,
}

impl Run<'_> {
    /// One section's pg_restore: its errors, each prefixed by the section; a failure stops
    /// every stream (recorded in the stopper) and returns none.
    pub(super) async fn section(&self, s: &Section<'_>) -> Vec<String> {
        if self.stop.token.is_cancelled() {
            return Vec::new();
        }
        let clock = std::time::Instant::now();
        match self.section_inner(s).await {
            Ok(errors) => {
                tracing::info!(section = %s.label, secs = %format!("{:.1}", clock.elapsed().as_secs_f64()), "section restored");
                errors
                    .into_iter()
                    .map(|e| format!("{}: {e}", s.label))
                    .collect()
            }
            Err(e) => {
                self.stop.fail(e);
                Vec::new()
            }
        }
    }

    async fn section_inner(&self, s: &Section<'_>) -> Result<Vec<String>> {
        if let Source::Rows(rows) = &s.source {
            return tokio::select! {
                r = rows.work(self.child_conn) => r,
                // Dropped mid-COPY: the destination aborts the statement, and the stopped
                // restore ends its sessions by name.
                () = self.stop.token.cancelled() => Ok(Vec::new()),
            };
        }
        let mut args = self.base.to_vec();
        if s.clean {
            args.push("--clean".into());
            args.push("--if-exists".into());
        }
        if s.jobs > 1 {
            args.push(format!("--jobs={}", s.jobs));
        }
        // A list for a section read from a file goes through pg_restore's stdin: it takes no
        // temp disk, so the plan's temp bound (the staged sections) holds.
        let _list_file;
        let mut list_in = None;
        if let Some(list) = &s.list {
            if matches!(s.source, Source::File(_)) {
                args.push("--use-list=/dev/stdin".into());
                list_in = Some(list.clone());
            } else {
                let mut f = tempfile::Builder::new()
                    .prefix("list-")
                    .tempfile_in(self.dir)
                    .map_err(|e| Error::new(Kind::Failed, format!("temp list file: {e}")))?;
                f.write_all(list.as_bytes())
                    .map_err(|e| Error::new(Kind::Failed, format!("temp list file: {e}")))?;
                args.push(format!("--use-list={}", f.path().display()));
                _list_file = f;
            }
        }
        tracing::info!(section = %s.label, "pg_restore started");
        match &s.source {
            Source::File(p) => {
                args.push(p.display().to_string());
                let mut child = ChildProcess::spawn(
                    self.pg_restore,
                    &args,
                    Some(self.child_conn),
                    if list_in.is_some() {
                        std::process::Stdio::piped()
                    } else {
                        std::process::Stdio::null()
                    },
                    std::process::Stdio::null(),
                )?;
                if let (Some(list), Some(mut stdin)) = (list_in, child.stdin()) {
                    // Closed when written: pg_restore reads the list to its end first.
                    tokio::spawn(async move {
                        use tokio::io::AsyncWriteExt;
                        let _ = stdin.write_all(list.as_bytes()).await;
                    });
                }
                self.finish(child, &s.label).await
            }
            Source::Pipe(rec) => {
                let mut child = ChildProcess::spawn(
                    self.pg_restore,
                    &args,
                    Some(self.child_conn),
                    std::process::Stdio::piped(),
                    std::process::Stdio::null(),
                )?;
                let stdin = child.stdin().ok_or_else(|| {
                    Error::new(Kind::Failed, "pg_restore was started without a stdin pipe")
                })?;
                let pipe = std::fs::File::from(stdin.into_owned_fd().map_err(|e| {
                    Error::new(Kind::Failed, format!("pg_restore's stdin pipe: {e}"))
                })?);
                let stopper = self.stop.clone();
                let feed = decode_into(
                    self.l.ctx,
                    rec,
                    self.l.identities,
                    pipe,
                    self.stop.token.clone(),
                    move |e| stopper.fail(e.clone()),
                );
                // A pg_restore that failed stops every stream now: its object need not be
                // read to the end (that is only for one that exited 0, to check the digest).
                let finish = async {
                    let r = self.finish(child, &s.label).await;
                    if let Err(e) = &r {
                        self.stop.fail(e.clone());
                    }
                    r
                };
                let (fed, done) = tokio::join!(feed, finish);
                if let Err(e) = fed {
                    // Already recorded, unless the thread itself failed.
                    if !self.stop.token.is_cancelled() {
                        self.stop.fail(e);
                    }
                }
                done
            }
            Source::Dump(d) => self.dumped_into(d, &args, &s.label).await,
            Source::Rows(_) => Ok(Vec::new()),
        }
    }

    /// `pg_dump … | pg_restore …`: the dump's stdout is the restore's stdin, nothing between.
    /// The cause of a failure is the dump's, unless the dump only died of the restore's
    /// exit (a broken pipe); it stops every stream.
    async fn dumped_into(
        &self,
        d: &DumpCommand,
        args: &[String],
        label: &str,
    ) -> Result<Vec<String>> {
        use std::process::Stdio;
        let mut dump = ChildProcess::spawn(
            &d.pg_dump,
            &d.args,
            Some(&d.conn),
            Stdio::null(),
            Stdio::piped(),
        )?;
        let out = dump
            .stdout()
            .ok_or_else(|| Error::new(Kind::Failed, "pg_dump was started without a stdout pipe"))
            .and_then(|o| {
                o.into_owned_fd()
                    .map_err(|e| Error::new(Kind::Failed, format!("pg_dump's stdout pipe: {e}")))
            });
        let restore = out.and_then(|out| {
            ChildProcess::spawn(
                self.pg_restore,
                args,
                Some(self.child_conn),
                Stdio::from(out),
                Stdio::null(),
            )
            .map_err(Error::from)
        });
        let restore = match restore {
            Ok(r) => r,
            Err(e) => {
                dump.stop().await;
                self.stop.fail(e.clone());
                return Err(e);
            }
        };
        let (dumped, restored) = tokio::join!(
            dump.wait_or_stop(self.stop.token.cancelled()),
            self.finish(restore, label)
        );
        let dump_failed = match dumped {
            Some(Err(e)) => Some(
                Error::from(e).context(format!("pg_dump of the {label} section from {}", d.conn)),
            ),
            _ => None,
        };
        let cause = match (dump_failed, restored) {
            (Some(dump), Err(restore)) if broken_pipe(&dump) => Err(restore),
            (Some(dump), _) => Err(dump),
            (None, r) => r,
        };
        if let Err(e) = &cause {
            self.stop.fail(e.clone());
        }
        cause
    }

    /// Wait for a section's pg_restore, or stop it (as a group) when any stream fails.
    /// pg_restore goes on after SQL errors and reports them at the end ("errors ignored on
    /// restore"): those are collected. Any other exit is a failure of the stream.
    async fn finish(&self, child: ChildProcess, label: &str) -> Result<Vec<String>> {
        match child.wait_or_stop(self.stop.token.cancelled()).await {
            None => Ok(Vec::new()),
            Some(Ok(f)) => {
                tracing::info!(section = %label, "pg_restore finished");
                Ok(f.errors)
            }
            Some(Err(dr_pg::PgError::Failed(pf)))
                if pf.stderr.contains("errors ignored on restore") =>
            {
                Ok(error_lines(&pf))
            }
            Some(Err(dr_pg::PgError::Failed(pf))) => Err(Error::new(
                Kind::Failed,
                format!(
                    "pg_restore of the {label} section failed ({})\n{}",
                    pf.status,
                    error_lines(&pf).join("\n")
                ),
            )),
            Some(Err(e)) => {
                Err(Error::from(e).context(format!("pg_restore of the {label} section")))
            }
        }
    }
}

/// A pg_dump that died because its reader (pg_restore) was gone: its own failure is not
/// the cause.
fn broken_pipe(e: &Error) -> bool {
    let text = e.to_string();
    text.contains("Broken pipe") || text.contains("signal: 13") || text.contains("SIGPIPE")
}
