//! A counting proxy between the benchmark and PostgreSQL: it forwards every byte both ways and
//! counts, in what the client sends, the statements it runs and the round trips it waits for.
//!
//! PostgreSQL's frontend protocol makes both countable exactly: after the untyped startup
//! packets, every message is a type byte and a length. A simple query (`Q`) is one round trip
//! (however many statements its text holds: `BEGIN; SET LOCAL …` counts once); in the extended
//! protocol a statement runs at each `Execute` (`E`) and the client waits for the server at each
//! `Sync` (`S`), so sqlx's first use of a statement (parse and describe, then bind and execute)
//! is two round trips and a cached one is one.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// `SSLRequest` and `GSSENCRequest`: untyped packets the server answers with one byte, after
/// which the client sends its startup packet.
const ENCRYPTION_REQUESTS: [u32; 2] = [80_877_103, 80_877_104];

/// What the client sent since the last [`WireCounter::take`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Wire {
    pub statements: u64,
    pub round_trips: u64,
}

#[derive(Default)]
struct Counts {
    statements: AtomicU64,
    round_trips: AtomicU64,
}

/// A proxy on a loopback port in front of one PostgreSQL server.
pub struct WireCounter {
    port: u16,
    counts: Arc<Counts>,
}

impl WireCounter {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let counts = Arc::new(Counts::default());
        let shared = counts.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counts = shared.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        // Small messages, one at a time: Nagle's algorithm would hold each.
                        let _ = (client.set_nodelay(true), server.set_nodelay(true));
                        relay(client, server, counts).await;
                    }
                });
            }
        });
        Ok(Self { port, counts })
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The counts since the last call, and a fresh start.
    pub fn take(&self) -> Wire {
        Wire {
            statements: self.counts.statements.swap(0, Ordering::SeqCst),
            round_trips: self.counts.round_trips.swap(0, Ordering::SeqCst),
        }
    }
}

async fn relay(client: TcpStream, server: TcpStream, counts: Arc<Counts>) {
    let (client_read, mut client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let answers = async {
        let mut server_read = server_read;
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(requests(client_read, server_write, &counts), answers);
}

/// Forwards the client's messages one by one, counting them, until either side closes.
async fn requests(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, counts: &Counts) {
    let _ = forward(&mut from, &mut to, counts).await;
    let _ = to.shutdown().await;
}

async fn forward(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    counts: &Counts,
) -> io::Result<()> {
    // The untyped packets: encryption requests, then the startup packet.
    loop {
        let length = from.read_u32().await?;
        let mut packet = length.to_be_bytes().to_vec();
        packet.resize((length as usize).max(4), 0);
        from.read_exact(&mut packet[4..]).await?;
        to.write_all(&packet).await?;
        let code = packet
            .get(4..8)
            .and_then(|code| <[u8; 4]>::try_from(code).ok())
            .map(u32::from_be_bytes);
        if !code.is_some_and(|code| ENCRYPTION_REQUESTS.contains(&code)) {
            break;
        }
    }
    loop {
        let kind = from.read_u8().await?;
        let length = from.read_u32().await?;
        let mut message = vec![kind];
        message.extend_from_slice(&length.to_be_bytes());
        message.resize(1 + (length as usize).max(4), 0);
        from.read_exact(&mut message[5..]).await?;
        let (statements, round_trips) = match kind {
            b'Q' => (1, 1),
            b'E' => (1, 0),
            b'S' => (0, 1),
            _ => (0, 0),
        };
        counts.statements.fetch_add(statements, Ordering::SeqCst);
        counts.round_trips.fetch_add(round_trips, Ordering::SeqCst);
        to.write_all(&message).await?;
    }
}
