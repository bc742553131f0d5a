//! rattle's integration tests: one binary, a module per topic. Every test is bounded in time,
//! talks only to 127.0.0.1, and kills (by pid) every process it starts.

mod cli;
mod delegate;
mod demo;
mod engine;
mod experiment;
mod fake_k8s;
mod fidelity;
mod gameday;
mod hardening_api;
mod hardening_bytes;
mod hardening_files;
mod k8s;

// The in-pod faults of issue #18.
mod netns;
mod podnet;

mod kinds;
mod load;
mod load_cli;
mod load_h2;
mod mix;
mod observe;
mod packaging;
mod probes;
mod process;
mod prometheus;
mod proxy;
mod report;
mod run;
mod safety;
mod stress;
mod support;
mod vars;
