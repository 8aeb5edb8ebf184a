//! Debian packages the CI steps need, installed with apt when missing
//! (with sudo when not root).

use std::process::Command;

/// Installs `packages` (`apt-get update` first), retrying once: a fresh
/// machine's package lists can be mid-update.
pub(crate) fn install(packages: &[&str]) -> Result<(), String> {
    eprintln!("==> apt: installing {}", packages.join(" "));
    let mut last = String::new();
    for _attempt in 0..2 {
        let update = check(
            &mut privileged(&["apt-get", "update", "-qq"]),
            "apt-get update",
        );
        let mut args = vec!["apt-get", "install", "-y", "-qq", "--no-install-recommends"];
        args.extend_from_slice(packages);
        match update.and_then(|()| check(&mut privileged(&args), "apt-get install")) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// `args` as root: directly when root, with sudo otherwise.
fn privileged(args: &[&str]) -> Command {
    let mut cmd = if is_root() {
        Command::new(args[0])
    } else {
        let mut cmd = Command::new("sudo");
        cmd.arg(args[0]);
        cmd
    };
    cmd.args(&args[1..]);
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// Whether this process runs as root.
pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// Runs `cmd` to completion; its output becomes the error on failure.
pub(crate) fn check(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: could not run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
