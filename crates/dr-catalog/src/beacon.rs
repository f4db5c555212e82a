//! `dr daemon`'s beacon: `daemon/{host}.json` in the repository, rewritten every minute,
//! removed on a clean stop (not to be confused with the run lock's refresh). Its stored
//! format (keys and JSON field names are stable: `last_beat` stays) and [`seen`]; the
//! daemon writes it. `dr status` reads it to say whether a daemon is running, instead
//! of presenting the schedule's next time as if something will act on it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How often a running daemon rewrites its beacon.
pub const EVERY: Duration = Duration::from_secs(60);

/// A beacon older than this means the daemon stopped without removing it (killed, host
/// down, repository unreachable from it).
pub const RUNNING_WITHIN_SECS: i64 = 3 * 60;

/// The object `dr daemon` writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beacon {
    pub host: String,
    pub pid: u32,
    #[serde(with = "crate::time::rfc3339")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "crate::time::rfc3339")]
    pub last_beat: DateTime<Utc>,
    /// Targets its jobs run for.
    pub targets: Vec<String>,
}

/// What `dr status` says about the daemon of one target (docs/JSON.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaemonSeen {
    pub host: String,
    pub pid: u32,
    pub started_at: String,
    pub last_beat: String,
    pub last_seen_seconds: i64,
    /// The beacon is recent (within [`RUNNING_WITHIN_SECS`]).
    pub running: bool,
}

/// The freshest beacon of a daemon running jobs for `target`. Pure.
pub fn seen(beacons: &[Beacon], target: &str, now: DateTime<Utc>) -> Option<DaemonSeen> {
    beacons
        .iter()
        .filter(|b| b.targets.iter().any(|t| t == target))
        .max_by_key(|b| b.last_beat)
        .map(|b| {
            let age = (now - b.last_beat).num_seconds().max(0);
            DaemonSeen {
                host: b.host.clone(),
                pid: b.pid,
                started_at: crate::time::format(b.started_at),
                last_beat: crate::time::format(b.last_beat),
                last_seen_seconds: age,
                running: age <= RUNNING_WITHIN_SECS,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_790_000_000 + secs, 0)
            .single()
            .expect("time")
    }

    fn beacon(host: &str, last: i64, targets: &[&str]) -> Beacon {
        Beacon {
            host: host.into(),
            pid: 7,
            started_at: at(0),
            last_beat: at(last),
            targets: targets.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn freshest_daemon_of_the_target() {
        let beacons = [
            beacon("a", 100, &["app"]),
            beacon("b", 200, &["app"]),
            beacon("c", 300, &["other"]),
        ];
        let s = seen(&beacons, "app", at(230)).expect("seen");
        assert_eq!(
            (s.host.as_str(), s.last_seen_seconds, s.running),
            ("b", 30, true)
        );
        assert!(seen(&beacons, "nobody", at(230)).is_none());
    }

    #[test]
    fn an_old_beacon_is_not_running() {
        let beacons = [beacon("a", 0, &["app"])];
        assert!(
            seen(&beacons, "app", at(RUNNING_WITHIN_SECS))
                .expect("seen")
                .running
        );
        assert!(
            !seen(&beacons, "app", at(RUNNING_WITHIN_SECS + 1))
                .expect("seen")
                .running
        );
    }

    #[test]
    fn times_are_rfc3339_with_z() {
        let v = serde_json::to_value(beacon("a", 5, &["app"])).expect("json");
        assert_eq!(v["last_beat"], "2026-09-21T14:13:25Z");
    }
}
