//! The deployment files in `deploy/`, checked offline:
//!
//! - Kubernetes (`deploy/k8s/`): every manifest passes `kubernetes-validate --strict` (PyPI
//!   `kubernetes-validate` 1.37.0, which bundles the Kubernetes OpenAPI schemas; checked
//!   against Kubernetes 1.27, the first with CronJob `timeZone` GA, and 1.37), and every pod
//!   template meets the "restricted" Pod Security Standard and dr's own rules (no shell, a
//!   read-only root filesystem with an emptyDir at /tmp, a deadline on every Job, no overlap,
//!   resources, the identity only where verify and recovery run and readable by the pod's uid
//!   65532; the WAL stream one replica, recreated, its spool a PVC where dr.toml puts it).
//!   The YAML is parsed by python3 (PyYAML, a dependency of kubernetes-validate).
//! - systemd (`deploy/*.service`, `*.timer`): `systemd-analyze verify` passes without a
//!   warning (on copies whose ExecStart= is the `dr` built for this test), and
//!   `systemd-analyze security --offline=true --threshold=30` scores each service at most 3.0
//!   ("OK").
//!
//! Skipped, with a message, when python3 with kubernetes-validate or systemd-analyze is
//! missing (`ci/setup.sh` installs kubernetes-validate; systemd-analyze is Debian's `systemd`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;
use serde_json::Value;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> std::process::Output {
    run_with_timeout(cmd, None, Duration::from_secs(120))
}

fn k8s_dir() -> PathBuf {
    repo_root().join("deploy/k8s")
}

/// The Kubernetes manifests (not kustomization.yaml, which is kustomize's, not an object).
fn k8s_manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .expect("deploy/k8s")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    files
}

/// python3 with kubernetes-validate (and so PyYAML), or `None` with a message.
fn python_with_kubernetes_validate() -> Option<&'static str> {
    let ok = Command::new("python3")
        .args(["-c", "import kubernetes_validate, yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "SKIPPED: python3 with kubernetes-validate is not installed (pip install kubernetes-validate; ci/setup.sh does)"
        );
        return None;
    }
    Some("python3")
}

/// Every YAML document of `path`, as JSON.
fn yaml_documents(python: &str, path: &Path) -> Vec<Value> {
    let out = run(Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        ])
        .arg(path));
    assert_success(&out);
    serde_json::from_str::<Vec<Value>>(&stdout(&out)).expect("json")
}

#[test]
fn k8s_manifests_pass_the_kubernetes_schemas() {
    let Some(python) = python_with_kubernetes_validate() else {
        return;
    };
    let _heavy = one_heavy_test_at_a_time();
    for version in ["1.27.0", "1.37.0"] {
        let out = run(Command::new(python)
            .args(["-m", "kubernetes_validate", "--strict", "-k", version])
            .args(k8s_manifests()));
        assert_success(&out);
        let text = stdout(&out) + &stderr(&out);
        for name in [
            "dr-backup",
            "dr-base-backup",
            "dr-drill",
            "dr-prune",
            "dr-verify",
            "dr-recover",
            "dr-wal-stream",
            "dr-wal-spool",
            "dr-config",
            "dr-secrets",
            "dr-identity",
            "dr-signing",
        ] {
            assert!(
                text.contains(&format!("/{name} against version")),
                "{name}: {text}"
            );
        }
        assert!(!text.contains("WARN") && !text.contains("ERROR"), "{text}");
    }
    // The check has teeth: a misspelled field fails.
    let ws = Workspace::new();
    let text = std::fs::read_to_string(k8s_dir().join("backup.yaml")).expect("read");
    let bad = ws.write(
        "bad.yaml",
        &text.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem"),
    );
    let out = run(Command::new(python)
        .args(["-m", "kubernetes_validate", "--strict", "-k", "1.37.0"])
        .arg(&bad));
    assert!(!out.status.success(), "{}", stdout(&out));
}

#[test]
fn kustomization_lists_every_object_but_the_examples() {
    let text = std::fs::read_to_string(k8s_dir().join("kustomization.yaml")).expect("read");
    for f in [
        "configmap.yaml",
        "backup.yaml",
        "base-backup.yaml",
        "drill.yaml",
        "prune.yaml",
        "verify.yaml",
        "wal-stream.yaml",
    ] {
        assert!(
            text.contains(&format!("- {f}")),
            "{f} not in kustomization.yaml"
        );
    }
    assert!(!text.contains("- secrets.example.yaml"));
    // Run by hand after losing the server, never by `apply -k`.
    assert!(!text.contains("- recover.example.yaml"));
}

