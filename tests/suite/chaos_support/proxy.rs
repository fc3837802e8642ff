//! A fault-injecting TCP proxy: forwards every connection to a target that can
//! change (a restarted node gets a new port), and can be cut — every open
//! connection is dropped and new ones are closed as soon as they are accepted —
//! and healed again.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One proxy listening on 127.0.0.1; stops (dropping its connections) when dropped.
pub struct Proxy {
    /// The address clients connect to.
    pub addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    cut: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(target));
        let (cut, _) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&target), cut.clone()));
        Proxy { addr, target, cut, accept }
    }

    /// `http://<proxy address>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Forwards new connections to `target` from now on.
    pub fn retarget(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
    }

    /// Cuts the link (`true`) or heals it (`false`).
    pub fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut.send_replace(true);
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: Arc<Mutex<SocketAddr>>, cut: watch::Sender<bool>) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        if *cut.borrow() {
            // Refused: closed before a byte is read.
            drop(client);
            continue;
        }
        let to = *target.lock().unwrap();
        let mut cut = cut.subscribe();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(to).await else { return };
            let mut client = client;
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cut.wait_for(|cut| *cut) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server; returns its address.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut reader, mut writer) = socket.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        stream.write_all(b"ping").await?;
        let mut answer = [0; 4];
        stream.read_exact(&mut answer).await?;
        Ok(answer.to_vec())
    }

    #[tokio::test]
    async fn forwards_cuts_heals_and_retargets() {
        let proxy = Proxy::start(echo().await).await;
        let mut open = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(round_trip(&mut open).await.unwrap(), b"ping");

        proxy.set_cut(true);
        assert!(round_trip(&mut open).await.is_err(), "an open connection is dropped by the cut");
        let mut refused = TcpStream::connect(proxy.addr).await.unwrap();
        assert!(round_trip(&mut refused).await.is_err(), "a new connection is closed at once");

        proxy.set_cut(false);
        proxy.retarget(echo().await);
        let mut healed = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(round_trip(&mut healed).await.unwrap(), b"ping");
    }
}
