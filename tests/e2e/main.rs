//! End-to-end suites: one module per behaviour, each driving a real engine
//! (see `vmctl_tests::Engine`) with the real docker CLI or bollard.

mod differential;
mod lifecycle;
mod run;