/// The pod spec of a workload: a CronJob's job template's, a Job's or a Deployment's.
fn pod_spec(workload: &Value) -> &Value {
    if workload["kind"] == "CronJob" {
        &workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    } else {
        &workload["spec"]["template"]["spec"]
    }
}

/// What each workload runs after `dr --config /etc/dr/dr.toml`.
const COMMANDS: [(&str, &[&str]); 7] = [
    ("dr-backup", &["backup"]),
    ("dr-base-backup", &["backup", "--physical"]),
    ("dr-drill", &["verify", "--pitr", "--temp-dir", "/tmp"]),
    ("dr-prune", &["prune"]),
    ("dr-verify", &["verify", "latest", "--sandbox", "local"]),
    (
        "dr-recover",
        &[
            "restore",
            "--at",
            "latest",
            "--to-dir",
            "/restore/pgdata",
            "--start",
        ],
    ),
    ("dr-wal-stream", &["wal", "stream"]),
];

/// The workloads that may mount the private identity: verification, drills and recovery read
/// backups.
const WITH_IDENTITY: [&str; 3] = ["dr-verify", "dr-drill", "dr-recover"];

/// The "restricted" Pod Security Standard (Kubernetes docs, "Pod Security Standards"), for
/// one pod spec: `Err` names every violation.
fn restricted_violations(pod: &Value) -> Vec<String> {
    let mut v = Vec::new();
    let psc = &pod["securityContext"];
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[key] == true {
            v.push(format!("pod {key}"));
        }
    }
    if psc["runAsUser"] == 0 {
        v.push("pod runAsUser 0".into());
    }
    let allowed_volumes = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    for vol in pod["volumes"].as_array().into_iter().flatten() {
        for key in vol.as_object().expect("volume").keys() {
            if key != "name" && !allowed_volumes.contains(&key.as_str()) {
                v.push(format!("volume {} is {key}", vol["name"]));
            }
        }
    }
    let containers: Vec<&Value> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| pod[*k].as_array().into_iter().flatten())
        .collect();
    assert!(!containers.is_empty());
    for c in containers {
        let name = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        if sc["privileged"] == true {
            v.push(format!("{name}: privileged"));
        }
        if sc["allowPrivilegeEscalation"] != false {
            v.push(format!("{name}: allowPrivilegeEscalation is not false"));
        }
        if !(sc["runAsNonRoot"] == true
            || (psc["runAsNonRoot"] == true && sc["runAsNonRoot"] != false))
        {
            v.push(format!("{name}: runAsNonRoot is not true"));
        }
        if sc["runAsUser"] == 0 {
            v.push(format!("{name}: runAsUser 0"));
        }
        let seccomp = if sc["seccompProfile"].is_null() {
            &psc["seccompProfile"]
        } else {
            &sc["seccompProfile"]
        };
        if !(seccomp["type"] == "RuntimeDefault" || seccomp["type"] == "Localhost") {
            v.push(format!(
                "{name}: seccompProfile is not RuntimeDefault/Localhost"
            ));
        }
        let drop = sc["capabilities"]["drop"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !drop.iter().any(|d| d == "ALL") {
            v.push(format!("{name}: capabilities do not drop ALL"));
        }
        for add in sc["capabilities"]["add"].as_array().into_iter().flatten() {
            if add != "NET_BIND_SERVICE" {
                v.push(format!("{name}: adds capability {add}"));
            }
        }
        for p in c["ports"].as_array().into_iter().flatten() {
            if !p["hostPort"].is_null() && p["hostPort"] != 0 {
                v.push(format!("{name}: hostPort"));
            }
        }
    }
    v
}

