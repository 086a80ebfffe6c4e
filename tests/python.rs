//! Real Python apps for end-to-end tests: a virtualenv per package, installed from PyPI on first use and
//! kept under `target/` for the next run.

use std::path::PathBuf;
use std::process::Command;

use crate::binary;

/// The Python interpreter of a virtualenv holding `package==version`, created and installed if missing.
pub fn python_with(package: &str, version: &str) -> PathBuf {
    let venv = binary()
        .parent()
        .and_then(|profile| profile.parent())
        .expect("target/<profile>")
        .join("e2e-python")
        .join(format!("{package}-{version}"));
    let python = venv.join("bin").join("python");
    let module = package.replace('-', "_");
    let installed = python.exists()
        && Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .status()
            .is_ok_and(|s| s.success());
    if installed {
        return python;
    }
    run(Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg("--clear")
        .arg(&venv));
    run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("{package}=={version}"),
    ]));
    python
}

fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{command:?}: {e} (python3 with venv and pip is needed)"));
    assert!(status.success(), "{command:?} failed: {status}");
}
