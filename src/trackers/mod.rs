//! Owner-side trackers: who may see or change which tracker, claiming and sharing, position history and daily summaries.
//!
//! A tracker's history belongs to its current owner from the moment of the claim
//! (`trackers.claimed_at`): a collar that is released and claimed by someone else does not show
//! the new owner where the previous owner's pet went.

mod access;
mod history;
mod membership;
mod summary;

use deadpool_postgres::Pool;
use gateway::storage::{StorageError, pool_error_reason};

pub use access::{Role, StatusView, TrackerView, get, list, role};
pub use history::{
    Cursor, DEFAULT_PAGE, FixView, HistoryQuery, MAX_PAGE, MAX_SIMPLIFY_INPUT, PositionsPage,
    SimplifiedTrack, SimplifyStats, parse_bucket, positions, simplified,
};
pub(crate) use history::{HISTORY_COLUMNS, HISTORY_RANGE, fix_from_row};
pub use membership::{
    ClaimError, MemberError, MemberView, add_member, claim, members, release, remove_member,
    set_pet_name,
};
pub use summary::{DaySummary, summary};

async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, StorageError> {
    pool.get()
        .await
        .map_err(|e| StorageError::Pool(pool_error_reason(&e)))
}
