//! [`VzConfig`] → `VZVirtualMachineConfiguration`: one framework object
//! per line of the description, then the framework's own validation.
//!
//! Runs on the VM's queue. The devices: `VZLinuxBootLoader` (kernel,
//! initramfs, command line), CPUs and memory, the data disk as
//! `VZVirtioBlockDeviceConfiguration` over a read-write
//! `VZDiskImageStorageDeviceAttachment`, a `VZVirtioNetworkDeviceConfiguration`
//! on `VZNATNetworkDeviceAttachment` with the machine's MAC, one
//! `VZVirtioSocketDeviceConfiguration`, the console as a
//! `VZVirtioConsoleDeviceSerialPortConfiguration` appending to a file,
//! `VZVirtioEntropyDeviceConfiguration`,
//! `VZVirtioTraditionalMemoryBalloonDeviceConfiguration`, and a
//! `VZVirtioFileSystemDeviceConfiguration` per share.

use std::path::Path;

use objc2::rc::Retained;
use objc2::AnyThread;
use objc2_foundation::{NSArray, NSError, NSString, NSURL};
use objc2_virtualization::{
    VZBootLoader, VZDirectorySharingDeviceConfiguration, VZDiskImageStorageDeviceAttachment,
    VZEntropyDeviceConfiguration, VZFileSerialPortAttachment, VZLinuxBootLoader, VZMACAddress,
    VZMemoryBalloonDeviceConfiguration, VZNATNetworkDeviceAttachment, VZNetworkDeviceConfiguration,
    VZSerialPortConfiguration, VZSharedDirectory, VZSingleDirectoryShare,
    VZSocketDeviceConfiguration, VZStorageDeviceConfiguration, VZVirtioBlockDeviceConfiguration,
    VZVirtioConsoleDeviceSerialPortConfiguration, VZVirtioEntropyDeviceConfiguration,
    VZVirtioFileSystemDeviceConfiguration, VZVirtioNetworkDeviceConfiguration,
    VZVirtioSocketDeviceConfiguration, VZVirtioTraditionalMemoryBalloonDeviceConfiguration,
    VZVirtualMachineConfiguration,
};

use super::{FrameworkError, VmError};
use crate::config::{Limits, Share, VzConfig};

fn url(path: &Path) -> Retained<NSURL> {
    NSURL::fileURLWithPath(&NSString::from_str(&path.to_string_lossy()))
}

fn directory_url(path: &Path) -> Retained<NSURL> {
    NSURL::fileURLWithPath_isDirectory(&NSString::from_str(&path.to_string_lossy()), true)
}

/// The host's bounds on CPUs and memory, from the framework's class properties.
pub fn host_limits() -> Limits {
    // SAFETY: class properties without arguments; they only read the host's capabilities.
    unsafe {
        Limits {
            min_cpus: VZVirtualMachineConfiguration::minimumAllowedCPUCount() as u64,
            max_cpus: VZVirtualMachineConfiguration::maximumAllowedCPUCount() as u64,
            min_memory_bytes: VZVirtualMachineConfiguration::minimumAllowedMemorySize(),
            max_memory_bytes: VZVirtualMachineConfiguration::maximumAllowedMemorySize(),
        }
    }
}

