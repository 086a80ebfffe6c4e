//! A TCP relay on 127.0.0.1 standing for the network between clients and instances, or between two
//! instances: it spreads new connections over its targets in turn, as a cloud load balancer does, and can
//! be cut — its connections closed, new ones dropped — and mended, as a partition would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub(crate) struct Relay {
    pub(crate) addr: SocketAddr,
    per_target: Arc<Vec<AtomicUsize>>,
    cut: watch::Sender<bool>,
}

impl Relay {
    /// A relay to `targets`, each new connection to the next in turn.
    pub(crate) async fn start(targets: Vec<SocketAddr>) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("an address");
        let per_target = Arc::new(targets.iter().map(|_| AtomicUsize::new(0)).collect::<Vec<_>>());
        let counts = Arc::clone(&per_target);
        let (cut, is_cut) = watch::channel(false);
        tokio::spawn(async move {
            let mut next = 0;
            while let Ok((mut client, _)) = listener.accept().await {
                if *is_cut.borrow() {
                    continue;
                }
                let target = next % targets.len();
                next += 1;
                counts[target].fetch_add(1, Ordering::SeqCst);
                let (addr, mut is_cut) = (targets[target], is_cut.clone());
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(addr).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = is_cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Relay {
            addr,
            per_target,
            cut,
        }
    }

    /// The connections each target got.
    pub(crate) fn counts(&self) -> Vec<usize> {
        self.per_target.iter().map(|c| c.load(Ordering::SeqCst)).collect()
    }

    /// Cuts the relay (`true`) or mends it.
    pub(crate) fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}
