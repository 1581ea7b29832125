//! firmware-sim: simulated pet-tracker collars (movement, device behaviour, faults) and a load generator, as a library the binary, the demo and the seeder share.
//!
//! Everything a collar puts on the wire (topics, payloads, command types, acks) comes from
//! `gateway::protocol`, the server's own contract, so the simulator cannot drift from it.

pub mod city;
pub mod collar;
pub mod credentials;
pub mod faults;
pub mod fleet;
pub mod latency;
pub mod load;
pub mod movement;
mod percentiles;

pub use city::{BERLIN, City, Home, LYON};
pub use collar::{Battery, Charge, CollarConfig, CollarStats, Coverage};
pub use credentials::{Broker, Credential, load_credentials, mqtt_options, provision_via_api};
pub use faults::Faults;
pub use fleet::Fleet;
pub use movement::{Doing, Fix, Pet};
