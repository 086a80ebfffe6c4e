//! Before a run: the tools installed, the binaries built, the CPUs chosen, the machine described.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::Binaries;
use crate::proxies::Target;

/// The workspace root (where `Cargo.toml` with `[workspace]` lives).
pub(crate) fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("the benches package sits in the workspace")
}

/// Installs wrk (and h2load, for `http2`) and the compared proxies from Debian if they are missing, without
/// starting their services.
pub(crate) fn install_missing_tools(targets: &[Target], http2: bool) -> anyhow::Result<()> {
    let mut packages = Vec::new();
    for (program, package, needed) in [
        ("wrk", "wrk", true),
        ("h2load", "nghttp2-client", http2),
        ("taskset", "util-linux", true),
        ("nginx", "nginx", targets.contains(&Target::Nginx)),
        ("haproxy", "haproxy", targets.contains(&Target::Haproxy)),
    ] {
        if needed && !on_path(program) {
            packages.push(package);
        }
    }
    if packages.is_empty() {
        return Ok(());
    }
    eprintln!("== installing {} from Debian", packages.join(" "));
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if !root {
        bail!(
            "missing {}: install them (apt-get install {}) or run as root",
            packages.join(", "),
            packages.join(" ")
        );
    }
    // Debian starts a package's service on install unless policy-rc.d says no; the runner starts its own.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let placed = !policy.exists() && std::fs::write(policy, "#!/bin/sh\nexit 101\n").is_ok();
    if placed {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let installed = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    if placed {
        std::fs::remove_file(policy)?;
    }
    anyhow::ensure!(
        installed?.success(),
        "apt-get install {} failed",
        packages.join(" ")
    );
    Ok(())
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Builds tideway and the fake replica in release mode (a no-op when they are up to date).
pub(crate) fn build(root: &Path) -> anyhow::Result<Binaries> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "tideway",
            "-p",
            "tideway-testkit",
            "--bins",
        ])
        .current_dir(root)
        .status()
        .context("run cargo build")?;
    anyhow::ensure!(status.success(), "cargo build failed");
    let release = root.join("target/release");
    Ok(Binaries {
        compare: std::env::current_exe()?,
        tideway: release.join("tideway"),
        fake_app: release.join("tideway-fake-app"),
    })
}

/// CPU for the proxies and CPU for the load: 0 and 1, or no pinning on a single CPU.
pub(crate) fn cpus() -> (Option<usize>, Option<usize>) {
    match std::thread::available_parallelism().map(usize::from) {
        Ok(n) if n >= 2 => (Some(0), Some(1)),
        _ => {
            eprintln!(
                "warning: one CPU only: proxies and load share it, figures are not comparable to two-CPU runs"
            );
            (None, None)
        }
    }
}

/// Date, CPU, memory, kernel and the versions compared.
pub(crate) fn describe_machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next()?.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024 / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version = |program: &str, flag: &str| {
        Command::new(program)
            .arg(flag)
            .output()
            .ok()
            .map(|o| {
                let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .unwrap_or_default()
    };
    let versions: Vec<String> = [("haproxy", "-v"), ("nginx", "-v"), ("wrk", "-v")]
        .into_iter()
        .map(|(program, flag)| version(program, flag))
        .filter(|v| !v.is_empty())
        .collect();
    format!(
        "{}, {model}, {cpus} CPUs, {memory} GiB, Linux {}; {}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        kernel.trim(),
        versions.join("; "),
    )
}
