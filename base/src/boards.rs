//! The boards a base supports, and the check that each one can find its root filesystem and its wired network:
//! starting at the board's SD/eMMC controllers and its wired NIC in the device tree Debian's kernel package ships,
//! following every supplier and parent (see [`crate::devicetree`]), each node's driver is looked up in the
//! kernel's own module metadata (see [`crate::kmod`]); the build fails unless every driver found is built in or
//! inside the initramfs. The device trees and the module metadata are the oracle, not a list of ours.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::devicetree::Tree;
use crate::kmod::{self, Driver, KernelImage, Modules};
use cluster_lab_image::arch::Arch;

/// A supported board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Board {
    pub name: &'static str,
    pub arch: Arch,
    /// Its device tree, relative to the kernel package's DTB directory (`usr/lib/linux-image-<version>/`).
    pub dtb: &'static str,
    /// Whether it has a wired Ethernet port (cluster-lab's VLAN needs one).
    pub wired_nic: bool,
    /// Whether the image claims it. A board that is not claimed is still checked, and its report says why it
    /// cannot be (the Pi 5: this kernel drives neither its SD controller nor its Ethernet).
    pub supported: bool,
}

const fn board(name: &'static str, arch: Arch, dtb: &'static str, wired_nic: bool) -> Board {
    Board {
        name,
        arch,
        dtb,
        wired_nic,
        supported: true,
    }
}

/// Every board the docs name, per architecture.
pub const BOARDS: &[Board] = &[
    board(
        "Raspberry Pi 3 Model B",
        Arch::Arm64,
        "broadcom/bcm2837-rpi-3-b.dtb",
        true,
    ),
    board(
        "Raspberry Pi 3 Model B+",
        Arch::Arm64,
        "broadcom/bcm2837-rpi-3-b-plus.dtb",
        true,
    ),
    board(
        "Raspberry Pi 3 Model A+",
        Arch::Arm64,
        "broadcom/bcm2837-rpi-3-a-plus.dtb",
        false,
    ),
    board(
        "Raspberry Pi Zero 2 W",
        Arch::Arm64,
        "broadcom/bcm2837-rpi-zero-2-w.dtb",
        false,
    ),
    board(
        "Raspberry Pi 4 Model B",
        Arch::Arm64,
        "broadcom/bcm2711-rpi-4-b.dtb",
        true,
    ),
    board(
        "Raspberry Pi 400",
        Arch::Arm64,
        "broadcom/bcm2711-rpi-400.dtb",
        true,
    ),
    board(
        "Compute Module 4 on its IO board",
        Arch::Arm64,
        "broadcom/bcm2711-rpi-cm4-io.dtb",
        true,
    ),
    Board {
        supported: false,
        ..board(
            "Raspberry Pi 5",
            Arch::Arm64,
            "broadcom/bcm2712-rpi-5-b.dtb",
            true,
        )
    },
    board(
        "Raspberry Pi 2 Model B",
        Arch::Armhf,
        "bcm2836-rpi-2-b.dtb",
        true,
    ),
    board(
        "Raspberry Pi 3 Model B",
        Arch::Armhf,
        "bcm2837-rpi-3-b.dtb",
        true,
    ),
    Board {
        supported: false,
        ..board(
            "Raspberry Pi 4 Model B",
            Arch::Armhf,
            "bcm2711-rpi-4-b.dtb",
            true,
        )
    },
];

/// What the check found for one board.
#[derive(Debug, Clone)]
pub struct BoardReport {
    pub board: Board,
    /// Drivers found on the walks, each with how it is present.
    pub drivers: Vec<(Driver, Presence)>,
    /// Compatible strings on the walks that no module claims but the kernel image itself names: drivers built
    /// in that cannot be modules (interrupt controllers, buses, firmware, mailbox).
    pub builtin_by_name: BTreeSet<String>,
    /// Compatible strings on the walks that nothing in this kernel claims (board names, devices with no driver).
    pub unclaimed: BTreeSet<String>,
    /// What stops this board from booting or networking, each with the chain that needs it.
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    BuiltIn,
    Initramfs,
    /// A module only on the root filesystem: too late for whatever needs it before the root is mounted.
    RootOnly,
}

