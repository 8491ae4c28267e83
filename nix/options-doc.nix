# The options table of docs/nixos.md, in Markdown, from nix/module.nix's
# declarations (.ci/nix-checks module --update writes it there).
{ lib }:

let
  options = (import ./tests/module-eval.nix { inherit lib; }).options;
  docs = lib.filter (o: o.visible && !o.internal) (lib.optionAttrSetToDocList options);
  show = v: if v ? _type then v.text else builtins.toJSON v;
  cell = s: lib.replaceStrings [ "\n" "|" ] [ " " "\\|" ] (lib.trim s);
  row =
    o:
    "| `${lib.removePrefix "services.convoy." o.name}` | ${cell o.type} | ${
      if o ? default then "`${cell (show o.default)}`" else "—"
    } | ${cell (o.description or "")} |";
in
lib.concatStringsSep "\n" (
  [
    "| option (`services.convoy.…`) | type | default | meaning |"
    "| --- | --- | --- | --- |"
  ]
  ++ map row docs
)
+ "\n"
