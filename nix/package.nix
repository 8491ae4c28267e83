# The convoy binary. The flake calls this with its git revision as
# version; `convoy version` and convoy_build_info print it.
{
  lib,
  buildGoModule,
  version ? "dev",
}:

buildGoModule {
  pname = "convoy";
  inherit version;

  # Everything but docs and Nix files, so that editing them does not
  # rebuild; files next to the Go code (go:embed assets) stay in.
  src = lib.cleanSourceWith {
    name = "convoy-source";
    src = lib.cleanSource ../.;
    filter =
      path: type:
      let
        base = baseNameOf path;
      in
      !(
        lib.hasSuffix ".md" base
        || lib.hasSuffix ".nix" base
        || base == "flake.lock"
        || (type == "directory" && lib.elem base [ ".ci" "docs" "nix" ])
      );
  };

  # The hash of `go mod vendor`. CI compares it with go.mod and go.sum
  # (.ci/nix-checks); after a dependency change run
  #   .ci/nix-checks vendor-hash --update
  vendorHash = "sha256-98yeQIbyB0ly2v3CaUkzP6QTYUItRs5GuQx900fjiAI=";

  subPackages = [ "cmd/convoy" ];
  env.CGO_ENABLED = 0;
  # allowGoReference = false (the default) is what makes buildGoModule
  # pass -trimpath: no build directory or GOROOT path ends up in the binary.
  allowGoReference = false;
  ldflags = [
    "-s"
    "-w"
    "-X main.version=${version}"
  ];

  # The tests need a bus, real Nix, sudo and a network of processes;
  # they run in CI (.ci/run), not in the sandbox.
  doCheck = false;

  meta = {
    description = "Event-sourced upgrade pipeline for a fleet of NixOS hosts, over NATS JetStream";
    homepage = "https://github.com/convoy-fleet/convoy";
    license = lib.licenses.mit;
    mainProgram = "convoy";
    platforms = lib.platforms.linux;
  };
}
