//! Following the log: one `LISTEN` connection per store turns `pg_notify` from appends into
//! a watch channel of the last position announced. Notifications are only a hint (they are
//! lost while the connection is down); followers always re-read the log, and poll when
//! nothing arrives.

use std::time::Duration;

use futures_util::future::poll_fn;
use tokio::sync::watch;
use tokio_postgres::AsyncMessage;

use crate::PgConfig;

/// The listening task and the channel it feeds. Stops when dropped.
pub(crate) struct Follower {
    announced: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Follower {
    pub(crate) fn start(config: &PgConfig) -> Follower {
        let (tx, rx) = watch::channel(0u64);
        let config = config.clone();
        let task = tokio::spawn(async move {
            loop {
                // Errors end this connection; reconnect after a pause. Followers poll
                // meanwhile, so nothing is missed, only later.
                let _ = listen(&config, &tx).await;
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Follower {
            announced: rx,
            task,
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        let mut rx = self.announced.clone();
        rx.mark_unchanged();
        rx
    }
}

async fn listen(config: &PgConfig, tx: &watch::Sender<u64>) -> Result<(), tokio_postgres::Error> {
    let pg = match config.pg() {
        Ok(pg) => pg,
        Err(_) => return Ok(()),
    };
    let (client, mut conn) = pg.connect(config.connector.clone()).await?;
    let channel = config.channel();
    let sql = format!("LISTEN \"{channel}\"");
    let listen = client.batch_execute(&sql);
    // The connection must be polled for the LISTEN to complete and for notifications.
    let mut listen = std::pin::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            r = &mut listen, if !listening => {
                r?;
                listening = true;
            }
            msg = poll_fn(|cx| conn.poll_message(cx)) => match msg {
                Some(Ok(AsyncMessage::Notification(n))) if n.channel() == channel => {
                    if let Ok(p) = n.payload().parse::<u64>() {
                        tx.send_modify(|v| *v = (*v).max(p));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
            _ = tx.closed() => return Ok(()),
        }
    }
}
