{
  description = "mvm example: a busybox root filesystem (no inputs, builds offline)";

  outputs = { self }: {
    packages.x86_64-linux.default = derivation {
      name = "mvm-busybox-rootfs";
      system = "x86_64-linux";
      # a static busybox from the flake's own tree is the only tool the build needs;
      # "${self}/busybox": busybox picks the applet from argv[0], so the file name must stay
      # "busybox" (a lone ./busybox would become /nix/store/<hash>-busybox)
      builder = "${self}/busybox";
      args = [ "sh" ./build.sh ];
      busybox = "${self}/busybox";
      marker = "mvm-example busybox-rootfs";
    };
  };
}
