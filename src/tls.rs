//! TLS for a mesh with a `[tls]` table: its PEM files read into what nodes serve with (their
//! certificate and key) and what every client of ours trusts (the mesh's `ca`, never the
//! system's store), and [`Stream`], the connection a websocket or an HTTP request runs over,
//! plain or TLS, on either side.

use std::{
    fmt, io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    crypto::{CryptoProvider, ring},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The files of a `[tls]` table, as paths that can be opened (relative ones are taken from
/// the mesh file's directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The nodes' certificate (PEM; the chain, leaf first).
    pub cert: PathBuf,
    /// The private key of `cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The certificate authority (PEM) whose certificates every client of ours trusts.
    pub ca: PathBuf,
}

/// What is wrong with a `[tls]` table: the key (`cert`, `key` or `ca`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFault {
    /// The key of the `[tls]` table at fault.
    pub key: &'static str,
    /// What is wrong, naming the file.
    pub message: String,
}

/// A mesh's TLS, read and checked: cheap to clone, clones share the configurations.
#[derive(Clone)]
pub struct Tls {
    files: TlsFiles,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

/// Two meshes have the same TLS when they name the same files.
impl PartialEq for Tls {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files
    }
}

impl Eq for Tls {}

/// ring rather than aws-lc-rs: it builds without cmake or a C toolchain beyond cc, and it
/// makes a smaller binary.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

impl Tls {
    /// Read `files`: the certificate and its key for serving, the CA for trusting.
    ///
    /// # Errors
    ///
    /// A [`TlsFault`] naming the key whose file is missing, unreadable, not PEM of the right
    /// kind, or (for `key`) not the key of `cert`.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsFault> {
        let fault = |key: &'static str, message: String| TlsFault { key, message };
        let certs = read_certs(&files.cert).map_err(|m| fault("cert", m))?;
        let key = read_key(&files.key).map_err(|m| fault("key", m))?;
        let cas = read_certs(&files.ca).map_err(|m| fault("ca", m))?;
        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots.add(ca).map_err(|e| {
                fault(
                    "ca",
                    format!("{} is not a CA certificate: {e}", files.ca.display()),
                )
            })?;
        }
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| fault("cert", format!("no TLS versions to serve: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                fault(
                    "key",
                    format!(
                        "{} cannot serve {}: {}",
                        files.key.display(),
                        files.cert.display(),
                        key_mismatch(&e)
                    ),
                )
            })?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| fault("ca", format!("no TLS versions to speak: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            files: files.clone(),
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// The files it was read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The server side of the TLS handshake of an accepted connection.
    ///
    /// # Errors
    ///
    /// The handshake failed: see [`describe_accept`] for the words.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<Stream> {
        let stream = TlsAcceptor::from(self.server.clone())
            .accept(stream)
            .await?;
        Ok(Stream::Tls(Box::new(Secure {
            stream: tokio_rustls::TlsStream::Server(stream),
            peeked: Vec::new(),
            start: 0,
        })))
    }

    /// The client side of the TLS handshake with `host` (which the node's certificate must
    /// name) on `stream`, trusting the mesh's CA only.
    ///
    /// # Errors
    ///
    /// `host` is no name or address, or the handshake failed: the error says why in words
    /// (the node's certificate is not trusted, does not name the host, ...).
    pub async fn connect(&self, host: &str, stream: TcpStream) -> io::Result<Stream> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} is not a host name TLS can check a certificate against"),
            )
        })?;
        let stream = TlsConnector::from(self.client.clone())
            .connect(name, stream)
            .await
            .map_err(|e| self.describe_connect(host, e))?;
        Ok(Stream::Tls(Box::new(Secure {
            stream: tokio_rustls::TlsStream::Client(stream),
            peeked: Vec::new(),
            start: 0,
        })))
    }

    /// A failed client handshake in words, keeping the error's kind.
    fn describe_connect(&self, host: &str, error: io::Error) -> io::Error {
        use rustls::{CertificateError, Error as E};
        let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<E>()) else {
            return error;
        };
        let ca = self.files.ca.display();
        let message = match tls {
            E::InvalidCertificate(
                CertificateError::UnknownIssuer
                | CertificateError::BadSignature
                | CertificateError::UnhandledCriticalExtension,
            ) => format!(
                "TLS: the node's certificate is not trusted: it is not signed by the mesh's \
                 `ca` ({ca})"
            ),
            E::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => format!(
                "TLS: the node's certificate does not name {host}: it needs {host} among its \
                 subject alternative names"
            ),
            E::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            ) => "TLS: the node's certificate has expired".to_owned(),
            E::InvalidCertificate(other) => {
                format!("TLS: the node's certificate is not trusted ({other:?})")
            }
            E::InvalidMessage(_) => {
                "TLS: the node does not speak TLS (is it a ws:// node?)".to_owned()
            }
            E::AlertReceived(alert) => format!("TLS: the node refused the handshake ({alert:?})"),
            other => format!("TLS handshake failed: {other}"),
        };
        io::Error::new(error.kind(), message)
    }
}

