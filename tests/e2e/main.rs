//! End-to-end suites: one module per behaviour, each driving a real engine
//! (see `vmctl_tests::Engine`) with the real docker CLI or bollard.

mod bad_input;
mod bollard_client;
mod differential;
mod leaks;
mod lifecycle;
mod limits;
mod run;
mod volumes;
