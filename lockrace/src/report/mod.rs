//! Reports: one model ([`model::Document`]), several renderings (terminal, JSON, Perfetto).
pub mod model;
pub mod offline;
