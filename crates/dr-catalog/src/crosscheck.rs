//! Tamper evidence beyond digests: the plain manifest against the encrypted details.
//!
//! A manifest lists each object with its digest, but nothing in it says that the list is
//! whole: an entry removed (a data stream left out) or added (an object that was never part
//! of the backup) still passes every digest. The details, encrypted and written after every
//! other object, record which stream holds which table and, since this check exists, the
//! objects themselves: a restore compares the two before it touches a target.
//!
//! Backups made before the details recorded their objects are checked as far as they can be:
//! the data streams must be `data-1` … `data-N` in order, and every table's stream listed.

use crate::{keys, BackupDetails, Layout, Manifest, ObjectRecord, ObjectRole};

/// An object's name inside its backup (`data-2.zst.age`): what the details and the manifest
/// must agree on. (The backup's id and target are the manifest's place, checked by
/// [`Manifest::check_at`].)
fn name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Whether the manifest `m` lists exactly the objects its details `d` record, and every data
/// stream the details' tables are in. `Err` says what differs (no table names).
pub fn cross_check(m: &Manifest, d: &BackupDetails) -> Result<(), String> {
    let listed: Vec<&ObjectRecord> = m
        .objects
        .iter()
        .filter(|o| o.role != ObjectRole::Details)
        .collect();
    if !d.objects.is_empty() {
        let mut problems = Vec::new();
        for o in &d.objects {
            match listed.iter().find(|l| name(&l.key) == name(&o.key)) {
                None => problems.push(format!("`{}` is missing", name(&o.key))),
                Some(l) if !same(l, o) => problems.push(format!(
                    "`{}` is listed differently (role, size, digest or step)",
                    name(&o.key)
                )),
                Some(_) => {}
            }
        }
        for l in &listed {
            if !d.objects.iter().any(|o| name(&o.key) == name(&l.key)) {
                problems.push(format!("`{}` was not written by this backup", name(&l.key)));
            }
        }
        let order = |v: Vec<&str>| v.join(",");
        if problems.is_empty()
            && order(listed.iter().map(|o| name(&o.key)).collect())
                != order(d.objects.iter().map(|o| name(&o.key)).collect())
        {
            problems.push("the objects are listed in another order".into());
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
    }
    if let Some(Layout::Sections { data, .. }) = m.layout() {
        for (k, o) in (1u32..).zip(data.iter()) {
            if name(&o.key) != keys::data_stream(k) {
                return Err(format!(
                    "data stream {k} is listed as `{}`, not `{}`",
                    name(&o.key),
                    keys::data_stream(k)
                ));
            }
        }
        let n = data.len();
        let unlisted = d
            .tables
            .iter()
            .filter_map(|t| t.stream)
            .filter(|&k| k == 0 || usize::try_from(k).map_or(true, |k| k > n))
            .collect::<std::collections::BTreeSet<u32>>();
        if let Some(k) = unlisted.iter().next() {
            let tables = d.tables.iter().filter(|t| t.stream == Some(*k)).count();
            return Err(format!(
                "{tables} table(s) have their rows in data stream {k} (`{}`), which the manifest does not list (it lists {n})",
                keys::data_stream(*k)
            ));
        }
    }
    Ok(())
}

/// The same object: everything but where the key places it.
fn same(a: &ObjectRecord, b: &ObjectRecord) -> bool {
    a.role == b.role
        && a.bytes == b.bytes
        && a.sha256 == b.sha256
        && a.raw_bytes == b.raw_bytes
        && a.restore_step == b.restore_step
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackupId, TableCount, MANIFEST_FORMAT, STEP_DATA, STEP_POST_DATA, STEP_PRE_DATA};

    fn rec(role: ObjectRole, name: &str, step: Option<u32>) -> ObjectRecord {
        ObjectRecord {
            role,
            key: format!("app/20261122T030000Z/{name}"),
            bytes: 10,
            sha256: format!("{:0>64}", name.len()),
            raw_bytes: 20,
            part_bytes: None,
            restore_step: step,
            chunks: Vec::new(),
        }
    }

    /// A backup in 3 data streams; the details record its objects when `recorded`.
    fn backup(recorded: bool) -> (Manifest, BackupDetails) {
        let id: BackupId = "20261122T030000Z".parse().expect("id");
        let mut objects = vec![rec(
            ObjectRole::PreData,
            keys::PRE_DATA,
            Some(STEP_PRE_DATA),
        )];
        for k in 1..=3 {
            objects.push(rec(
                ObjectRole::Data,
                &keys::data_stream(k),
                Some(STEP_DATA),
            ));
        }
        objects.push(rec(
            ObjectRole::PostData,
            keys::POST_DATA,
            Some(STEP_POST_DATA),
        ));
        objects.push(rec(ObjectRole::Globals, keys::GLOBALS, None));
        let d = BackupDetails {
            format: 2,
            tables: (1..=3)
                .map(|k| TableCount {
                    schema: "public".into(),
                    name: format!("t{k}"),
                    rows: 1,
                    stream: Some(k),
                })
                .collect(),
            objects: if recorded {
                objects.clone()
            } else {
                Vec::new()
            },
            ..BackupDetails::default()
        };
        objects.push(rec(ObjectRole::Details, keys::DETAILS, None));
        let m = Manifest {
            format: MANIFEST_FORMAT,
            id,
            target: "app".into(),
            started_at: id.time(),
            finished_at: id.time(),
            server_version: "15".into(),
            server_major: 15,
            pg_dump_version: "15".into(),
            dr_version: "0".into(),
            database_bytes: 1,
            compression: "zstd".into(),
            encryption: "age".into(),
            recipients: vec![],
            objects,
            kind: crate::BackupKind::Logical,
            physical: None,
        };
        (m, d)
    }

    #[test]
    fn an_untouched_manifest_passes_old_and_new() {
        for recorded in [true, false] {
            let (m, d) = backup(recorded);
            assert_eq!(cross_check(&m, &d), Ok(()));
        }
    }

    #[test]
    fn a_data_stream_removed_is_found() {
        for (recorded, what) in [
            (true, "`data-3.zst.age` is missing"),
            (false, "data stream 3"),
        ] {
            let (mut m, d) = backup(recorded);
            m.objects.remove(3);
            let e = cross_check(&m, &d).expect_err("refused");
            assert!(e.contains(what), "{e}");
        }
        // The middle one: the streams no longer count 1, 2, … (old details too).
        let (mut m, d) = backup(false);
        m.objects.remove(2);
        let e = cross_check(&m, &d).expect_err("refused");
        assert!(
            e.contains("data stream 2 is listed as `data-3.zst.age`"),
            "{e}"
        );
    }

    #[test]
    fn an_object_added_is_found() {
        let (mut m, d) = backup(true);
        m.objects.insert(
            4,
            rec(ObjectRole::Data, &keys::data_stream(4), Some(STEP_DATA)),
        );
        let e = cross_check(&m, &d).expect_err("refused");
        assert!(
            e.contains("`data-4.zst.age` was not written by this backup"),
            "{e}"
        );
        // Old details cannot tell an extra stream from a real one: cannot cross-check.
        let (mut m, d) = backup(false);
        m.objects.insert(
            4,
            rec(ObjectRole::Data, &keys::data_stream(4), Some(STEP_DATA)),
        );
        assert_eq!(cross_check(&m, &d), Ok(()));
    }

    #[test]
    fn an_object_changed_or_reordered_is_found() {
        let (mut m, d) = backup(true);
        m.objects[1].restore_step = Some(STEP_POST_DATA);
        let e = cross_check(&m, &d).expect_err("refused");
        assert!(e.contains("`data-1.zst.age` is listed differently"), "{e}");
        let (mut m, d) = backup(true);
        m.objects.swap(1, 2);
        let e = cross_check(&m, &d).expect_err("refused");
        assert!(e.contains("another order"), "{e}");
        // Moved under another backup's id, names and records the same: the place is
        // Manifest::check_at's to judge.
        let (mut m, d) = backup(true);
        for o in &mut m.objects {
            o.key = o.key.replace("20261122T030000Z", "20261123T030000Z");
        }
        assert_eq!(cross_check(&m, &d), Ok(()));
    }
}
