//! A temp workspace for one test (configs, age keys, restored files, `HOME`) and the `dr`
//! binary run in it with a clean environment.

use super::*;

/// A temp dir for one test: config files, age keys, restored files. `HOME` for `dr`.
pub struct Workspace {
    pub dir: TempDir,
}

impl Default for Workspace {
    fn default() -> Self {
        Workspace::new()
    }
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::Builder::new()
            .prefix("dr-test-ws-")
            .tempdir()
            .expect("create temp dir");
        Workspace { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A new age identity: (identity file, its `age1...` recipient). Each call makes a new
    /// key (`key.txt`, `key-2.txt`, ...).
    pub fn keygen(&self) -> (PathBuf, String) {
        let mut n = 1;
        let mut file = self.dir.path().join("key.txt");
        while file.exists() {
            n += 1;
            file = self.dir.path().join(format!("key-{n}.txt"));
        }
        run_ok(
            Command::new("age-keygen").arg("-o").arg(&file),
            "age-keygen (apt-get install age)",
        );
        let text = fs::read_to_string(&file).expect("read age identity");
        let recipient = text
            .lines()
            .find_map(|l| l.strip_prefix("# public key: "))
            .unwrap_or_else(|| panic!("no public key in {}:\n{text}", file.display()))
            .trim()
            .to_string();
        (file, recipient)
    }

    /// This workspace's signing key (`.dr/signing.key`, made by `dr keygen --signing` on first
    /// use): every `dr` the harness runs signs with it and trusts it (DR_SIGNING_KEY_FILE),
    /// as a backup host that also restores does.
    pub fn signing_key(&self) -> PathBuf {
        let file = self.dir.path().join(".dr").join("signing.key");
        if !file.exists() {
            self.new_signing_key(".dr/signing.key");
        }
        file
    }

    /// A new signing key at `name` (relative to the workspace): (file, public key line).
    pub fn new_signing_key(&self, name: &str) -> (PathBuf, String) {
        let file = self.dir.path().join(name);
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent).expect("create parent dirs");
        }
        let out = run_ok(
            Command::new(dr_bin())
                .args(["keygen", "--signing", "--output"])
                .arg(&file),
            "dr keygen --signing",
        );
        (
            file,
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    }

    /// Sign `file` as the backup host would (`FILE.sig`, replaced), with the workspace's key and
    /// the stock `ssh-keygen`: for tests that fabricate a backup dr must trust.
    pub fn sign(&self, file: &Path) {
        let sig = PathBuf::from(format!("{}.sig", file.display()));
        let _ = fs::remove_file(&sig);
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-Y", "sign", "-n", "dr-backup@v1", "-f"])
                .arg(self.signing_key())
                .arg(file),
            "ssh-keygen -Y sign",
        );
    }

    /// Writes `contents` to `name` (relative to the workspace; parents created).
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent dirs");
        }
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// `dr --config CONFIG ARGS...` in the workspace with a controlled environment (see
    /// [`Workspace::dr_command`]); killed after `DR_TEST_TIMEOUT_SECS` (default 600).
    pub fn dr(&self, config: &Path, args: &[&str]) -> Output {
        self.run(&mut self.dr_command(config, args))
    }

    /// Like [`Workspace::dr`], with extra environment variables.
    pub fn dr_env(&self, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.dr_command(config, args);
        c.envs(env.iter().copied());
        self.run(&mut c)
    }

    /// The command `dr` runs, for tests that need to adjust it: AWS_ACCESS_KEY_ID=any,
    /// AWS_SECRET_ACCESS_KEY=any, AWS_REGION=us-east-1, NO_COLOR=1, HOME=the workspace,
    /// cwd=the workspace, no PGPASSWORD (nor other PG*/AWS_* that could leak in).
    pub fn dr_command(&self, config: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(dr_bin());
        c.arg("--config").arg(config).args(args);
        clear_pg_env(&mut c);
        c.env_remove("PGCONNECT_TIMEOUT");
        for var in [
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_DEFAULT_REGION",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
            "RUST_LOG",
        ] {
            c.env_remove(var);
        }
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("DR_") && !k.starts_with("DR_TEST_") {
                c.env_remove(&*k);
            }
        }
        c.env("AWS_ACCESS_KEY_ID", "any")
            .env("AWS_SECRET_ACCESS_KEY", "any")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NO_COLOR", "1")
            .env("HOME", self.dir.path())
            .env("DR_SIGNING_KEY_FILE", self.signing_key())
            .current_dir(self.dir.path());
        c
    }

    /// Runs a command with the harness timeout and captures its output.
    pub fn run(&self, cmd: &mut Command) -> Output {
        let secs = std::env::var("DR_TEST_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600);
        run_with_timeout(cmd, None, Duration::from_secs(secs))
    }
}

/// Every file under `dir`, recursively (none if it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The manifests (complete backups) of a directory repository.
pub fn manifests(repo: &Path) -> Vec<PathBuf> {
    files_under(repo)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "manifest.json"))
        .collect()
}

/// The usual test `dr.toml`: target `app` at `target_url`, backed up into the directory
/// repository `repo`, encrypted to `recipient` (restorable with `identity` when given), then
/// `extra` (more sections, as TOML).
pub fn dir_config_text(
    repo: &Path,
    recipient: &str,
    identity: Option<&Path>,
    target_url: &str,
    extra: &str,
) -> String {
    let identity = identity
        .map(|i| format!("identity_file = \"{}\"\n", i.display()))
        .unwrap_or_default();
    format!(
        "[repository]\nurl = \"file://{}\"\n[encryption]\nrecipients = [\"{recipient}\"]\n{identity}[[targets]]\nname = \"app\"\nurl = \"{target_url}\"\n{extra}",
        repo.display()
    )
}
