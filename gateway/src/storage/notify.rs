//! PostgreSQL LISTEN/NOTIFY: how one process (the CLI, another instance) tells running servers that something changed.

use std::time::Duration;

use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use crate::backoff::Backoff;
use crate::shutdown::Shutdown;

/// Sent by `trackers::revoke`; the payload is the tracker id. Servers disconnect that collar.
pub const TRACKER_REVOKED: &str = "pettracker_tracker_revoked";

/// Listens on `channel` until shutdown, reconnecting with backoff, and forwards payloads.
pub fn listen(
    url: SecretString,
    channel: &'static str,
    mut shutdown: Shutdown,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let session = listen_once(&url, channel, &tx, &mut backoff);
            tokio::select! {
                result = session => {
                    if let Err(err) = result {
                        tracing::warn!(%err, channel, "notification listener lost its connection; reconnecting");
                    }
                }
                () = shutdown.recv() => return,
            }
            if tx.is_closed() {
                return;
            }
            tokio::select! {
                () = backoff.wait() => {}
                () = shutdown.recv() => return,
            }
        }
    });
    rx
}

/// One session: connects, LISTENs (a good session from then on: `backoff` starts over), and
/// forwards notifications until the connection ends.
async fn listen_once(
    url: &SecretString,
    channel: &str,
    tx: &mpsc::Sender<String>,
    backoff: &mut Backoff,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) =
        tokio_postgres::connect(url.expose_secret(), tokio_postgres::NoTls).await?;
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let sql = format!("LISTEN {channel}");
    let listen = client.batch_execute(&sql);
    // The connection must be polled for LISTEN to complete, so drive both together.
    tokio::pin!(listen);
    loop {
        tokio::select! {
            result = &mut listen => { result?; break; }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(n))) => { let _ = tx.send(n.payload().to_owned()).await; }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    }
    backoff.reset();
    while let Some(message) = messages.next().await {
        if let AsyncMessage::Notification(n) = message?
            && tx.send(n.payload().to_owned()).await.is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}
