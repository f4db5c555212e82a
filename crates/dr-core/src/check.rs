//! `dr check`: everything a backup needs, tested without taking one.

use dr_pg::{ConnInfo, ServerVersion};

use crate::{Context, Error, Kind, Result};

/// One line of the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckLine {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

/// Run every check; never stops at the first failure so the operator sees them all.
pub async fn run(ctx: &Context, target: Option<&str>) -> Result<Vec<CheckLine>> {
    let mut out = Vec::new();
    let mut push = |check: String, r: std::result::Result<String, String>| {
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        out.push(CheckLine { check, ok, detail });
    };
    push(
        "config".into(),
        Ok(ctx
            .config
            .source
            .as_ref()
            .map(|p| format!("{} is valid", p.display()))
            .unwrap_or_else(|| "valid".into())),
    );
    push(
        "recipients".into(),
        ctx.recipients()
            .map(|r| format!("{} age recipient(s)", r.to_strings().len()))
            .map_err(|e| e.to_string()),
    );
    if ctx.config.encryption.identity_file.is_some() {
        push(
            "identity".into(),
            ctx.identities().map_err(|e| e.to_string()).and_then(|ids| {
                let recips = ctx.config.recipients().unwrap_or_default();
                if ids.publics().iter().any(|p| recips.contains(p)) {
                    Ok("matches a configured recipient".into())
                } else {
                    Err("the identity matches none of encryption.recipients: backups could not be restored with it".into())
                }
            }),
        );
    }
    push(
        format!("repository {}", ctx.store.location()),
        dr_store::probe_writable(ctx.store.as_ref())
            .await
            .map(|_| "writable".into())
            .map_err(|e| e.to_string()),
    );
    let targets = ctx.config.select_targets(target).map_err(Error::config)?;
    for t in targets {
        let name = format!("target {}", t.name);
        let r: std::result::Result<String, String> = async {
            let conn = ConnInfo::parse(&t.url).map_err(|e| e.to_string())?;
            let client = conn.connect().await.map_err(|e| e.to_string())?;
            let v = ServerVersion::query(&client)
                .await
                .map_err(|e| e.to_string())?;
            let bin = t
                .pg_bin_dir
                .as_deref()
                .or(ctx.config.backup.pg_bin_dir.as_deref());
            let dump = dr_pg::find_tool("pg_dump", v.major, bin).map_err(|e| e.to_string())?;
            let all = dr_pg::find_tool("pg_dumpall", dump.major, bin).map_err(|e| e.to_string())?;
            Ok(format!(
                "PostgreSQL {} reachable as {}; {} at {}; pg_dumpall at {}",
                v.text,
                conn.user(),
                dump.version,
                dump.path.display(),
                all.path.display()
            ))
        }
        .await;
        push(name, r);
    }
    if out.iter().any(|l| !l.ok) {
        let failed: Vec<String> = out
            .iter()
            .filter(|l| !l.ok)
            .map(|l| format!("{}: {}", l.check, l.detail))
            .collect();
        return Err(Error::new(
            Kind::Unavailable,
            format!("check failed:\n{}", failed.join("\n")),
        )
        .with_report(out));
    }
    Ok(out)
}

impl Error {
    fn with_report(self, _lines: Vec<CheckLine>) -> Error {
        self
    }
}
