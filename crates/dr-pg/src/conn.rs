//! Connection settings: a libpq URL plus libpq's password sources.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;

use crate::error::{describe, PgError};

/// A parsed connection. `Display` never shows the password.
#[derive(Clone)]
pub struct ConnInfo {
    config: tokio_postgres::Config,
    redacted: String,
    /// `sslmode` as the operator wrote it (libpq spelling), for children.
    ssl_mode: String,
    verify: crate::tls::Verify,
    root_cert: Option<PathBuf>,
    limits: NetworkLimits,
}

/// Bounds on waiting for the server. Without them a network partition mid-dump hangs a run
/// (and its lock) for as long as the partition lasts: the kernel's defaults notice a dead
/// peer only after two hours. Set from libpq's URL parameters of the same names, else the
/// defaults below; applied to dr's own connections and, through `--dbname`, to its children.
///
/// The server side gets the same bounds ([`NetworkLimits::server_options`]): after a
/// partition dr's sessions — the snapshot holder idle in its transaction, the dumps' — must
/// not stay on the server holding table locks until *its* keepalive (hours) notices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkLimits {
    /// `connect_timeout` (seconds in the URL).
    pub connect_timeout: Duration,
    /// `keepalives_idle`: silence before the first probe (seconds).
    pub keepalives_idle: Duration,
    /// `keepalives_interval`: between probes (seconds).
    pub keepalives_interval: Duration,
    /// `keepalives_count`: unanswered probes before the connection is dead.
    pub keepalives_count: u32,
    /// `tcp_user_timeout`: how long sent data may stay unacknowledged (milliseconds in the URL).
    pub tcp_user_timeout: Duration,
}

impl Default for NetworkLimits {
    fn default() -> Self {
        NetworkLimits {
            connect_timeout: Duration::from_secs(30),
            keepalives_idle: Duration::from_secs(60),
            keepalives_interval: Duration::from_secs(10),
            keepalives_count: 6,
            tcp_user_timeout: Duration::from_secs(120),
        }
    }
}

impl NetworkLimits {
    /// The server-side bounds for a session, as the startup `options` (`-c name=value`):
    /// `tcp_keepalives_idle`, `tcp_keepalives_interval`, `tcp_keepalives_count` and
    /// `tcp_user_timeout` with the client's values, so the server drops a session whose
    /// client is gone within `keepalives_idle + keepalives_interval × keepalives_count` when
    /// idle and within `tcp_user_timeout` while sending. Every user may set them; the server
    /// ignores them on Unix sockets.
    pub fn server_options(&self) -> String {
        format!(
            "-c tcp_keepalives_idle={} -c tcp_keepalives_interval={} -c tcp_keepalives_count={} -c tcp_user_timeout={}",
            self.keepalives_idle.as_secs(),
            self.keepalives_interval.as_secs(),
            self.keepalives_count,
            self.tcp_user_timeout.as_millis()
        )
    }
}

/// The URL parameters [`NetworkLimits`] takes (libpq's names).
const LIMIT_PARAMS: [&str; 6] = [
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
];

/// Take the network limits out of a URL's query; return the rest of the URL.
fn split_limit_params(url: &str) -> Result<(String, NetworkLimits), String> {
    let mut limits = NetworkLimits::default();
    let Ok(mut u) = url::Url::parse(url) else {
        return Ok((url.to_string(), limits));
    };
    let mut kept: Vec<(String, String)> = Vec::new();
    let mut found = false;
    for (k, v) in u.query_pairs() {
        if !LIMIT_PARAMS.contains(&k.as_ref()) {
            kept.push((k.into_owned(), v.into_owned()));
            continue;
        }
        found = true;
        let n: u64 = v
            .trim()
            .parse()
            .map_err(|_| format!("{k}={v}: expected a whole number"))?;
        match k.as_ref() {
            "connect_timeout" => limits.connect_timeout = Duration::from_secs(n.max(2)),
            "keepalives" if n == 0 => {
                return Err("keepalives=0: dr needs TCP keepalives to notice a dead server; tune keepalives_idle instead".into())
            }
            "keepalives" => {}
            "keepalives_idle" => limits.keepalives_idle = Duration::from_secs(n.max(1)),
            "keepalives_interval" => limits.keepalives_interval = Duration::from_secs(n.max(1)),
            "keepalives_count" => limits.keepalives_count = u32::try_from(n.max(1)).unwrap_or(u32::MAX),
            _ => limits.tcp_user_timeout = Duration::from_millis(n),
        }
    }
    if found {
        if kept.is_empty() {
            u.set_query(None);
        } else {
            set_query(&mut u, &kept);
        }
    }
    Ok((u.to_string(), limits))
}

