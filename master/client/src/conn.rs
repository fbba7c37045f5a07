//! The API client used by the CLI (and by tests).

use std::time::Duration;

use async_net::TcpStream;
use bramble_wire::io::{FrameReader, IoError, send};
use bramble_wire::io::{HandshakeError, client_handshake};
use bramble_wire::msg::{ApiError, ErrorCode, Request, RequestBody, Response, ResponseBody};
use bramble_wire::{Hello, Role};
use futures_lite::io::{ReadHalf, WriteHalf};

use crate::heapless_str;
use crate::tls::{ClientStream, DialError, dial_pinned};

/// Largest answer frame to a client (a list of thousands of nodes fits).
pub const CLIENT_RESPONSE_MAX: usize = 16 << 20;

/// Reads a token file as it is (`K10<pin>::<id>.<secret>`): the pin is checked against the
/// master's certificate, the rest is the credential.
pub fn read_token_file(path: &std::path::Path) -> anyhow::Result<String> {
    let t = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!("cannot read token file {}: {e}; pass --token-file with the master's DATA_DIR/admin.token", path.display())
    })?;
    Ok(t.trim().to_string())
}

/// Why a call failed; maps to the CLI's exit codes.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not reach or talk to the master.
    #[error("cannot reach the master at {addr}: {detail}")]
    Connect {
        /// Address tried.
        addr: String,
        /// What happened.
        detail: String,
    },
    /// The server is not the master the token pins (or the token has no pin).
    #[error("refusing the server at {addr}: {detail}")]
    Untrusted {
        /// Address tried.
        addr: String,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// The master refused the handshake.
    #[error("the master refused the connection: {0}")]
    Rejected(String),
    /// The master answered with an error.
    #[error("{}", .0.message)]
    Api(ApiError),
}

impl ClientError {
    /// The CLI exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Connect { .. } => 5,
            ClientError::Rejected(_) => 5,
            ClientError::Untrusted { .. } => 5,
            ClientError::Api(e) => match e.code {
                ErrorCode::NotFound => 3,
                ErrorCode::Conflict => 4,
                ErrorCode::Invalid => 6,
                ErrorCode::Forbidden => 7,
                _ => 1,
            },
        }
    }
}

/// Whether an I/O error says the master closed the connection (as it does to a new connection
/// it evicts under a flood of idle sockets).
fn closed_early(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
    )
}

/// Whether a failed dial may be tried again.
enum Retry {
    Again(ClientError),
    Final(ClientError),
}

/// A connection to the master as an admin client.
#[derive(Debug)]
pub struct Client {
    addr: String,
    reader: FrameReader<ReadHalf<ClientStream>>,
    writer: WriteHalf<ClientStream>,
    next: u32,
}

