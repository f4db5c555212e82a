//! Values an operator writes that need more than a type: durations (`"6h"`) and PostgreSQL
//! URLs (which must not hold passwords). Target names are `dr_catalog::members`' rule.

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