/// Where a starting point's driver must live for the board to count: SD/eMMC host drivers, wired NIC drivers.
fn is_sd_host(driver: &Driver) -> bool {
    driver.path.contains("/drivers/mmc/host/")
}

fn is_wired_nic(driver: &Driver) -> bool {
    driver.path.contains("/drivers/net/ethernet/") || driver.path.contains("/drivers/net/usb/")
}

/// Check one board against a kernel's modules and an initramfs's modules.
pub fn check_board(
    board: Board,
    dtb: &[u8],
    modules: &Modules,
    kernel: &KernelImage,
    initramfs: &BTreeSet<String>,
) -> Result<BoardReport> {
    let tree = Tree::parse(dtb).with_context(|| format!("reading {}", board.dtb))?;
    let drivers_of = |i: usize| -> Vec<Driver> {
        let node = &tree.nodes[i];
        let compatible = node.compatible();
        if compatible.is_empty() {
            return Vec::new();
        }
        let device_type = node
            .props
            .get("device_type")
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(|s| s.trim_end_matches('\0'));
        modules.drivers(&kmod::modalias(node.name(), device_type, &compatible))
    };
    let mut report = BoardReport {
        board,
        drivers: Vec::new(),
        builtin_by_name: BTreeSet::new(),
        unclaimed: BTreeSet::new(),
        missing: Vec::new(),
    };

    // Starting points: enabled nodes an SD/eMMC host driver or a wired NIC driver claims, and nodes named like
    // them that no driver claims (a controller this kernel cannot drive).
    let mut sd = Vec::new();
    let mut nic = Vec::new();
    for (i, node) in tree.nodes.iter().enumerate() {
        if !node.enabled() || node.compatible().is_empty() {
            continue;
        }
        let drivers = drivers_of(i);
        let name = node.name().split('@').next().unwrap_or("");
        if drivers.iter().any(is_sd_host)
            || (drivers.is_empty() && matches!(name, "mmc" | "sdhci" | "emmc2" | "sdhost"))
        {
            sd.push(i);
        }
        if drivers.iter().any(is_wired_nic) || (drivers.is_empty() && name == "ethernet") {
            nic.push(i);
        }
    }
    if sd.is_empty() {
        report
            .missing
            .push("no enabled SD/eMMC controller in the device tree".into());
    }
    if board.wired_nic && nic.is_empty() {
        report
            .missing
            .push("no enabled wired Ethernet controller in the device tree".into());
    }

    let mut seen = BTreeSet::new();
    for start in sd.iter().chain(&nic) {
        let walk = tree.needs(*start);
        for (i, _) in &walk {
            if !seen.insert(*i) {
                continue;
            }
            let compatible = tree.nodes[*i].compatible();
            // A disabled supplier gets no driver wherever it would be: nothing to put in the initramfs.
            if compatible.is_empty() || (i != start && !tree.nodes[*i].enabled()) {
                continue;
            }
            let drivers = drivers_of(*i);
            if drivers.is_empty() {
                if let Some(c) = compatible.iter().find(|c| kernel.names(c)) {
                    report.builtin_by_name.insert(c.to_string());
                } else if i == start {
                    report.missing.push(format!(
                        "{} ({}): no driver in this kernel claims it",
                        tree.nodes[*i].path,
                        compatible.join(", ")
                    ));
                } else {
                    report.unclaimed.insert(compatible[0].to_string());
                }
                continue;
            }
            // modprobe loads every module the alias matches; the node works once one of them is there. Built in
            // beats the initramfs, which beats the root filesystem.
            let presence = |d: &Driver| {
                if d.builtin {
                    Presence::BuiltIn
                } else if initramfs.contains(&d.module) {
                    Presence::Initramfs
                } else {
                    Presence::RootOnly
                }
            };
            let best = drivers
                .iter()
                .min_by_key(|d| match presence(d) {
                    Presence::BuiltIn => 0,
                    Presence::Initramfs => 1,
                    Presence::RootOnly => 2,
                })
                .expect("not empty");
            let p = presence(best);
            if p == Presence::RootOnly {
                report.missing.push(format!(
                    "module {} is neither built in nor in the initramfs; needed by {}",
                    best.module,
                    tree.chain(&walk, *i)
                ));
            }
            report.drivers.push((best.clone(), p));
        }
    }
    report.drivers.sort_by(|a, b| a.0.module.cmp(&b.0.module));
    report.drivers.dedup_by(|a, b| a.0.module == b.0.module);
    Ok(report)
}

