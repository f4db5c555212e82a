//! Finding `pg_dump`, `pg_dumpall` and `pg_restore` of the right major.

use std::path::{Path, PathBuf};

use crate::PgError;

/// A PostgreSQL client binary and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    pub path: PathBuf,
    /// `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`
    pub version: String,
    pub major: u32,
}

/// `pg_dump (PostgreSQL) 15.18 (Debian ...)` → 15; `pg_dump (PostgreSQL) 9.6.24` → 9.
pub fn parse_version_output(s: &str) -> Option<u32> {
    let after = s.split(')').nth(1)?.trim();
    let num = after.split_whitespace().next()?;
    let major = num.split('.').next()?;
    let digits: String = major.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The tool at exactly this path, with its version, if it runs.
pub fn tool_at(path: &Path) -> Option<Tool> {
    if !path.is_file() {
        return None;
    }
    let version = match crate::process::probe(path, &["--version"]) {
        Ok(v) => v,
        Err(e) => {
            // A broken install (missing libraries, wrong architecture) is skipped, but said.
            tracing::warn!("skipping {}: {e}", path.display());
            return None;
        }
    };
    let major = parse_version_output(&version)?;
    Some(Tool {
        path: path.to_path_buf(),
        version,
        major,
    })
}

/// Candidate directories, in order: `pg_bin_dir`, `/usr/lib/postgresql/{major}/bin`, `PATH`,
/// then every other `/usr/lib/postgresql/*/bin` (for a newer fallback).
fn candidate_dirs(major: u32, pg_bin_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = pg_bin_dir {
        dirs.push(d.to_path_buf());
    }
    dirs.push(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")));
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut others: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .collect();
        others.sort();
        dirs.extend(others);
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// Find `name` of exactly `major`; failing that, the oldest newer one (PostgreSQL's client tools
/// work against older servers); failing that, a clear error listing what was found.
pub fn find_tool(name: &str, major: u32, pg_bin_dir: Option<&Path>) -> Result<Tool, PgError> {
    let dirs = candidate_dirs(major, pg_bin_dir);
    // Probe lazily: running `--version` on every candidate (Debian's /usr/bin wrappers are
    // Perl) costs tens of milliseconds each, and the first exact match is usually the first.
    let mut found: Vec<Tool> = Vec::new();
    for d in &dirs {
        if let Some(t) = tool_at(&d.join(name)) {
            if t.major == major {
                return Ok(t);
            }
            found.push(t);
        }
    }
    if let Some(t) = found
        .iter()
        .filter(|t| t.major > major)
        .min_by_key(|t| t.major)
    {
        tracing::warn!(
            "no {name} {major} found; using {} ({}), which can read PostgreSQL {major}",
            t.path.display(),
            t.version
        );
        return Ok(t.clone());
    }
    Err(PgError::NoMatchingTool {
        tool: name.to_string(),
        major,
        searched: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        found: if found.is_empty() {
            "none".into()
        } else {
            found
                .iter()
                .map(|t| format!("{} ({})", t.path.display(), t.major))
                .collect::<Vec<_>>()
                .join(", ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(
            parse_version_output("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(
            parse_version_output("pg_restore (PostgreSQL) 18.1"),
            Some(18)
        );
        assert_eq!(parse_version_output("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(
            parse_version_output("pg_dump (PostgreSQL) 17beta1"),
            Some(17)
        );
        assert_eq!(parse_version_output("garbage"), None);
    }

    #[test]
    fn a_missing_major_is_a_clear_error() {
        let e = find_tool("pg_dump", 99, None).expect_err("no pg 99");
        let s = format!("{e}\nhint: {}", e.hint().unwrap_or_default());
        assert!(
            s.contains("PostgreSQL 99") && s.contains("pg_bin_dir"),
            "{s}"
        );
    }
}
