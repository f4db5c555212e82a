//! Target names, as object keys and on the command line. A configured target is one name
//! (1-64 letters, digits, `-`, `_`); a `databases = "all"` target stands for one target per
//! database of its server, named `SERVER.DATABASE` with the database escaped so every name is
//! one safe path segment. This is the one place that knows the rule: config validation,
//! backup, status, prune, restore and the daemon ask here.
//!
//! ```
//! use dr_catalog::members;
//! let name = members::name("pg1", "my db");
//! assert_eq!(name, "pg1.my~20db");
//! assert_eq!(members::server_of(&name), Some("pg1"));
//! assert_eq!(members::split(&name), Some(("pg1", "my db".to_string())));
//! assert!(members::valid_target_name(&name));
//! ```

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

/// The target name of database `database` of the server target `server`: `pg1.my~20db`.
pub fn name(server: &str, database: &str) -> String {
    format!("{server}.{}", escape_database(database))
}

/// The server target a database's target name belongs to: `pg1` for `pg1.app`; `None` for a
/// configured target's name.
pub fn server_of(target: &str) -> Option<&str> {
    target.split_once('.').map(|(server, _)| server)
}

/// The server target and the (unescaped) database of a database's target name; `None` for a
/// configured target's name or a database part [`escape_database`] never writes.
pub fn split(target: &str) -> Option<(&str, String)> {
    let (server, escaped) = target.split_once('.')?;
    Some((server, unescape_database(escaped)?))
}

/// Whether `target` is `server` itself or one of its databases.
pub fn belongs_to(target: &str, server: &str) -> bool {
    target == server || server_of(target) == Some(server)
}

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

    #[test]
    fn a_member_name_splits_back_into_its_server_and_database() {
        for db in ["app", "my db", "app.v2", "Quoted\"Name", "Ünï"] {
            let n = name("pg1", db);
            assert_eq!(split(&n), Some(("pg1", db.to_string())), "{n}");
            assert_eq!(server_of(&n), Some("pg1"));
            assert!(belongs_to(&n, "pg1") && !belongs_to(&n, "pg2"));
        }
        assert_eq!(split("pg1"), None);
        assert_eq!(server_of("pg1"), None);
        assert_eq!(split("pg1.a b"), None);
        assert!(belongs_to("pg1", "pg1"));
    }
}
