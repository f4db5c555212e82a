//! Values an operator writes that need more than a type: durations (`"6h"`), target names
//! (they become object keys), PostgreSQL URLs (which must not hold passwords).

use serde::Deserialize;

/// A duration in config: whole seconds (`3600`) or a number with a unit (`90s`, `45m`,
/// `6h`, `2d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_secs(s: u64) -> Duration {
        Duration(std::time::Duration::from_secs(s))
    }
    pub fn as_secs(&self) -> u64 {
        self.0.as_secs()
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0.as_secs();
        match s {
            0 => write!(f, "0s"),
            _ if s.is_multiple_of(86_400) => write!(f, "{}d", s / 86_400),
            _ if s.is_multiple_of(3600) => write!(f, "{}h", s / 3600),
            _ if s.is_multiple_of(60) => write!(f, "{}m", s / 60),
            _ => write!(f, "{s}s"),
        }
    }
}

impl std::str::FromStr for Duration {
    type Err = String;
    fn from_str(v: &str) -> Result<Duration, String> {
        let v = v.trim();
        let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
        let (num, unit) = v.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("`{v}` is not a duration (write e.g. 3600, \"90m\", \"6h\", \"1d\")")
        })?;
        let mult = match unit.trim() {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            other => return Err(format!("`{v}`: unknown unit `{other}` (use s, m, h or d)")),
        };
        Ok(Duration::from_secs(n.saturating_mul(mult)))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A name as written in `[[targets]]`: 1-64 letters, digits, `-`, `_`. It becomes the first
/// component of object keys.
pub fn valid_configured_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A target name as it appears in the repository and on the command line: a configured name,
/// or `SERVER.DATABASE` for one database of a `databases = "all"` target, the database name
/// escaped by [`escape_database`]. Either way one safe path segment (at most 254 bytes).
pub fn valid_target_name(name: &str) -> bool {
    match name.split_once('.') {
        None => valid_configured_name(name),
        Some((server, db)) => {
            valid_configured_name(server) && unescape_database(db).is_some_and(|d| d.len() <= 63)
        }
    }
}

/// The database part of an expanded target name: letters, digits, `-` and `_` stay; every
/// other byte of the name's UTF-8 becomes `~XX` (two upper-case hex digits). `my db` →
/// `my~20db`, `app.v2` → `app~2Ev2`, `Ünï` → `~C3~9Cn~C3~AF`. Reversible ([`unescape_database`]),
/// never empty for a non-empty name, and never `.`, `..` or anything with `/`.
pub fn escape_database(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("~{b:02X}"));
        }
    }
    out
}

/// The database name an escaped part stands for; `None` when `s` is not exactly what
/// [`escape_database`] writes (so every database has exactly one target name).
pub fn unescape_database(s: &str) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'~' {
            let hex = s.get(i + 1..i + 3)?;
            if !hex
                .bytes()
                .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(&h))
            {
                return None;
            }
            let v = u8::from_str_radix(hex, 16).ok()?;
            if v.is_ascii_alphanumeric() || v == b'-' || v == b'_' {
                return None; // written as itself, never escaped
            }
            out.push(v);
            i += 3;
        } else if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether a PostgreSQL URL carries a password, in its user part or as a `password=` query
/// parameter. Passwords belong in PGPASSWORD, ~/.pgpass or a service file: a URL ends up in
/// shell history, `ps` and config repositories.
pub fn url_holds_password(url: &str) -> bool {
    match url::Url::parse(url) {
        Ok(u) => u.password().is_some() || u.query_pairs().any(|(k, _)| k == "password"),
        // Unparseable: look for the shapes by hand rather than let one through.
        Err(_) => {
            url.contains("password=")
                || url.split_once('@').is_some_and(|(cred, _)| {
                    cred.rsplit("//").next().is_some_and(|c| c.contains(':'))
                })
        }
    }
}

/// The hint for a password found in a URL.
pub const PASSWORD_HINT: &str = "remove it; set PGPASSWORD (e.g. from an env file), add a line to ~/.pgpass (or the file PGPASSFILE names), or use a service file (PGSERVICEFILE)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_escape_to_one_safe_segment_and_back() {
        for (db, escaped) in [
            ("app", "app"),
            ("my db", "my~20db"),
            ("app.v2", "app~2Ev2"),
            ("a/b", "a~2Fb"),
            ("..", "~2E~2E"),
            ("~x", "~7Ex"),
            ("Ünï", "~C3~9Cn~C3~AF"),
            ("Quoted\"Name", "Quoted~22Name"),
        ] {
            assert_eq!(escape_database(db), escaped);
            assert_eq!(unescape_database(escaped).as_deref(), Some(db));
            let name = format!("pg1.{escaped}");
            assert!(valid_target_name(&name), "{name}");
        }
        // The longest database name (63 bytes, all escaped) still fits one path segment.
        let long = "é".repeat(31);
        let name = format!("{}.{}", "s".repeat(64), escape_database(&long));
        assert!(
            valid_target_name(&name) && name.len() <= 255,
            "{}",
            name.len()
        );
        for bad in [
            "pg1.", ".app", "pg1.a.b", "pg1.a~2", "pg1.a~2e", "pg1.~41", "pg1.a b", "pg/1.app",
            "pg1./", "pg1..",
        ] {
            assert!(!valid_target_name(bad), "{bad}");
        }
        assert!(!valid_configured_name("pg1.app"));
        assert!(valid_configured_name("pg1"));
    }
}
