"""Helpers of ci/bench-wal.sh: `python3 ci/bench_wal.py COMMAND ARGS...`.

  sample MODE URL OUT FILER SPOOL INTERVAL PGDATAS ROOTS EXES
      until SIGTERM, one line per INTERVAL seconds into OUT: epoch, current WAL file, newest
      stored segment, lag (completed segments not yet stored; -1 unknown), LSN in bytes,
      1-minute load average, files in SPOOL, CPU busy and CPU of other work since the last
      sample (% of all cores). MODE archive: stored = pg_stat_archiver.last_archived_wal;
      stream: the newest segment record under FILER/wals/wal/ (the SeaweedFS filer's JSON
      listing); cpu: the CPU columns only (the others "-", -1 or 0). Other work: processes
      descending neither from the postmaster of one of PGDATAS (comma-separated data
      directories) nor from ROOTS (comma-separated pids) and not running one of EXES
      (comma-separated paths: dr's detached prefetch workers, also as zombies by their
      name); what exited between two samples is not seen, so it is a lower bound. OUT.other: the other commands that used
      the most CPU since the start ("rustc 40 s, cc1 3 s").
  procmax EXE OUT
      until SIGTERM, every 50 ms, the largest VmHWM (KiB) of the processes of EXE running
      `wal prefetch`, and their CPU time as last seen; then "peak_kib workers_seen cpu_s"
      into OUT.
  lag-stats SAMPLES T0 T1 PGBENCH_LOG
      of the samples between T0 and T1: "samples max_lag median_lag segments_per_s
      wal_mib_per_s mean_load1 max_spool tps mean_busy mean_other".
  time-stats  (stdin: /usr/bin/time -f '%e %M %x %U %S' lines)
      "count median_s p90_s max_s max_rss_mib failures median_cpu_s total_cpu_s".
  base-phases LOG...  (dr --log-format json backup --physical)
      median seconds from "physical backup started" to "base backup streamed", and from
      there to "physical backup complete".
  base-manifest  (stdin: dr show --json of a physical backup)
      "id start_lsn base_tar_key stored_bytes raw_bytes".
  replay-span LOG
      seconds from the first to the last "restored log file" line of a server log whose
      log_line_prefix starts with %m.
  restore-command FILE
      the last restore_command of a postgresql.auto.conf, unquoted.
"""

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime


def seg(name):
    """The segment number of a 24-hex WAL file name (16 MiB segments)."""
    return int(name[8:16], 16) * 256 + int(name[16:24], 16)


def filer_ls(filer, path):
    names, last = [], ""
    while True:
        q = urllib.parse.urlencode({"limit": 1000, "lastFileName": last})
        req = urllib.request.Request(f"{filer}/{path}?{q}", headers={"Accept": "application/json"})
        try:
            d = json.load(urllib.request.urlopen(req, timeout=5))
        except Exception:
            return names
        es = d.get("Entries") or []
        names += [e["FullPath"].rsplit("/", 1)[1] for e in es]
        if not d.get("ShouldDisplayLoadMore") or not es:
            return names
        last = names[-1]


def newest_record(filer, target):
    dirs = [n for n in filer_ls(filer, f"{target}/wal/") if re.fullmatch("[0-9A-F]{16}", n)]
    for d in sorted(dirs, reverse=True):
        recs = [n[:24] for n in filer_ls(filer, f"{target}/wal/{d}/") if re.fullmatch(r"[0-9A-F]{24}\.rec", n)]
        if recs:
            return max(recs)
    return ""


