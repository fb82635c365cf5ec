//! The local Dovecot is real: async-imap over tokio-rustls, trusting only the test CA, logs in
//! over IMAPS and over STARTTLS, EXAMINEs a folder and fetches a seeded message byte for byte
//! without setting \Seen; a wrong password is a clear error, not a hang.

use futures::TryStreamExt as _;
use mailvault_tests::TestEnv;
use rustls_pki_types::ServerName;
use std::time::Duration;
use tokio::net::TcpStream;

type TlsSession = async_imap::Session<tokio_rustls::client::TlsStream<TcpStream>>;

const MESSAGE: &[u8] = b"From: Chief Clerk <clerk@city.example>\r\n\
To: Records <records@city.example>\r\n\
Subject: smoke \xe2\x80\x94 8-bit subject\r\n\
Message-ID: <smoke-1@city.example>\r\n\
Date: Sat, 28 Nov 2026 03:00:00 +0000\r\n\
\r\n\
Body with a NUL-free 8-bit line: caf\xc3\xa9\r\n";

async fn fetch_all(session: &mut TlsSession) -> Vec<(u32, Vec<u8>, Vec<String>)> {
    let fetches: Vec<_> = session
        .uid_fetch("1:*", "(UID FLAGS BODY.PEEK[])")
        .await
        .expect("uid fetch")
        .try_collect()
        .await
        .expect("fetch responses");
    fetches
        .iter()
        .map(|f| {
            let flags = f.flags().map(|fl| format!("{fl:?}")).collect();
            (f.uid.expect("uid"), f.body().expect("body").to_vec(), flags)
        })
        .collect()
}

#[tokio::test]
async fn imaps_fetches_a_seeded_message_byte_for_byte_without_setting_seen() {
    let env = TestEnv::load();
    let user = env.new_mail_user("smoke");
    env.seed_message(&user, "INBOX", MESSAGE, "");
    env.seed_message(
        &user,
        "Archive/2026",
        b"Subject: in a subfolder\r\n\r\nx\r\n",
        "S",
    );

    let mut session = env.imap_login(&user).await;
    let mailbox = session.examine("INBOX").await.expect("EXAMINE INBOX");
    assert_eq!(mailbox.exists, 1);
    assert!(mailbox.uid_validity.is_some());
    let fetched = fetch_all(&mut session).await;
    assert_eq!(fetched.len(), 1);
    assert_eq!(
        fetched[0].1, MESSAGE,
        "message bytes differ from what was delivered"
    );
    assert!(
        !fetched[0].2.iter().any(|f| f.contains("Seen")),
        "flags: {:?}",
        fetched[0].2
    );

    // A second look: still unseen (BODY.PEEK and EXAMINE changed nothing).
    let again = fetch_all(&mut session).await;
    assert!(
        !again[0].2.iter().any(|f| f.contains("Seen")),
        "flags: {:?}",
        again[0].2
    );

    let names: Vec<String> = session
        .list(None, Some("*"))
        .await
        .expect("LIST")
        .map_ok(|n| n.name().to_owned())
        .try_collect()
        .await
        .expect("LIST responses");
    assert!(
        names.iter().any(|n| n == "Archive/2026"),
        "folders: {names:?}"
    );
    session.logout().await.expect("logout");
}

#[tokio::test]
async fn starttls_then_login() {
    let env = TestEnv::load();
    let user = env.new_mail_user("smoke-starttls");
    env.seed_message(&user, "INBOX", MESSAGE, "");

    let tcp = TcpStream::connect((env.imap_host(), env.imap_starttls_port()))
        .await
        .expect("tcp");
    let mut plain = async_imap::Client::new(tcp);
    plain
        .read_response()
        .await
        .expect("greeting")
        .expect("greeting");
    plain
        .run_command_and_check_ok("STARTTLS", None)
        .await
        .expect("STARTTLS");
    let tcp = plain.into_inner();
    let name = ServerName::try_from(env.imap_host().to_owned()).expect("server name");
    let tls = env
        .tls_connector()
        .connect(name, tcp)
        .await
        .expect("TLS after STARTTLS");
    let client = async_imap::Client::new(tls);
    let mut session = client
        .login(&user.name, &user.password)
        .await
        .map_err(|(e, _)| e)
        .expect("login after STARTTLS");
    session.examine("INBOX").await.expect("EXAMINE");
    assert_eq!(fetch_all(&mut session).await[0].1, MESSAGE);
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_error_not_a_hang() {
    let env = TestEnv::load();
    let user = env.new_mail_user("smoke-badpw");
    let client = env.imap_client().await;
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        client.login(&user.name, "not-the-password"),
    )
    .await
    .expect("login with a wrong password hung for 20s");
    let Err((err, _)) = result else {
        panic!("login with a wrong password succeeded");
    };
    let text = err.to_string();
    assert!(
        text.contains("AUTHENTICATIONFAILED") || text.contains("Authentication failed"),
        "unclear error: {text}"
    );
    assert!(
        !text.contains("not-the-password"),
        "the error repeats the password: {text}"
    );
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let env = TestEnv::load();
    // An empty trust store stands for "some other CA": the handshake must fail, not fall back.
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect((env.imap_host(), env.imaps_port()))
        .await
        .expect("tcp");
    let name = ServerName::try_from(env.imap_host().to_owned()).expect("server name");
    let err = connector
        .connect(name, tcp)
        .await
        .expect_err("an untrusted certificate was accepted");
    assert!(err.to_string().contains("certificate"), "{err}");
}
