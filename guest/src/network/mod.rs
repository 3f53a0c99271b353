//! Container networking. For now the loopback of a container's own network
//! namespace; the bridge, veth pairs, IPAM and nftables come next.

pub mod loopback;
