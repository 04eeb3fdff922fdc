//! Capture: tracefs format parsing, eBPF loading/attaching, ring-buffer reading and decoding.
pub mod record;
pub mod tracefs;
