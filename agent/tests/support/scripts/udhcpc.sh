#!/bin/sh
# udhcpc event script of the root-tier lab: records each event in ./events and applies the lease to the
# interface (nothing else: no routes, no resolv.conf).
dir=$(dirname "$0")
echo "$1 ${ip:-}" >> "$dir/events"
case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	;;
bound)
	ip -4 addr flush dev "$interface"
	ip addr add "$ip/$mask" dev "$interface"
	;;
renew)
	ip addr replace "$ip/$mask" dev "$interface"
	;;
esac
exit 0
