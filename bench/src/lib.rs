//! Strata's benchmarks and data generators. Nothing depends on this crate.
//!
//! Run the benchmarks with `cargo run --release -p bench -- <name>`; each prints its numbers and the
//! ratio against a reference measured in the same run.

pub mod datagen;
