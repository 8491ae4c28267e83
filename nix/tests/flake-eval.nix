# Evaluates flake.nix's outputs with a stub nixpkgs around a real nixpkgs
# lib: the version comes from the revision, the binary is stamped with it,
# and the outputs have their expected shape. .ci/nix-checks module runs it.
{ lib }:

let
  flake = import ../../flake.nix;
  pkgsFor = system: rec {
    inherit lib;
    stdenv.hostPlatform.system = system;
    buildGoModule =
      a:
      a
      // {
        type = "derivation";
        name = "convoy-${a.version}";
        outPath = "/nix/store/00000000000000000000000000000000-convoy-${a.version}";
      };
    callPackage = f: args: import f ({ inherit lib buildGoModule; } // args);
    runCommand = name: env: script: { inherit name env script; };
    nixfmt-rfc-style = null;
  };
  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] pkgsFor;
  };
  outputs = self: flake.outputs { inherit self nixpkgs; };
  clean = outputs (clean // { shortRev = "2f609fd"; });
  dirty = outputs (dirty // { dirtyShortRev = "2f609fd-dirty"; });
  pkg = clean.packages.x86_64-linux.default;

  checks = {
    versionIsTheRevision = pkg.version == "2f609fd";
    versionStamped = lib.elem "-X main.version=2f609fd" pkg.ldflags;
    dirtyTreeSaysSo = dirty.packages.x86_64-linux.default.version == "2f609fd-dirty";
    onlyTheCommand = pkg.subPackages == [ "cmd/convoy" ];
    trimpath = pkg.allowGoReference == false;
    app = clean.apps.aarch64-linux.default.program == "${clean.packages.aarch64-linux.default}/bin/convoy";
    overlay = (clean.overlays.default (pkgsFor "x86_64-linux") { }).convoy.version == "2f609fd";
    moduleCheck = lib.hasSuffix "checks passed" clean.checks.x86_64-linux.module.env.result;
    nixosModule = lib.isFunction clean.nixosModules.default;
  };
  failed = lib.attrNames (lib.filterAttrs (_: ok: !ok) checks);
in
{
  result =
    if failed == [ ] then
      "flake: ${toString (lib.length (lib.attrNames checks))} checks passed"
    else
      throw "flake checks failed: ${lib.concatStringsSep ", " failed}";
}