/// Check every board of `arch` against the root tree of a base: the kernel package's device trees, its module
/// metadata, and the initramfs the tree's `/boot` holds for `kernel_version`. One line per board on success; an
/// error listing each board's missing drivers otherwise.
pub fn check(tree: &Path, arch: Arch, kernel_version: &str) -> Result<Vec<BoardReport>> {
    let boards: Vec<Board> = BOARDS.iter().filter(|b| b.arch == arch).copied().collect();
    if boards.is_empty() {
        // PCs and VMs: no device tree to check.
        return Ok(Vec::new());
    }
    let modules = Modules::load(&tree.join(format!("usr/lib/modules/{kernel_version}")))?;
    let initramfs =
        kmod::initramfs_modules(&tree.join(format!("boot/initrd.img-{kernel_version}")))?;
    let kernel = KernelImage::load(&tree.join(format!("boot/vmlinuz-{kernel_version}")))?;
    let dtbs = tree.join(format!("usr/lib/linux-image-{kernel_version}"));
    let mut reports = Vec::new();
    let mut failed = String::new();
    for board in &boards {
        let path = dtbs.join(board.dtb);
        let report = match std::fs::read(&path) {
            Ok(dtb) => check_board(*board, &dtb, &modules, &kernel, &initramfs)?,
            Err(e) => BoardReport {
                board: *board,
                drivers: Vec::new(),
                builtin_by_name: BTreeSet::new(),
                unclaimed: BTreeSet::new(),
                missing: vec![format!(
                    "its device tree {} is not in the kernel package: {e}",
                    path.display()
                )],
            },
        };
        if board.supported && !report.missing.is_empty() {
            let _ = writeln!(failed, "{} ({}):", board.name, board.dtb);
            for m in &report.missing {
                let _ = writeln!(failed, "  - {m}");
            }
        }
        reports.push(report);
    }
    if !failed.is_empty() {
        bail!(
            "these boards would not boot from this base (kernel {kernel_version}):\n{failed}\
             Add the modules to image/recipe/rootfs/etc/initramfs-tools/hooks/cluster-lab, or drop the board."
        );
    }
    Ok(reports)
}

