//! Debian's packaged cloud kernels, one per suite, fetched with a private apt configuration
//! (the system's /etc/apt is neither read nor changed) and cached in target/kernels/<suite>:
//! `vmlinuz`, `config`, and `version` (the kernel release, then the package version).
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail, ensure};

use super::Suite;
use crate::{exec, target_dir};

const MIRROR: &str = "http://deb.debian.org/debian";
/// The archive's keys, from debian-archive-keyring (Priority: important, so always there).
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// The metapackage every suite has whose dependency is that suite's newest cloud kernel: the
/// flavour made for VMs (few drivers, a small package), with what the tracer needs (BPF,
/// BTF, uprobes) as in the generic one.
const META: &str = "linux-image-cloud-amd64";
/// What the initramfs and /init need from the kernel itself: no module is loaded in the VM, so
/// each must be built in (`=y`). All four suites' cloud kernels have them built in.
const BUILT_IN: [&str; 10] = [
    "CONFIG_BLK_DEV_INITRD",
    "CONFIG_RD_GZIP",
    "CONFIG_DEVTMPFS",
    "CONFIG_TMPFS",
    "CONFIG_PROC_FS",
    "CONFIG_SYSFS",
    "CONFIG_SERIAL_8250_CONSOLE",
    "CONFIG_BPF_SYSCALL",
    "CONFIG_TRACING",
    "CONFIG_DEBUG_FS",
];

pub struct Kernel {
    pub suite: Suite,
    pub vmlinuz: PathBuf,
    /// `uname -r` of the kernel, e.g. 6.1.0-50-cloud-amd64.
    pub release: String,
    /// The Debian package version, e.g. 6.1.176-1.
    pub package_version: String,
}

pub fn kernels_dir() -> PathBuf {
    target_dir().join("kernels")
}

/// Each suite's kernel, from the cache when there; apt runs only when one is missing.
pub fn fetch(suites: &[Suite]) -> anyhow::Result<Vec<Kernel>> {
    let mut apt = None;
    let mut kernels = Vec::new();
    for &suite in suites {
        if let Some(kernel) = cached(suite)? {
            kernels.push(kernel);
            continue;
        }
        let apt = match &mut apt {
            Some(apt) => apt,
            None => apt.insert(Apt::update()?),
        };
        kernels.push(download(apt, suite)?);
    }
    Ok(kernels)
}

fn suite_dir(suite: Suite) -> PathBuf {
    kernels_dir().join(suite.name())
}

fn cached(suite: Suite) -> anyhow::Result<Option<Kernel>> {
    let dir = suite_dir(suite);
    let (vmlinuz, version) = (dir.join("vmlinuz"), dir.join("version"));
    // `version` is written last, so its presence means the rest is complete.
    if !vmlinuz.exists() || !version.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&version)
        .with_context(|| format!("reading {}", version.display()))?;
    let mut lines = text.lines();
    let (Some(release), Some(package_version)) = (lines.next(), lines.next()) else {
        bail!(
            "{} is not `release\\npackage version`: delete it",
            version.display()
        );
    };
    Ok(Some(Kernel {
        suite,
        vmlinuz,
        release: release.to_string(),
        package_version: package_version.to_string(),
    }))
}

/// apt-get and apt-cache on the private configuration in target/kernels/apt, whose lists
/// have just been updated.
struct Apt {
    config: PathBuf,
}

