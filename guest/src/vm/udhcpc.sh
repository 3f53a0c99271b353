#!/bin/sh
# busybox udhcpc's event script for the VM NIC (written by vmctl-guest).
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    if [ -n "$router" ]; then
        ip route replace default via "${router%% *}" dev "$interface"
    fi
    if [ -n "$dns" ]; then
        : > /etc/resolv.conf.tmp
        [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf.tmp
        for server in $dns; do echo "nameserver $server" >> /etc/resolv.conf.tmp; done
        mv /etc/resolv.conf.tmp /etc/resolv.conf
    fi
    echo "vmctl-guest: dhcp $1 $ip/${mask:-24} via ${router:-none}" > /dev/console
    ;;
esac
exit 0
