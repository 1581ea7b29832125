//! The pettracker server: configuration, the command line, the HTTP side, and wiring of the gateway.

pub mod alerts;
pub mod app;
pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod database;
pub mod dead_letters;
pub mod demo;
pub mod export;
pub mod fleet;
pub mod http;
pub mod live;
pub mod logging;
pub mod schema;
pub mod seed;
pub mod simplify;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trackers;
