//! The proxies compared, each configured the way its users would for this job: one worker, keep-alive to
//! the upstream, no access log, WebSocket upgrades passed through.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::process::Started;

/// A proxy under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Target {
    /// nginx, 1 worker process.
    Nginx,
    /// HAProxy, 1 thread.
    Haproxy,
    /// tideway, 1 worker thread.
    Tideway,
}

/// A running proxy.
pub(crate) struct Proxy {
    pub(crate) target: Target,
    /// Where it speaks HTTP/1.1.
    pub(crate) addr: SocketAddr,
    /// Where it speaks HTTP/2 with prior knowledge (h2c): tideway on the same listener, nginx and HAProxy
    /// on one of their own.
    pub(crate) h2c: SocketAddr,
    pub(crate) process: Started,
}

impl Target {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Target::Nginx => "nginx",
            Target::Haproxy => "haproxy",
            Target::Tideway => "tideway",
        }
    }
}

/// Starts `target` on `addr` (and, for HTTP/2 where it needs a listener of its own, `h2c`) in front of
/// `upstream`, pinned to `cpu`; waits until it answers.
pub(crate) async fn start(
    target: Target,
    addr: SocketAddr,
    h2c: SocketAddr,
    upstream: SocketAddr,
    cpu: Option<usize>,
    dir: &Path,
    tideway: &Path,
) -> anyhow::Result<Proxy> {
    let dir = dir.join(target.name());
    std::fs::create_dir_all(dir.join("logs"))?;
    wait_until_free(addr).await?;
    let h2c = if target == Target::Tideway { addr } else { h2c };
    wait_until_free(h2c).await?;
    let (program, args): (PathBuf, Vec<String>) = match target {
        Target::Nginx => {
            let config = dir.join("nginx.conf");
            std::fs::write(&config, nginx_config(addr, h2c, upstream, &dir))?;
            let args = vec!["-p".into(), path(&dir), "-c".into(), path(&config)];
            ("nginx".into(), args)
        }
        Target::Haproxy => {
            let config = dir.join("haproxy.cfg");
            std::fs::write(&config, haproxy_config(addr, h2c, upstream))?;
            ("haproxy".into(), vec!["-f".into(), path(&config)])
        }
        Target::Tideway => {
            let config = dir.join("tideway.toml");
            std::fs::write(&config, tideway_config(addr, upstream))?;
            (
                tideway.to_owned(),
                vec!["serve".into(), "--config".into(), path(&config)],
            )
        }
    };
    let process = Started::spawn(target.name(), cpu, &program, &args, &dir.join("output.log"))?;
    wait_until_serving(addr).await.with_context(|| {
        let output = std::fs::read_to_string(dir.join("output.log")).unwrap_or_default();
        format!("{} did not start:\n{output}", target.name())
    })?;
    Ok(Proxy {
        target,
        addr,
        h2c,
        process,
    })
}

/// Waits for the port a stopped proxy held to be free (its processes take a moment to go once killed);
/// one still taken after a few seconds belongs to someone else, which would answer in this proxy's place.
async fn wait_until_free(addr: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..250 {
        if std::net::TcpListener::bind(addr).is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{addr} is taken: is a process from an earlier run still there?")
}

async fn wait_until_serving(addr: SocketAddr) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for _ in 0..100 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n")
                .await?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await?;
            if answer.starts_with(b"HTTP/1.1 200") {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{addr} does not answer 200")
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn nginx_config(addr: SocketAddr, h2c: SocketAddr, upstream: SocketAddr, dir: &Path) -> String {
    let dir = dir.display();
    let location = r#"location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 3600s;
        }"#;
    format!(
        r#"daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {dir}/nginx.pid;
error_log {dir}/logs/error.log warn;
events {{ worker_connections 19500; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_timeout 3600s;
    keepalive_requests 1000000;
    upstream app {{
        server {upstream};
        # Room for every connection of the largest run, like HAProxy's and tideway's pools.
        keepalive 1024;
        keepalive_requests 1000000;
    }}
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}
    server {{
        listen {addr} backlog=4096;
        {location}
    }}
    # HTTP/2 with prior knowledge: on a plain port nginx speaks one protocol per listener.
    server {{
        listen {h2c} http2 backlog=4096;
        http2_max_concurrent_streams 128;
        {location}
    }}
}}
"#
    )
}

fn haproxy_config(addr: SocketAddr, h2c: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        r#"global
    nbthread 1
    maxconn 9900

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout http-keep-alive 1h

frontend proxy
    bind {addr}
    default_backend app

frontend h2c
    bind {h2c} proto h2
    default_backend app

backend app
    server app {upstream}
"#
    )
}

fn tideway_config(addr: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        r#"[proxy]
listen = "{addr}"
workers = 1
access_log = false
keepalive_timeout = "1h"


[[app]]
name = "bench"
path_prefix = "/"
max_connections = 1000000
[app.static]
addresses = ["{upstream}"]
"#
    )
}
