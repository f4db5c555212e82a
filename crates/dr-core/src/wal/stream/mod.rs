//! `dr wal stream` (`docs/design/PITR.md` §4): WAL received over replication, for servers
//! whose image dr cannot change (a sidecar beside `postgres:17`).
//!
//! - **Slot.** `dr_{target}`, created with its WAL reserved when missing, so the server keeps
//!   what dr has not received while dr is down (bounded by `max_slot_wal_keep_size`, which
//!   `dr check` asks for). A lost slot is a gap: refused with the statement that starts over.
//! - **Receiver.** `pg_receivewal -D SPOOL --slot dr_{target} -n` of the server's major. `-n`:
//!   dr restarts it itself, with backoff (1, 2, 4 … 60 s, back to 1 s after 5 minutes up), so
//!   every drop is logged.
//! - **Uploader.** Every second the spool is read ([`spool`]): histories, then complete
//!   segments through the push path (the same records, source `stream`; identical bytes
//!   already archived are fine, the restart case), deleted locally once archived; the growing
//!   `.partial` uploaded when it changed and `partial_upload_secs` passed since the last
//!   upload ([`partial`]), so a commit is off the host within that bound even if the server
//!   dies and never switches segments.
//! - **One stream per target**: the run lock `locks/{target}.wal-stream.json`, refreshed every
//!   20 s; the lock of a stream that died is waited out (a minute) and taken over.
//! - **Stop** (SIGTERM, the daemon's shutdown): pg_receivewal is stopped, then one last pass
//!   uploads what it received, partial included, whatever the interval.

mod partial;
mod spool;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dr_catalog::wal::Lsn;
use dr_config::{TargetConfig, WalMode};
use dr_pg::replication;
use dr_pg::{ChildProcess, ConnInfo, ServerVersion};
use futures::stream::{self, StreamExt};
use tokio_util::sync::CancellationToken;

use super::identity::{self, Cluster};
use super::push::{push_as, require_signing_key, Source};
use crate::lock::RunLock;
use crate::{Context, Error, Kind, Result};

/// The stream's lock expires this long after its last refresh (every third of it): a stream
/// killed without a word (a pod evicted, a host lost) holds up its successor, which waits
/// the lock out, at most this long. A live stream's refreshes make a second one exit 6.
const LOCK_TTL: Duration = Duration::from_secs(60);
/// How often the spool is read.
const TICK: Duration = Duration::from_secs(1);
/// Complete segments archived at once. A checkpoint's full-page writes make several
/// segments a second for a while: what kept up with them (lag 4 measured before) was not
/// uploading at once but starting the next pass at once after one that archived something
/// ([`Uploader::pause`]); two or three at once measured 65-67 MiB of peak RSS (each holds up
/// to a part of its object, on threads of its own), over the 64 MiB budget, for no lag won.
const PUSHES: usize = 1;
/// The longest wait before pg_receivewal is started again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// An unchanged growing segment is uploaded again this often (see [`Uploader::partial`]).
const HEARTBEAT: Duration = Duration::from_secs(30);
/// Up this long, a receiver that exits is restarted after the shortest wait again.
const STEADY: Duration = Duration::from_secs(300);

/// What a stream did until it was stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Streamed {
    pub target: String,
    pub segments: u64,
    pub partials: u64,
    /// Times pg_receivewal was started again after it exited.
    pub restarts: u64,
    /// The end of the newest WAL uploaded (segment or partial).
    pub uploaded: Option<Lsn>,
}

