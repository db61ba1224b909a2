//! The target architectures cluster-lab builds for, and their names in each toolchain: Debian, Rust, HashiCorp,
//! ELF and Docker. The one map of architecture names; everything else asks it.

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Arch {
    /// 32-bit Raspberry Pi 2 and 3 (ARMv7 hard-float; the agent links against glibc).
    Armhf,
    /// 64-bit Raspberry Pi 3, 4, 400, CM4, Zero 2 W and other aarch64 boards (the agent is static, musl).
    Arm64,
    /// PCs and QEMU (the agent is static, musl).
    Amd64,
}

impl Arch {
    /// Debian's architecture name (`dpkg --print-architecture`).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::Armhf => "armhf",
            Arch::Arm64 => "arm64",
            Arch::Amd64 => "amd64",
        }
    }

    /// The Rust target triple the agent is built for.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::Armhf => "armv7-unknown-linux-gnueabihf",
            Arch::Arm64 => "aarch64-unknown-linux-musl",
            Arch::Amd64 => "x86_64-unknown-linux-musl",
        }
    }

    /// The binfmt_misc entry that runs this architecture's binaries on an amd64 host, if one is needed.
    pub fn qemu_binfmt(self) -> Option<&'static str> {
        match self {
            Arch::Armhf => Some("qemu-arm"),
            Arch::Arm64 => Some("qemu-aarch64"),
            Arch::Amd64 => None,
        }
    }

    /// HashiCorp's name for the architecture in release archive names.
    pub fn hashicorp(self) -> &'static str {
        match self {
            Arch::Armhf => "arm",
            Arch::Arm64 => "arm64",
            Arch::Amd64 => "amd64",
        }
    }

    /// The ELF `e_machine` of this architecture's binaries.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::Armhf => crate::elf::EM_ARM,
            Arch::Arm64 => crate::elf::EM_AARCH64,
            Arch::Amd64 => crate::elf::EM_X86_64,
        }
    }

    /// The architecture whose binaries have ELF `e_machine` `machine`.
    pub fn from_elf_machine(machine: u16) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.elf_machine() == machine)
    }

    /// The architecture Debian calls `name`.
    pub fn from_debian(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.debian() == name)
    }

    /// Docker's (Go's) platform of this architecture's images: 32-bit ARM is v7, Debian's armhf baseline.
    pub fn docker_platform(self) -> crate::container::Platform {
        let (architecture, variant) = match self {
            Arch::Armhf => ("arm", Some("v7")),
            Arch::Arm64 => ("arm64", None),
            Arch::Amd64 => ("amd64", None),
        };
        crate::container::Platform {
            architecture,
            variant,
        }
    }

    pub const ALL: [Arch; 3] = [Arch::Armhf, Arch::Arm64, Arch::Amd64];
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.debian())
    }
}
