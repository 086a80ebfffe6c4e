//! Micro-benchmarks of what runs per request or per decision: route lookup, admission (replica pick and
//! release), connection deadline evaluation, and the scaling decision.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tideway_config::HostPattern;
use tideway_core::{
    Admission, App, Balance, ConnectionTimeouts, ConnectionTimes, ManualClock, Observation, Policy, Replica,
    ReplicaState, ReplicaView, Scaler, Timestamp,
};
use tideway_proxy::{Route, RouteTable};

fn app(balance: Balance, replicas: usize) -> Arc<App> {
    let policy = Policy {
        max_connections: 1_000_000,
        balance,
        ..Policy::default()
    };
    let app = App::new("bench", policy, Arc::new(ManualClock::default()));
    app.set_replicas(
        (0..replicas)
            .map(|i| {
                let addr = SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16));
                Arc::new(Replica::new(
                    format!("r{i}"),
                    addr,
                    ReplicaState::Ready,
                    Timestamp::ZERO,
                ))
            })
            .collect(),
    );
    app
}

fn routing(c: &mut Criterion) {
    let routes: Vec<Route> = (0..50)
        .map(|i| Route {
            app: app(Balance::LeastConnections, 1),
            hosts: vec![HostPattern::Exact(format!("app-{i}.example.com"))],
            path_prefix: (i % 2 == 0).then(|| format!("/p{i}")),
        })
        .chain(std::iter::once(Route {
            app: app(Balance::LeastConnections, 1),
            hosts: vec![HostPattern::Suffix(".wild.example.com".to_owned())],
            path_prefix: None,
        }))
        .collect();
    let table = RouteTable::new(routes);
    c.bench_function("route/exact host, longest prefix", |b| {
        b.iter(|| {
            table.lookup(
                black_box(Some("app-20.example.com")),
                black_box("/p20/dashboard/ws"),
            )
        })
    });
    c.bench_function("route/wildcard host with port", |b| {
        b.iter(|| table.lookup(black_box(Some("tenant-7.wild.example.com:8080")), black_box("/")))
    });
}

fn admission(c: &mut Criterion) {
    for (name, balance) in [
        ("least-connections", Balance::LeastConnections),
        ("pack", Balance::Pack),
    ] {
        let app = app(balance, 5);
        // Some load so the pick has something to compare.
        let held: Vec<_> = (0..37)
            .filter_map(|_| match app.admit() {
                Admission::Seated(seat) => Some(seat),
                _ => None,
            })
            .collect();
        c.bench_function(&format!("admission/admit and release, 5 replicas, {name}"), |b| {
            b.iter(|| match app.admit() {
                Admission::Seated(seat) => drop(black_box(seat)),
                other => panic!("no seat: {other:?}"),
            })
        });
        drop(held);
    }
}

fn deadlines(c: &mut Criterion) {
    let limits = ConnectionTimeouts {
        max_age: Some(Duration::from_secs(3_600)),
        inactive: Some(Duration::from_secs(900)),
        keepalive: Some(Duration::from_secs(75)),
        header_read: Some(Duration::from_secs(10)),
        send: Some(Duration::from_secs(60)),
    };
    let times = ConnectionTimes {
        started: Timestamp::from_millis(1_000),
        last_activity: Timestamp::from_millis(50_000),
        kept_alive_since: None,
        head_started: None,
        write_blocked_since: None,
    };
    c.bench_function("deadline/evaluate a connection's limits", |b| {
        b.iter(|| limits.evaluate(black_box(&times), black_box(Timestamp::from_millis(60_000))))
    });
}

fn scaling(c: &mut Criterion) {
    let policy = Policy {
        min_instances: 1,
        max_instances: 10,
        ..Policy::default()
    };
    let observation = Observation {
        demand: 57,
        replicas: (0..5u64)
            .map(|i| ReplicaView {
                id: tideway_core::ReplicaId::next(),
                state: ReplicaState::Ready,
                connections: 11,
                started_at: Timestamp::from_millis(i * 1_000),
                revivable: false,
            })
            .collect(),
        ..Observation::default()
    };
    c.bench_function("scaling/decide, 5 replicas", |b| {
        b.iter(|| {
            Scaler::default().decide(
                black_box(&policy),
                black_box(&observation),
                Timestamp::from_millis(10),
            )
        })
    });
}

criterion_group!(hot_path, routing, admission, deadlines, scaling);
criterion_main!(hot_path);
