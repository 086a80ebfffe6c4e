//! The proxies compared, each configured the way its users would for this job: one worker, keep-alive to
//! the upstream, no access log, WebSocket upgrades passed through.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::process::Started;
use crate::tls;

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
    /// Where it terminates TLS: HTTP/2 or HTTP/1.1 by ALPN, the same certificate and suite for all.
    pub(crate) tls: SocketAddr,
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

/// Where a proxy listens.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Listeners {
    /// Plain HTTP/1.1.
    pub(crate) addr: SocketAddr,
    /// h2c, where the proxy needs a listener of its own for it.
    pub(crate) h2c: SocketAddr,
    /// TLS.
    pub(crate) tls: SocketAddr,
}

/// Starts `target` on `listeners` in front of `upstream`, pinned to `cpu`, presenting `certificate`;
/// waits until it answers.
pub(crate) async fn start(
    target: Target,
    listeners: Listeners,
    upstream: SocketAddr,
    cpu: Option<usize>,
    dir: &Path,
    tideway: &Path,
    certificate: &tls::Files,
) -> anyhow::Result<Proxy> {
    let Listeners { addr, h2c, tls } = listeners;
    let dir = dir.join(target.name());
    std::fs::create_dir_all(dir.join("logs"))?;
    wait_until_free(addr).await?;
    let h2c = if target == Target::Tideway { addr } else { h2c };
    wait_until_free(h2c).await?;
    wait_until_free(tls).await?;
    let (program, args): (PathBuf, Vec<String>) = match target {
        Target::Nginx => {
            let config = dir.join("nginx.conf");
            std::fs::write(&config, nginx_config(listeners, upstream, &dir, certificate))?;
            let args = vec!["-p".into(), path(&dir), "-c".into(), path(&config)];
            ("nginx".into(), args)
        }
        Target::Haproxy => {
            let config = dir.join("haproxy.cfg");
            std::fs::write(&config, haproxy_config(listeners, upstream, certificate))?;
            ("haproxy".into(), vec!["-f".into(), path(&config)])
        }
        Target::Tideway => {
            let config = dir.join("tideway.toml");
            std::fs::write(&config, tideway_config(listeners, upstream, certificate))?;
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
        tls,
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

fn nginx_config(listeners: Listeners, upstream: SocketAddr, dir: &Path, certificate: &tls::Files) -> String {
    let Listeners { addr, h2c, tls } = listeners;
    let (chain, key) = (certificate.chain.display(), certificate.key.display());
    let (suite, group) = (tls::SUITE, tls::GROUP);
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
    # TLS: HTTP/2 or HTTP/1.1 by ALPN; session tickets on (nginx's default), no session cache.
    server {{
        listen {tls} ssl http2 backlog=4096;
        http2_max_concurrent_streams 128;
        ssl_certificate {chain};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256;
        ssl_conf_command Ciphersuites {suite};
        ssl_ecdh_curve {group};
        {location}
    }}
}}
"#
    )
}

fn haproxy_config(listeners: Listeners, upstream: SocketAddr, certificate: &tls::Files) -> String {
    let Listeners { addr, h2c, tls } = listeners;
    let combined = certificate.combined.display();
    let (suite, group) = (tls::SUITE, tls::GROUP);
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

frontend tls
    bind {tls} ssl crt {combined} alpn h2,http/1.1 ssl-min-ver TLSv1.2 ciphers ECDHE-ECDSA-AES128-GCM-SHA256 ciphersuites {suite} curves {group}
    default_backend app

backend app
    server app {upstream}
"#
    )
}

fn tideway_config(listeners: Listeners, upstream: SocketAddr, certificate: &tls::Files) -> String {
    let Listeners { addr, tls, .. } = listeners;
    let (chain, key) = (certificate.chain.display(), certificate.key.display());
    // TLS_AES_128_GCM_SHA256 is tideway's first choice, and X25519 its first group, whatever the client
    // offers first.
    format!(
        r#"[proxy]
listen = "{addr}"
tls_listen = "{tls}"
tls_certificate = "{chain}"
tls_key = "{key}"
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