#[test]
fn k8s_pod_templates_meet_the_restricted_pod_security_standard_and_drs_rules() {
    let Some(python) = python_with_kubernetes_validate() else {
        return;
    };
    let mut workloads = Vec::new();
    let mut claims = Vec::new();
    let mut secrets = Vec::new();
    let mut dr_toml = String::new();
    for f in k8s_manifests() {
        for doc in yaml_documents(python, &f) {
            // Namespace-free: the namespace comes from kubectl -n or kustomize.
            assert!(doc["metadata"]["namespace"].is_null(), "{}", f.display());
            match doc["kind"].as_str() {
                Some("CronJob" | "Job" | "Deployment") => workloads.push(doc),
                Some("PersistentVolumeClaim") => claims.push(doc),
                Some("Secret") => secrets.push(doc),
                Some("ConfigMap") => {
                    let toml = doc["data"]["dr.toml"].as_str().expect("dr.toml");
                    assert!(toml.contains("sandbox = \"local\""), "{toml}");
                    assert!(
                        !toml.contains("AGE-SECRET-KEY"),
                        "a private key in the ConfigMap"
                    );
                    dr_toml = toml.to_string();
                }
                other => panic!("unexpected kind {other:?} in {}", f.display()),
            }
        }
    }
    let names = |kind: &str| -> Vec<&str> {
        workloads
            .iter()
            .filter(|w| w["kind"] == kind)
            .map(|w| w["metadata"]["name"].as_str().expect("name"))
            .collect()
    };
    assert_eq!(
        names("CronJob"),
        [
            "dr-backup",
            "dr-base-backup",
            "dr-drill",
            "dr-prune",
            "dr-verify"
        ]
    );
    assert_eq!(names("Deployment"), ["dr-wal-stream"]);
    assert_eq!(names("Job"), ["dr-recover"]);

    for w in &workloads {
        let name = w["metadata"]["name"].as_str().expect("name");
        let pod = pod_spec(w);
        let violations = restricted_violations(pod);
        assert!(violations.is_empty(), "{name}: {violations:?}");

        match w["kind"].as_str() {
            Some("CronJob") => {
                assert_eq!(w["spec"]["concurrencyPolicy"], "Forbid", "{name}");
                let job = &w["spec"]["jobTemplate"]["spec"];
                assert!(
                    job["activeDeadlineSeconds"].as_u64().is_some_and(|s| s > 0),
                    "{name}: no activeDeadlineSeconds"
                );
                assert_eq!(pod["restartPolicy"], "Never", "{name}");
            }
            Some("Job") => {
                assert!(
                    w["spec"]["activeDeadlineSeconds"]
                        .as_u64()
                        .is_some_and(|s| s > 0),
                    "{name}: no activeDeadlineSeconds"
                );
                // A recovery that failed is read, not run again over its own leftovers.
                assert_eq!(w["spec"]["backoffLimit"], 0, "{name}");
                assert_eq!(pod["restartPolicy"], "Never", "{name}");
            }
            // A Deployment: the WAL stream.
            _ => assert_the_stream_runs_once_with_a_persistent_spool(w, &claims, &dr_toml),
        }
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{name}");
        assert_eq!(pod["securityContext"]["fsGroup"], 65532, "{name}");
        let containers = pod["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1, "{name}");
        let c = &containers[0];
        assert_eq!(c["image"], "dr:0.1.0", "{name}");
        // No shell: dr's own command line.
        let command: Vec<&str> = c["command"]
            .as_array()
            .expect("command")
            .iter()
            .map(|a| a.as_str().expect("string"))
            .collect();
        assert_eq!(
            command[..3],
            ["dr", "--config", "/etc/dr/dr.toml"],
            "{name}"
        );
        let expected = COMMANDS
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name}: not in COMMANDS"))
            .1;
        assert_eq!(command[3..], *expected, "{name}");
        assert!(c["args"].is_null(), "{name}: args besides command");
        // A probe runs dr's own command line too, never a shell.
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            for a in c[probe]["exec"]["command"].as_array().into_iter().flatten() {
                let a = a.as_str().unwrap_or("");
                assert!(
                    !["sh", "bash", "-c", "/bin/sh"].contains(&a),
                    "{name}: {probe}"
                );
            }
        }
        assert!(
            !command
                .iter()
                .any(|a| ["sh", "bash", "-c", "&&"].contains(a)),
            "{name}: {command:?}"
        );
        assert_eq!(
            c["securityContext"]["readOnlyRootFilesystem"], true,
            "{name}"
        );
        // dr's temp (restore/verify staging, the local sandbox) on an emptyDir at /tmp.
        let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
        let tmp = mounts
            .iter()
            .find(|m| m["mountPath"] == "/tmp")
            .unwrap_or_else(|| panic!("{name}: nothing mounted at /tmp"));
        let tmp_vol = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == tmp["name"])
            .expect("the /tmp volume");
        assert!(
            tmp_vol["emptyDir"].is_object(),
            "{name}: /tmp is not an emptyDir"
        );
        // A drill's sandbox (the base backup unpacked, its WAL) goes where --temp-dir says: a
        // writable emptyDir of this pod with a size limit.
        if let Some(i) = command.iter().position(|a| *a == "--temp-dir") {
            let dir = command.get(i + 1).expect("--temp-dir DIR");
            let m = mounts
                .iter()
                .find(|m| m["mountPath"] == *dir)
                .unwrap_or_else(|| panic!("{name}: nothing mounted at --temp-dir {dir}"));
            assert_ne!(m["readOnly"], true, "{name}");
            let v = pod["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .find(|v| v["name"] == m["name"])
                .expect("the --temp-dir volume");
            assert!(
                v["emptyDir"]["sizeLimit"].is_string(),
                "{name}: --temp-dir {dir} is not an emptyDir with a sizeLimit"
            );
        }
        for kind in ["requests", "limits"] {
            for r in ["cpu", "memory"] {
                assert!(
                    !c["resources"][kind][r].is_null(),
                    "{name}: no resources.{kind}.{r}"
                );
            }
        }
        // Secrets through envFrom, never inline values.
        assert!(
            c["envFrom"]
                .as_array()
                .is_some_and(|e| e.iter().any(|s| s["secretRef"]["name"] == "dr-secrets")),
            "{name}: no envFrom dr-secrets"
        );
        for e in c["env"].as_array().into_iter().flatten() {
            let var = e["name"].as_str().unwrap_or("");
            assert!(
                !["PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"].contains(&var),
                "{name}: {var} inline"
            );
        }
        // The private identity: only verify and recovery mount it, readable by the pod's group.
        let identity_vols: Vec<&Value> = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .filter(|v| v["secret"]["secretName"] == "dr-identity")
            .collect();
        if WITH_IDENTITY.contains(&name) {
            assert_eq!(identity_vols.len(), 1, "{name}");
            // 0440 (YAML octal) = 288: owner root, group fsGroup 65532 (the pod's user's group).
            assert_eq!(identity_vols[0]["secret"]["defaultMode"], 0o440);
            let env = c["env"].as_array().expect("env");
            assert!(env.iter().any(|e| e["name"] == "DR_IDENTITY_FILE"
                && e["value"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/etc/dr-identity/"))));
        } else {
            assert!(identity_vols.is_empty(), "{name} mounts the identity");
        }
        // The signing key: every workload signs (backup, base backup, verify, the stream) or
        // trusts only what it signed (prune, recovery), from the Secret dr-signing.
        assert!(
            pod["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .any(|v| v["secret"]["secretName"] == "dr-signing"),
            "{name}: no dr-signing volume"
        );
        assert!(
            c["env"]
                .as_array()
                .expect("env")
                .iter()
                .any(|e| e["name"] == "DR_SIGNING_KEY_FILE"),
            "{name}: no DR_SIGNING_KEY_FILE"
        );
    }
    // Placeholder values only.
    assert_eq!(secrets.len(), 3);
    for s in &secrets {
        for (k, v) in s["stringData"].as_object().expect("stringData") {
            let v = v.as_str().unwrap_or("");
            assert!(v.contains("CHANGE-ME"), "{k} is not a placeholder: {v:?}");
        }
    }
}

/// The WAL stream: one at a time (one replica, the old pod gone before the new one starts), time
/// to upload on SIGTERM, and its spool where dr.toml puts it, on a ReadWriteOnce PVC of the
/// manifests: the slot advances with what lands there, so it must outlive the pod.
fn assert_the_stream_runs_once_with_a_persistent_spool(
    deployment: &Value,
    claims: &[Value],
    dr_toml: &str,
) {
    let name = deployment["metadata"]["name"].as_str().expect("name");
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 1, "{name}");
    assert_eq!(spec["strategy"]["type"], "Recreate", "{name}");
    let labels = &spec["template"]["metadata"]["labels"];
    for (k, v) in spec["selector"]["matchLabels"]
        .as_object()
        .expect("selector.matchLabels")
    {
        assert_eq!(
            &labels[k], v,
            "{name}: the selector does not select the template"
        );
    }
    let pod = pod_spec(deployment);
    assert!(
        pod["restartPolicy"].is_null() || pod["restartPolicy"] == "Always",
        "{name}"
    );
    assert!(
        pod["terminationGracePeriodSeconds"]
            .as_u64()
            .is_some_and(|s| s >= 60),
        "{name}: too short a grace period for the last upload"
    );
    let mounts = pod["containers"][0]["volumeMounts"]
        .as_array()
        .expect("volumeMounts");
    let spool = mounts
        .iter()
        .find(|m| m["mountPath"] == "/var/lib/dr/wal")
        .unwrap_or_else(|| panic!("{name}: nothing mounted at /var/lib/dr/wal"));
    assert_ne!(spool["readOnly"], true, "{name}");
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == spool["name"])
        .expect("the spool volume");
    let claim = volume["persistentVolumeClaim"]["claimName"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: the spool is not a PersistentVolumeClaim"));
    let pvc = claims
        .iter()
        .find(|c| c["metadata"]["name"] == claim)
        .unwrap_or_else(|| panic!("{name}: no PersistentVolumeClaim {claim} in deploy/k8s"));
    assert_eq!(
        pvc["spec"]["accessModes"],
        serde_json::json!(["ReadWriteOnce"])
    );
    assert!(
        pvc["spec"]["resources"]["requests"]["storage"].is_string(),
        "{claim}: no size"
    );
    // dr.toml streams a target, into the default spool_dir /var/lib/dr/wal/{target}.
    assert!(
        dr_toml.contains("[targets.wal]") && dr_toml.contains("mode = \"stream\""),
        "{dr_toml}"
    );
    assert!(
        !dr_toml
            .lines()
            .any(|l| l.trim_start().starts_with("spool_dir")),
        "a spool_dir elsewhere than the volume: {dr_toml}"
    );
}

/// `systemd-analyze`, or `None` with a message.
fn systemd_analyze() -> Option<PathBuf> {
    let found = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("SKIPPED: systemd-analyze is not installed (Debian: apt-get install systemd)");
    }
    found
}

const SERVICES: [&str; 5] = [
    "dr-backup.service",
    "dr-verify.service",
    "dr-drill.service",
    "dr-daemon.service",
    "dr-wal.service",
];
const TIMERS: [&str; 3] = ["dr-backup.timer", "dr-verify.timer", "dr-drill.timer"];

/// Every unit in deploy/ is checked here: a new one cannot be shipped unverified.
#[test]
fn every_unit_in_deploy_is_checked() {
    let mut found: Vec<String> = std::fs::read_dir(repo_root().join("deploy"))
        .expect("deploy/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".service") || n.ends_with(".timer"))
        .collect();
    found.sort();
    let mut checked: Vec<String> = SERVICES
        .iter()
        .chain(TIMERS.iter())
        .map(|s| s.to_string())
        .collect();
    checked.sort();
    assert_eq!(found, checked);
    // Each timer starts its own service.
    for t in TIMERS {
        assert!(
            SERVICES.contains(&t.replace(".timer", ".service").as_str()),
            "{t}"
        );
    }
    // The drill's sandbox (the base backup unpacked) on a disk-backed private temp dir,
    // not the tmpfs /tmp, unless [restore] temp_dir says otherwise.
    let drill = std::fs::read_to_string(repo_root().join("deploy/dr-drill.service")).expect("read");
    for line in [
        "PrivateTmp=yes",
        "Environment=TMPDIR=/var/tmp",
        "ExecStart=/usr/local/bin/dr verify --pitr",
        "LoadCredential=identity:/etc/dr/identity.txt",
    ] {
        assert!(
            drill.lines().any(|l| l.trim() == line),
            "dr-drill.service: no `{line}`"
        );
    }
}

/// Copies of the units in a temp dir, with ExecStart= on the `dr` built for this test (verify
/// needs the binary to exist).
fn unit_copies(ws: &Workspace) -> Vec<PathBuf> {
    let dr = dr_bin();
    SERVICES
        .iter()
        .chain(TIMERS.iter())
        .map(|name| {
            let text = std::fs::read_to_string(repo_root().join("deploy").join(name))
                .unwrap_or_else(|e| panic!("deploy/{name}: {e}"));
            assert!(
                text.contains("/usr/local/bin/dr") || name.ends_with(".timer"),
                "{name}"
            );
            ws.write(
                &format!("units/{name}"),
                &text.replace("/usr/local/bin/dr", &dr.display().to_string()),
            )
        })
        .collect()
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let ws = Workspace::new();
    let units = unit_copies(&ws);
    let out = run(Command::new(&analyze)
        .args(["verify", "--man=no"])
        .args(&units)
        .env("SYSTEMD_LOG_COLOR", "0"));
    assert_success(&out);
    // Unknown keys and bad values are only warnings (exit 0): none may mention our units.
    let err = stderr(&out);
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("dr-") || l.contains(&*ws.path().to_string_lossy()))
        .collect();
    assert!(ours.is_empty(), "{err}");
}

#[test]
fn systemd_units_are_hardened_to_at_most_3_0() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let ws = Workspace::new();
    let units = unit_copies(&ws);
    for unit in units
        .iter()
        .filter(|u| u.extension().is_some_and(|x| x == "service"))
    {
        let out = run(Command::new(&analyze)
            .args(["security", "--offline=true", "--threshold=30", "--no-pager"])
            .arg(unit)
            .env("SYSTEMD_COLORS", "0"));
        let text = stdout(&out) + &stderr(&out);
        assert!(
            out.status.success(),
            "{}: above 3.0\n{text}",
            unit.display()
        );
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no score for {}:\n{text}", unit.display()));
        eprintln!("{}: {score}", unit.display());
        assert!(score <= 3.0, "{}: {score}\n{text}", unit.display());
        assert!(text.contains(&format!("{score:.1} OK")), "{text}");
    }
    // The settings the issue asks for, by name (the score alone could hide a missing one).
    for name in SERVICES {
        let text = std::fs::read_to_string(repo_root().join("deploy").join(name)).expect("read");
        let has = |line: &str| text.lines().any(|l| l.trim() == line);
        for line in [
            "User=dr",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "NoNewPrivileges=yes",
            "CapabilityBoundingSet=",
            "EnvironmentFile=-/etc/dr/dr.env",
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
            "SystemCallFilter=@system-service",
            "ReadWritePaths=-/var/lib/prometheus/node-exporter/dr",
        ] {
            assert!(has(line), "{name}: no `{line}`");
        }
    }
}