/// Why a key cannot serve a certificate, in words.
fn key_mismatch(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InconsistentKeys(_) => "the key is not the certificate's".to_owned(),
        other => other.to_string(),
    }
}

/// A failed server handshake in words, for the node's `client_refused` event.
pub fn describe_accept(error: &io::Error) -> String {
    use rustls::Error as E;
    match error.get_ref().and_then(|e| e.downcast_ref::<E>()) {
        Some(E::InvalidMessage(_)) => {
            "not a TLS handshake (this node speaks wss:// and https://)".to_owned()
        }
        Some(E::AlertReceived(alert)) => format!(
            "TLS handshake failed: the client refused it ({alert:?}: does it trust the mesh's \
             `ca`?)"
        ),
        Some(other) => format!("TLS handshake failed: {other}"),
        None if error.kind() == io::ErrorKind::UnexpectedEof => {
            "TLS handshake failed: the client hung up".to_owned()
        }
        None => format!("TLS handshake failed: {error}"),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown} is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{shown} holds no certificate (a PEM `-----BEGIN CERTIFICATE-----` block)"
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let shown = path.display();
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("{shown} holds no private key (a PEM `-----BEGIN PRIVATE KEY-----` block)")
        }
        other => format!("{shown} is not a PEM private key: {other}"),
    })
}

/// The most of a PEM file read: certificates and keys are a few KiB.
const MAX_PEM: u64 = 1 << 20;

fn read(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_PEM + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_PEM {
        return Err(format!(
            "{} is over {} MiB: is it a PEM file?",
            path.display(),
            MAX_PEM >> 20
        ));
    }
    Ok(bytes)
}

/// What a node's HTTP side needs of a connection: to look at the request head before the
/// websocket handshake reads it, and to send small answers at once.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send {
    /// Read the first bytes into `buf` without taking them: see [`Stream::peek`].
    fn peek(&mut self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;
    /// Turn Nagle's algorithm off, or on.
    fn set_nodelay(&self, nodelay: bool) -> io::Result<()>;
}

impl Connection for TcpStream {
    fn peek(&mut self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send {
        TcpStream::peek(self, buf)
    }

    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        TcpStream::set_nodelay(self, nodelay)
    }
}

impl Connection for Stream {
    fn peek(&mut self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send {
        Stream::peek(self, buf)
    }

    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        Stream::set_nodelay(self, nodelay)
    }
}

/// A connection to or from a node: plain TCP, or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, as a server or as a client.
    Tls(Box<Secure>),
}

/// A TLS connection, with what was read to look at a request's head and is to be read again.
#[derive(Debug)]
pub struct Secure {
    stream: tokio_rustls::TlsStream<TcpStream>,
    peeked: Vec<u8>,
    /// How much of `peeked` has been read again.
    start: usize,
}

impl Stream {
    /// Turn Nagle's algorithm off (one small message per round trip), best effort.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.tcp().set_nodelay(nodelay)
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(stream) => stream,
            Stream::Tls(secure) => secure.stream.get_ref().0,
        }
    }

    /// Read the first bytes of the connection into `buf` without taking them from it: they
    /// are read again by the next reads. Waits for at least one byte, or the end (`Ok(0)`);
    /// plain TCP shows what has come so far, TLS what came so far once something new did.
    /// Cancel-safe.
    pub async fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.peek(buf).await,
            Stream::Tls(secure) => {
                let pending = secure.peeked.len() - secure.start;
                if pending < buf.len() {
                    // Into a buffer of its own, so that a cancelled read leaves nothing behind.
                    let mut chunk = [0u8; 2048];
                    let want = (buf.len() - pending).min(chunk.len());
                    let n = secure.stream.read(&mut chunk[..want]).await?;
                    if n == 0 {
                        return Ok(0);
                    }
                    secure.peeked.extend_from_slice(&chunk[..n]);
                }
                let pending = &secure.peeked[secure.start..];
                let n = pending.len().min(buf.len());
                buf[..n].copy_from_slice(&pending[..n]);
                Ok(n)
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(secure) => {
                if secure.start < secure.peeked.len() {
                    let pending = &secure.peeked[secure.start..];
                    let n = pending.len().min(buf.remaining());
                    buf.put_slice(&pending[..n]);
                    secure.start += n;
                    if secure.start == secure.peeked.len() {
                        secure.peeked = Vec::new();
                        secure.start = 0;
                    }
                    return Poll::Ready(Ok(()));
                }
                Pin::new(&mut secure.stream).poll_read(cx, buf)
            }
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(secure) => Pin::new(&mut secure.stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Stream::Tls(secure) => Pin::new(&mut secure.stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(stream) => stream.is_write_vectored(),
            Stream::Tls(secure) => secure.stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(secure) => Pin::new(&mut secure.stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Tls(secure) => Pin::new(&mut secure.stream).poll_shutdown(cx),
        }
    }
}
