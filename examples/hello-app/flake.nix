{
  description = "mvm example: a busybox root filesystem with a small program and its config";

  outputs = { self }:
    let
      app = { variant, greeting }: derivation {
        name = "mvm-hello-app-${variant}";
        system = "x86_64-linux";
        # "${self}/busybox" keeps the file name busybox needs to dispatch on argv[0]
        builder = "${self}/busybox";
        args = [ "sh" ./build.sh ];
        busybox = "${self}/busybox";
        program = ./hello-mvm;
        inherit variant greeting;
      };
    in {
      packages.x86_64-linux = {
        default = app { variant = "default"; greeting = "Hello from mvm"; };
        alt = app { variant = "alt"; greeting = "Greetings from the alt profile"; };
      };
    };
}