/// `--target`, else the only target with `mode = "stream"`.
pub fn target<'a>(ctx: &'a Context, flag: Option<&str>) -> Result<&'a TargetConfig> {
    let streams: Vec<&TargetConfig> = ctx
        .config
        .targets
        .iter()
        .filter(|t| t.wal.as_ref().is_some_and(|w| w.mode() == WalMode::Stream))
        .collect();
    if let Some(name) = flag {
        let Some(t) = ctx.config.targets.iter().find(|t| t.name == name) else {
            return Err(
                Error::config(format!("no target named `{name}` is configured")).with_hint(
                    format!("targets with mode = \"stream\": {}", list(&streams)),
                ),
            );
        };
        return match t.wal.as_ref().map(|w| w.mode()) {
            Some(WalMode::Stream) => Ok(t),
            Some(WalMode::Archive) => Err(Error::config(format!(
                "target `{name}` archives its WAL with archive_command (mode = \"archive\"): there is nothing to stream"
            ))
            .with_hint(format!("set mode = \"stream\" under [targets.wal] of `{name}` to receive its WAL over replication instead"))),
            None => Err(Error::config(format!(
                "target `{name}` has no [targets.wal]: its WAL is not archived"
            ))
            .with_hint(format!("add [targets.wal] with mode = \"stream\" under target `{name}` (docs/CONFIGURATION.md)"))),
        };
    }
    match streams.as_slice() {
        [only] => Ok(only),
        [] => Err(Error::config(
            "no target has [targets.wal] mode = \"stream\": there is no WAL to stream",
        )
        .with_hint(
            "add [targets.wal] with mode = \"stream\" to the target (docs/CONFIGURATION.md)",
        )),
        many => Err(Error::config(format!(
            "{} targets stream their WAL ({}): one `dr wal stream` streams one",
            many.len(),
            list(many)
        ))
        .with_hint("pass --target NAME (one stream per target; `dr daemon` runs them all)")),
    }
}

