//! `dr check` of each `[[copies]]` repository, with its own credentials: reachable and
//! writable, and its Object Lock as configured — before the first `dr copy` finds out.

use super::{line, lock_line, CheckLine};
use crate::{Context, Error};

/// Two lines per copy: `copy NAME URL` (writable) and `copy NAME object lock`; one failed
/// line when the copy's store cannot even be opened (its credentials, say).
pub(super) async fn lines(ctx: &Context) -> Vec<CheckLine> {
    let mut out = Vec::new();
    for c in &ctx.config.copies {
        let name = &c.name;
        let prefix = c.env_prefix();
        let store = match ctx.config.for_copy(name) {
            Ok(config) => crate::open_repository(&config).await,
            Err(e) => Err(Error::from(e)),
        };
        let store = match store {
            Ok(store) => store,
            Err(e) => {
                out.push(line(
                    format!("copy {name}"),
                    Err::<String, _>(e.context(format!("cannot open copy `{name}`"))),
                ));
                continue;
            }
        };
        out.push(line(
            format!("copy {name} {}", store.location()),
            dr_store::probe_writable(store.as_ref())
                .await
                .map(|_| "writable".to_string())
                .map_err(|e| {
                    Error::from(e).with_hint(format!(
                        "`dr copy --to {name}` would fail the same way: check the copy's url and its own credentials ({prefix}AWS_ACCESS_KEY_ID and {prefix}AWS_SECRET_ACCESS_KEY, or {prefix}AWS_PROFILE)"
                    ))
                }),
        ));
        out.push(line(
            format!("copy {name} object lock"),
            lock_line(store.as_ref()).await,
        ));
    }
    out
}
