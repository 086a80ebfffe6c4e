//! The `tideway` command line: `check`, exit codes, and the example configurations users start from.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tideway(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run tideway")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tideway-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn check_accepts_a_valid_file() {
    let path = write_config(
        "valid.toml",
        "[[app]]\nname = \"a\"\nhosts = [\"a.test\"]\n[app.static]\naddresses = [\"127.0.0.1:9001\"]\n",
    );
    let output = tideway(&["check", "--config", path.to_str().expect("utf-8 path")]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("ok (1 apps)"));
}

#[test]
fn check_warns_about_a_file_without_apps_unless_it_says_so() {
    let empty = write_config("empty.toml", "[proxy]\nlisten = \"127.0.0.1:0\"\n");
    let output = tideway(&["check", "--config", empty.to_str().expect("utf-8 path")]);
    assert!(output.status.success());
    assert!(
        stderr(&output).contains("warning: no [[app]]"),
        "{}",
        stderr(&output)
    );
    let declared = write_config("declared.toml", "app = []\n[proxy]\nlisten = \"127.0.0.1:0\"\n");
    let output = tideway(&["check", "--config", declared.to_str().expect("utf-8 path")]);
    assert!(output.status.success());
    assert_eq!(stderr(&output), "");
}

#[test]
fn check_names_every_bad_field_and_exits_2() {
    let path = write_config(
        "invalid.toml",
        "[proxy]\nlisten = \"nowhere\"\n\n[[app]]\nname = \"a\"\nhosts = [\"a.test\"]\n[app.static]\n\
         addresses = [\"127.0.0.1:9001\"]\n\n[[app]]\nname = \"b\"\nhosts = [\"b.test:80\"]\nmin_instances = 3\n\
         max_instances = 2\ninactve_timeout = \"1m\"\n[app.static]\naddresses = [\"127.0.0.1:9002\"]\n",
    );
    let output = tideway(&["check", "--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    for expected in [
        "proxy.listen: expected an address like \"0.0.0.0:8080\"",
        "app[1].hosts[0]: must not include a port",
        "app[1].max_instances: must be >= min_instances (3)",
        "app[1].inactve_timeout: unknown key",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn unreadable_and_malformed_files_exit_2() {
    let missing = tideway(&["check", "--config", "/nonexistent/tideway.toml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("cannot read /nonexistent/tideway.toml"));
    let path = write_config("syntax.toml", "[proxy\n");
    let malformed = tideway(&["check", "--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(malformed.status.code(), Some(2));
    assert!(stderr(&malformed).contains("line 1"), "{}", stderr(&malformed));
    let serve = tideway(&["serve", "--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(serve.status.code(), Some(2), "serve refuses a bad config too");
}

#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    assert_eq!(tideway(&["--no-such-flag"]).status.code(), Some(64));
    assert_eq!(tideway(&["frobnicate"]).status.code(), Some(64));
    let help = tideway(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("check"));
}

#[test]
fn a_busy_listen_address_exits_3() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let path = write_config("busy.toml", &format!("[proxy]\nlisten = \"{addr}\"\n"));
    let output = tideway(&["serve", "--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(3));
    assert!(stderr(&output).contains("proxy.listen"), "{}", stderr(&output));
    assert!(
        !stderr(&output).contains('\x1b'),
        "no terminal colours in a log that is not a terminal: {:?}",
        stderr(&output)
    );
}

#[test]
fn the_shipped_example_configs_are_valid() {
    for example in [
        "examples/tideway.toml",
        "examples/shiny/tideway.toml",
        "examples/streamlit/tideway.toml",
    ] {
        let path = repo_root().join(example);
        let output = tideway(&["check", "--config", path.to_str().expect("utf-8 path")]);
        assert!(output.status.success(), "{example}: {}", stderr(&output));
    }
}

/// Writes a certificate and its key at each `tls_certificate` and `tls_key` path of `block` (relative to
/// `dir`), so that `check` finds what a deployment would mount there.
fn write_certificates(dir: &Path, block: &str) {
    let value = |line: &str, key: &str| {
        let rest = line.trim().strip_prefix(key)?.trim_start().strip_prefix('=')?;
        rest.split('"').nth(1).map(str::to_owned)
    };
    let lines: Vec<&str> = block.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(chain) = value(line, "tls_certificate") else {
            continue;
        };
        let key = lines[i + 1..]
            .iter()
            .find_map(|l| value(l, "tls_key"))
            .expect("a tls_key follows");
        let pair = rcgen::generate_simple_self_signed(vec!["readme.test".to_owned()]).expect("a certificate");
        for (path, pem) in [(chain, pair.cert.pem()), (key, pair.signing_key.serialize_pem())] {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().expect("a directory")).expect("create it");
            std::fs::write(path, pem).expect("write it");
        }
    }
}

/// Every complete configuration shown in the README (a ```toml block with an `[[app]]`) passes `check`.
#[test]
fn the_readme_configs_are_valid() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let blocks: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .filter(|block| block.contains("[[app]]"))
        .collect();
    assert!(!blocks.is_empty(), "the README shows a configuration");
    for (i, block) in blocks.iter().enumerate() {
        let path = write_config(&format!("readme-{i}.toml"), block);
        let dir = path.parent().expect("the config's directory");
        write_certificates(dir, block);
        let output = Command::new(env!("CARGO_BIN_EXE_tideway"))
            .args(["check", "--config", path.to_str().expect("utf-8 path")])
            .current_dir(dir)
            .output()
            .expect("run tideway");
        assert!(
            output.status.success(),
            "README block {i} is invalid:\n{}\n{block}",
            stderr(&output)
        );
    }
}

/// The README's reference has one `app policy` row per policy key, in the order the keys are listed,
/// and its admin API example shows every key: the list the reader and the API go through is the
/// documented one.
#[test]
fn the_readme_documents_every_policy_key() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let documented: Vec<&str> = readme
        .lines()
        .filter_map(|line| line.strip_prefix("| app policy | `"))
        .filter_map(|rest| rest.split('`').next())
        .collect();
    let keys: Vec<&str> = tideway_config::POLICY_KEYS.iter().map(|key| key.name).collect();
    assert_eq!(documented, keys);
    for key in keys {
        assert!(
            readme.contains(&format!("\"{key}\": ")),
            "the admin API example shows {key}"
        );
    }
    for key in tideway_config::POLICY_KEYS {
        if let Some(old) = key.old_name {
            assert!(
                readme.contains(&format!("`{old}` → `{}`", key.name)),
                "the README's list of renamed keys names {old}"
            );
        }
    }
}

#[test]
fn check_warns_about_renamed_keys_and_accepts_them() {
    let path = write_config(
        "renamed.toml",
        "[proxy]\nlisten = \"127.0.0.1:0\"\nupstream_idle_timeout = \"30s\"\n\
         [[app]]\nname = \"a\"\nhosts = [\"a.test\"]\nqueue_size = 5\n[app.static]\naddresses = [\"127.0.0.1:9\"]\n",
    );
    let output = tideway(&["check", "--config", path.to_str().expect("utf-8 path")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stderr = stderr(&output);
    assert!(
        stderr.contains("warning: proxy.upstream_idle_timeout: renamed to `upstream_keepalive_timeout`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: app[0].queue_size: renamed to `max_queued`"),
        "{stderr}"
    );
}

#[test]
fn the_committed_crd_is_the_one_the_code_generates() {
    let output = tideway(&["crd"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let committed = repo_root().join("deploy/crd/tidewayapps.tideway.dev.yaml");
    let committed = std::fs::read_to_string(&committed).expect("the committed CRD");
    assert!(
        String::from_utf8_lossy(&output.stdout) == committed,
        "deploy/crd/tidewayapps.tideway.dev.yaml is stale: write `tideway crd` to it"
    );
}
