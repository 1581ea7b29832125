//! Test support for the server's tests: fresh databases migrated with the whole history, the device side's and the server's.

pub use gateway::testing::{TestDb, empty_database};

/// A new database with pettracker's whole schema that no other test uses.
pub async fn fresh_database() -> TestDb {
    gateway::testing::fresh_database_with("server", &crate::schema::history()).await
}
