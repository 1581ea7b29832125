//! pettracker's device side: the device protocol, the embedded broker, the ingest pipeline and the storage of what devices send, reported to the server through typed interfaces (`live::DeviceEventSink`, `storage::ingest::CommandReports`).
//!
//! Only [`protocol`] is always built; the rest is the server (feature `server`, on by default),
//! so firmware and the simulator can depend on the contract without the broker and the database.

#[cfg(feature = "backoff")]
pub mod backoff;
#[cfg(feature = "server")]
pub mod broker;
#[cfg(feature = "server")]
pub mod external;
#[cfg(feature = "server")]
pub mod ingest;
#[cfg(feature = "server")]
pub mod live;
#[cfg(feature = "server")]
pub mod peer;
pub mod protocol;
#[cfg(feature = "server")]
pub mod shutdown;
#[cfg(feature = "server")]
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "server")]
pub mod typed_secret;
