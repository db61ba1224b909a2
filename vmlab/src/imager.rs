//! A card personalised the way Raspberry Pi Imager 2.x does it (`init_format: cloudinit`): `user-data` and
//! `meta-data` on the boot partition, in the shape Imager 2.0.11's generator writes them, and nothing in
//! cluster-lab.toml. (Imager also appends `ds=nocloud;i=<instance-id>` to cmdline.txt; cluster-lab ignores it, and the
//! virtual cluster boots every machine with the image's own command line.)

/// The login user an Imager-flashed machine of the virtual cluster gets.
pub const USER: &str = "pi";
/// The timezone it gets.
pub const TIMEZONE: &str = "Europe/Berlin";

/// `user-data` as Imager 2.0.11 writes it for `hostname`, user [`USER`] with the public key `ssh_pub` (SSH by key,
/// no password), timezone [`TIMEZONE`], keyboard `de`.
pub fn user_data(hostname: &str, ssh_pub: &str) -> String {
    format!(
        "#cloud-config\n\
         manage_resolv_conf: false\n\
         \n\
         hostname: {hostname}\n\
         manage_etc_hosts: true\n\
         packages:\n\
         - avahi-daemon\n\
         apt:\n  preserve_sources_list: true\n  conf: |\n    Acquire {{\n      Check-Date \"false\";\n    }};\n\
         timezone: {TIMEZONE}\n\
         keyboard:\n  model: pc105\n  layout: \"de\"\n\
         user:\n  name: {USER}\n  shell: /bin/bash\n  lock_passwd: true\n  ssh_authorized_keys:\n    - \"{}\"\n  sudo: null\n\
         ssh_pwauth: false\n\
         runcmd:\n  - [ systemctl, enable, --now, ssh ]\n",
        ssh_pub.trim()
    )
}

/// `meta-data`: Imager's instance id (milliseconds since the epoch at writing).
pub fn meta_data(now_ms: u64) -> String {
    format!("instance-id: rpi-imager-{now_ms}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_data_has_imagers_shape() {
        let text = user_data("node2", "ssh-ed25519 AAAAC3Nza test@lab\n");
        assert!(text.starts_with("#cloud-config\nmanage_resolv_conf: false\n\nhostname: node2\n"));
        assert!(text.contains("\nuser:\n  name: pi\n  shell: /bin/bash\n  lock_passwd: true\n"));
        assert!(text.contains("    - \"ssh-ed25519 AAAAC3Nza test@lab\"\n  sudo: null\n"));
        assert!(text.contains("\ntimezone: Europe/Berlin\n"));
        assert_eq!(meta_data(5), "instance-id: rpi-imager-5\n");
    }
}
