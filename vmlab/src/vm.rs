//! One virtual machine: a QEMU process (TCG) inside the cluster's network namespace, booting the image
//! directly from the kernel and initrd of its boot partition, its NIC on a tap of the virtual switch,
//! its serial console in a log file and a QMP socket for power control. A VM is QEMU's `virt` (arm64) or `q35`
//! (amd64) machine with virtio devices, or — for the arm64 image — a Raspberry Pi 3B (`raspi3b`): the Pi's own
//! device tree from the card, the card on the Pi's SD controller, and a USB network adapter.
//!
//! Every VM starts paused (`-S`): "power on" is a QMP `cont`, so the time it is taken is exact and
//! several VMs can be powered on at the same instant.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::host;
use crate::serial::strip_ansi;
use cluster_lab_image::arch::Arch;

/// What QEMU needs to boot one VM.
#[derive(Debug, Clone)]
pub struct Spec {
    pub arch: Arch,
    pub hostname: String,
    pub mac: String,
    pub tap: String,
    pub disk: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub memory_mib: u32,
    pub cpus: u32,
    pub board: Board,
    pub files: Files,
}

/// Which machine QEMU emulates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Board {
    /// `virt` (arm) or `q35` (amd64), with virtio disk, NIC and entropy.
    Virtual,
    /// A Raspberry Pi 3B: 1 GiB and four Cortex-A53 cores (fixed by the machine), the device tree the firmware
    /// would load (from the card), the card on the SoC's SD host controller, and QEMU's `usb-net` on the Pi's
    /// USB as its NIC.
    Raspi3b { dtb: PathBuf },
}

/// The device tree a Pi 3B's firmware loads from the card.
pub const RASPI3B_DTB: &str = "bcm2837-rpi-3-b.dtb";

/// What a Pi 3B in QEMU adds to the image's kernel command line. QEMU's `usb-net` has the USB IDs of Linux's
/// Ethernet gadget, which `cdc_subset` claims first and runs with a random MAC address under the name `usb0`;
/// without it, `cdc_ether` drives the adapter as `eth0` with the address QEMU gives it (see
/// [`raspi3b_wire_mac`]). A real Pi 3B's NIC (`smsc95xx`) is `eth0` with the MAC the firmware sets.
pub const RASPI3B_CMDLINE: &str = "modprobe.blacklist=cdc_subset";

/// The command line a Pi 3B VM boots with: the card's own `cmdline.txt` as the firmware would pass it, consoles
/// included (the image names `ttyS1`, the Pi 3B's header UART, which the serial log records), plus
/// [`RASPI3B_CMDLINE`].
pub fn raspi3b_cmdline(image_cmdline: &str) -> String {
    format!("{} {RASPI3B_CMDLINE}", image_cmdline.trim())
}

/// The MAC address a Pi 3B VM's NIC has on the wire: QEMU's `usb-net` announces its configured address with
/// the first byte replaced by 0x40 (`dev-network.c`), and the guest takes that one.
pub fn raspi3b_wire_mac(mac: &str) -> String {
    match mac.split_once(':') {
        Some((_, rest)) => format!("40:{rest}"),
        None => mac.to_string(),
    }
}

/// The QEMU id of every VM's NIC backend (`-netdev tap,id=lan`): what `set_link` takes to pull its cable.
pub const NETDEV: &str = "lan";

/// Pull (`up = false`) or plug in a VM's network cable: the link goes down on both sides, as a cable pulled from the
/// switch port; the guest sees its carrier go.
pub fn set_link(files: &Files, up: bool) -> Result<()> {
    let mut q = Qmp::connect(&files.qmp)?;
    q.execute_with("set_link", serde_json::json!({ "name": NETDEV, "up": up }))?;
    Ok(())
}

/// A VM's files in the cluster's state directory.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Files {
    pub dir: PathBuf,
    pub serial: PathBuf,
    pub qmp: PathBuf,
    pub pid: PathBuf,
    pub qemu_log: PathBuf,
}

