//! End-to-end suites: one module per behaviour, each driving a real engine
//! (see `vmctl_tests::Engine`) with the real docker CLI or bollard.

mod bad_input;
mod bollard_client;
mod build;
mod build_clients;
mod compose;
mod cp;
mod differential;
mod differential_build;
mod health;
mod hostile;
mod hostile_syscalls;
mod leaks;
mod lifecycle;
mod limits;
mod network_bridge;
mod network_leaks;
mod network_macvlan;
mod network_modes;
mod network_options;
mod network_outside;
mod network_port_events;
mod network_ports;
mod network_user;
mod pull;
mod run;
mod sdk_client;
mod stats;
mod vm;
mod vm_hostile;
mod vm_image;
mod vm_policy;
mod vm_ports;
mod vm_pull;
mod vm_shares;
mod volumes;
