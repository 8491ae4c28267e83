{
  description = "convoy: an event-sourced upgrade pipeline for a fleet of NixOS hosts";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      # The git revision, -dirty when the tree has uncommitted changes;
      # `convoy version` prints it.
      version = self.shortRev or self.dirtyShortRev or "dev";
      # go.mod asks for a newer Go than nixpkgs' default may be; take the
      # matching builder when nixpkgs has it (buildGoModule sets
      # GOTOOLCHAIN=local, so an older Go fails instead of downloading).
      convoyFor =
        pkgs:
        pkgs.callPackage ./nix/package.nix {
          inherit version;
          buildGoModule = pkgs.buildGo126Module or pkgs.buildGoModule;
        };
    in
    {
      packages = forAllSystems (pkgs: {
        default = convoyFor pkgs;
        convoy = convoyFor pkgs;
      });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
      });

      overlays.default = final: _prev: { convoy = convoyFor final; };

      # services.convoy.{worker,server}; the package defaults to this
      # flake's build for the host's platform.
      nixosModules.default =
        { pkgs, lib, ... }:
        {
          imports = [ ./nix/module.nix ];
          services.convoy.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };

      checks = forAllSystems (pkgs: {
        package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        # The module test of .ci/nix-checks, with this flake's nixpkgs.
        module = pkgs.runCommand "convoy-module-test" {
          # Throws, naming the failed checks, when the module is wrong.
          result = (import ./nix/tests/module-eval.nix { inherit lib; }).result;
        } "echo \"$result\" > $out";
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}
