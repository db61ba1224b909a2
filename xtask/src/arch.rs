//! The target architectures cluster-lab builds for, and their names in each toolchain.

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Arch {
    /// 32-bit Raspberry Pi 2/3/4 (ARMv7 hard-float; the agent links against glibc).
    Armhf,
    /// 64-bit Raspberry Pi 3/4/5 and other aarch64 boards (the agent is static, musl).
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
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.debian())
    }
}
