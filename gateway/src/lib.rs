//! pettracker's device side: the device protocol, the embedded broker, the ingest pipeline and the storage of what devices send, reported to the server through typed interfaces (`live::DeviceEventSink`, `storage::ingest::CommandReports`).

pub mod broker;
pub mod ingest;
pub mod live;
pub mod protocol;
pub mod shutdown;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;
