//! This machine's own state, as files and services: the boot partition, files written onto the target (one
//! idempotent, atomic install), the firewall, hostname, login, networkd files, systemd, and the first-boot stamp.

pub mod atomic;
pub mod boot_partition;
pub mod clock;
pub mod firewall;
pub mod hostname;
pub mod login;
pub mod login_user;
pub mod networkd;
pub mod ntp;
pub mod render;
pub mod stamp;
pub mod systemd;
pub mod timezone;
pub mod user_data;