fn list(targets: &[&TargetConfig]) -> String {
    if targets.is_empty() {
        return "none".into();
    }
    targets
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Stream `target`'s WAL into the repository until `stop` is cancelled. An error before the
/// first start of pg_receivewal (config, server, slot, lock) ends it; after that, drops
/// and failed uploads are logged and tried again.
pub async fn run(
    ctx: &Context,
    target: &TargetConfig,
    stop: &CancellationToken,
) -> Result<Streamed> {
    let wal = target
        .wal
        .as_ref()
        .ok_or_else(|| Error::config(format!("target `{}` has no [targets.wal]", target.name)))?;
    require_signing_key(ctx)?;
    ctx.recipients()?;
    let spool = wal.spool_dir(&target.name);
    make_spool(&spool)?;
    let server = prepare(ctx, target).await?;
    let lock = RunLock::acquire(
        Arc::clone(&ctx.store),
        &format!("{}.wal-stream", target.name),
        "wal stream",
        LOCK_TTL,
        Duration::ZERO,
        true,
        stop,
    )
    .await
    .map_err(|e| match e.kind {
        Kind::Locked => e.with_hint(format!(
            "another `dr wal stream` (or `dr daemon`) streams `{}` already: one per target",
            target.name
        )),
        _ => e,
    })?;
    let mut up = Uploader {
        target: &target.name,
        spool: spool.clone(),
        every: Duration::from_secs(wal.partial_upload_secs),
        done: BTreeSet::new(),
        sent: None,
        last_sent: None,
        failing: false,
        busy: false,
        streamed: Streamed {
            target: target.name.clone(),
            ..Streamed::default()
        },
    };
    let outcome = receive(ctx, target, &server, &spool, &mut up, stop).await;
    // What pg_receivewal wrote before it stopped goes up too: a stop must not cost the last
    // seconds of WAL. Not cancellable by the signal that stopped the stream.
    let last = ctx.detached();
    up.pass(&last, true).await;
    lock.release().await;
    outcome.map(|()| up.streamed)
}

/// The server as the stream needs it.
struct Server {
    conn: ConnInfo,
    slot: String,
    tool: PathBuf,
}

/// Check the cluster against the archive's identity, create the slot when missing, find
/// pg_receivewal of the server's major.
async fn prepare(ctx: &Context, target: &TargetConfig) -> Result<Server> {
    let conn = ConnInfo::parse(&target.url)?;
    let client = conn.connect_cluster().await?;
    let version = ServerVersion::query(&client).await?;
    let cluster = dr_pg::basebackup::ClusterIdentity::query(&client).await?;
    let system_identifier = cluster.system_identifier.parse::<u64>().map_err(|_| {
        Error::new(
            Kind::Failed,
            format!(
                "the server's system identifier `{}` is not a number",
                cluster.system_identifier
            ),
        )
    })?;
    identity::ensure(
        ctx,
        &target.name,
        &Cluster {
            system_identifier,
            major: version.major,
            segment_bytes: cluster.segment_bytes,
        },
    )
    .await?;
    let slot = replication::slot_name(&target.name);
    match replication::slot(&client, &slot).await? {
        Some(s) if s.lost() => {
            return Err(Error::new(
                Kind::Integrity,
                format!("replication slot {slot} is lost: the server removed WAL the stream had not received, so the archive of `{}` has a gap", target.name),
            )
            .with_hint(format!("drop the slot (`SELECT pg_drop_replication_slot('{slot}');`), start `dr wal stream` again (it creates a new one) and take `dr backup --physical --target {}`: recovery can reach points after that backup only", target.name)));
        }
        Some(_) => {}
        None => {
            replication::create_slot(&client, &slot).await?;
            tracing::info!("created replication slot {slot} (WAL reserved from now)");
        }
    }
    drop(client);
    let bin_dir = target
        .pg_bin_dir
        .as_deref()
        .or(ctx.config.backup.pg_bin_dir.as_deref());
    let tool = dr_pg::find_tool("pg_receivewal", version.major, bin_dir)?.path;
    Ok(Server { conn, slot, tool })
}

/// The spool exists and is the stream's own (0700: it holds the database's WAL in clear).
fn make_spool(spool: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |e: std::io::Error| {
        Error::new(
            Kind::Config,
            format!("cannot use {} as the WAL spool: {e}", spool.display()),
        )
        .with_hint("set [targets.wal] spool_dir to a directory dr may write, on a volume that survives restarts (the slot advances with what lands there)")
    };
    std::fs::create_dir_all(spool).map_err(fail)?;
    std::fs::set_permissions(spool, std::fs::Permissions::from_mode(0o700)).map_err(fail)
}

/// pg_receivewal, restarted with backoff, beside the uploader, until `stop`.
async fn receive(
    ctx: &Context,
    target: &TargetConfig,
    server: &Server,
    spool: &Path,
    up: &mut Uploader<'_>,
    stop: &CancellationToken,
) -> Result<()> {
    let mut backoff = Duration::from_secs(1);
    let mut first = true;
    loop {
        if !first {
            // The slot may have gone (dropped, or lost while the server was away).
            if let Err(e) = prepare(ctx, target).await {
                if matches!(e.kind, Kind::Integrity | Kind::Refused) {
                    return Err(e);
                }
                tracing::warn!(
                    "cannot reach the server of `{}` yet: {}",
                    target.name,
                    e.summary()
                );
                if !nap(&mut backoff, stop, up, ctx).await {
                    return Ok(());
                }
                continue;
            }
            up.streamed.restarts += 1;
        }
        first = false;
        let mut child = ChildProcess::spawn(
            &server.tool,
            &receiver_args(spool, &server.slot),
            Some(&server.conn),
            Stdio::null(),
            Stdio::null(),
        )?;
        tracing::info!(
            "receiving the WAL of `{}` through slot {} into {}",
            target.name,
            server.slot,
            spool.display()
        );
        let started = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(up.pause()) => {}
                () = stop.cancelled() => {
                    child.stop().await;
                    return Ok(());
                }
            }
            up.pass(ctx, false).await;
            if child.exited() {
                break;
            }
        }
        match child.wait().await {
            Ok(_) => tracing::warn!("pg_receivewal of `{}` exited", target.name),
            Err(e) => tracing::warn!(
                "pg_receivewal of `{}` stopped: {}",
                target.name,
                Error::from(e).summary()
            ),
        }
        if started.elapsed() >= STEADY {
            backoff = Duration::from_secs(1);
        }
        if !nap(&mut backoff, stop, up, ctx).await {
            return Ok(());
        }
    }
}

/// Wait `backoff` (uploading meanwhile) and double it; false once `stop` is cancelled.
async fn nap(
    backoff: &mut Duration,
    stop: &CancellationToken,
    up: &mut Uploader<'_>,
    ctx: &Context,
) -> bool {
    tracing::info!("starting pg_receivewal again in {} s", backoff.as_secs());
    let until = Instant::now() + *backoff;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    while Instant::now() < until {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = stop.cancelled() => return false,
        }
        up.pass(ctx, false).await;
    }
    true
}

/// `pg_receivewal` arguments: no compression (dr compresses), no loop (dr restarts it).
fn receiver_args(spool: &Path, slot: &str) -> Vec<String> {
    vec![
        "-D".into(),
        spool.display().to_string(),
        "--slot".into(),
        slot.into(),
        "-n".into(),
        "--no-password".into(),
        "-v".into(),
    ]
}

