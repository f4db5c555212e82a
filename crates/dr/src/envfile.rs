//! `--env-file PATH` / `DR_ENV_FILE`: `KEY=value` lines loaded into the process environment
//! before anything reads it (the config path, PGPASSWORD, AWS_*, DR_*), so systemd's
//! `EnvironmentFile=`, cron and a Kubernetes secret can share one file. A variable already set
//! in the environment wins over the file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use dr_core::Error;

/// The flag's name on the command line, and the variable naming the file.
pub const FLAG: &str = "--env-file";
pub const VAR: &str = "DR_ENV_FILE";

/// Where the env file is: `--env-file PATH` (or `--env-file=PATH`) before any `--`, else
/// `DR_ENV_FILE`. Read before clap parses, because the file may set `DR_CONFIG` and friends.
pub fn requested(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            break;
        }
        if s == FLAG {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = s.strip_prefix("--env-file=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os(VAR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Parse `KEY=value` lines: blank lines and `#` comments are skipped, `export ` is allowed
/// before the key, and a value may be wrapped in single or double quotes (taken literally:
/// no escapes, no `$VAR` expansion, like systemd's `EnvironmentFile=` for simple values).
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut vars = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=value", n + 1));
        };
        let key = key.trim();
        let valid = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("line {}: `{key}` is not a variable name", n + 1));
        }
        let value = value.trim();
        let value = match value.as_bytes() {
            [q @ (b'"' | b'\''), .., last] if last == q && value.len() >= 2 => {
                &value[1..value.len() - 1]
            }
            _ => value,
        };
        vars.push((key.to_string(), value.to_string()));
    }
    Ok(vars)
}

/// Load `path` into the environment; variables already set keep their value. Must run before
/// any thread starts (it calls `std::env::set_var`). Returns a warning to log once logging is
/// up, when the file is readable by group or others (it usually holds passwords). An error
/// is a config error (exit 2) with its hint.
pub fn load(path: &Path) -> Result<Option<String>, Error> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::config(format!("the env file {} does not exist", path.display())).with_hint(
                format!("check the path given to {FLAG} (or {VAR}); it is read relative to the current directory"),
            )
        }
        std::io::ErrorKind::PermissionDenied => {
            Error::config(format!("cannot read the env file {}: {e}", path.display())).with_hint(
                "run dr as a user that can read it (it should be mode 600, owned by that user)",
            )
        }
        _ => Error::config(format!("cannot read the env file {}: {e}", path.display()))
            .with_hint(format!("{FLAG} (or {VAR}) names a file of KEY=value lines")),
    })?;
    let vars = parse(&text).map_err(|e| {
        Error::config(format!("env file {}: {e}", path.display()))
            .with_hint("lines are KEY=value, `#` comments, optional `export ` and quotes")
    })?;
    for (k, v) in vars {
        if std::env::var_os(&k).is_none_or(|old| old.is_empty()) {
            std::env::set_var(k, v);
        }
    }
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    Ok((mode & 0o077 != 0).then(|| {
        format!(
            "the env file {} is readable by group or others (mode {mode:o}); it usually holds passwords: run `chmod 600 {}`",
            path.display(),
            path.display()
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_export_and_quotes() {
        let vars = parse(
            "# secrets\n\nPGPASSWORD=s3cr=t\nexport AWS_REGION = eu-west-1\nA=\"x y\"\nB='#not a comment'\nC=\n",
        )
        .expect("a valid env file");
        assert_eq!(
            vars,
            [
                ("PGPASSWORD", "s3cr=t"),
                ("AWS_REGION", "eu-west-1"),
                ("A", "x y"),
                ("B", "#not a comment"),
                ("C", ""),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn a_line_without_equals_or_a_bad_name_is_an_error() {
        assert!(parse("JUST_A_WORD\n").expect_err("no =").contains("line 1"));
        assert!(parse("OK=1\n1X=2\n")
            .expect_err("bad name")
            .contains("line 2"));
        assert!(parse("A B=1\n").is_err());
    }

    /// Regression: a missing env file got the hint about line syntax.
    #[test]
    fn a_missing_env_file_says_it_does_not_exist() {
        let path = std::env::temp_dir().join(format!("dr-no-such-env-{}", std::process::id()));
        let e = load(&path).expect_err("no such file");
        assert_eq!(e.kind, dr_core::Kind::Config);
        assert!(e.message.contains("does not exist"), "{e}");
        assert!(e.message.contains(&path.display().to_string()), "{e}");
        let hint = e.hint.as_deref().unwrap_or_default();
        assert!(hint.contains(FLAG), "{e}");
        assert!(!hint.contains("KEY=value"), "a hint about line syntax: {e}");
    }

    #[test]
    fn a_bad_line_gets_the_syntax_hint() {
        let path = std::env::temp_dir().join(format!("dr-bad-env-{}", std::process::id()));
        std::fs::write(&path, "not a variable line\n").expect("write");
        let e = load(&path).expect_err("bad line");
        let _ = std::fs::remove_file(&path);
        assert!(e.message.contains("line 1"), "{e}");
        assert!(
            e.hint
                .as_deref()
                .unwrap_or_default()
                .starts_with("lines are KEY=value"),
            "{e}"
        );
    }

    #[test]
    fn the_flag_wins_over_the_variable() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            requested(&args(&["dr", "-q", "--env-file", "/a", "backup"])),
            Some(PathBuf::from("/a"))
        );
        assert_eq!(
            requested(&args(&["dr", "--env-file=/b", "backup"])),
            Some(PathBuf::from("/b"))
        );
    }
}
