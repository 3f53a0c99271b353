//! The pinned inputs (`image-build/pins.json`): the exact kernel package a
//! build expects. `fetch-kernel.sh` downloads it; the builder refuses any
//! other unless told `--unpinned`.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct KernelPin<'a> {
    pub package: &'a str,
    pub version: &'a str,
    pub sha256: &'a str,
}

#[derive(Deserialize)]
struct Pins<'a> {
    #[serde(borrow)]
    kernel: KernelPin<'a>,
}

const PINS: &str = include_str!("../../pins.json");

/// The pinned kernel package.
pub fn kernel() -> KernelPin<'static> {
    match serde_json::from_str::<Pins>(PINS) {
        Ok(pins) => pins.kernel,
        // pins.json is part of the source; the unit test below keeps it valid.
        Err(e) => panic!("image-build/pins.json is malformed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pins_parse() {
        let pin = super::kernel();
        assert!(pin.package.starts_with("linux-image-"));
        assert_eq!(pin.sha256.len(), 64);
    }
}
