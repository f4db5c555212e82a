//! Which cluster a target's WAL archive belongs to: `{target}/wal/identity.json` (+ `.sig`),
//! created only if absent by the first push (or stream, or physical backup) and compared on
//! every later one. WAL of another cluster under the same target would make a recovery
//! replay foreign WAL, so a mismatch is refused (exit 7) before anything is written.

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use dr_catalog::wal::{keys, WalIdentity};

use super::retrying;
use crate::trust::{put_signature, signature_key};
use crate::{Context, Error, Kind, Result};

pub const IDENTITY_FORMAT: u32 = 1;

/// The facts about a cluster its archive is tied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cluster {
    pub system_identifier: u64,
    pub major: u32,
    pub segment_bytes: u64,
}

impl From<&dr_pg::WalHeader> for Cluster {
    fn from(h: &dr_pg::WalHeader) -> Cluster {
        Cluster {
            system_identifier: h.system_identifier,
            major: h.major,
            segment_bytes: u64::from(h.segment_size),
        }
    }
}

impl Cluster {
    /// Whether `identity` is this cluster's (the system identifier decides: a major upgrade
    /// or a new `initdb` makes a new one).
    pub fn owns(&self, identity: &WalIdentity) -> bool {
        identity.system_identifier == self.system_identifier.to_string()
    }
}

/// The identity of `target`'s archive; `None` before the first push.
pub async fn read(ctx: &Context, target: &str) -> Result<Option<WalIdentity>> {
    let key = keys::identity(target);
    let got = retrying(ctx, &format!("reading {key}"), || async {
        match ctx.store.get(&key).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(Error::from(e).context(format!("reading {key}"))),
        }
    })
    .await?;
    let Some(body) = got else {
        return Ok(None);
    };
    let identity: WalIdentity = serde_json::from_slice(&body).map_err(|e| {
        Error::new(
            Kind::Integrity,
            format!("`{key}` is not a WAL identity: {e}"),
        )
        .with_hint(
            "it was changed by something other than dr: compare it with \
             `pg_controldata` of the server (Database system identifier) and fix or remove it",
        )
    })?;
    Ok(Some(identity))
}

/// Make sure `target`'s archive belongs to `cluster`: create the identity when there is none
/// yet (create-if-absent: of two first pushers, one writes it and both compare with it), and
/// refuse (exit 7) when it names another cluster.
pub async fn ensure(ctx: &Context, target: &str, cluster: &Cluster) -> Result<WalIdentity> {
    if let Some(found) = read(ctx, target).await? {
        return check(target, cluster, found);
    }
    let key = keys::identity(target);
    let identity = WalIdentity {
        format: IDENTITY_FORMAT,
        system_identifier: cluster.system_identifier.to_string(),
        server_major: cluster.major,
        segment_bytes: cluster.segment_bytes,
        created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        created_by: crate::host::host_name(),
    };
    let document = serde_json::to_vec(&identity)
        .map_err(|e| Error::new(Kind::Failed, format!("encoding {key}: {e}")))?;
    let created = retrying(ctx, &format!("creating {key}"), || async {
        ctx.store
            .put_if_absent(&key, Bytes::from(document.clone()))
            .await
            .map_err(|e| Error::from(e).context(format!("creating {key}")))
    })
    .await?;
    if !created {
        // Another first pusher was faster: its identity is the one to compare with.
        return match read(ctx, target).await? {
            Some(found) => check(target, cluster, found),
            None => Err(Error::new(
                Kind::Failed,
                format!("`{key}` exists but cannot be read back"),
            )),
        };
    }
    // The signature after the document: only the writer of the identity signs it, so a
    // losing first pusher never replaces the winner's signature.
    put_signature(ctx.store.as_ref(), &ctx.signing, &key, &document).await?;
    tracing::info!(
        target,
        system_identifier = %identity.system_identifier,
        major = identity.server_major,
        "WAL archive created for this cluster ({key}, {})",
        signature_key(&key)
    );
    Ok(identity)
}

pub(crate) fn check(target: &str, cluster: &Cluster, found: WalIdentity) -> Result<WalIdentity> {
    if cluster.owns(&found) {
        Ok(found)
    } else {
        Err(mismatch(target, cluster, &found))
    }
}

/// WAL of one cluster pushed to the archive of another: exit 7, nothing written.
pub fn mismatch(target: &str, cluster: &Cluster, found: &WalIdentity) -> Error {
    Error::new(
        Kind::Refused,
        format!(
            "WAL of system {} (PostgreSQL {}) pushed to target {target}, whose archive belongs \
             to system {} (PostgreSQL {}, since {})",
            cluster.system_identifier,
            cluster.major,
            found.system_identifier,
            found.server_major,
            found.created_at
        ),
    )
    .with_hint(
        "point archive_command at the right target (`dr wal push --target NAME %p`) or use a \
         new target name for this cluster (a major upgrade or a new initdb is a new cluster)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_identifier_decides() {
        let ours = Cluster {
            system_identifier: 7_301_234_567_890_123_456,
            major: 17,
            segment_bytes: 16 << 20,
        };
        let mut found = WalIdentity {
            format: 1,
            system_identifier: "7301234567890123456".into(),
            server_major: 17,
            segment_bytes: 16 << 20,
            created_at: "2026-12-03T14:05:40Z".into(),
            created_by: "db1".into(),
        };
        assert!(ours.owns(&found));
        found.system_identifier = "7201234567890123456".into();
        assert!(!ours.owns(&found));
        let e = mismatch("app", &ours, &found);
        assert_eq!(e.kind, Kind::Refused);
        assert!(
            e.message.contains("WAL of system 7301234567890123456"),
            "{e}"
        );
        assert!(e.message.contains("target app"), "{e}");
        assert!(
            e.message.contains("belongs to system 7201234567890123456"),
            "{e}"
        );
        assert!(e.hint.as_deref().is_some_and(|h| h.contains("new target")));
    }
}
