//! A base backup's tar stream (`pg_basebackup -Ft -D -`) unpacked into a data directory as
//! it arrives: no copy of the archive on disk.
//!
//! The archive comes from the repository, so it is treated as untrusted input even after
//! its digest and signature checked out: every path must stay under the directory (no
//! absolute paths, no `..`), and only files and directories are written — a base backup of
//! a cluster without tablespaces has nothing else, and a link could point a later entry
//! outside the directory.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("the base backup holds `{path}`, which is not a plain path inside the data directory")]
    Path { path: String },
    #[error("the base backup holds `{path}`, a {kind}; dr only restores files and directories")]
    Kind { path: String, kind: String },
    #[error("the base backup ended without `{missing}`: it is not a whole PostgreSQL base backup")]
    Incomplete { missing: &'static str },
    #[error("could not write `{path}` while unpacking the base backup: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not read the base backup's tar stream: {0}")]
    Read(std::io::Error),
}

impl UnpackError {
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            UnpackError::Path { .. } | UnpackError::Kind { .. } | UnpackError::Incomplete { .. } => {
                Some("this archive was not made by `dr backup --physical`; restore another backup (`dr list`)")
            }
            UnpackError::Write { .. } => Some("check free space and permissions of the data directory"),
            UnpackError::Read(_) => None,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub files: u64,
    pub bytes: u64,
    /// The archive held PostgreSQL's `backup_manifest` (written into the directory, where
    /// `pg_verifybackup` looks for it).
    pub has_manifest: bool,
}

/// Unpack `archive` into `dir` (created 0700 if absent; the caller checks it is empty).
pub fn unpack(archive: impl Read, dir: &Path) -> Result<Unpacked, UnpackError> {
    let write_err = |path: &Path, source| UnpackError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| write_err(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| write_err(dir, e))?;
    let mut tar = tar::Archive::new(archive);
    tar.set_preserve_permissions(true);
    tar.set_overwrite(false);
    let mut done = Unpacked::default();
    let mut label = false;
    for entry in tar.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        let path = entry.path().map_err(UnpackError::Read)?.into_owned();
        let shown = path.display().to_string();
        if path.as_os_str().is_empty()
            || path
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(UnpackError::Path { path: shown });
        }
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            return Err(UnpackError::Kind {
                path: shown,
                kind: format!("{kind:?}").to_lowercase(),
            });
        }
        if kind.is_file() {
            done.files += 1;
            done.bytes += entry.size();
            label |= path == Path::new("backup_label");
            done.has_manifest |= path == Path::new("backup_manifest");
        }
        let target = dir.join(&path);
        let unpacked = entry.unpack_in(dir).map_err(|e| write_err(&target, e))?;
        if !unpacked {
            return Err(UnpackError::Path { path: shown });
        }
    }
    if !label {
        return Err(UnpackError::Incomplete {
            missing: "backup_label",
        });
    }
    // PostgreSQL refuses a data directory readable by others; the archive's modes may not say so.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| write_err(dir, e))?;
    // Everything written reaches the disk before the server is told to start on it.
    nix::unistd::sync();
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            if path.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o700);
                h.set_size(0);
            } else {
                h.set_mode(0o600);
                h.set_size(data.len() as u64);
            }
            h.set_cksum();
            b.append_data(&mut h, path, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn unpacks_files_and_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let tar = archive(&[
            ("PG_VERSION", b"17\n"),
            ("backup_label", b"START WAL LOCATION: 0/2000028\n"),
            ("pg_wal/", b""),
            ("base/1/1259", b"page"),
            ("backup_manifest", b"{}"),
        ]);
        let done = unpack(&tar[..], &data).expect("unpack");
        assert_eq!(done.files, 4);
        assert!(done.has_manifest);
        assert_eq!(
            std::fs::read(data.join("base/1/1259")).expect("read"),
            b"page"
        );
        assert!(data.join("pg_wal").is_dir());
        let mode = std::fs::metadata(&data).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn refuses_paths_outside_and_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut raw = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o600);
        // Header::set_path refuses `..`; write the name bytes directly, as a hostile archive would.
        h.as_old_mut().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        raw.append(&h, &b"x"[..]).expect("append");
        let tar = raw.into_inner().expect("tar");
        let e = unpack(&tar[..], &dir.path().join("a")).expect_err("must refuse");
        assert!(matches!(e, UnpackError::Path { .. }), "{e}");
        assert!(!dir.path().join("escape").exists());

        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "pg_tblspc/16384", "/etc")
            .expect("link");
        let tar = b.into_inner().expect("tar");
        let e = unpack(&tar[..], &dir.path().join("b")).expect_err("must refuse");
        assert!(matches!(e, UnpackError::Kind { .. }), "{e}");
        assert!(e.hint().is_some());
    }

    #[test]
    fn a_truncated_or_foreign_archive_is_not_a_base_backup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = archive(&[("PG_VERSION", b"17\n")]);
        let e = unpack(&tar[..], &dir.path().join("c")).expect_err("no label");
        assert!(matches!(e, UnpackError::Incomplete { .. }), "{e}");
        let full = archive(&[("PG_VERSION", b"17\n"), ("backup_label", b"x")]);
        let e = unpack(&full[..full.len() / 3], &dir.path().join("d")).expect_err("cut");
        assert!(!matches!(e, UnpackError::Path { .. }), "{e}");
    }
}