/// The README's cron line and the units read the same secrets file.
#[test]
fn the_readme_cron_line_and_the_units_share_the_env_file() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README");
    assert!(readme.contains("DR_ENV_FILE=/etc/dr/dr.env"));
    assert!(readme.contains("deploy/k8s/"));
    assert!(!readme.contains("k8s-cronjob.yaml"));
    for name in SERVICES {
        let text = std::fs::read_to_string(repo_root().join("deploy").join(name)).expect("read");
        assert!(text.contains("EnvironmentFile=-/etc/dr/dr.env"), "{name}");
    }
}

/// Regression: deploy/k8s/README.md claimed the image holds the client tools of every
/// supported major; ci/image.sh puts in PostgreSQL 15's and 17's (16 is dumped with 17's),
/// not 18's. The README names what is in it and what an 18 server needs.
#[test]
fn the_k8s_readme_names_the_majors_the_image_holds() {
    let readme = std::fs::read_to_string(k8s_dir().join("README.md")).expect("k8s README");
    let image = std::fs::read_to_string(repo_root().join("ci/image.sh")).expect("ci/image.sh");
    // What ci/image.sh installs: postgresql-17 (trixie) and PostgreSQL 15's client tools.
    assert!(
        image.contains("packages=postgresql-17,"),
        "ci/image.sh changed: update this test and the README"
    );
    assert!(
        image.contains("pg15=/usr/lib/postgresql/15/bin"),
        "ci/image.sh changed: update this test and the README"
    );
    let section = readme
        .split("## The image")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a `## The image` section in deploy/k8s/README.md");
    let flat = section.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(!flat.contains("every supported major"), "{flat}");
    for major in ["15", "17"] {
        assert!(
            flat.contains(major),
            "the image section does not name {major}: {flat}"
        );
    }
    assert!(
        flat.contains("PostgreSQL 18 tools are not in the image") && flat.contains("pg_bin_dir"),
        "the image section does not say what an 18 server needs: {flat}"
    );
}

/// The k8s README says what the WAL stream needs from the server and how to recover, where an
/// operator setting up `dr-wal-stream` reads.
#[test]
fn the_k8s_readme_says_what_the_wal_stream_needs_and_how_to_recover() {
    let readme = std::fs::read_to_string(k8s_dir().join("README.md")).expect("k8s README");
    let section = readme
        .split("## Continuous WAL")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a `## Continuous WAL` section in deploy/k8s/README.md");
    for needed in [
        "REPLICATION",
        "host  replication",
        "max_slot_wal_keep_size",
        "dr-wal-spool",
        "Recreate",
        "dr status",
        "--to-dir",
        "--start",
        "recover.example.yaml",
        "runbooks/point-in-time.md",
    ] {
        assert!(
            section.contains(needed),
            "the Continuous WAL section does not mention {needed}"
        );
    }
    assert!(std::path::Path::new(&repo_root().join("runbooks/point-in-time.md")).is_file());
}