class Cpu:
    """CPU busy, and the part of it other processes than ours used, between two calls."""

    def __init__(self, pgdatas, roots, exes):
        self.pgdatas, self.roots, self.exes = pgdatas, roots, exes
        self.exe_names = {os.path.basename(e)[:15] for e in exes}
        self.by_name = {}  # other work: CPU ticks per command name
        self.procs, self.total = self.read_procs(), self.read_total()

    @staticmethod
    def read_total():
        v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(v), v[3] + v[4]  # all, idle + iowait

    @staticmethod
    def read_procs():
        out = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                s = open(f"/proc/{pid}/stat").read()
            except OSError:
                continue
            f = s[s.rfind(")") + 2 :].split()
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                exe = None  # a kernel thread, or a zombie
            out[int(pid)] = (int(f[1]), int(f[11]) + int(f[12]), s[s.find("(") + 1 : s.rfind(")")], exe)
        return out

    def ours(self, pid, table, mine):
        _, _, name, exe = table[pid]
        # An orphaned prefetch worker (its parent gone) is known by its binary; once it has
        # exited and is not reaped yet (a zombie: no exe), by its name.
        if exe in self.exes or (exe is None and name in self.exe_names):
            return True
        for _ in range(64):
            if pid in mine:
                return True
            if pid not in table or pid <= 1:
                return False
            pid = table[pid][0]
        return False

    def split(self):
        table, total = self.read_procs(), self.read_total()
        mine = set(self.roots)
        for d in self.pgdatas:
            try:
                mine.add(int(open(f"{d}/postmaster.pid").readline()))
            except (OSError, ValueError):
                pass
        other = 0
        for p, (_, t, name, _) in table.items():
            if not self.ours(p, table, mine):
                d = t - self.procs.get(p, (0, 0))[1]
                other += d
                self.by_name[name] = self.by_name.get(name, 0) + d
        d_all, d_idle = total[0] - self.total[0], total[1] - self.total[1]
        self.procs, self.total = table, total
        if not d_all:
            return 0.0, 0.0
        return 100.0 * (d_all - d_idle) / d_all, 100.0 * other / d_all


def sample(mode, url, out, filer, spool, interval, pgdatas, roots, exes=""):
    hz = os.sysconf("SC_CLK_TCK")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    interval = float(interval)
    cpu = Cpu([d for d in pgdatas.split(",") if d], {int(p) for p in roots.split(",") if p}, {e for e in exes.split(",") if e})
    q = (
        "SELECT pg_walfile_name(pg_current_wal_lsn()), coalesce(last_archived_wal, ''), "
        "pg_current_wal_lsn() FROM pg_stat_archiver"
    )
    with open(out, "a", buffering=1) as f:
        while True:
            t = time.time()
            line = None
            if mode == "cpu":
                line = "- - -1 0 {load} 0"
            else:
                r = subprocess.run(["psql", "-X", "-At", "-F", " ", "-d", url, "-c", q], capture_output=True, text=True)
                parts = r.stdout.split()
                if len(parts) == 3 or (len(parts) == 2 and mode == "stream"):
                    current, lsn = parts[0], parts[-1]
                    stored = parts[1][:24] if mode == "archive" and len(parts) == 3 else newest_record(filer, "wals")
                    # A .backup name as the last archived: its segment counts as stored.
                    lag = max(0, seg(current) - seg(stored) - 1) if stored else -1
                    hi, lo = lsn.split("/")
                    spooled = len(os.listdir(spool)) if mode == "stream" else 0
                    line = f"{current} {stored or '-'} {lag} {int(hi, 16) * 2**32 + int(lo, 16)} {{load}} {spooled}"
            if line is not None:
                busy, other = cpu.split()
                load = open("/proc/loadavg").read().split()[0]
                f.write(f"{t:.2f} {line.format(load=load)} {busy:.0f} {other:.0f}\n")
                top = sorted(cpu.by_name.items(), key=lambda kv: -kv[1])[:8]
                with open(out + ".other", "w") as o:
                    o.write(", ".join(f"{n} {ticks / hz:.1f} s" for n, ticks in top if ticks >= hz / 10) + "\n")
            time.sleep(max(0.0, interval - (time.time() - t)))


def procmax(exe, out):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    peak, ticks = 0, {}
    while not stop:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
                if b"prefetch" not in args or b"wal" not in args or os.path.realpath(f"/proc/{pid}/exe") != exe:
                    continue
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
                st = open(f"/proc/{pid}/stat").read()
                f = st[st.rfind(")") + 2 :].split()
                ticks[pid] = int(f[11]) + int(f[12])
            except OSError:
                pass
        time.sleep(0.05)
    with open(out, "w") as f:
        f.write(f"{peak} {len(ticks)} {sum(ticks.values()) / os.sysconf('SC_CLK_TCK'):.1f}\n")