/// Replace a URL's query. Form encoding writes a space as `+`, which libpq and
/// tokio-postgres read as a plus sign (`options=-c%20x` would become `-c+x`): spaces are
/// written `%20` (a literal `+` is `%2B` either way).
fn set_query(u: &mut url::Url, pairs: &[(String, String)]) {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
        .replace('+', "%20");
    u.set_query(Some(&query));
}

/// A value in a libpq `key=value` connection string.
fn conninfo_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl fmt::Display for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnInfo({})", self.redacted)
    }
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "password" {
                        "***".into()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => "<unparseable url>".into(),
    }
}

impl ConnInfo {
    /// Parse a `postgres://` URL; fill the password from `PGPASSWORD`, then `PGPASSFILE` or
    /// `~/.pgpass`, as libpq would; default user and host as libpq would.
    pub fn parse(url: &str) -> Result<ConnInfo, PgError> {
        Self::parse_with_env(url, |k| std::env::var(k).ok())
    }

    pub fn parse_with_env(
        url: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ConnInfo, PgError> {
        let redacted = redact(url);
        let (url, limits) = split_limit_params(url).map_err(|detail| PgError::BadUrl {
            url: redacted.clone(),
            detail,
        })?;
        let url = url.as_str();
        // tokio-postgres knows only disable/prefer/require: take the libpq TLS settings out of
        // the URL and apply them ourselves (crate::tls), then hand it the rest.
        let (url, ssl_mode, root_cert) = split_tls_params(url, &env);
        let verify = match ssl_mode.as_str() {
            "verify-full" => crate::tls::Verify::Full,
            "verify-ca" => crate::tls::Verify::Chain,
            // libpq: `require` with a root certificate file behaves like verify-ca.
            "require" if root_cert.is_some() => crate::tls::Verify::Chain,
            "disable" | "allow" | "prefer" | "require" => crate::tls::Verify::None,
            other => {
                return Err(PgError::BadUrl {
                    url: redacted,
                    detail: format!("sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"),
                })
            }
        };
        let mut config = tokio_postgres::Config::from_str(&url).map_err(|e| PgError::BadUrl {
            url: redacted.clone(),
            detail: e.to_string(),
        })?;
        if config.get_hosts().is_empty() {
            match env("PGHOST") {
                Some(h) if h.starts_with('/') => {
                    config.host_path(h);
                }
                Some(h) => {
                    config.host(&h);
                }
                None => {
                    config.host_path("/var/run/postgresql");
                }
            }
        }
        if config.get_ports().is_empty() {
            let port = env("PGPORT").and_then(|p| p.parse().ok()).unwrap_or(5432);
            config.port(port);
        }
        if config.get_user().is_none() {
            let user = env("PGUSER")
                .or_else(|| env("USER"))
                .unwrap_or_else(|| "postgres".into());
            config.user(&user);
        }
        if config.get_dbname().is_none() {
            let db = env("PGDATABASE")
                .or_else(|| config.get_user().map(str::to_string))
                .unwrap_or_else(|| "postgres".into());
            config.dbname(&db);
        }
        if config.get_application_name().is_none() {
            config.application_name("dr");
        }
        config
            .connect_timeout(limits.connect_timeout)
            .keepalives(true)
            .keepalives_idle(limits.keepalives_idle)
            .keepalives_interval(limits.keepalives_interval)
            .keepalives_retries(limits.keepalives_count)
            .tcp_user_timeout(limits.tcp_user_timeout);
        // The server-side bounds first: `options` the operator wrote come after and win.
        let options = match config.get_options() {
            Some(o) if !o.trim().is_empty() => format!("{} {o}", limits.server_options()),
            _ => limits.server_options(),
        };
        config.options(options);
        let mut info = ConnInfo {
            config,
            redacted,
            ssl_mode,
            verify,
            root_cert,
            limits,
        };
        if info.config.get_password().is_none() {
            if let Some(p) = env("PGPASSWORD") {
                info.config.password(p);
            } else if let Some(p) = info.pgpass_lookup(&env) {
                info.config.password(p);
            }
        }
        Ok(info)
    }

    /// A server dr runs itself on a Unix socket in `dir` (a private directory): `user` on
    /// `dbname`, no password, no TLS. Shown as `postgresql:///DB?host=DIR&port=PORT&user=USER`.
    pub fn unix_socket(dir: &Path, port: u16, user: &str, dbname: &str) -> ConnInfo {
        let limits = NetworkLimits::default();
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(dir)
            .port(port)
            .user(user)
            .dbname(dbname)
            .application_name("dr")
            .ssl_mode(tokio_postgres::config::SslMode::Disable)
            .connect_timeout(limits.connect_timeout)
            .options(limits.server_options());
        let mut shown = url::Url::parse("postgresql:///").expect("a constant URL");
        shown.set_path(&format!("/{dbname}"));
        shown
            .query_pairs_mut()
            .append_pair("host", &dir.display().to_string())
            .append_pair("port", &port.to_string())
            .append_pair("user", user);
        ConnInfo {
            config,
            redacted: shown.to_string(),
            ssl_mode: "disable".into(),
            verify: crate::tls::Verify::None,
            root_cert: None,
            limits,
        }
    }

    fn pgpass_lookup(&self, env: &impl Fn(&str) -> Option<String>) -> Option<String> {
        let path = env("PGPASSFILE")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")))?;
        let text = std::fs::read_to_string(path).ok()?;
        let host = match self.config.get_hosts().first()? {
            Host::Tcp(h) => h.clone(),
            Host::Unix(_) => "localhost".to_string(),
        };
        let port = self.port().to_string();
        pgpass_match(&text, &host, &port, self.dbname(), self.user())
    }

    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or("postgres")
    }
    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or("postgres")
    }
    pub fn port(&self) -> u16 {
        self.config.get_ports().first().copied().unwrap_or(5432)
    }
    /// `host:port` or the socket directory, for messages.
    pub fn host_display(&self) -> String {
        match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => format!("{h}:{}", self.port()),
            Some(Host::Unix(p)) => format!("{} port {}", p.display(), self.port()),
            None => "?".into(),
        }
    }

    /// The same server, another database.
    pub fn with_dbname(&self, db: &str) -> ConnInfo {
        let mut c = self.clone();
        c.config.dbname(db);
        if let Ok(mut u) = url::Url::parse(&self.redacted) {
            u.set_path(&format!("/{db}"));
            c.redacted = u.to_string();
        }
        c
    }

    /// The network limits in force.
    pub fn limits(&self) -> NetworkLimits {
        self.limits
    }

    /// The application name sessions show in `pg_stat_activity`.
    pub fn application_name(&self) -> &str {
        self.config.get_application_name().unwrap_or("dr")
    }

    /// The same connection under another application name: dr's children of one run are
    /// told apart from everything else on the server by it (to watch and to end them).
    pub fn with_application_name(&self, name: &str) -> ConnInfo {
        let mut c = self.clone();
        c.config.application_name(name);
        c
    }

    /// The value for a child's `--dbname`: a libpq connection string naming the database and
    /// the network limits (libpq has no environment variables for keepalives). No secrets.
    pub fn dbname_arg(&self) -> String {
        let l = &self.limits;
        format!(
            "dbname={} keepalives=1 keepalives_idle={} keepalives_interval={} keepalives_count={} tcp_user_timeout={}",
            conninfo_value(self.dbname()),
            l.keepalives_idle.as_secs(),
            l.keepalives_interval.as_secs(),
            l.keepalives_count,
            l.tcp_user_timeout.as_millis()
        )
    }

    /// Environment for libpq children (`pg_dump`, `pg_restore`, ...): never argv.
    pub fn child_env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => env.push(("PGHOST".into(), h.clone())),
            Some(Host::Unix(p)) => env.push(("PGHOST".into(), p.display().to_string())),
            None => {}
        }
        env.push(("PGPORT".into(), self.port().to_string()));
        env.push(("PGUSER".into(), self.user().to_string()));
        env.push(("PGDATABASE".into(), self.dbname().to_string()));
        if let Some(p) = self.config.get_password() {
            env.push(("PGPASSWORD".into(), String::from_utf8_lossy(p).into_owned()));
        }
        env.push(("PGSSLMODE".into(), self.ssl_mode.clone()));
        if let Some(r) = &self.root_cert {
            env.push(("PGSSLROOTCERT".into(), r.display().to_string()));
        }
        env.push(("PGAPPNAME".into(), self.application_name().to_string()));
        // The server-side network bounds (and the URL's own `options`): pg_dump and
        // pg_restore have no other way to pass them.
        if let Some(o) = self.config.get_options() {
            env.push(("PGOPTIONS".into(), o.to_string()));
        }
        env.push((
            "PGCONNECT_TIMEOUT".into(),
            self.limits.connect_timeout.as_secs().to_string(),
        ));
        env
    }

    /// Connect to the server's maintenance database (`postgres`, else `template1`): for
    /// creating databases and roles.
    pub async fn connect_admin(&self) -> Result<tokio_postgres::Client, PgError> {
        match self.with_dbname("postgres").connect().await {
            Ok(c) => Ok(c),
            Err(first) => match self.with_dbname("template1").connect().await {
                Ok(c) => Ok(c),
                Err(_) => Err(first),
            },
        }
    }

    /// Connect to the cluster, whatever database: the URL's, else the maintenance database
    /// (a `databases = "all"` target's URL may name none that exists). For what concerns
    /// the whole cluster: base backups, the WAL stream. The URL's error is the one reported.
    pub async fn connect_cluster(&self) -> Result<tokio_postgres::Client, PgError> {
        match self.connect().await {
            Ok(c) => Ok(c),
            Err(first) => self.connect_admin().await.map_err(|_| first),
        }
    }

    /// Connect; the connection task runs on the current runtime.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, PgError> {
        let connected = if self.config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
            self.config
                .connect(tokio_postgres::NoTls)
                .await
                .map(|(c, conn)| {
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!("postgres connection closed: {e}");
                        }
                    });
                    c
                })
        } else {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(crate::tls::client_config(
                self.verify,
                self.root_cert.as_deref(),
            )?);
            self.config.connect(tls).await.map(|(c, conn)| {
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("postgres connection closed: {e}");
                    }
                });
                c
            })
        };
        let client = connected.map_err(|e| {
            let mut detail = describe(&e);
            let hint = if let Some(host) = self.unknown_host(&detail) {
                detail = format!("no such host `{host}` ({detail})");
                format!("check the host name in the URL (a typo?) and this machine's DNS: `getent hosts {host}`")
            } else if detail.contains("password authentication failed")
                || detail.contains("no password supplied")
                || detail.contains("password")
            {
                "set PGPASSWORD, or add a line to ~/.pgpass (or the file PGPASSFILE names)".to_string()
            } else if detail.contains("TLS") || detail.contains("certificate") || detail.contains("SSL") {
                "the server's TLS certificate or settings do not fit: check sslmode and sslrootcert in the target url (verify-full needs the CA that signed the server certificate and a matching host name)".to_string()
            } else if detail.contains("does not exist") {
                "check the database and user names in the target url".to_string()
            } else {
                format!(
                    "is PostgreSQL running and accepting connections at {}? try `pg_isready -h HOST -p PORT`",
                    self.host_display()
                )
            };
            PgError::Connect {
                target: self.redacted.clone(),
                detail,
                hint,
                transient: crate::error::transient(&e),
            }
        })?;
        Ok(client)
    }
}

