//! Opening a websocket to a node, as a peer link, `arduino send` or `arduino bench` do: TCP
//! with Nagle off (one small message per round trip), TLS for `wss://` trusting the mesh's
//! `ca`, the mesh's secret as a bearer token.

use std::time::Duration;

use tokio::net::TcpStream;

pub use crate::tls::Stream;
use crate::tls::Tls;
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config,
    tungstenite::{
        self,
        client::IntoClientRequest,
        http::{HeaderValue, header::AUTHORIZATION},
        protocol::WebSocketConfig,
    },
};

/// A websocket over plain TCP or TLS, as the nodes speak it.
pub type Ws = WebSocketStream<Stream>;

/// How much a websocket reads from its socket at a time. tungstenite zero-fills this much
/// before every read: its default of 128 KiB made zero-filling half of a node's work and
/// 128 KiB of memory per connection. Larger messages still arrive, in several reads.
const READ_CHUNK: usize = 4 * 1024;

/// How a websocket on either side is set up: messages up to `max_message` bytes, and at most
/// twice that (1 MiB at least) waiting to be written to a client that does not read.
pub(crate) fn ws_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_CHUNK)
        .max_write_buffer_size(max_message.saturating_mul(2).max(1 << 20))
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Open a websocket to `url` (`ws://host:port/channel`, or `wss://` over TLS trusting the
/// CA of `tls`), sending `secret` as `Authorization: Bearer <secret>` when there is one.
///
/// # Errors
///
/// When the URL is not a `ws://` or `wss://` URL, a `wss://` URL comes without `tls`, the
/// TCP connection or the TLS handshake fails (the IO error says why in words), or the
/// websocket handshake is refused (an HTTP 401 for a wrong secret shows as
/// [`tungstenite::Error::Http`]).
pub async fn connect(
    url: &str,
    secret: Option<&str>,
    tls: Option<&Tls>,
    max_message: usize,
) -> Result<Ws, tungstenite::Error> {
    let mut request = url.into_client_request()?;
    if let Some(secret) = secret {
        let value = HeaderValue::from_str(&format!("Bearer {secret}")).map_err(|_| {
            tungstenite::Error::Url(tungstenite::error::UrlError::UnableToConnect(
                "the secret is not a valid header value".into(),
            ))
        })?;
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    let uri = request.uri();
    let secure = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => {
            return Err(tungstenite::Error::Url(
                tungstenite::error::UrlError::UnsupportedUrlScheme,
            ));
        }
    };
    let host = uri
        .host()
        .ok_or(tungstenite::Error::Url(
            tungstenite::error::UrlError::NoHostName,
        ))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tls = match (secure, tls) {
        (false, _) => None,
        (true, Some(tls)) => Some(tls),
        (true, None) => {
            return Err(tungstenite::Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a wss:// URL needs the mesh's [tls] table: its `ca` says which certificates \
                 to trust",
            )));
        }
    };
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let stream = match tls {
        None => Stream::Plain(tcp),
        Some(tls) => tls.connect(&host, tcp).await?,
    };
    let (ws, _response) =
        client_async_with_config(request, stream, Some(ws_config(max_message))).await?;
    Ok(ws)
}

/// As [`connect`], giving up after `within`: a node that accepts TCP but never finishes the
/// handshake (it hangs, or is stopped) does not hold the caller for ever.
///
/// # Errors
///
/// As [`connect`]; and an [`std::io::ErrorKind::TimedOut`] IO error when the TCP connection
/// and the handshake together took longer than `within`.
pub async fn connect_within(
    url: &str,
    secret: Option<&str>,
    tls: Option<&Tls>,
    max_message: usize,
    within: Duration,
) -> Result<Ws, tungstenite::Error> {
    match tokio::time::timeout(within, connect(url, secret, tls, max_message)).await {
        Ok(connected) => connected,
        Err(_) => Err(tungstenite::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "no websocket handshake within {}s (the node hangs, or is overloaded)",
                within.as_secs_f64()
            ),
        ))),
    }
}

/// Explain a failed connection in a few words: "connection refused", "HTTP 401 (wrong or
/// missing secret)".
pub fn describe(error: &tungstenite::Error) -> String {
    match error {
        tungstenite::Error::Io(e) => match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            std::io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
            _ => e.to_string(),
        },
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => "connection reset (the peer went away without closing)".to_owned(),
        tungstenite::Error::Protocol(tungstenite::error::ProtocolError::HandshakeIncomplete) => {
            // What a node at its connection limit does: it hangs up without answering.
            "hung up during the handshake (too many connections?)".to_owned()
        }
        tungstenite::Error::Protocol(tungstenite::error::ProtocolError::HttparseError(_)) => {
            // What a TLS node answers a plain client: a TLS alert.
            "the node does not answer in HTTP (does it speak TLS? give wss://)".to_owned()
        }
        tungstenite::Error::Http(response) if response.status() == 401 => {
            "HTTP 401: the node wants the mesh's secret (wrong or missing)".to_owned()
        }
        tungstenite::Error::Http(response) => format!("HTTP {}", response.status()),
        other => other.to_string(),
    }
}

/// Whether trying again later might succeed: the peer is not up yet, or went away. Not a
/// failed TLS handshake (a certificate not trusted) or a URL that cannot be used.
pub(crate) fn is_transient(error: &tungstenite::Error) -> bool {
    use std::io::ErrorKind::{InvalidData, InvalidInput};
    matches!(
        error,
        tungstenite::Error::Io(e) if !matches!(e.kind(), InvalidData | InvalidInput)
    ) || matches!(
        error,
        tungstenite::Error::ConnectionClosed
            | tungstenite::Error::AlreadyClosed
            | tungstenite::Error::Protocol(_)
    )
}