impl Files {
    pub fn new(dir: &Path) -> Files {
        Files {
            dir: dir.to_path_buf(),
            serial: dir.join("serial.log"),
            qmp: dir.join("qmp.sock"),
            pid: dir.join("qemu.pid"),
            qemu_log: dir.join("qemu.log"),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.pid)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}

/// The QEMU binary for an architecture and the Debian package that has it.
pub fn qemu_tool(arch: Arch) -> Result<cluster_lab_image::host_tools::Tool> {
    Ok(match arch {
        Arch::Amd64 => cluster_lab_image::host_tools::QEMU_SYSTEM_X86,
        Arch::Arm64 => cluster_lab_image::host_tools::Tool {
            program: "qemu-system-aarch64",
            package: "qemu-system-arm",
            backports: true,
        },
        Arch::Armhf => bail!(
            "the virtual cluster runs amd64 and arm64 images; armhf (32-bit Pi) has no QEMU machine that boots its kernel"
        ),
    })
}

/// The kernel console of the emulated machine's first serial port.
pub fn serial_console(arch: Arch) -> &'static str {
    match arch {
        Arch::Arm64 | Arch::Armhf => "ttyAMA0",
        Arch::Amd64 => "ttyS0",
    }
}

/// The image's kernel command line made to fit the emulated machine: its `console=` entries (a Pi's
/// `serial0`/`tty1`, a PC's `tty0`) replaced by the machine's serial port, which the log file records.
pub fn kernel_cmdline(image_cmdline: &str, arch: Arch) -> String {
    let mut parts: Vec<String> = image_cmdline
        .split_whitespace()
        .filter(|w| !w.starts_with("console="))
        .map(str::to_string)
        .collect();
    parts.push(format!("console={},115200", serial_console(arch)));
    parts.join(" ")
}

/// QEMU's arguments for a spec (without the program).
pub fn qemu_args(spec: &Spec) -> Vec<String> {
    let f = &spec.files;
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&["-name", &spec.hostname]);
    match (&spec.board, spec.arch) {
        (Board::Raspi3b { .. }, _) => push(&["-machine", "raspi3b"]),
        (Board::Virtual, Arch::Arm64 | Arch::Armhf) => {
            push(&["-machine", "virt", "-cpu", "cortex-a72"])
        }
        (Board::Virtual, Arch::Amd64) => push(&["-machine", "q35"]),
    }
    let (memory, cpus) = match spec.board {
        // The machine has exactly this: QEMU refuses anything else.
        Board::Raspi3b { .. } => (1024, 4),
        Board::Virtual => (spec.memory_mib, spec.cpus),
    };
    push(&[
        "-accel",
        "tcg,thread=multi",
        "-m",
        &memory.to_string(),
        "-smp",
        &cpus.to_string(),
        "-nodefaults",
        "-display",
        "none",
        "-S",
    ]);
    push(&[
        "-kernel",
        &path(&spec.kernel),
        "-initrd",
        &path(&spec.initrd),
    ]);
    let netdev = format!(
        "tap,id={NETDEV},ifname={},script=no,downscript=no",
        spec.tap
    );
    match &spec.board {
        Board::Virtual => {
            push(&["-append", &spec.cmdline]);
            push(&[
                "-drive",
                &format!(
                    "file={},format=raw,if=virtio,cache=unsafe",
                    path(&spec.disk)
                ),
            ]);
            push(&[
                "-netdev",
                &netdev,
                "-device",
                &format!("virtio-net-pci,netdev={NETDEV},mac={}", spec.mac),
            ]);
            // Entropy from the host: sshd host keys, Consul and Docker do not wait for the guest's pool.
            push(&[
                "-object",
                "rng-random,id=rng,filename=/dev/urandom",
                "-device",
                "virtio-rng-pci,rng=rng",
            ]);
        }
        Board::Raspi3b { dtb } => {
            push(&["-dtb", &path(dtb)]);
            push(&["-append", &spec.cmdline]);
            push(&[
                "-drive",
                &format!("file={},format=raw,if=sd,cache=unsafe", path(&spec.disk)),
            ]);
            push(&[
                "-netdev",
                &netdev,
                "-device",
                &format!("usb-net,netdev={NETDEV},mac={}", spec.mac),
            ]);
        }
    }
    // A Pi 3B's header UART is the mini UART, QEMU's second serial port (the first, the PL011, drives Bluetooth on
    // a real Pi 3B): the log records the console the image itself names there (`ttyS1`).
    if matches!(spec.board, Board::Raspi3b { .. }) {
        push(&["-serial", "null"]);
    }
    push(&["-serial", &format!("file:{}", path(&f.serial))]);
    push(&["-qmp", &format!("unix:{},server=on,wait=off", path(&f.qmp))]);
    push(&["-D", &path(&f.qemu_log)]);
    push(&["-daemonize", "-pidfile", &path(&f.pid)]);
    a
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Remove the console logs a machine of an earlier cluster of the same name left (`serial.log`, `serial.log.N`), so
/// that a new cluster's machines start with their own.
pub fn clear_serial_logs(files: &Files) {
    std::fs::remove_file(&files.serial).ok();
    for n in 1.. {
        let p = PathBuf::from(format!("{}.{n}", files.serial.display()));
        if std::fs::remove_file(&p).is_err() {
            break;
        }
    }
}

