//! The Debian package `make deb` builds (cargo-deb): what it installs, its
//! control data, and the hardened unit checked by systemd's own analyser.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cargo target directory the tests were built in (`.../release/pdx`).
fn target_dir() -> PathBuf {
    let pdx = pdx_testnet::pdx_bin().unwrap();
    pdx.parent().and_then(Path::parent).unwrap().to_path_buf()
}

#[test]
fn the_deb_package_holds_binaries_a_hardened_unit_etc_pdx_man_pages_and_completions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = target_dir();
    let made = run(Command::new("make")
        .arg("-C")
        .arg(root)
        .arg("deb-package")
        .env("CARGO_TARGET_DIR", &target));
    let deb = made
        .lines()
        .rev()
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no .deb named in:\n{made}"));

    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        "./usr/bin/pdx",
        "./usr/bin/pdx-testnet",
        "./lib/systemd/system/pdx@.service",
        "./etc/pdx/pdx.env",
        "./usr/share/man/man1/pdx.1",
        "./usr/share/man/man1/pdx-serve.1",
        "./usr/share/man/man1/pdx-doctor.1",
        "./usr/share/man/man1/pdx-audit-verify.1",
        "./usr/share/bash-completion/completions/pdx",
        "./usr/share/zsh/vendor-completions/_pdx",
        "./usr/share/fish/vendor_completions.d/pdx.fish",
        "./usr/share/doc/pdx/README.md",
        "./usr/share/doc/pdx/docs/operations.md",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(path)),
            "{path} missing from the package:\n{listing}"
        );
    }
    let info = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    assert!(info.contains("Package: pdx"), "{info}");
    assert!(info.contains("adduser"), "postinst needs adduser: {info}");
    let conffiles = run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("conffiles"));
    assert_eq!(conffiles.trim(), "/etc/pdx/pdx.env");

    let dir = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir.path()));
    let pdx = dir.path().join("usr/bin/pdx");
    let version = run(Command::new(&pdx).arg("--version"));
    assert_eq!(version.trim(), format!("pdx {}", env!("CARGO_PKG_VERSION")));
    let unit = std::fs::read_to_string(dir.path().join("lib/systemd/system/pdx@.service")).unwrap();
    for line in [
        "User=pdx",
        "ExecStart=/usr/bin/pdx serve --home /var/lib/pdx/%i",
        "KillSignal=SIGTERM",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/pdx/%i",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing:\n{unit}");
    }
    // systemd's analyser, where this machine has it: the unit parses and its
    // exposure is low. The copy runs the extracted binary (not installed).
    let analyse = Command::new("systemd-analyze").arg("--version").output();
    if analyse.is_ok_and(|o| o.status.success()) {
        let copy = dir.path().join("pdx@440000.service");
        std::fs::write(
            &copy,
            unit.replace("/usr/bin/pdx", &pdx.display().to_string()),
        )
        .unwrap();
        run(Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&copy));
        let security = run(Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&copy));
        let exposure: f64 = security
            .lines()
            .find_map(|l| {
                l.split("Overall exposure level for pdx@440000.service: ")
                    .nth(1)
            })
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in:\n{security}"));
        assert!(exposure < 3.0, "exposure {exposure}:\n{security}");
    }
}
