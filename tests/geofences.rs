//! Geofence routes over real HTTP: create, list, change, delete, shape checks, and who may do what.

mod common;

use common::api::{Api, assert_error};
use common::{TestApp, spawn_app};
use gateway::protocol::TrackerId;
use gateway::storage::trackers::{Provisioned, provision};
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn collar(app: &TestApp, id: &str) -> Provisioned {
    provision(&app.app.pool, &TrackerId::parse(id).unwrap(), None)
        .await
        .unwrap()
}

async fn owner(api: &Api, email: &str, collars: &[&Provisioned]) -> String {
    api.register(email).await;
    let token = api.login(email).await.0;
    for c in collars {
        let (status, body) = api
            .post(
                "/trackers/claim",
                Some(&token),
                json!({"tracker_id": c.tracker_id, "claim_code": c.claim_code}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    token
}

#[tokio::test]
async fn an_owner_creates_lists_changes_and_deletes_circle_and_polygon_geofences() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let rex = collar(&app, "rex").await;
    let ada = owner(&api, "ada@example.com", &[&rex]).await;

    let circle = json!({"type": "circle", "center": [13.4, 52.5], "radius_m": 150.0});
    let (status, home) = api
        .post(
            "/geofences",
            Some(&ada),
            json!({"name": "home", "shape": circle, "trackers": ["rex"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{home}");
    assert_eq!(home["shape"], circle);
    assert_eq!(home["trackers"], json!(["rex"]));

    let park = json!({"type": "Polygon", "coordinates": [[[13.0, 52.0], [13.01, 52.0], [13.01, 52.01], [13.0, 52.0]]]});
    let (status, fence) = api
        .post(
            "/geofences",
            Some(&ada),
            json!({"name": "park", "shape": park}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{fence}");
    assert_eq!(fence["trackers"], json!([]));

    let (status, list) = api.get("/geofences", &ada).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<_> = list["geofences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["home", "park"]);

    let path = format!("/geofences/{}", fence["id"]);
    let (status, _, changed) = api
        .call(
            Method::PATCH,
            &path,
            Some(&ada),
            Some(json!({"name": "big park", "trackers": ["rex"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["name"], "big park");
    assert_eq!(changed["shape"], park);
    assert_eq!(changed["trackers"], json!(["rex"]));

    let (status, _) = api.delete(&path, &ada).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = api.get(&path, &ada).await;
    assert_error(status, &body, 404, "not_found");
    app.stop().await;
}

#[tokio::test]
async fn a_broken_shape_or_name_is_a_400_that_names_the_field() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let ada = owner(&api, "ada@example.com", &[]).await;
    for (body, field) in [
        (
            json!({"name": "x", "shape": {"type": "circle", "center": [13.4, 95.0], "radius_m": 10}}),
            "shape",
        ),
        (
            json!({"name": "x", "shape": {"type": "circle", "center": [13.4, 52.5], "radius_m": -1}}),
            "shape",
        ),
        (
            json!({"name": "x", "shape": {"type": "Polygon", "coordinates": [[[13.0, 52.0], [13.1, 52.0], [13.0, 52.1]]]}}),
            "shape",
        ),
        (
            json!({"name": "", "shape": {"type": "circle", "center": [13.4, 52.5], "radius_m": 10}}),
            "name",
        ),
    ] {
        let (status, answer) = api.post("/geofences", Some(&ada), body).await;
        assert_error(status, &answer, 400, "bad_request");
        assert_eq!(answer["field"], field, "{answer}");
    }
    let (status, answer) = api
        .post(
            "/geofences",
            Some(&ada),
            json!({"name": "x", "shape": {}, "colour": "red"}),
        )
        .await;
    assert_error(status, &answer, 400, "bad_request");
    app.stop().await;
}

#[tokio::test]
async fn another_users_geofence_is_a_404_and_a_viewer_cannot_assign_a_shared_tracker() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let rex = collar(&app, "rex").await;
    let ada = owner(&api, "ada@example.com", &[&rex]).await;
    let bob = owner(&api, "bob@example.com", &[]).await;
    api.post(
        "/trackers/rex/members",
        Some(&ada),
        json!({"email": "bob@example.com"}),
    )
    .await;
    let circle = json!({"type": "circle", "center": [13.4, 52.5], "radius_m": 150.0});

    let (_, home) = api
        .post(
            "/geofences",
            Some(&ada),
            json!({"name": "home", "shape": circle}),
        )
        .await;
    let path = format!("/geofences/{}", home["id"]);
    let (status, body) = api.get(&path, &bob).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = api.delete(&path, &bob).await;
    assert_error(status, &body, 404, "not_found");

    // Bob sees rex as a member but may not put it in his geofence; a tracker he cannot see is a 404.
    let (status, body) = api
        .post(
            "/geofences",
            Some(&bob),
            json!({"name": "mine", "shape": circle, "trackers": ["rex"]}),
        )
        .await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = api
        .post(
            "/geofences",
            Some(&bob),
            json!({"name": "mine", "shape": circle, "trackers": ["nobody"]}),
        )
        .await;
    assert_error(status, &body, 404, "not_found");
    // A read-only key cannot create one.
    let (_, key) = api.new_key(&ada, "read").await;
    let (status, body) = api
        .post(
            "/geofences",
            Some(&key),
            json!({"name": "k", "shape": circle}),
        )
        .await;
    assert_error(status, &body, 403, "forbidden");
    app.stop().await;
}