impl Apt {
    /// Writes the private configuration and fetches the four suites' package lists (about
    /// 30 MB, 10 s).
    fn update() -> anyhow::Result<Self> {
        let dir = kernels_dir().join("apt");
        for sub in ["lists/partial", "cache/archives/partial", "empty"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let sources: String = Suite::ALL
            .iter()
            .map(|s| format!("deb [signed-by={KEYRING}] {MIRROR} {} main\n", s.name()))
            .collect();
        std::fs::write(dir.join("sources.list"), sources)?;
        std::fs::write(dir.join("status"), "")?;
        let d = |sub: &str| dir.join(sub).display().to_string();
        // APT_CONFIG is read before anything else, so pointing the snippet and preference
        // dirs at an empty dir keeps the system's apt.conf.d (DEP-11 lists, proxies, pins)
        // out as well as its sources.
        let config = format!(
            "Dir::Etc::main \"/dev/null\";\n\
             Dir::Etc::parts \"{empty}\";\n\
             Dir::Etc::sourcelist \"{sources}\";\n\
             Dir::Etc::sourceparts \"-\";\n\
             Dir::Etc::preferences \"/dev/null\";\n\
             Dir::Etc::preferencesparts \"{empty}\";\n\
             Dir::State::Lists \"{lists}\";\n\
             Dir::State::status \"{status}\";\n\
             Dir::Cache \"{cache}\";\n\
             APT::Architecture \"amd64\";\n\
             APT::Architectures \"amd64\";\n\
             Acquire::Languages \"none\";\n\
             // Lists stay compressed (200 MB less); no source-package cache is needed.\n\
             Acquire::GzipIndexes \"true\";\n\
             Dir::Cache::srcpkgcache \"\";\n\
             // The mirror reachable from here may serve a frozen copy whose Release files are\n\
             // past their Valid-Until date (sid's is a week); their signatures still count.\n\
             Acquire::Check-Valid-Until \"false\";\n\
             // Downloads land in target/, which the _apt user may not be able to write.\n\
             APT::Sandbox::User \"root\";\n",
            empty = d("empty"),
            sources = d("sources.list"),
            lists = d("lists"),
            status = d("status"),
            cache = d("cache"),
        );
        let apt = Self {
            config: dir.join("apt.conf"),
        };
        std::fs::write(&apt.config, config)?;
        eprintln!("xtask: fetching the package lists of {MIRROR} (private apt configuration)");
        exec(apt.command("apt-get").args(["-q", "update"]))?;
        Ok(apt)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("APT_CONFIG", &self.config);
        cmd
    }

    /// `apt-cache show pkg/suite`: the package's stanza.
    fn show(&self, pkg: &str, suite: Suite) -> anyhow::Result<String> {
        let out = self
            .command("apt-cache")
            .args(["show", &format!("{pkg}/{}", suite.name())])
            .output()
            .context("running apt-cache")?;
        ensure!(
            out.status.success(),
            "apt-cache show {pkg}/{} failed: {}",
            suite.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A field of the first stanza of `apt-cache show` output.
fn field<'a>(show: &'a str, name: &str) -> Option<&'a str> {
    show.split("\n\n")
        .next()?
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

/// The package names in the first stanza's Depends field, alternatives included, in order.
fn depends(show: &str) -> Vec<String> {
    field(show, "Depends")
        .unwrap_or_default()
        .split([',', '|'])
        .filter_map(|dep| dep.split_whitespace().next())
        .map(|name| name.split(':').next().unwrap_or(name).to_string())
        .collect()
}

fn download(apt: &Apt, suite: Suite) -> anyhow::Result<Kernel> {
    let image = depends(&apt.show(META, suite)?)
        .into_iter()
        .find(|d| d.starts_with("linux-image-") && d != META)
        .with_context(|| format!("{META}/{} depends on no linux-image-*", suite.name()))?;
    let release = image.trim_start_matches("linux-image-").to_string();
    let show = apt.show(&image, suite)?;
    let package_version = field(&show, "Version")
        .with_context(|| format!("{image}/{}: no Version", suite.name()))?
        .to_string();
    // Since 7.x (sid) the image package is empty: vmlinuz is in linux-binary-RELEASE, the
    // config in linux-base-RELEASE. The modules (linux-modules-RELEASE) are not needed.
    let mut packages = vec![image.clone()];
    packages.extend(
        depends(&show)
            .into_iter()
            .filter(|d| d.starts_with("linux-binary-") || d.starts_with("linux-base-"))
            .filter(|d| d.ends_with(&release)),
    );
    eprintln!(
        "xtask: {}: downloading {} ({package_version})",
        suite.name(),
        packages.join(", ")
    );
    let dir = suite_dir(suite);
    let debs = dir.join("debs");
    let _ = std::fs::remove_dir_all(&debs);
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    exec(
        apt.command("apt-get")
            .current_dir(&debs)
            .args(["-q", "download"])
            .args(packages.iter().map(|p| format!("{p}/{}", suite.name()))),
    )?;
    let unpacked = dir.join("unpacked");
    let _ = std::fs::remove_dir_all(&unpacked);
    for entry in std::fs::read_dir(&debs)?.flatten() {
        exec(
            Command::new("dpkg")
                .arg("-x")
                .arg(entry.path())
                .arg(&unpacked),
        )?;
    }
    let vmlinuz = find_one(&unpacked, &release, "vmlinuz")?
        .with_context(|| format!("no vmlinuz in {}", packages.join(", ")))?;
    std::fs::copy(&vmlinuz, dir.join("vmlinuz"))
        .with_context(|| format!("copying {}", vmlinuz.display()))?;
    match find_one(&unpacked, &release, "config")? {
        Some(config) => {
            std::fs::copy(&config, dir.join("config"))?;
            check_built_in(&std::fs::read_to_string(&config)?, &release)?;
        }
        None => eprintln!("xtask: {release}: no config in the packages; not checked"),
    }
    // The unpacked modules are 100 MB or more; the .debs stay, should a module be wanted.
    std::fs::remove_dir_all(&unpacked).context("removing the unpacked packages")?;
    std::fs::write(
        dir.join("version"),
        format!("{release}\n{package_version}\n"),
    )?;
    cached(suite)?.context("the kernel just fetched is not in the cache")
}

/// `boot/NAME-RELEASE` (up to 6.12) or `usr/lib/modules/RELEASE/NAME` (since 7.x, and
/// `lib/modules` for completeness).
fn find_one(root: &Path, release: &str, name: &str) -> anyhow::Result<Option<PathBuf>> {
    Ok([
        root.join(format!("boot/{name}-{release}")),
        root.join(format!("usr/lib/modules/{release}/{name}")),
        root.join(format!("lib/modules/{release}/{name}")),
    ]
    .into_iter()
    .find(|p| p.exists()))
}

fn check_built_in(config: &str, release: &str) -> anyhow::Result<()> {
    for option in BUILT_IN {
        let value = config
            .lines()
            .find_map(|l| l.strip_prefix(option)?.strip_prefix('='));
        // A module would need the modules tree in the initramfs and insmod in /init, which
        // no kernel so far has needed.
        ensure!(
            value == Some("y"),
            "{release}: {option} is {} and the VM harness needs it built in (=y)",
            value.unwrap_or("not set")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_of_the_first_stanza() {
        let show = "Package: linux-image-7.2.13+deb14-cloud-amd64\n\
                    Depends: dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, \
                    linux-base-7.2.13+deb14-cloud-amd64 (= 7.2.13-1), linux-binary-7.2.13+deb14-cloud-amd64:amd64\n\
                    \n\
                    Package: other\nDepends: nothing\n";
        assert_eq!(
            depends(show),
            [
                "dracut",
                "initramfs-tools",
                "linux-initramfs-tool",
                "linux-base-7.2.13+deb14-cloud-amd64",
                "linux-binary-7.2.13+deb14-cloud-amd64"
            ]
        );
    }

    #[test]
    fn built_in_options() {
        let mut config: String = BUILT_IN.iter().map(|o| format!("{o}=y\n")).collect();
        assert!(check_built_in(&config, "r").is_ok());
        config = config.replace("CONFIG_DEBUG_FS=y", "CONFIG_DEBUG_FS=m");
        let err = check_built_in(&config, "r").expect_err("a module");
        assert!(err.to_string().contains("CONFIG_DEBUG_FS is m"), "{err}");
    }
}
