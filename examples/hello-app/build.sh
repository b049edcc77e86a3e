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

cp "$program" "$root/usr/bin/hello-mvm"
chmod 0755 "$root/usr/bin/hello-mvm"
printf 'greeting="%s"\nvariant="%s"\n' "$greeting" "$variant" >"$root/etc/hello.conf"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
printf 'mvm-hello\n' >"$root/etc/hostname"
printf 'mvm-example hello-app %s\n' "$variant" >"$root/etc/mvm-example"