/// Start QEMU (paused) inside the namespace; returns its pid once it has daemonized. The serial log of an earlier
/// boot of the same machine is kept as `serial.log.1`, `.2`, … (oldest first).
pub fn launch(netns: &str, spec: &Spec) -> Result<u32> {
    let tool = qemu_tool(spec.arch)?;
    std::fs::create_dir_all(&spec.files.dir)?;
    if std::fs::metadata(&spec.files.serial).is_ok_and(|m| m.len() > 0) {
        let kept = (1..)
            .map(|n| PathBuf::from(format!("{}.{n}", spec.files.serial.display())))
            .find(|p| !p.exists())
            .expect("a free name");
        std::fs::rename(&spec.files.serial, &kept)
            .with_context(|| format!("keeping {}", spec.files.serial.display()))?;
    }
    for p in [&spec.files.serial, &spec.files.qmp, &spec.files.pid] {
        std::fs::remove_file(p).ok();
    }
    let args = qemu_args(spec);
    host::run(&mut host::in_netns(netns, tool.program, &args))
        .with_context(|| format!("starting the VM {}", spec.hostname))?;
    spec.files.pid().with_context(|| {
        format!(
            "QEMU for {} daemonized but left no pid file {}",
            spec.hostname,
            spec.files.pid.display()
        )
    })
}

/// A QMP connection (JSON lines over the VM's unix socket), past capability negotiation.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    what: String,
}

impl Qmp {
    pub fn connect(socket: &Path) -> Result<Qmp> {
        let what = socket.display().to_string();
        let mut last = None;
        let mut stream = None;
        for _ in 0..50 {
            match UnixStream::connect(socket) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let stream = match stream {
            Some(s) => s,
            None => bail!(
                "connecting to QMP socket {what}: {}",
                last.map(|e| e.to_string()).unwrap_or_default()
            ),
        };
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            what,
        };
        let greeting = qmp.read()?;
        if greeting.get("QMP").is_none() {
            bail!("{}: not a QMP greeting: {greeting}", qmp.what);
        }
        qmp.execute("qmp_capabilities")?;
        Ok(qmp)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .with_context(|| format!("reading from QMP socket {}", self.what))?;
        if n == 0 {
            bail!("QMP socket {} closed", self.what);
        }
        serde_json::from_str(&line).with_context(|| format!("QMP sent non-JSON: {line}"))
    }

    /// Run a QMP command and return its `return` value (events in between are skipped).
    pub fn execute(&mut self, command: &str) -> Result<Value> {
        self.exchange(command, serde_json::json!({ "execute": command }))
    }

    /// Run `command` with `arguments` and return its `return` value.
    pub fn execute_with(&mut self, command: &str, arguments: Value) -> Result<Value> {
        self.exchange(
            command,
            serde_json::json!({ "execute": command, "arguments": arguments }),
        )
    }

