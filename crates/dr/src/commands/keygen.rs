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
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(0o600);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(output).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AlreadyExists {
            "an identity is already there; losing it makes its backups unreadable. Pick another path, or pass --force if you are sure"
        } else {
            "check that the directory exists and is writable"
        };
        Error::new(
            Kind::Failed,
            format!("cannot create {}: {e}\nhint: {hint}", output.display()),
        )
    })?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::new(Kind::Failed, format!("writing {}: {e}", output.display())))?;
    crate::note!(
        "wrote age identity to {} (mode 0600). Keep a copy offline: without it no backup can be restored.\nPut this public recipient in encryption.recipients:",
        output.display()
    );
    out!("{public}");
    Ok(ExitCode::SUCCESS)
}