impl ConnInfo {
    /// The host name, when `detail` says it could not be resolved (DNS).
    fn unknown_host(&self, detail: &str) -> Option<String> {
        let dns = [
            "failed to lookup address",
            "Name or service not known",
            "nodename nor servname",
            "No address associated with hostname",
        ];
        if !dns.iter().any(|d| detail.contains(d)) {
            return None;
        }
        match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => Some(h.clone()),
            _ => None,
        }
    }
}

/// Take `sslmode` and `sslrootcert` out of a URL (falling back to `PGSSLMODE` /
/// `PGSSLROOTCERT`); return the URL tokio-postgres can parse, the libpq mode, the root file.
fn split_tls_params(
    url: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> (String, String, Option<PathBuf>) {
    let mut mode = env("PGSSLMODE").unwrap_or_else(|| "prefer".into());
    let mut root = env("PGSSLROOTCERT").map(PathBuf::from);
    let Ok(mut u) = url::Url::parse(url) else {
        return (url.to_string(), mode, root);
    };
    let mut kept: Vec<(String, String)> = Vec::new();
    for (k, v) in u.query_pairs() {
        match k.as_ref() {
            "sslmode" => mode = v.into_owned(),
            "sslrootcert" => root = Some(PathBuf::from(v.as_ref())),
            _ => kept.push((k.into_owned(), v.into_owned())),
        }
    }
    let for_driver = match mode.as_str() {
        "verify-ca" | "verify-full" => "require",
        "allow" => "prefer",
        other => other,
    };
    kept.push(("sslmode".into(), for_driver.into()));
    set_query(&mut u, &kept);
    (u.to_string(), mode, root)
}

/// libpq's ~/.pgpass format: `host:port:db:user:password`, `*` wildcards, `\:` and `\\` escapes.
fn pgpass_match(text: &str, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        let ok = |f: &str, v: &str| f == "*" || f == v;
        if ok(&fields[0], host)
            && ok(&fields[1], port)
            && ok(&fields[2], db)
            && ok(&fields[3], user)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unix_socket_connection_names_its_directory_and_carries_no_password() {
        let c = ConnInfo::unix_socket(Path::new("/tmp/dr-sandbox-x"), 5432, "app user", "Sales ü");
        assert_eq!(c.dbname(), "Sales ü");
        assert_eq!(c.user(), "app user");
        assert_eq!(c.host_display(), "/tmp/dr-sandbox-x port 5432");
        let shown = c.to_string();
        assert!(
            shown.starts_with("postgresql:///Sales%20%C3%BC?host=%2Ftmp%2Fdr-sandbox-x"),
            "{shown}"
        );
        let env = c.child_env();
        assert!(env.contains(&("PGHOST".into(), "/tmp/dr-sandbox-x".into())));
        assert!(env.contains(&("PGSSLMODE".into(), "disable".into())));
        assert!(!env.iter().any(|(k, _)| k == "PGPASSWORD"));
        assert_eq!(c.with_dbname("postgres").dbname(), "postgres");
    }

    #[test]
    fn libpq_ssl_modes_are_understood() {
        let c = ConnInfo::parse_with_env(
            "postgres://u@db.example/app?sslmode=verify-full&sslrootcert=/etc/ca.pem",
            |_| None,
        )
        .expect("parse");
        let env = c.child_env();
        assert!(env.contains(&("PGSSLMODE".into(), "verify-full".into())));
        assert!(env.contains(&("PGSSLROOTCERT".into(), "/etc/ca.pem".into())));
        assert!(ConnInfo::parse_with_env("postgres://u@h/app?sslmode=bogus", |_| None).is_err());
        let plain = ConnInfo::parse_with_env("postgres://u@h/app", |_| None).expect("parse");
        assert!(plain
            .child_env()
            .contains(&("PGSSLMODE".into(), "prefer".into())));
    }

    #[test]
    fn pgpass_wildcards_and_escapes() {
        let t = "# comment\nother:5432:*:*:nope\nlocalhost:*:app:bob:pa\\:ss\n*:*:*:*:fallback\n";
        assert_eq!(
            pgpass_match(t, "localhost", "5432", "app", "bob").as_deref(),
            Some("pa:ss")
        );
        assert_eq!(
            pgpass_match(t, "db1", "5432", "x", "y").as_deref(),
            Some("fallback")
        );
    }

    #[test]
    fn password_from_env_never_displayed() {
        let c = ConnInfo::parse_with_env("postgres://bob@db.example:6543/app", |k| {
            (k == "PGPASSWORD").then(|| "s3cret".to_string())
        })
        .expect("parse");
        assert!(!c.to_string().contains("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        let env = c.child_env();
        assert!(env.contains(&("PGPASSWORD".into(), "s3cret".into())));
        assert!(env.contains(&("PGPORT".into(), "6543".into())));
        assert!(env.contains(&("PGDATABASE".into(), "app".into())));
    }

    #[test]
    fn url_password_is_redacted() {
        let c = ConnInfo::parse_with_env("postgres://bob:hunter2@h/app", |_| None).expect("parse");
        assert!(!c.to_string().contains("hunter2"));
        assert_eq!(c.with_dbname("other").dbname(), "other");
        assert!(!c.with_dbname("other").to_string().contains("hunter2"));
    }

    #[test]
    fn network_limits_default_and_come_from_libpq_url_parameters() {
        let c = ConnInfo::parse_with_env("postgres://u@h/app", |_| None).expect("parse");
        assert_eq!(c.limits(), NetworkLimits::default());
        let c = ConnInfo::parse_with_env(
            "postgres://u@h/my%20app?keepalives_idle=2&keepalives_interval=1&keepalives_count=2&tcp_user_timeout=3000&connect_timeout=5&sslmode=disable",
            |_| None,
        )
        .expect("parse");
        let l = c.limits();
        assert_eq!(l.keepalives_idle, Duration::from_secs(2));
        assert_eq!(l.keepalives_count, 2);
        assert_eq!(l.tcp_user_timeout, Duration::from_millis(3000));
        assert_eq!(l.connect_timeout, Duration::from_secs(5));
        assert_eq!(
            c.dbname_arg(),
            "dbname='my app' keepalives=1 keepalives_idle=2 keepalives_interval=1 keepalives_count=2 tcp_user_timeout=3000"
        );
        assert!(c
            .child_env()
            .contains(&("PGCONNECT_TIMEOUT".into(), "5".into())));
        // The server bounds the session the same way, in dr and in its children.
        assert_eq!(
            l.server_options(),
            "-c tcp_keepalives_idle=2 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=2 -c tcp_user_timeout=3000"
        );
        assert!(c
            .child_env()
            .contains(&("PGOPTIONS".into(), l.server_options())));
        let own =
            ConnInfo::parse_with_env("postgres://u@h/app?options=-c%20search_path%3Dx", |_| None)
                .expect("parse");
        let env = own.child_env();
        assert!(
            env.contains(&(
                "PGOPTIONS".into(),
                format!(
                    "{} -c search_path=x",
                    NetworkLimits::default().server_options()
                )
            )),
            "{env:?}"
        );
        assert!(ConnInfo::parse_with_env("postgres://u@h/app?keepalives=0", |_| None).is_err());
        assert!(
            ConnInfo::parse_with_env("postgres://u@h/app?keepalives_idle=x", |_| None).is_err()
        );
    }

    #[test]
    fn conninfo_values_are_quoted() {
        assert_eq!(conninfo_value(r"it's\x"), r"'it\'s\\x'");
    }

    /// Decided where the error is made, from the I/O error kind: a refused connection may
    /// pass, a bad URL never does.
    #[tokio::test]
    async fn a_refused_connection_is_transient_and_a_bad_url_is_not() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let url = format!("postgres://u@127.0.0.1:{port}/db?sslmode=disable");
        let conn = ConnInfo::parse_with_env(&url, |_| None).expect("url");
        let e = conn.connect().await.expect_err("nothing listens");
        assert!(
            matches!(e, PgError::Connect { .. }) && e.is_transient(),
            "{e:?}"
        );
        let bad = ConnInfo::parse_with_env("postgres://h:notaport/db", |_| None).expect_err("bad");
        assert!(!bad.is_transient());
    }

    #[test]
    fn bad_url_is_named() {
        let e = ConnInfo::parse_with_env("postgres://h:notaport/db", |_| None).expect_err("bad");
        // The URL is named in the message or in the example of the hint.
        let said = format!("{e} {}", e.hint().unwrap_or_default());
        assert!(said.contains("postgres://"), "{said}");
    }
}
