# Runs under the flake's busybox: "$busybox sh build.sh". Produces $out/rootfs/.
set -eu
tools="$TMPDIR/tools"
"$busybox" mkdir -p "$tools"
"$busybox" --install -s "$tools"
export PATH="$tools"

root="$out/rootfs"
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" \
    "$root/proc" "$root/sys" "$root/dev" "$root/run" "$root/var" "$root/tmp" "$root/root"
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
for applet in $("$busybox" --list-full); do
    case "$applet" in bin/busybox) continue ;; esac
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done

printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
printf 'mvm-busybox\n' >"$root/etc/hostname"
printf '%s\n' "$marker" >"$root/etc/mvm-example"