/// The validated configuration for `config`. Call on the VM's queue.
pub fn configuration(
    config: &VzConfig,
) -> Result<Retained<VZVirtualMachineConfiguration>, VmError> {
    // SAFETY: each call below passes valid, retained framework objects of
    // the types the framework's headers name, on the VM's queue; nothing
    // here keeps a pointer past the call.
    unsafe {
        let vz = VZVirtualMachineConfiguration::new();
        let boot = boot_loader(config);
        vz.setBootLoader(Some(&boot));
        vz.setCPUCount(config.cpus as usize);
        vz.setMemorySize(config.memory_bytes);

        let disk = VZDiskImageStorageDeviceAttachment::initWithURL_readOnly_error(
            VZDiskImageStorageDeviceAttachment::alloc(),
            &url(&config.disk),
            false,
        )
        .map_err(|e| VmError::File {
            what: "the data disk",
            path: config.disk.clone(),
            source: FrameworkError::from(&*e),
        })?;
        let block = VZVirtioBlockDeviceConfiguration::initWithAttachment(
            VZVirtioBlockDeviceConfiguration::alloc(),
            &disk,
        );
        let block: &VZStorageDeviceConfiguration = &block;
        vz.setStorageDevices(&NSArray::from_slice(&[block]));

        let network = network(&config.network.mac)?;
        let network: &VZNetworkDeviceConfiguration = &network;
        vz.setNetworkDevices(&NSArray::from_slice(&[network]));

        let sockets = VZVirtioSocketDeviceConfiguration::new();
        let sockets: &VZSocketDeviceConfiguration = &sockets;
        vz.setSocketDevices(&NSArray::from_slice(&[sockets]));

        let console = console(&config.console_log)?;
        let console: &VZSerialPortConfiguration = &console;
        vz.setSerialPorts(&NSArray::from_slice(&[console]));

        if config.entropy {
            let entropy = VZVirtioEntropyDeviceConfiguration::new();
            let entropy: &VZEntropyDeviceConfiguration = &entropy;
            vz.setEntropyDevices(&NSArray::from_slice(&[entropy]));
        }
        if config.memory_balloon {
            let balloon = VZVirtioTraditionalMemoryBalloonDeviceConfiguration::new();
            let balloon: &VZMemoryBalloonDeviceConfiguration = &balloon;
            vz.setMemoryBalloonDevices(&NSArray::from_slice(&[balloon]));
        }

        let shares: Vec<Retained<VZVirtioFileSystemDeviceConfiguration>> = config
            .shares
            .iter()
            .map(|share| file_system(share))
            .collect();
        let shares: Vec<&VZDirectorySharingDeviceConfiguration> =
            shares.iter().map(|share| &***share).collect();
        vz.setDirectorySharingDevices(&NSArray::from_slice(&shares));

        vz.validateWithError()
            .map_err(|e| VmError::Invalid(FrameworkError::from(&*e)))?;
        Ok(vz)
    }
}

/// # Safety
/// On the VM's queue.
unsafe fn boot_loader(config: &VzConfig) -> Retained<VZBootLoader> {
    // SAFETY: see `configuration`.
    unsafe {
        let boot =
            VZLinuxBootLoader::initWithKernelURL(VZLinuxBootLoader::alloc(), &url(&config.kernel));
        boot.setInitialRamdiskURL(Some(&url(&config.initramfs)));
        boot.setCommandLine(&NSString::from_str(&config.command_line));
        Retained::into_super(boot)
    }
}

/// # Safety
/// On the VM's queue.
unsafe fn network(mac: &str) -> Result<Retained<VZVirtioNetworkDeviceConfiguration>, VmError> {
    // SAFETY: see `configuration`.
    unsafe {
        let address = VZMACAddress::initWithString(VZMACAddress::alloc(), &NSString::from_str(mac))
            .ok_or_else(|| VmError::Mac(mac.to_owned()))?;
        let nic = VZVirtioNetworkDeviceConfiguration::new();
        nic.setMACAddress(&address);
        let nat = VZNATNetworkDeviceAttachment::new();
        nic.setAttachment(Some(&nat));
        Ok(nic)
    }
}

/// # Safety
/// On the VM's queue.
unsafe fn console(
    log: &Path,
) -> Result<Retained<VZVirtioConsoleDeviceSerialPortConfiguration>, VmError> {
    // SAFETY: see `configuration`.
    unsafe {
        let file = VZFileSerialPortAttachment::initWithURL_append_error(
            VZFileSerialPortAttachment::alloc(),
            &url(log),
            true,
        )
        .map_err(|e| VmError::File {
            what: "the console log",
            path: log.to_owned(),
            source: FrameworkError::from(&*e),
        })?;
        let console = VZVirtioConsoleDeviceSerialPortConfiguration::new();
        console.setAttachment(Some(&file));
        Ok(console)
    }
}

/// # Safety
/// On the VM's queue.
unsafe fn file_system(share: &Share) -> Retained<VZVirtioFileSystemDeviceConfiguration> {
    // SAFETY: see `configuration`.
    unsafe {
        let directory = VZSharedDirectory::initWithURL_readOnly(
            VZSharedDirectory::alloc(),
            &directory_url(&share.host_path),
            share.read_only,
        );
        let single =
            VZSingleDirectoryShare::initWithDirectory(VZSingleDirectoryShare::alloc(), &directory);
        let device = VZVirtioFileSystemDeviceConfiguration::initWithTag(
            VZVirtioFileSystemDeviceConfiguration::alloc(),
            &NSString::from_str(&share.tag),
        );
        device.setShare(Some(&single));
        device
    }
}

impl From<&NSError> for FrameworkError {
    fn from(error: &NSError) -> Self {
        FrameworkError {
            domain: error.domain().to_string(),
            code: error.code() as i64,
            description: error.localizedDescription().to_string(),
        }
    }
}