    fn exchange(&mut self, command: &str, message: Value) -> Result<Value> {
        writeln!(self.writer, "{message}")
            .with_context(|| format!("writing to QMP socket {}", self.what))?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                bail!("QMP {command} on {}: {e}", self.what);
            }
        }
    }

    /// Send a command whose answer may never come because QEMU exits (`quit`).
    pub fn send(&mut self, command: &str) -> Result<()> {
        writeln!(self.writer, "{}", serde_json::json!({ "execute": command }))
            .with_context(|| format!("writing to QMP socket {}", self.what))
    }
}

/// Power on several paused VMs at the same instant: connect to every QMP socket first, then send
/// `cont` to all of them back to back. Returns the wall-clock instant of the power-on.
pub fn power_on(sockets: &[&Path]) -> Result<(Instant, SystemTime)> {
    let mut conns = sockets
        .iter()
        .map(|s| Qmp::connect(s))
        .collect::<Result<Vec<_>>>()?;
    let at = (Instant::now(), SystemTime::now());
    for c in conns.iter_mut() {
        c.send("cont")?;
    }
    for c in conns.iter_mut() {
        loop {
            let v = c.read()?;
            if v.get("return").is_some() {
                break;
            }
            if let Some(e) = v.get("error") {
                bail!("QMP cont on {}: {e}", c.what);
            }
        }
    }
    Ok(at)
}

