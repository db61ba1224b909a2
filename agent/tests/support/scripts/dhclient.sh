#!/bin/sh
# dhclient-script of the root-tier lab: records each event in ./events and applies the lease to the
# interface (nothing else: no routes, no resolv.conf).
dir=$(dirname "$0")
echo "$reason ${new_ip_address:-} ${old_ip_address:-}" >> "$dir/events"
case "$reason" in
PREINIT)
	ip link set dev "$interface" up
	;;
BOUND|RENEW|REBIND|REBOOT)
	if [ -n "$old_ip_address" ] && [ "$old_ip_address" != "$new_ip_address" ]; then
		ip -4 addr flush dev "$interface"
	fi
	ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface"
	;;
EXPIRE|FAIL|RELEASE|STOP)
	ip -4 addr flush dev "$interface"
	;;
esac
exit 0