/// One line per board: the drivers its walks need and where they are; for a board the image does not claim, why.
pub fn summary(report: &BoardReport) -> String {
    if !report.board.supported {
        return format!(
            "{}: not supported by this kernel ({})",
            report.board.name,
            if report.missing.is_empty() {
                "yet it passes: it could be claimed".to_string()
            } else {
                report.missing.join("; ")
            }
        );
    }
    let count = |p: Presence| report.drivers.iter().filter(|(_, q)| *q == p).count();
    let in_initramfs: Vec<&str> = report
        .drivers
        .iter()
        .filter(|(_, p)| *p == Presence::Initramfs)
        .map(|(d, _)| d.module.as_str())
        .collect();
    format!(
        "{}: {} drivers built in, {} in the initramfs ({}); {} compatible string(s) nothing claims",
        report.board.name,
        count(Presence::BuiltIn) + report.builtin_by_name.len(),
        in_initramfs.len(),
        in_initramfs.join(" "),
        report.unclaimed.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devicetree::tests::pi4_like;

    fn modules() -> Modules {
        Modules::from_files(
            "alias of:N*T*Cbrcm,bcm2711-emmc2 sdhci_iproc\n\
             alias of:N*T*Cregulator-fixed reg_fixed_voltage\n\
             alias of:N*T*Cregulator-gpio gpio_regulator\n\
             alias of:N*T*Craspberrypi,firmware-gpio gpio_raspberrypi_exp\n\
             alias of:N*T*Cbrcm,bcm2835-mbox bcm2835_mailbox\n\
             alias of:N*T*Craspberrypi,bcm2835-firmwareC* raspberrypi\n",
            "kernel/drivers/firmware/raspberrypi.ko\n",
            b"",
            "kernel/drivers/mmc/host/sdhci-iproc.ko.xz:\n\
             kernel/drivers/regulator/fixed.ko.xz:\n",
        )
    }

    /// A kernel image naming the built-in core drivers of the tree (interrupt controller, bus, clock, pins).
    fn kernel() -> KernelImage {
        KernelImage::from_bytes(
            b"\0arm,gic-400\0simple-bus\0fixed-clock\0brcm,bcm2711-gpio\0\x7fELF",
        )
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    const PI4: Board = board("Pi 4-like", Arch::Arm64, "test.dtb", false);

    #[test]
    fn a_supplier_module_missing_from_the_initramfs_fails_the_board_naming_the_chain() {
        // The SD host driver alone is what a list written from the controller's name would give.
        let r = check_board(
            PI4,
            &pi4_like(),
            &modules(),
            &kernel(),
            &set(&["sdhci_iproc"]),
        )
        .unwrap();
        let missing: Vec<&str> = r.missing.iter().map(String::as_str).collect();
        assert_eq!(missing.len(), 4, "{missing:#?}");
        for module in [
            "reg_fixed_voltage",
            "gpio_regulator",
            "gpio_raspberrypi_exp",
            "bcm2835_mailbox",
        ] {
            assert!(
                missing
                    .iter()
                    .any(|m| m.starts_with(&format!("module {module} "))),
                "{module} not reported: {missing:#?}"
            );
        }
        let mbox = missing
            .iter()
            .find(|m| m.contains("bcm2835_mailbox"))
            .unwrap();
        assert!(
            mbox.ends_with(
                "needed by /soc/emmc2bus/mmc@7e340000 (vmmc-supply) → /sd_vcc_reg (gpio) → /firmware/gpio (parent) \
                 → /firmware (mboxes) → /soc/mailbox@7e00b880"
            ),
            "{mbox}"
        );
        // Core code no module claims but the kernel names is built in; what nothing claims is listed, not failed.
        assert!(
            r.builtin_by_name.contains("arm,gic-400"),
            "{:?}",
            r.builtin_by_name
        );
        assert_eq!(
            r.unclaimed.iter().collect::<Vec<_>>(),
            ["raspberrypi,4-model-b"],
        );
    }

    #[test]
    fn every_supplier_in_the_initramfs_passes() {
        let all = set(&[
            "sdhci_iproc",
            "reg_fixed_voltage",
            "gpio_regulator",
            "gpio_raspberrypi_exp",
            "bcm2835_mailbox",
        ]);
        let r = check_board(PI4, &pi4_like(), &modules(), &kernel(), &all).unwrap();
        assert!(r.missing.is_empty(), "{:#?}", r.missing);
        let firmware = r
            .drivers
            .iter()
            .find(|(d, _)| d.module == "raspberrypi")
            .unwrap();
        assert_eq!(firmware.1, Presence::BuiltIn);
        let line = summary(&r);
        assert!(
            line.starts_with("Pi 4-like: 5 drivers built in, 5 in the initramfs ("),
            "{line}"
        );
    }

    #[test]
    fn a_controller_no_driver_claims_fails_the_board() {
        let none = Modules::from_files("", "", b"", "");
        let r = check_board(PI4, &pi4_like(), &none, &kernel(), &BTreeSet::new()).unwrap();
        assert!(
            r.missing.iter().any(
                |m| m.starts_with("/soc/emmc2bus/mmc@7e340000 (brcm,bcm2711-emmc2): no driver")
            ),
            "{:#?}",
            r.missing
        );
    }

    #[test]
    fn a_board_with_a_wired_port_needs_its_nic_in_the_tree() {
        let with_nic = Board {
            wired_nic: true,
            ..PI4
        };
        let r = check_board(
            with_nic,
            &pi4_like(),
            &modules(),
            &kernel(),
            &BTreeSet::new(),
        )
        .unwrap();
        assert!(
            r.missing
                .iter()
                .any(|m| m.contains("no enabled wired Ethernet")),
            "{:#?}",
            r.missing
        );
    }
}