/// What goes up, and what went up.
struct Uploader<'a> {
    target: &'a str,
    spool: PathBuf,
    /// `partial_upload_secs`.
    every: Duration,
    /// Histories and ended partials archived by this process: never pushed twice.
    done: BTreeSet<String>,
    /// The growing partial as last uploaded, with the bytes of its last written page.
    sent: Option<(partial::Sent, Vec<u8>)>,
    last_sent: Option<Instant>,
    /// The last pass failed (logged once until one succeeds).
    failing: bool,
    /// The last pass archived segments: more may be complete already (a burst).
    busy: bool,
    streamed: Streamed,
}

impl Uploader<'_> {
    /// How long to wait before the next pass: none to speak of in a burst (the segments
    /// that completed while the last pass uploaded), else [`TICK`].
    fn pause(&self) -> Duration {
        if self.busy {
            Duration::from_millis(20)
        } else {
            TICK
        }
    }

    /// One pass over the spool; with `force`, the growing partial goes up whatever the
    /// interval. Failures are logged and tried again on the next pass.
    async fn pass(&mut self, ctx: &Context, force: bool) {
        match self.try_pass(ctx, force).await {
            Ok(()) => {
                if self.failing {
                    tracing::info!("the WAL stream of `{}` uploads again", self.target);
                }
                self.failing = false;
            }
            Err(e) => {
                if !self.failing {
                    tracing::error!(
                        "the WAL stream of `{}` cannot upload (kept in the spool, tried again every second): {}",
                        self.target,
                        e.summary()
                    );
                }
                self.failing = true;
            }
        }
    }

    async fn try_pass(&mut self, ctx: &Context, force: bool) -> Result<()> {
        let entries = spool::scan(&self.spool).map_err(|e| {
            Error::new(
                Kind::Failed,
                format!("cannot read the spool {}: {e}", self.spool.display()),
            )
        })?;
        let plan = spool::plan(entries);
        for e in &plan.histories {
            let name = e.file.to_string();
            if !self.done.contains(&name) {
                push_as(ctx, &e.path, Some(self.target), Source::Stream).await?;
                self.done.insert(name);
            }
        }
        self.segments(ctx, &plan.segments).await?;
        for path in &plan.stale {
            let _ = std::fs::remove_file(path);
        }
        for e in &plan.ended {
            let name = e.file.to_string();
            if !self.done.contains(&name) {
                self.partial(ctx, e, true).await?;
                self.done.insert(name);
            }
        }
        if let Some(e) = &plan.growing {
            let due = self.last_sent.is_none_or(|t| t.elapsed() >= self.every);
            if force || due {
                self.partial(ctx, e, false).await?;
            }
        }
        Ok(())
    }

    /// The complete segments, oldest first: up to [`PUSHES`] archived at once (a re-push
    /// of the same bytes is fine), each then retired in order ([`Uploader::segment`]). The
    /// first failure ends the pass; the segments after it are tried again on the next one.
    async fn segments(&mut self, ctx: &Context, segments: &[(spool::Entry, bool)]) -> Result<()> {
        self.busy = false;
        let fresh = segments
            .iter()
            .any(|(e, _)| !self.done.contains(&e.file.to_string()));
        let todo: Vec<_> = segments
            .iter()
            .map(|(e, _)| {
                let path = (!self.done.contains(&e.file.to_string())).then(|| e.path.clone());
                push_segment(ctx, path, self.target.to_string())
            })
            .collect();
        let mut pushes = stream::iter(todo).buffered(PUSHES);
        let mut results = Vec::with_capacity(segments.len());
        while let Some(r) = pushes.next().await {
            let failed = r.is_err();
            results.push(r);
            if failed {
                break; // the pushes under way are dropped: nothing commits half-way
            }
        }
        drop(pushes);
        for ((e, delete), pushed) in segments.iter().zip(results) {
            self.segment(ctx, e, *delete, pushed?).await?;
        }
        // Not after a failure: a store that is away is tried again at the usual pace.
        self.busy = fresh;
        Ok(())
    }

    /// A complete segment, archived now (`pushed`) or before: its partial retired, its
    /// local file deleted unless pg_receivewal resumes after it.
    async fn segment(
        &mut self,
        ctx: &Context,
        e: &spool::Entry,
        delete: bool,
        pushed: Option<super::push::Pushed>,
    ) -> Result<()> {
        let name = e.file.to_string();
        if let Some(pushed) = pushed {
            self.streamed.segments += 1;
            if let (Some(s), Ok(h)) = (
                e.file.segment(),
                super::push::read_header(&e.path, e.file).await,
            ) {
                let end =
                    super::push::start_of(e.file, &h).map(|l| Lsn(l.0 + u64::from(h.segment_size)));
                self.streamed.uploaded = self.streamed.uploaded.max(end);
                if self.sent.as_ref().is_some_and(|(p, _)| p.segment == s) {
                    self.sent = None;
                }
                partial::retire(ctx, self.target, s).await;
            }
            tracing::info!(
                "streamed {} of `{}` ({})",
                pushed.file,
                self.target,
                pushed.record
            );
            self.done.insert(name.clone());
        }
        if delete {
            std::fs::remove_file(&e.path).map_err(|err| {
                Error::new(
                    Kind::Failed,
                    format!("cannot delete {} from the spool: {err}", e.path.display()),
                )
            })?;
            self.done.remove(&name);
        }
        Ok(())
    }

    /// A partial: the growing one when it holds more than last time, or an ended one.
    async fn partial(&mut self, ctx: &Context, e: &spool::Entry, ended: bool) -> Result<()> {
        let Some(header) = partial::header(&e.path, e.file).await else {
            return Ok(()); // its first page is not written yet
        };
        let path = e.path.clone();
        let (end, tail) = tokio::task::spawn_blocking(move || written(&header, &path))
            .await
            .map_err(|err| Error::new(Kind::Failed, err.to_string()))?
            .map_err(|err| {
                Error::new(
                    Kind::Failed,
                    format!("cannot read {}: {err}", e.path.display()),
                )
            })?;
        // A commit can land in the page the last upload ended in: the page's bytes tell. An
        // unchanged partial still goes up every HEARTBEAT: its record's time is the RPO
        // `dr status` reads, and an idle server has lost nothing.
        let fresh = self.last_sent.is_some_and(|t| t.elapsed() < HEARTBEAT);
        if !ended
            && fresh
            && self.sent.as_ref().is_some_and(|(s, t)| {
                Some(s.segment) == e.file.segment() && s.end == end && *t == tail
            })
        {
            return Ok(()); // nothing new since the last upload
        }
        let sent = partial::send(ctx, self.target, &e.path, header, end, ended).await?;
        tracing::debug!("uploaded {} of `{}` up to {end}", e.file, self.target);
        self.streamed.partials += 1;
        self.streamed.uploaded = self.streamed.uploaded.max(Some(end));
        if !ended {
            self.sent = Some((sent, tail));
            self.last_sent = Some(Instant::now());
        }
        Ok(())
    }
}

