//! Processes the runner starts: pinned to a CPU, accounted for CPU time and memory, and stopped on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// A process the runner started, in a process group of its own (with its children, for nginx's workers),
/// killed when dropped.
pub(crate) struct Started {
    child: Child,
}

/// Linux's fixed tick for `utime`/`stime` in `/proc/<pid>/stat`.
const TICKS_PER_SECOND: f64 = 100.0;

impl Started {
    /// Runs `program` with `args` pinned to `cpu` (when there is more than one), output to `log`.
    pub(crate) fn spawn(
        name: &str,
        cpu: Option<usize>,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let log = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let mut command = match cpu {
            Some(cpu) => {
                let mut command = Command::new("taskset");
                command.arg("-c").arg(cpu.to_string()).arg(program);
                command
            }
            None => Command::new(program),
        };
        // A group of its own, so that stopping it reaches every process it forks (nginx's workers).
        use std::os::unix::process::CommandExt;
        let child = command
            .process_group(0)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {name} ({})", program.display()))?;
        Ok(Started { child })
    }

    /// The process and its descendants.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.child.id()];
        let mut at = 0;
        while at < pids.len() {
            let parent = pids[at];
            pids.extend(children_of(parent));
            at += 1;
        }
        pids
    }

    /// CPU time (user + system) used so far by the process and its descendants, in seconds.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        self.pids().iter().map(|pid| cpu_ticks(*pid)).sum::<u64>() as f64 / TICKS_PER_SECOND
    }

    /// Resident memory of the process and its descendants, in bytes.
    pub(crate) fn rss_bytes(&self) -> u64 {
        self.pids().iter().map(|pid| rss_bytes(*pid)).sum()
    }
}

impl Drop for Started {
    /// Kills the whole process group, descendants that outlived their parent included.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

fn stat_fields(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().map(str::to_owned).collect())
        })
        .unwrap_or_default()
}

fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| stat_fields(*child).get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid))
        .collect()
}

/// utime + stime (fields 14 and 15 of stat; 12 and 13 after the command name).
fn cpu_ticks(pid: u32) -> u64 {
    let fields = stat_fields(pid);
    [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum()
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}
