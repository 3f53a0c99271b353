//! `vmctl machine env [NAME]`: the docker CLI's environment for a machine,
//! in the desktop's usual shell: sh on unix, PowerShell on Windows.

use super::MachineCliError;
use crate::endpoint::Endpoint;
use crate::machine::{Machine, Roots};

pub fn run(roots: &Roots, name: &str) -> Result<i32, MachineCliError> {
    let machine = Machine::load(roots, name)?;
    for line in lines(&machine.paths.docker_endpoint(), name, cfg!(windows)) {
        println!("{line}");
    }
    Ok(0)
}

/// The lines to print for `docker` (the machine's Docker endpoint).
fn lines(docker: &Endpoint, name: &str, powershell: bool) -> [String; 3] {
    let named = if name == crate::machine::DEFAULT_MACHINE {
        String::new()
    } else {
        format!(" {name}")
    };
    if powershell {
        [
            format!("$Env:DOCKER_HOST = \"{docker}\""),
            "# Run this command to configure your shell:".to_owned(),
            format!("# & vmctl machine env{named} | Invoke-Expression"),
        ]
    } else {
        [
            format!("export DOCKER_HOST={docker}"),
            "# Run this command to configure your shell:".to_owned(),
            format!("# eval $(vmctl machine env{named})"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sh_and_powershell_lines_name_the_endpoint() {
        let socket = Endpoint::Unix("/run/vmctl/dev/docker.sock".into());
        let sh = lines(&socket, "dev", false);
        assert_eq!(
            sh[0],
            "export DOCKER_HOST=unix:///run/vmctl/dev/docker.sock"
        );
        assert_eq!(sh[2], "# eval $(vmctl machine env dev)");
        let pipe = Endpoint::Pipe("vmctl-default".into());
        let ps = lines(&pipe, "default", true);
        assert_eq!(
            ps[0],
            "$Env:DOCKER_HOST = \"npipe:////./pipe/vmctl-default\""
        );
        assert_eq!(ps[2], "# & vmctl machine env | Invoke-Expression");
    }
}
