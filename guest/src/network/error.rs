//! Errors of the network verbs, each classified into the kind the API turns
//! into Docker's status code.

use crate::state::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network {0} not found")]
    NotFound(String),
    #[error("network with name {0} already exists")]
    NameExists(String),
    #[error("{0} is a pre-defined network and cannot be removed")]
    Predefined(String),
    #[error("error while removing network: network {name} id {id} has active endpoints")]
    ActiveEndpoints { name: String, id: String },
    #[error("{0}")]
    Invalid(String),
    #[error("invalid pool request: Pool overlaps with other one on this address space")]
    Overlap,
    #[error("invalid pool request: subnet {requested} overlaps with {reserved}, the VM's own network (reserved: the desktop is reachable there)")]
    ReservedOverlap {
        requested: ipnet::Ipv4Net,
        reserved: ipnet::Ipv4Net,
    },
    #[error("cannot create network {network}: bridge name {bridge} is an existing interface that is not this network's bridge")]
    BridgeTaken { network: String, bridge: String },
    #[error("container {container} is not connected to network {network}")]
    NotConnected { container: String, network: String },
    #[error("endpoint with name {container} already exists in network {network}")]
    AlreadyConnected { container: String, network: String },
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Ipam(#[from] super::ipam::IpamError),
    #[error("driver failed programming external connectivity on endpoint {endpoint} ({id})")]
    Port {
        endpoint: String,
        id: String,
        #[source]
        source: super::ports::PortError,
    },
    #[error(transparent)]
    InvalidPort(super::ports::PortError),
    #[error("failed to set up container networking")]
    Netlink(#[from] super::netlink::NetlinkError),
    #[error("failed to program the firewall")]
    Firewall(#[from] super::nft::NftError),
    #[error("failed to start the DNS server of network {network}")]
    Dns {
        network: String,
        #[source]
        source: super::dns::DnsError,
    },
    #[error("failed to set sysctl")]
    Sysctl(#[from] super::sysctl::SysctlError),
    #[error("cannot {step} {}", path.display())]
    Io {
        step: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl NetworkError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::NameExists(_) => ErrorKind::Conflict,
            Self::Predefined(_)
            | Self::ActiveEndpoints { .. }
            | Self::Overlap
            | Self::ReservedOverlap { .. }
            | Self::BridgeTaken { .. }
            | Self::NotConnected { .. }
            | Self::AlreadyConnected { .. } => ErrorKind::Forbidden,
            Self::Invalid(_) | Self::InvalidPort(_) | Self::Unsupported(_) => {
                ErrorKind::InvalidParameter
            }
            Self::Ipam(super::ipam::IpamError::Exhausted { .. }) => ErrorKind::Internal,
            Self::Ipam(_) => ErrorKind::InvalidParameter,
            Self::Port { .. }
            | Self::Netlink(_)
            | Self::Firewall(_)
            | Self::Dns { .. }
            | Self::Sysctl(_)
            | Self::Io { .. } => ErrorKind::Internal,
        }
    }
}
