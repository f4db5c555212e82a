use crate::out;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;

use dr_core::{Error, Kind, Result};

/// Write a new identity with mode 0600 (never world-readable, not even for an instant) and print
/// the public recipient on stdout.
pub fn run(output: &Path, force: bool) -> Result<ExitCode> {
    let (contents, public) = dr_stream::generate_identity(&chrono::Utc::now().to_rfc3339());
    write_private(
        output,
        &contents,
        force,
        "an identity is already there; losing it makes its backups unreadable. Pick another path, or pass --force if you are sure",
    )?;
    crate::note!(
        "wrote age identity to {} (mode 0600). Keep a copy offline: without it no backup can be restored.\nPut this public recipient in encryption.recipients:",
        output.display()
    );
    out!("{public}");
    Ok(ExitCode::SUCCESS)
}

/// Write a new Ed25519 signing key (OpenSSH format) with mode 0600, never over an existing
/// file, and print its public key on stdout.
pub fn signing(output: &Path) -> Result<ExitCode> {
    use dr_stream::signing::SigningKey;
    let key = SigningKey::generate().map_err(|e| Error::new(Kind::Failed, e.to_string()))?;
    let contents = key
        .to_openssh()
        .map_err(|e| Error::new(Kind::Failed, e.to_string()))?;
    write_private(
        output,
        &contents,
        false,
        "a file is already there (a signing key?): dr never overwrites one. Pick another path; to replace a key follow runbooks/signing-key-leaked.md",
    )?;
    crate::note!(
        "wrote signing key to {} (mode 0600). On this backup host set [signing] key_file to it; keep it off the bucket.\nPut this public key in [signing] trusted on every host that restores, verifies or runs `dr status`:",
        output.display()
    );
    out!("{}", key.public().to_openssh());
    Ok(ExitCode::SUCCESS)
}

/// `dr resign`: see [`dr_core::resign`].
pub async fn resign(
    ctx: &dr_core::Context,
    target: &str,
    ids: &[String],
    old_key: &str,
    stored_before: &str,
    dry_run: bool,
) -> Result<ExitCode> {
    let ids = ids
        .iter()
        .map(|s| {
            s.parse::<dr_catalog::BackupId>()
                .map_err(|e| Error::config(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let before = dr_core::repo::parse_time(stored_before)?;
    let rows = dr_core::resign::run(ctx, target, &ids, old_key, before, dry_run).await?;
    let verb = if dry_run {
        "would re-sign"
    } else {
        "re-signed"
    };
    let mut left = 0;
    for r in &rows {
        match &r.reason {
            None => out!("{}\t{verb}", r.id),
            Some(why) => {
                left += 1;
                out!("{}\tleft untrusted: {why}", r.id);
            }
        }
    }
    crate::note!(
        "{} of {} backups of `{target}` {verb}; {left} left untrusted",
        rows.len() - left,
        rows.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// A private key file: created with mode 0600 from the first byte, synced; an existing file
/// is replaced only with `replace`, otherwise refused with `exists_hint`.
fn write_private(output: &Path, contents: &str, replace: bool, exists_hint: &str) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(0o600);
    if replace {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(output).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AlreadyExists {
            exists_hint
        } else {
            "check that the directory exists and is writable"
        };
        Error::new(
            Kind::Failed,
            format!("cannot create {}: {e}", output.display()),
        )
        .with_hint(hint)
    })?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::new(Kind::Failed, format!("writing {}: {e}", output.display())))
}