/// Stop a VM: QMP `quit`, then signals if QEMU lingers. `Ok(())` when it is gone (or was not running).
pub fn power_off(files: &Files) -> Result<()> {
    let Some(pid) = files.pid() else {
        return Ok(());
    };
    if !host::alive(pid) {
        return Ok(());
    }
    if let Ok(mut q) = Qmp::connect_quick(&files.qmp) {
        q.send("quit").ok();
        for _ in 0..50 {
            if !host::alive(pid) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    host::stop(pid, Duration::from_secs(5))
}

impl Qmp {
    /// One connection attempt (for teardown, where the VM may already be gone).
    fn connect_quick(socket: &Path) -> Result<Qmp> {
        if !socket.exists() {
            bail!("no QMP socket {}", socket.display());
        }
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            what: socket.display().to_string(),
        };
        qmp.read()?;
        qmp.execute("qmp_capabilities")?;
        Ok(qmp)
    }
}

/// The serial console log, read as text with terminal colours removed.
pub fn serial_text(files: &Files) -> String {
    let bytes = std::fs::read(&files.serial).unwrap_or_default();
    strip_ansi(&String::from_utf8_lossy(&bytes))
}

/// The last `n` lines of the serial console, for error messages.
pub fn serial_tail(files: &Files, n: usize) -> String {
    cluster_lab_image::host_tools::tail(&serial_text(files), n)
}

/// Offset-tracking reader of the serial log: finds a pattern in what was written since the last look.
#[derive(Debug, Default)]
pub struct SerialWatch {
    offset: usize,
}

impl SerialWatch {
    /// Start watching from the current end of the log (to see only what comes next, e.g. after a reboot).
    pub fn from_end(files: &Files) -> SerialWatch {
        SerialWatch {
            offset: std::fs::metadata(&files.serial)
                .map(|m| m.len() as usize)
                .unwrap_or(0),
        }
    }

    /// The first line containing `needle` written since this watch began, if any.
    pub fn find(&self, files: &Files, needle: &str) -> Option<String> {
        self.find_by(files, |l| l.contains(needle))
    }

    /// The first line written since this watch began that `pred` accepts, if any.
    pub fn find_by(&self, files: &Files, pred: impl Fn(&str) -> bool) -> Option<String> {
        let bytes = std::fs::read(&files.serial).ok()?;
        let new = bytes.get(self.offset.min(bytes.len())..)?;
        let text = strip_ansi(&String::from_utf8_lossy(new));
        text.lines().find(|l| pred(l)).map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(arch: Arch) -> Spec {
        Spec {
            arch,
            hostname: "node1".into(),
            mac: "52:54:00:c1:00:11".into(),
            tap: "tap1".into(),
            disk: "/s/node1/disk.img".into(),
            kernel: "/s/boot/vmlinuz".into(),
            initrd: "/s/boot/initrd.img".into(),
            cmdline: "root=LABEL=clroot console=ttyS0,115200".into(),
            memory_mib: 1024,
            cpus: 1,
            board: Board::Virtual,
            files: Files::new(Path::new("/s/node1")),
        }
    }

    #[test]
    fn cmdline_gets_the_machines_serial_console() {
        let pc =
            "root=LABEL=clroot rootfstype=ext4 ro console=tty0 console=ttyS0,115200 net.ifnames=0";
        assert_eq!(
            kernel_cmdline(pc, Arch::Amd64),
            "root=LABEL=clroot rootfstype=ext4 ro net.ifnames=0 console=ttyS0,115200"
        );
        let pi = "console=serial0,115200 console=tty1 root=LABEL=clroot rootwait";
        assert_eq!(
            kernel_cmdline(pi, Arch::Arm64),
            "root=LABEL=clroot rootwait console=ttyAMA0,115200"
        );
    }

    #[test]
    fn qemu_boots_paused_on_the_tap_with_a_fixed_mac() {
        let a = qemu_args(&spec(Arch::Amd64)).join(" ");
        for want in [
            "-accel tcg,thread=multi",
            "-S",
            "-kernel /s/boot/vmlinuz -initrd /s/boot/initrd.img",
            "-netdev tap,id=lan,ifname=tap1,script=no,downscript=no",
            "-device virtio-net-pci,netdev=lan,mac=52:54:00:c1:00:11",
            "-serial file:/s/node1/serial.log",
            "-qmp unix:/s/node1/qmp.sock,server=on,wait=off",
            "-daemonize -pidfile /s/node1/qemu.pid",
        ] {
            assert!(a.contains(want), "missing {want:?} in {a}");
        }
        let arm = qemu_args(&spec(Arch::Arm64)).join(" ");
        assert!(arm.contains("-machine virt -cpu cortex-a72"), "{arm}");
    }

    #[test]
    fn a_raspberry_pi_3b_boots_its_card_on_the_sd_controller_with_usb_networking() {
        let pi = Spec {
            board: Board::Raspi3b {
                dtb: "/s/boot/bcm2837-rpi-3-b.dtb".into(),
            },
            mac: "40:54:00:c1:00:11".into(),
            cmdline: raspi3b_cmdline("console=tty0 console=ttyS1,115200 root=LABEL=clroot"),
            memory_mib: 2048,
            ..spec(Arch::Arm64)
        };
        let a = qemu_args(&pi).join(" ");
        for want in [
            "-machine raspi3b -accel tcg,thread=multi -m 1024 -smp 4 ",
            "-dtb /s/boot/bcm2837-rpi-3-b.dtb",
            "-append console=tty0 console=ttyS1,115200 root=LABEL=clroot modprobe.blacklist=cdc_subset",
            "-drive file=/s/node1/disk.img,format=raw,if=sd,cache=unsafe",
            "-device usb-net,netdev=lan,mac=40:54:00:c1:00:11",
            "-serial null -serial file:/s/node1/serial.log",
        ] {
            assert!(a.contains(want), "missing {want:?} in {a}");
        }
        assert!(!a.contains("virtio"), "{a}");
        assert_eq!(raspi3b_wire_mac("52:54:00:c1:00:11"), "40:54:00:c1:00:11");
    }

    #[test]
    fn armhf_is_refused_with_a_reason() {
        let e = qemu_tool(Arch::Armhf).unwrap_err().to_string();
        assert!(e.contains("amd64 and arm64"), "{e}");
    }

    #[test]
    fn serial_watch_sees_only_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(dir.path());
        std::fs::write(&files.serial, "old login: x\n").unwrap();
        let w = SerialWatch::from_end(&files);
        assert_eq!(w.find(&files, "login:"), None);
        std::fs::write(&files.serial, "old login: x\n\u{1b}[0;1mnode1 login: \r\n").unwrap();
        assert_eq!(w.find(&files, "login:").as_deref(), Some("node1 login: "));
    }
}
