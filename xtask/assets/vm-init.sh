#!/bin/busybox sh
# /init of the kernel matrix's initramfs (cargo xtask vm): mount what the tracer needs, run
# /workload.sh, print VGPU-VM-DONE and power off. Output goes to the serial console, which the
# host captures; results are `VGPU-VM key=value` lines.
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp /run
# Links for busybox's applets (sh, mount, grep, ...); none replaces a file the image holds.
/bin/busybox --install -s
export PATH=/kit:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root TERM=dumb
mkdir -p /root

mnt() { # TYPE DIR
    mkdir -p "$2"
    mount -t "$1" "$1" "$2" || echo "VGPU-VM mount_$1=failed"
}
mnt proc /proc
mnt sysfs /sys
mnt devtmpfs /dev
mnt tmpfs /tmp
mnt tmpfs /run
mnt bpf /sys/fs/bpf
mnt tracefs /sys/kernel/tracing
mnt debugfs /sys/kernel/debug
# The lab's Ollama talks to its runners over loopback.
ip link set lo up || echo "VGPU-VM loopback=failed"
read -r up _ < /proc/uptime
echo "VGPU-VM boot_s=$up"

cd /tmp
sh /workload.sh
echo "VGPU-VM workload_exit=$?"
read -r up _ < /proc/uptime
echo "VGPU-VM uptime_s=$up"
echo VGPU-VM-DONE
poweroff -f
