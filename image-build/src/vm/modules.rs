//! Kernel modules: which `.ko` files the guest needs and their load order.
//!
//! Debian's kernel package ships no `modules.dep` (depmod runs at install),
//! so the dependencies come from each module's `.modinfo` ELF section, a
//! list of NUL-separated `key=value` strings whose `depends=` names the
//! modules it needs. Module names use `-` and `_` interchangeably; both are
//! normalised to `_`.

use std::collections::{BTreeMap, BTreeSet};

use super::VmImageError;

pub fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    normalise(file.strip_suffix(".ko").unwrap_or(file))
}

/// The modules of a kernel: name → (path, direct dependencies by name).
#[derive(Default)]
pub struct ModuleDeps {
    modules: BTreeMap<String, (String, Vec<String>)>,
}

impl ModuleDeps {
    /// Records module `path` (its name is its file name) needing `depends`.
    pub fn add(&mut self, path: &str, depends: &[String]) {
        let deps = depends.iter().map(|d| normalise(d)).collect();
        self.modules
            .insert(module_name(path), (path.to_owned(), deps));
    }

    /// Parses `modules.dep` text (`path: dep-path dep-path …`).
    pub fn parse(text: &str) -> Self {
        let mut deps = Self::default();
        for line in text.lines() {
            let Some((path, needs)) = line.split_once(':') else {
                continue;
            };
            let needs: Vec<String> = needs.split_whitespace().map(module_name).collect();
            deps.add(path.trim(), &needs);
        }
        deps
    }

    /// The paths of `roots` and everything they need, each after all its
    /// dependencies. Unknown roots are an error.
    pub fn load_order<'a>(
        &self,
        roots: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<String>, VmImageError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for root in roots {
            let root = normalise(root);
            if !self.modules.contains_key(&root) {
                return Err(VmImageError::UnknownModule(root));
            }
            self.visit(&root, &mut done, &mut BTreeSet::new(), &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        done: &mut BTreeSet<String>,
        path: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) -> Result<(), VmImageError> {
        if done.contains(name) {
            return Ok(());
        }
        let (file, deps) = self
            .modules
            .get(name)
            .ok_or_else(|| VmImageError::UnknownModule(name.to_owned()))?;
        if !path.insert(name.to_owned()) {
            return Err(VmImageError::ModuleCycle(name.to_owned()));
        }
        for dep in deps {
            self.visit(dep, done, path, order)?;
        }
        path.remove(name);
        done.insert(name.to_owned());
        order.push(file.clone());
        Ok(())
    }
}

/// The `depends=` list of a `.ko`, read from its `.modinfo` section.
pub fn modinfo_depends(ko: &[u8]) -> Option<Vec<String>> {
    let modinfo = super::elf::Elf::parse(ko).ok()?.section(".modinfo")?;
    let depends = modinfo
        .split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"depends="))?;
    let text = std::str::from_utf8(depends).ok()?;
    Some(
        text.split(',')
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

impl ModuleDeps {
    /// The level of each module of `order` (a load order): 0 for modules
    /// needing nothing, else one more than the deepest dependency. Modules
    /// of one level can load at the same time.
    pub fn levels(&self, order: &[String]) -> Vec<usize> {
        let mut level_of: BTreeMap<String, usize> = BTreeMap::new();
        order
            .iter()
            .map(|path| {
                let name = module_name(path);
                let level = self.modules.get(&name).map_or(0, |(_, deps)| {
                    deps.iter()
                        .filter_map(|d| level_of.get(d))
                        .map(|l| l + 1)
                        .max()
                        .unwrap_or(0)
                });
                level_of.insert(name, level);
                level
            })
            .collect()
    }
}

/// The module names listed in a roots file (`#` comments, blank lines ignored).
pub fn roots(text: &str) -> Vec<&str> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n\
kernel/fs/mbcache.ko:\n\
kernel/fs/jbd2/jbd2.ko:\n\
kernel/lib/crc16.ko:\n\
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko\n\
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko\n\
kernel/net/vmw_vsock/vsock.ko:\n";

    #[test]
    fn dependencies_come_first_and_once() {
        let deps = ModuleDeps::parse(DEP);
        let order = deps
            .load_order(["vmw-vsock-virtio-transport", "ext4", "vsock"])
            .unwrap();
        let pos = |m: &str| order.iter().position(|p| p.ends_with(m)).unwrap();
        assert!(pos("/vsock.ko") < pos("transport_common.ko"));
        assert!(pos("transport_common.ko") < pos("virtio_transport.ko"));
        assert!(pos("jbd2.ko") < pos("ext4.ko"));
        assert_eq!(order.len(), 7);
        let levels = deps.levels(&order);
        assert_eq!(levels[pos("/vsock.ko")], 0);
        assert_eq!(levels[pos("transport_common.ko")], 1);
        assert_eq!(levels[pos("virtio_transport.ko")], 2);
        assert!(matches!(
            deps.load_order(["nosuch"]),
            Err(VmImageError::UnknownModule(_))
        ));
    }

    #[test]
    fn modinfo_of_a_real_module() {
        let Some(ko) = std::fs::read_dir("/lib/modules")
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| std::fs::read(e.ok()?.path().join("kernel/fs/ext4/ext4.ko")).ok())
        else {
            eprintln!("SKIPPED: no uncompressed ext4.ko on this machine");
            return;
        };
        let deps = modinfo_depends(&ko).unwrap();
        assert!(deps.contains(&"jbd2".to_owned()), "{deps:?}");
    }

    #[test]
    fn roots_file_ignores_comments() {
        assert_eq!(roots("# c\nvsock # x\n\n ext4\n"), vec!["vsock", "ext4"]);
    }
}