/// One complete segment archived from the spool; `None`: archived by this stream already.
async fn push_segment(
    ctx: &Context,
    path: Option<PathBuf>,
    target: String,
) -> Result<Option<super::push::Pushed>> {
    match path {
        Some(p) => push_as(ctx, &p, Some(&target), Source::Stream)
            .await
            .map(Some),
        None => Ok(None),
    }
}

/// Where the valid WAL in the partial at `path` ends, and the bytes of its last valid page.
fn written(header: &dr_pg::WalHeader, path: &Path) -> std::io::Result<(Lsn, Vec<u8>)> {
    use std::os::unix::fs::FileExt;
    let end = header.written_end(path)?;
    let block = u64::from(header.block_size.max(512));
    let offset = end
        .saturating_sub(header.page_address)
        .saturating_sub(block);
    let mut page = vec![0u8; usize::try_from(block).unwrap_or(8192)];
    let read = std::fs::File::open(path)?.read_at(&mut page, offset)?;
    page.truncate(read);
    Ok((Lsn(end), page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_receivewal_runs_without_loop_or_compression() {
        let args = receiver_args(Path::new("/var/lib/dr/wal/app"), "dr_app");
        assert_eq!(
            args.join(" "),
            "-D /var/lib/dr/wal/app --slot dr_app -n --no-password -v"
        );
    }
}