impl Client {
    /// Connects over TLS, pinning the certificate named by the admin token (`K10<pin>::cred`),
    /// and authenticates with the token's credential.
    ///
    /// A connection the master closed during the TLS handshake or the Hello (before any request
    /// was sent) is dialled again, up to 3 times: a master under a flood of idle sockets may close a new
    /// connection that had not spoken yet (docs/security.md, "Limits").
    pub async fn connect(addr: &str, token: &str) -> Result<Client, ClientError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::connect_once(addr, token).await {
                Err(Retry::Again(_)) if tries < 3 => {
                    smol::Timer::after(Duration::from_millis(50 * tries)).await;
                }
                Err(Retry::Again(e) | Retry::Final(e)) => return Err(e),
                Ok(c) => return Ok(c),
            }
        }
    }

    async fn connect_once(addr: &str, token: &str) -> Result<Client, Retry> {
        let conn_err = |detail: String| ClientError::Connect {
            addr: addr.to_string(),
            detail,
        };
        let stream = TcpStream::connect(addr)
            .or(async {
                smol::Timer::after(Duration::from_secs(5)).await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "timed out after 5 s",
                ))
            })
            .await
            .map_err(|e| {
                Retry::Final(conn_err(format!(
                    "{e}; is `bramble master` running? set --server or BRAMBLE_SERVER"
                )))
            })?;
        let _ = stream.set_nodelay(true);
        let (tls, credential) = dial_pinned(stream, token, "admin.token")
            .or(async {
                smol::Timer::after(Duration::from_secs(10)).await;
                Err(DialError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "TLS handshake timed out after 10 s",
                )))
            })
            .await
            .map_err(|e| match e {
                DialError::Io(e) => {
                    let closed = closed_early(&e);
                    let err = conn_err(format!("TLS handshake failed: {e}"));
                    if closed {
                        Retry::Again(err)
                    } else {
                        Retry::Final(err)
                    }
                }
                other => Retry::Final(ClientError::Untrusted {
                    addr: addr.to_string(),
                    detail: other.to_string(),
                }),
            })?;
        let max = CLIENT_RESPONSE_MAX;
        let (r, mut writer) = futures_lite::io::split(tls);
        let mut reader = FrameReader::new(r, max);
        let hello = Hello {
            protocol_version: bramble_wire::PROTOCOL_VERSION,
            role: Role::Client,
            identity: heapless_str("admin"),
            credentials: heapless_str(&credential),
            agent_version: heapless_str(env!("CARGO_PKG_VERSION")),
        };
        match client_handshake(&mut reader, &mut writer, hello, max).await {
            Ok(_) => {}
            Err(HandshakeError::Rejected(r)) => {
                return Err(Retry::Final(ClientError::Rejected(r.message.to_string())));
            }
            // Closed before the Welcome: nothing was asked yet, dialling again is safe.
            Err(e @ (HandshakeError::Closed | HandshakeError::Io(IoError::Io(_)))) => {
                let closed = match &e {
                    HandshakeError::Io(IoError::Io(io)) => closed_early(io),
                    _ => true,
                };
                let err = conn_err(e.to_string());
                return Err(if closed {
                    Retry::Again(err)
                } else {
                    Retry::Final(err)
                });
            }
            Err(e) => return Err(Retry::Final(conn_err(e.to_string()))),
        }
        Ok(Client {
            addr: addr.to_string(),
            reader,
            writer,
            next: 1,
        })
    }

    fn io(&self, e: IoError) -> ClientError {
        ClientError::Connect {
            addr: self.addr.clone(),
            detail: e.to_string(),
        }
    }

    /// Sends a request and returns its id.
    pub async fn start(&mut self, body: RequestBody) -> Result<u32, ClientError> {
        let id = self.next;
        self.next += 1;
        let req = Request { id, body };
        // The master reads requests up to its frame limit and closes the connection on a bigger
        // one: say so here, with the fix, instead of failing as an unreachable master.
        let max = bramble_wire::DEFAULT_MAX_FRAME;
        let size = bramble_wire::frame::encode_vec(&req, usize::MAX)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > max {
            return Err(ClientError::Api(ApiError {
                code: bramble_wire::msg::ErrorCode::Invalid,
                message: format!(
                    "the request is {size} bytes, over the master's {max}-byte limit per request: apply the objects in several files, or move large data into an artifact"
                ),
            }));
        }
        send(&mut self.writer, &req, max)
            .await
            .map_err(|e| self.io(e))?;
        Ok(id)
    }

    /// Splits the connection into its reading and writing halves, for a session that sends
    /// while it waits for answers (`bramble exec`).
    pub fn split(self) -> (ClientRx, ClientTx) {
        (
            ClientRx {
                addr: self.addr.clone(),
                reader: self.reader,
            },
            ClientTx {
                addr: self.addr,
                writer: self.writer,
                next: self.next,
            },
        )
    }

    /// Reads the next response (of any request).
    pub async fn next(&mut self) -> Result<Response, ClientError> {
        match self.reader.recv::<Response>().await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(ClientError::Connect {
                addr: self.addr.clone(),
                detail: "the master closed the connection".into(),
            }),
            Err(e) => Err(self.io(e)),
        }
    }

    /// One request, one answer; API errors become `Err`.
    pub async fn call(&mut self, body: RequestBody) -> Result<ResponseBody, ClientError> {
        let id = self.start(body).await?;
        loop {
            let r = self.next().await?;
            if r.id != id {
                continue;
            }
            return match r.body {
                ResponseBody::Error(e) => Err(ClientError::Api(e)),
                b => Ok(b),
            };
        }
    }
}

use futures_lite::FutureExt;

/// The reading half of a [`Client`] ([`Client::split`]).
#[derive(Debug)]
pub struct ClientRx {
    addr: String,
    reader: FrameReader<ReadHalf<ClientStream>>,
}

impl ClientRx {
    /// Reads the next response (of any request).
    pub async fn next(&mut self) -> Result<Response, ClientError> {
        match self.reader.recv::<Response>().await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(ClientError::Connect {
                addr: self.addr.clone(),
                detail: "the master closed the connection".into(),
            }),
            Err(e) => Err(ClientError::Connect {
                addr: self.addr.clone(),
                detail: e.to_string(),
            }),
        }
    }
}

/// The writing half of a [`Client`] ([`Client::split`]).
#[derive(Debug)]
pub struct ClientTx {
    addr: String,
    writer: WriteHalf<ClientStream>,
    next: u32,
}

impl ClientTx {
    /// The id the next [`ClientTx::start`] gives its request (to route its answers first).
    pub fn next_id(&self) -> u32 {
        self.next
    }

    /// Sends a request (it must fit the master's request limit) and returns its id.
    pub async fn start(&mut self, body: RequestBody) -> Result<u32, ClientError> {
        let id = self.next;
        self.next += 1;
        send(
            &mut self.writer,
            &Request { id, body },
            bramble_wire::DEFAULT_MAX_FRAME,
        )
        .await
        .map_err(|e| ClientError::Connect {
            addr: self.addr.clone(),
            detail: e.to_string(),
        })?;
        Ok(id)
    }
}
