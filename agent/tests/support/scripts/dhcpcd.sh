#!/bin/sh
# dhcpcd hook script of the root-tier lab: only records each event in ./events (dhcpcd applies the
# address itself; routes and resolv.conf hooks are not run).
dir=$(dirname "$0")
echo "$reason ${new_ip_address:-}" >> "$dir/events"
exit 0
