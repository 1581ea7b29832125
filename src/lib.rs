//! The pettracker server: configuration, the command line, the HTTP side, and wiring of the gateway.
//!
//! `demo` and `seed` run firmware-sim's simulated collars and movement model; they exist only
//! with the `demo` feature (on by default), so a production build can leave the simulator out.

pub mod alerts;
pub mod app;
pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod database;
pub mod days;
pub mod dead_letters;
#[cfg(feature = "demo")]
pub mod demo;
pub mod export;
pub mod fleet;
pub mod http;
pub mod leadership;
pub mod live;
pub mod logging;
pub mod retention;
pub mod schema;
#[cfg(feature = "demo")]
pub mod seed;
pub mod simplify;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trackers;
