//! The Rust client over `wss://` (feature `client-tls`): a wsu server behind a rustls acceptor
//! (`Server::serve_connection` on the TLS stream), with a self-signed certificate made at test
//! time, and clients that trust it through `ClientBuilder::tls_config` or do not.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use wsu::client::rustls::{self, ClientConfig, RootCertStore};
use wsu::client::{Client, ClientError, Reconnect, StateEvent};
use wsu::{CloseCode, Json, Server, Socket};
use wsu_tests::{next, within};

/// A wsu server behind TLS on `127.0.0.1`.
struct TlsServer {
    server: Server,
    addr: SocketAddr,
    /// The server's certificate (self-signed, for one name only).
    cert: CertificateDer<'static>,
    /// Why TLS handshakes failed, as the server saw it.
    refusals: mpsc::UnboundedReceiver<String>,
    task: JoinHandle<()>,
}

impl TlsServer {
    /// Serves `server` with a certificate for `name` (an IP address or a DNS name).
    async fn start(server: Server, name: &str) -> TlsServer {
        let certified =
            rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("certificate");
        let cert = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_no_client_auth()
                .with_single_cert(vec![cert.clone()], key)
                .expect("server config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (refusals_tx, refusals) = mpsc::unbounded_channel();
        let s = server.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, peer)) = listener.accept().await {
                let (acceptor, server, refusals) =
                    (acceptor.clone(), s.clone(), refusals_tx.clone());
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(tls) => server.serve_connection(tls, Some(peer)).await,
                        Err(e) => {
                            let _ = refusals.send(e.to_string());
                        }
                    }
                });
            }
        });
        TlsServer {
            server,
            addr,
            cert,
            refusals,
            task,
        }
    }

    fn url(&self) -> String {
        format!("wss://{}/ws", self.addr)
    }

    async fn stop(self) {
        self.server.shutdown().await;
        self.task.abort();
    }
}

/// A client configuration that trusts `cert` and nothing else.
fn trusting(cert: &CertificateDer<'static>) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).expect("root certificate");
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn server(notes: mpsc::UnboundedSender<u32>) -> Server {
    Server::builder()
        .on("add", |_socket: Socket, (a, b): (i64, i64)| async move {
            Json(a + b)
        })
        .on("note", move |_socket: Socket, n: u32| {
            let _ = notes.send(n);
            async {}
        })
        .on("shout", |socket: Socket, text: String| async move {
            socket.emit("news", &text.to_uppercase())?;
            Ok::<_, wsu::SendError>(())
        })
        .on("kick", |socket: Socket, _: ()| async move {
            socket.close_with(CloseCode::new(4002), "again");
        })
        .on("ask", |socket: Socket, q: String| async move {
            let answer: String = socket.emit_with_ack("question", &q).await?;
            Ok::<_, wsu::AckError>(Json(answer))
        })
        .build()
        .expect("server")
}

#[tokio::test]
async fn wss_with_a_custom_config_carries_emits_acks_and_server_events() {
    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    let ts = TlsServer::start(server(notes_tx.clone()), "127.0.0.1").await;
    let (news_tx, mut news) = mpsc::unbounded_channel();
    let client = Client::builder(ts.url())
        .tls_config(trusting(&ts.cert))
        .reconnect(Reconnect {
            initial_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            ..Reconnect::default()
        })
        .on("news", move |text: String| {
            let _ = news_tx.send(text);
            async {}
        })
        .on("question", |q: String| async move {
            Json(format!("answer to {q}"))
        })
        .connect()
        .await
        .expect("connect over wss");
    assert!(client.is_connected());
    assert_eq!(ts.server.stats().connections, 1);

    client.emit("note", &7).await.expect("emit");
    assert_eq!(next(&mut notes).await, 7);
    let sum: i64 = client.emit_with_ack("add", &(2, 3)).await.expect("ack");
    assert_eq!(sum, 5);
    let () = client.emit_with_ack("shout", "hello").await.expect("ack");
    assert_eq!(next(&mut news).await, "HELLO");
    let answer: String = client.emit_with_ack("ask", "life").await.expect("ack");
    assert_eq!(answer, "answer to life");
    client.join("lobby").await.expect("join");
    within(client.ping()).await.expect("ping");

    // Reconnection uses the same configuration.
    let mut events = client.events();
    client.emit("kick", &()).await.expect("emit");
    loop {
        match within(events.recv()).await.expect("state event") {
            StateEvent::Connected => break,
            StateEvent::Disconnected { code, .. } => assert_eq!(code, Some(4002)),
            StateEvent::Reconnecting { .. } => {}
            other => panic!("expected a reconnection, got {other:?}"),
        }
    }
    assert_eq!(client.rooms(), ["lobby"]);
    let sum: i64 = client.emit_with_ack("add", &(4, 5)).await.expect("ack");
    assert_eq!(sum, 9);

    client.close("done").await;
    ts.stop().await;
}

#[tokio::test]
async fn wss_refuses_a_server_it_does_not_trust() {
    let (notes_tx, _notes) = mpsc::unbounded_channel();
    let mut ts = TlsServer::start(server(notes_tx.clone()), "127.0.0.1").await;

    // The default configuration (Mozilla's roots) does not trust a self-signed certificate.
    let refused = within(
        Client::builder(ts.url())
            .connect_timeout(Duration::from_secs(3))
            .connect(),
    )
    .await;
    match refused {
        Err(ClientError::Tls(e)) => {
            let text = e.to_string();
            assert!(text.contains("invalid peer certificate"), "{text}");
            assert!(text.contains("UnknownIssuer"), "{text}");
        }
        other => panic!("expected a tls error, got {other:?}"),
    }
    let seen = next(&mut ts.refusals).await;
    assert!(seen.contains("UnknownCA"), "server saw: {seen}");

    // Trusting another certificate is no better.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .expect("certificate")
        .cert
        .der()
        .clone();
    let refused = within(
        Client::builder(ts.url())
            .tls_config(trusting(&other))
            .connect(),
    )
    .await;
    assert!(
        matches!(&refused, Err(ClientError::Tls(e)) if e.to_string().contains("invalid peer certificate")),
        "{refused:?}"
    );
    next(&mut ts.refusals).await;

    // A trusted certificate for another name: refused too (the host name is checked).
    let elsewhere = TlsServer::start(server(notes_tx), "wsu.test").await;
    let refused = within(
        Client::builder(elsewhere.url())
            .tls_config(trusting(&elsewhere.cert))
            .connect(),
    )
    .await;
    assert!(
        matches!(&refused, Err(ClientError::Tls(e)) if e.to_string().contains("certificate not valid for name \"127.0.0.1\"")),
        "{refused:?}"
    );
    elsewhere.stop().await;

    // The server is unaffected.
    let client = Client::builder(ts.url())
        .tls_config(trusting(&ts.cert))
        .connect()
        .await
        .expect("connect");
    let sum: i64 = client.emit_with_ack("add", &(1, 1)).await.expect("ack");
    assert_eq!(sum, 2);
    client.close("done").await;
    ts.stop().await;
}
