//! The shutdown signal every long-running loop listens to, so work in flight drains instead of being cut.

use tokio::sync::watch;

/// Fires the shutdown signal. Dropping it fires it too, so a panicking owner cannot leave loops running.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// A handle a task keeps and `select!`s on with [`Shutdown::recv`].
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and listener.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// Another listener, for tasks started after the trigger was made.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Drop for ShutdownTrigger {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Completes once shutdown has been requested (at once if it already was).
    pub async fn recv(&mut self) {
        // An error means the trigger is gone, which also means shut down.
        let _ = self.0.wait_for(|down| *down).await;
    }

    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }
}