def lag_stats(path, a, b, log):
    a, b = float(a), float(b)
    rows = [line.split() for line in open(path)]
    rows = [r for r in rows if len(r) == 9 and a <= float(r[0]) <= b and int(r[3]) >= 0]
    m = re.search(r"^tps = ([0-9.]+)", open(log).read(), re.M)
    tps = f"{float(m.group(1)):.0f}" if m else "n/a"
    if len(rows) < 2:
        print("0 n/a n/a n/a n/a n/a n/a", tps, "n/a n/a")
        return
    lag = [int(r[3]) for r in rows]
    d = float(rows[-1][0]) - float(rows[0][0])
    print(
        len(rows),
        max(lag),
        f"{statistics.median(lag):g}",
        f"{(seg(rows[-1][2]) - seg(rows[0][2])) / d:.2f}",
        f"{(int(rows[-1][4]) - int(rows[0][4])) / d / 1048576:.1f}",
        f"{statistics.mean(float(r[5]) for r in rows):.2f}",
        max(int(r[6]) for r in rows),
        tps,
        f"{statistics.mean(float(r[7]) for r in rows[1:]):.0f}",
        f"{statistics.mean(float(r[8]) for r in rows[1:]):.0f}",
    )


def time_stats():
    rows = [line.split() for line in sys.stdin]
    rows = [r for r in rows if len(r) == 5 and r[0].replace(".", "", 1).isdigit()]
    if not rows:
        print("0 n/a n/a n/a n/a 0 n/a n/a")
        return
    e = sorted(float(r[0]) for r in rows)
    cpu = [float(r[3]) + float(r[4]) for r in rows]
    print(
        len(rows),
        f"{statistics.median(e):.2f}",
        f"{e[min(len(e) - 1, int(len(e) * 0.9))]:.2f}",
        f"{e[-1]:.2f}",
        f"{max(int(r[1]) for r in rows) / 1024:.1f}",
        sum(r[2] != "0" for r in rows),
        f"{statistics.median(cpu):.2f}",
        f"{sum(cpu):.1f}",
    )


def base_phases(*paths):
    stream, wait = [], []
    marks = (("start", "physical backup started"), ("streamed", "base backup streamed"), ("done", "physical backup complete"))
    for path in paths:
        at = {}
        for line in open(path):
            try:
                r = json.loads(line)
            except ValueError:
                continue
            msg = r.get("fields", {}).get("message", "")
            for key, text in marks:
                if msg.startswith(text):
                    at[key] = datetime.fromisoformat(r["timestamp"].replace("Z", "")[:26])
        if len(at) == 3:
            stream.append((at["streamed"] - at["start"]).total_seconds())
            wait.append((at["done"] - at["streamed"]).total_seconds())
    med = lambda v: f"{statistics.median(v):.2f}" if v else "n/a"
    print(med(stream), med(wait))


def base_manifest():
    try:
        m = json.load(sys.stdin)
    except ValueError:
        m = {}
    if not m.get("physical"):
        print("none 0/0 none 0 0")
        return
    t = [o for o in m["objects"] if o["role"] == "base_tar"][0]
    print(m["id"], m["physical"]["start_lsn"], t["key"], t["bytes"], t["raw_bytes"])


def replay_span(path):
    at = [
        datetime.strptime(" ".join(line.split()[:2]), "%Y-%m-%d %H:%M:%S.%f")
        for line in open(path, errors="replace")
        if "restored log file" in line
    ]
    print(f"{(at[-1] - at[0]).total_seconds():.1f}" if len(at) > 1 else "n/a")


def restore_command(path):
    try:
        lines = [line for line in open(path) if re.match(r"\s*restore_command\s*=", line)]
    except OSError:
        lines = []
    v = lines[-1].split("=", 1)[1].strip() if lines else ""
    print(v[1:-1].replace("''", "'") if v.startswith("'") else v)


COMMANDS = {
    "sample": sample,
    "procmax": procmax,
    "lag-stats": lag_stats,
    "time-stats": time_stats,
    "base-phases": base_phases,
    "base-manifest": base_manifest,
    "replay-span": replay_span,
    "restore-command": restore_command,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
