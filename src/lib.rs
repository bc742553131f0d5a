//! rattle: chaos engineering and resilience testing.
//!
//! See ARCHITECTURE.md for the map of modules and the flow of one run.
#![deny(missing_docs)]

pub mod analysis;
pub mod cli;
pub mod demo;
pub mod experiment;
pub mod fault;
pub mod gameday;
pub mod journal;
pub mod kube_env;
pub mod load;
pub mod metrics;
pub mod plan;
pub mod probe;
pub mod proxy;
pub mod report;
pub mod runner;
