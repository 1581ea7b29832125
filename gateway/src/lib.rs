//! pettracker's device side: the device protocol, the embedded broker, the ingest pipeline and storage.

pub mod broker;
pub mod ingest;
pub mod live;
pub mod protocol;
pub mod shutdown;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;
