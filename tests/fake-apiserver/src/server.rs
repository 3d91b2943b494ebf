//! The accept loop and connections, on a runtime of the server's own (so a
//! test that blocks its thread, or ends its runtime, does not stall or kill
//! the server), with the "down" switch and per-request connection kills.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use crate::http::{ConnKill, Shared, handle};

pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    down: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                if *down.borrow() {
                    // Down: reset at once (RST), so clients fail fast with a
                    // transport error instead of waiting for a timeout.
                    let _ = stream.set_zero_linger();
                    drop(stream);
                    continue;
                }
                tokio::spawn(connection(stream, shared.clone(), down.clone()));
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn connection(stream: TcpStream, shared: Arc<Shared>, mut down: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let kill = Arc::new(Notify::new());
    let k = kill.clone();
    let is_down = down.clone();
    let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        // A request on a kept-alive connection can arrive before this task
        // has seen the switch below: it must not be answered either.
        let down_now = *is_down.borrow();
        if down_now {
            k.notify_one();
        }
        req.extensions_mut().insert(ConnKill(k.clone()));
        let shared = shared.clone();
        async move {
            if down_now {
                std::future::pending::<()>().await;
            }
            Ok::<_, Infallible>(handle(shared, req).await)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn => {}
        // A drop_connection fault: dropping the connection closes the socket.
        _ = kill.notified() => {}
        _ = down.wait_for(|d| *d) => {}
    }
}
