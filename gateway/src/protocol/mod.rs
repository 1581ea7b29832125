//! Device protocol (being written).
