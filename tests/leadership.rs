//! Fleet-wide jobs (retention, the offline sweep) run in exactly one of the processes sharing a
//! database, and move to another when their leader stops or loses its connection.

mod common;

use common::{TestApp, eventually, spawn_app, spawn_app_beside};
use pettracker::leadership::Job;

/// The backends holding each job's leadership lock in the test's database, with their
/// `application_name`.
async fn holders(app: &TestApp) -> Vec<(i32, String)> {
    app.db
        .pool
        .get()
        .await
        .unwrap()
        .query(
            "SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
             WHERE l.locktype = 'advisory' AND l.granted
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND a.application_name LIKE 'pettracker leader %'
             ORDER BY 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Sessions of the test's database competing for `job` (leader and followers).
async fn contenders(app: &TestApp, job: Job) -> i64 {
    app.db
        .pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1",
            &[&job.application_name()],
        )
        .await
        .unwrap()
        .get(0)
}

async fn leads_every_job(app: &TestApp) -> Result<(), String> {
    for job in Job::ALL {
        let standing = app.app.standing(job);
        if !standing.leading {
            return Err(format!("{job:?}: {standing:?}"));
        }
    }
    Ok(())
}

/// A leader checks its connection every `LIVENESS_INTERVAL` (2 s) and gives the job up when
/// the check fails or takes longer than 5 s: on a healthy connection it must keep leading
/// through several checks, in one term.
#[tokio::test]
async fn a_leader_on_a_healthy_connection_keeps_every_job_through_its_liveness_checks() {
    let app = spawn_app().await;
    eventually("the process leads every job", || leads_every_job(&app)).await;
    for job in Job::ALL {
        let standing = eventually("the leader passes several liveness checks", || async {
            let standing = app.app.standing(job);
            match standing.checks {
                4.. => Ok(standing),
                _ => Err(format!("{job:?}: {standing:?}")),
            }
        })
        .await;
        assert!(standing.leading, "{job:?}: {standing:?}");
        assert_eq!(standing.terms, 1, "{job:?}: {standing:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn of_two_processes_on_one_database_one_leads_each_job_and_the_other_takes_over_when_it_stops()
 {
    let first = spawn_app().await;
    eventually("the first process leads every job", || {
        leads_every_job(&first)
    })
    .await;
    let second = spawn_app_beside(&first, |_| {}).await;
    for job in Job::ALL {
        eventually("the second process competes for the job too", || async {
            match contenders(&first, job).await {
                2 => Ok(()),
                n => Err(format!("{n} sessions")),
            }
        })
        .await;
        // The first holds the lock, so the second cannot have it.
        assert!(first.app.standing(job).leading, "{job:?}");
        assert!(!second.app.standing(job).leading, "{job:?}");
    }
    assert_eq!(holders(&first).await.len(), Job::ALL.len());

    first.app.shutdown().await.unwrap();
    eventually("the second process takes every job over", || {
        leads_every_job(&second)
    })
    .await;
    let held = holders(&second).await;
    assert_eq!(held.len(), Job::ALL.len(), "{held:?}");
    for job in Job::ALL {
        assert_eq!(second.app.standing(job).terms, 1, "{job:?}");
    }
    second.stop().await;
}

#[tokio::test]
async fn a_leader_that_loses_its_connection_stops_and_leads_again_on_a_new_one() {
    let app = spawn_app().await;
    eventually("it leads every job", || leads_every_job(&app)).await;
    let before = holders(&app).await;
    assert_eq!(before.len(), Job::ALL.len(), "{before:?}");
    let client = app.db.pool.get().await.unwrap();
    for (pid, _) in &before {
        client
            .execute("SELECT pg_terminate_backend($1)", &[pid])
            .await
            .unwrap();
    }
    eventually("each job is led again, in a second term", || async {
        for job in Job::ALL {
            let standing = app.app.standing(job);
            if !(standing.leading && standing.terms == 2) {
                return Err(format!("{job:?}: {standing:?}"));
            }
        }
        Ok(())
    })
    .await;
    let after = holders(&app).await;
    assert_eq!(after.len(), Job::ALL.len(), "{after:?}");
    for ((old, job), (new, _)) in before.iter().zip(&after) {
        assert_ne!(old, new, "{job}: the lock is held on a new connection");
    }
    app.stop().await;
}
