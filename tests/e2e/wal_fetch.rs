//! `dr wal fetch NAME DEST` (PostgreSQL's restore_command), the real binary against a
//! directory repository: its exit statuses (the fetch table of docs/EXIT_CODES.md) and what
//! it leaves at DEST.
//!
//! The archive is written here as `dr wal push` writes it (the data object `age(zstd(raw))`
//! under a random name, then the signed record), with the workspace's signing key, which
//! every `dr` of the harness trusts.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use dr_catalog::wal::{join, keys, WalFile, WalKind, WalRecord, RECORD_FORMAT};
use dr_stream::signing::SigningKey;

use crate::support::*;

struct Archive {
    ws: Workspace,
    repo: PathBuf,
    cfg: PathBuf,
    recipient: String,
}

impl Archive {
    fn new() -> Archive {
        let ws = Workspace::new();
        let (identity, recipient) = ws.keygen();
        let repo = ws.path().join("repo");
        let text = dir_config_text(
            &repo,
            &recipient,
            Some(&identity),
            "postgres://u@127.0.0.1:1/app",
            "",
        );
        let cfg = ws.write("dr.toml", &text);
        Archive {
            ws,
            repo,
            cfg,
            recipient,
        }
    }

    /// Store `raw` as `name` of target `app`, as `dr wal push` does; the data object's path.
    fn push(&self, name: &str, raw: &[u8]) -> PathBuf {
        let file: WalFile = name.parse().expect("WAL file name");
        let recipients =
            dr_stream::Recipients::parse(std::slice::from_ref(&self.recipient)).expect("recipient");
        let sealed = dr_stream::seal(raw, &recipients, 3).expect("seal");
        let sha256 = dr_stream::sha256_hex(&sealed);
        let key = keys::data("app", file, &sha256[..16]);
        let record = WalRecord {
            format: RECORD_FORMAT,
            kind: WalKind::of(file),
            name: name.to_string(),
            key: key.clone(),
            system_identifier: "7301234567890123456".into(),
            server_major: Some(17),
            timeline: file.timeline(),
            start_lsn: None,
            end_lsn: None,
            r#final: false,
            segment_bytes: Some(raw.len() as u64),
            raw_sha256: dr_stream::sha256_hex(raw),
            raw_bytes: raw.len() as u64,
            sha256,
            bytes: sealed.len() as u64,
            recipients: vec![self.recipient.clone()],
            switches: vec![],
            pushed_at: "2026-12-04T01:02:03Z".into(),
            pushed_by: "db1".into(),
            dr_version: "test".into(),
            source: "archive".into(),
        };
        let signer = SigningKey::from_file(&self.ws.signing_key()).expect("signing key");
        let document = record.document();
        let signature = signer.sign(&document).expect("sign");
        let data = self.write(&key, &sealed);
        self.write(
            &keys::record("app", file),
            &join(&document, Some(&signature)),
        );
        data
    }

    fn write(&self, key: &str, bytes: &[u8]) -> PathBuf {
        let path = self.repo.join(key);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, bytes).expect("write");
        path
    }

    fn fetch(&self, name: &str, dest: &Path, extra: &[&str]) -> Output {
        let dest = dest.to_str().expect("utf-8 path");
        let mut args = vec!["wal", "fetch", name, dest];
        args.extend_from_slice(extra);
        self.ws.dr(&self.cfg, &args)
    }
}

/// Bytes that do not compress to nothing.
fn wal_bytes(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

const SEG1: &str = "000000010000000000000001";
const SEG2: &str = "000000010000000000000002";
const SEG3: &str = "000000010000000000000003";

#[track_caller]
fn nothing_at(dest: &Path) {
    assert!(!dest.exists(), "{} was written", dest.display());
    let tmp = PathBuf::from(format!("{}.dr-tmp", dest.display()));
    assert!(!tmp.exists(), "{} left behind", tmp.display());
}

#[test]
fn fetch_exits_0_written_1_not_found_204_for_a_gap_or_damage() {
    let a = Archive::new();
    let raw = wal_bytes(1, 1 << 20);
    let data = a.push(SEG1, &raw);
    let dest = a.ws.path().join("RECOVERYXLOG");

    let out = a.fetch(SEG1, &dest, &[]);
    assert_success(&out);
    assert_eq!(stdout(&out), "", "restore_command prints nothing on stdout");
    assert_eq!(fs::read(&dest).expect("DEST"), raw);
    fs::remove_file(&dest).expect("rm");

    // The end of the archive, and a timeline PostgreSQL probes for: "not in the archive".
    assert_exit_code(&a.fetch(SEG2, &dest, &[]), 1);
    nothing_at(&dest);
    assert_exit_code(&a.fetch("00000002.history", &dest, &["--target", "app"]), 1);
    nothing_at(&dest);

    // Once a later segment is archived, the missing one is a gap: fatal, named.
    a.push(SEG3, &wal_bytes(3, 1 << 20));
    let out = a.fetch(SEG2, &dest, &[]);
    assert_exit_code(&out, 204);
    assert!(stderr(&out).contains(SEG2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("first missing segment"),
        "{}",
        stderr(&out)
    );
    nothing_at(&dest);

    // A damaged data object never reaches DEST.
    let mut stored = fs::read(&data).expect("data");
    let middle = stored.len() / 2;
    stored[middle] ^= 0x40;
    fs::write(&data, stored).expect("corrupt");
    let out = a.fetch(SEG1, &dest, &[]);
    assert_exit_code(&out, 204);
    // age's authentication finds it first (a digest mismatch would be 204 as well).
    let name = data
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(stderr(&out).contains(&name), "{}", stderr(&out));
    nothing_at(&dest);

    // A restore_command PostgreSQL cannot use is fatal too, never "not in the archive".
    assert_exit_code(&a.fetch(SEG1, &dest, &["--target", "nope"]), 202);
    assert_exit_code(&a.fetch("RECOVERYXLOG", &dest, &[]), 202);
    assert_exit_code(&a.ws.dr(&a.cfg, &["wal", "fetch", SEG1]), 202);
    nothing_at(&dest);
}
