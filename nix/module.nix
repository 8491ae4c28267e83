# services.convoy: the worker of a NixOS host (with its boot check and an
# optional upgrade timer) and the bus server. Every worker option is a key
# of the worker's TOML (docs/config.md), every server option a flag of
# `convoy server` (`convoy server --help`); the option descriptions name
# them. docs/nixos.md has the table generated from this file.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
    mkOption
    mkEnableOption
    mkIf
    mkMerge
    types
    literalExpression
    optional
    optionals
    optionalAttrs
    concatStringsSep
    ;

  cfg = config.services.convoy;
  wcfg = cfg.worker;
  scfg = cfg.server;
  toml = pkgs.formats.toml { };

  configPath = "/etc/convoy/worker.toml";
  userName = if wcfg.user == null then "convoy" else wcfg.user;
  nixPkg = config.nix.package;
  systemdPkg = config.systemd.package;

  repoType = types.submodule {
    options = {
      path = mkOption {
        type = types.str;
        description = "Absolute path of the git checkout (`path`).";
      };
      remote = mkOption {
        type = types.str;
        default = "origin";
        description = "The remote whose branch is tracked (`remote`).";
      };
      branch = mkOption {
        type = types.str;
        default = "main";
        description = "The tracked branch (`branch`).";
      };
      verifyCommits = mkOption {
        type = types.bool;
        default = false;
        description = "Deploy only commits with a good SSH signature from `allowedSigners` (`verify_commits`).";
      };
      allowedSigners = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Absolute path of an ssh-keygen allowed-signers file (`allowed_signers`).";
      };
    };
  };
  # A bare path is the common case: repo = "/home/ops/nix-config".
  repoOption =
    what: key:
    mkOption {
      type = types.nullOr (types.coercedTo types.str (path: { inherit path; }) repoType);
      default = null;
      example = "/home/ops/nix-config";
      description = "${what} (`[${key}]`): a path, or `{ path; remote; branch; verifyCommits; allowedSigners; }`.";
    };
  renderRepo =
    r:
    {
      inherit (r) path remote branch;
      verify_commits = r.verifyCommits;
    }
    // optionalAttrs (r.allowedSigners != null) { allowed_signers = r.allowedSigners; };

  # The TOML, before `settings` is merged over it. Only keys the module
  # has an option for are written; the worker fills in the rest.
  generated =
    {
      host = wcfg.host;
      tags = wcfg.tags;
      state_dir = wcfg.stateDir;
      upgrade = {
        pre_update_hooks = wcfg.preUpdateHooks;
        build_before_switch = wcfg.buildBeforeSwitch;
        validation_checks = wcfg.validationChecks;
        on_validation_failure = wcfg.onValidationFailure;
        health_checks = wcfg.healthChecks;
      };
      system = {
        driver = "nixos";
        builder = wcfg.builder;
        # nh takes one elevation program and runs it itself; the others
        # must never wait for a password.
        elevation = if wcfg.builder == "nh" then [ "sudo" ] else [ "sudo" "-n" ];
      };
      golden = {
        enable = wcfg.goldenGeneration.enable;
        validate_services = wcfg.goldenGeneration.validateServices;
        auto_pin_after_boot = wcfg.goldenGeneration.autoPinAfterBoot;
        max_boot_failures = wcfg.goldenGeneration.maxBootFailures;
      };
      reboot = {
        allow = wcfg.reboot.allow;
        window = wcfg.reboot.window;
      };
    }
    // optionalAttrs (wcfg.nats != null) { nats = wcfg.nats; }
    // optionalAttrs (wcfg.credentialsFile != null) { nkey = wcfg.credentialsFile; }
    // optionalAttrs (wcfg.tlsCA != null) { tls_ca = wcfg.tlsCA; }
    // optionalAttrs (wcfg.repo != null) { repo = renderRepo wcfg.repo; }
    // optionalAttrs (wcfg.secrets != null) { secrets = renderRepo wcfg.secrets; };
  final = lib.recursiveUpdate generated wcfg.settings;
  configFile = toml.generate "convoy-worker.toml" final;

  sys = final.system;
  profile = sys.profile or "/nix/var/nix/profiles/system";
  gcroots = sys.gcroots or "/nix/var/nix/gcroots";
  elevates = (sys.elevation or [ "sudo" ]) != [ ];
  # What the nixos-rebuild builder runs: <flake>#<name>.
  flakeRef = sys.flake or "${(final.repo or { path = "<repo>"; }).path}#nixosConfigurations.${final.host}";
  flakeParts = lib.splitString "#" flakeRef;
  flakeName = lib.removePrefix "nixosConfigurations." (lib.last flakeParts);

  builderPackages = {
    nh = pkgs.nh or null;
    nixos-rebuild = pkgs.nixos-rebuild or null;
    nix = null;
  };

  # What `sudo -n` runs for the worker and the boot check. sudo resolves a
  # command through the caller's PATH, which the units set below, so each
  # rule names the store path the worker will find. The table in
  # docs/nixos.md says which step uses each.
  sudoCommands =
    [
      # rollback and golden fallback, whatever the builder
      "${nixPkg}/bin/nix-env -p ${profile} --switch-generation *"
      "${nixPkg}/bin/nix-env -p ${profile} --set /nix/store/*"
      # activation, in a transient unit when systemd runs the host
      "${systemdPkg}/bin/systemd-run --wait --collect --pipe --quiet --service-type=exec --unit=convoy-activate-* -- /nix/store/*/bin/switch-to-configuration *"
      "/nix/store/*/bin/switch-to-configuration switch"
      "/nix/store/*/bin/switch-to-configuration boot"
      # the golden pin
      "${nixPkg}/bin/nix-store --add-root ${gcroots}/convoy-golden --realise /nix/store/*"
    ]
    ++ optional (wcfg.builder == "nixos-rebuild" && wcfg.builderPackage != null) "${wcfg.builderPackage}/bin/nixos-rebuild switch --flake ${lib.head flakeParts}#${flakeName}"
    ++ optional (wcfg.reboot.allow && !(final.reboot ? command)) "${systemdPkg}/bin/systemctl reboot"
    ++ wcfg.extraSudoCommands;

  unitPath =
    [
      nixPkg
      systemdPkg
      pkgs.git
      pkgs.openssh
      pkgs.coreutils
    ]
    ++ optional (wcfg.builderPackage != null) wcfg.builderPackage
    ++ wcfg.extraPackages
    ++ [ "/run/wrappers" ];

  # Hardening that leaves sudo and the switch working: sudo is setuid, so
  # NoNewPrivileges stays off while elevation is on, and the elevated
  # commands inherit this unit's mount namespace. With the nix builder
  # every activation runs in a transient unit (systemd-run), outside it,
  # so /etc and /boot can be read-only here; nh and nixos-rebuild may
  # activate in-process, which writes /etc.
  workerHardening = {
    PrivateTmp = true;
    NoNewPrivileges = !elevates;
    ProtectSystem = if wcfg.builder == "nix" then "full" else false;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectControlGroups = true;
    RestrictSUIDSGID = !elevates;
    LockPersonality = true;
    UMask = "0077";
  };

  busFlags =
    concatStringsSep " " (
      optional (wcfg.nats != null) "--nats ${lib.escapeShellArg wcfg.nats}"
      ++ [ "--nkey ${lib.escapeShellArg wcfg.schedule.credentialsFile}" ]
      ++ optional (wcfg.tlsCA != null) "--tls-ca ${lib.escapeShellArg wcfg.tlsCA}"
    );

  # convoy server's flags from the options, then `settings`, then extraArgs.
  flagValue =
    name: v:
    if v == null then
      [ ]
    else if lib.isBool v then
      [ "--${name}=${lib.boolToString v}" ]
    else if lib.isList v then
      [ "--${name}=${concatStringsSep "," (map toString v)}" ]
    else
      [ "--${name}=${toString v}" ];
  serverFlags =
    lib.concatLists (
      lib.mapAttrsToList flagValue (
        {
          data = scfg.dataDir;
          listen = scfg.listen;
          auth = if scfg.auth then true else null;
          tls-cert = scfg.tlsCert;
          tls-key = scfg.tlsKey;
          insecure-no-tls = if scfg.insecureNoTLS then true else null;
          name = scfg.name;
          replicas = scfg.replicas;
          controller = if scfg.controller then null else false;
          log-level = scfg.logLevel;
          http = scfg.http.listen;
          http-token-file = scfg.http.tokenFile;
          http-tls-cert = scfg.http.tlsCert;
          http-tls-key = scfg.http.tlsKey;
        }
        // optionalAttrs (scfg.cluster.name != null) {
          cluster = scfg.cluster.name;
          cluster-listen = scfg.cluster.listen;
          routes = scfg.cluster.routes;
        }
        // optionalAttrs (scfg.alerts != { }) {
          # The [alerts] section of convoy server --config.
          config = "${toml.generate "convoy-server.toml" { alerts = scfg.alerts; }}";
        }
        // scfg.settings
      )
    )
    ++ scfg.extraArgs;
in
{
  options.services.convoy = {
    package = mkOption {
      type = types.package;
      default = pkgs.convoy;
      defaultText = literalExpression "pkgs.convoy (the flake's nixosModules.default sets its own build)";
      description = "The convoy package, for the worker, the boot check, the timer and the server.";
    };

    worker = {
      enable = mkEnableOption "the convoy worker of this host, with its boot check (`convoy worker`, `convoy boot-check`)";

      host = mkOption {
        type = types.str;
        default = config.networking.hostName;
        defaultText = literalExpression "config.networking.hostName";
        description = "The host's name on the bus (`host`): a lower-case RFC 1123 label.";
      };

      user = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "ops";
        description = ''
          The user the worker and the boot check run as. With `null` a
          system user `convoy` is created; a name given here must exist.
          It owns the repo checkout (git pulls into it), reads the credentials and, through
          the sudo rules below, elevates only the switch.
        '';
      };

      stateDir = mkOption {
        type = types.str;
        default = "/var/lib/convoy";
        description = "The worker's state dir (`state_dir`), created 0700 for the user.";
      };

      nats = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "tls://bus.example:4222";
        description = "The bus (`nats`), several URLs separated by commas. `null`: the worker's default.";
      };

      credentialsFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/agenix/convoy-host.nk";
        description = "The host's credential from `convoy creds add-host` (`nkey`), readable by the user only. A path, never the secret itself.";
      };

      tlsCA = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "CA of the bus's certificate (`tls_ca`).";
      };

      repo = repoOption "The nix-config checkout the worker deploys" "repo";
      secrets = repoOption "A second checkout moved with the repo" "secrets";

      buildBeforeSwitch = mkOption {
        type = types.bool;
        default = true;
        description = "Build before switching (`upgrade.build_before_switch`). Must stay true with `builder = \"nix\"`.";
      };

      validationChecks = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "systemctl --quiet is-enabled sshd" ];
        description = "Shell commands run in the repo after the build, before the switch, with `$CONVOY_RESULT` (`upgrade.validation_checks`).";
      };

      onValidationFailure = mkOption {
        type = types.enum [
          "rollback"
          "notify"
          "ignore"
        ];
        default = "rollback";
        description = "What a failed validation check does (`upgrade.on_validation_failure`).";
      };

      preUpdateHooks = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "chezmoi update" ];
        description = "Shell commands run in the repo before anything is fetched (`upgrade.pre_update_hooks`).";
      };

      healthChecks = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "systemctl --quiet is-active sshd" ];
        description = "Shell commands run after the switch; a failure rolls back (`upgrade.health_checks`).";
      };

      tags = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "canary" ];
        description = "The host's groups (`tags`), selected by `convoy upgrade --tag`.";
      };

      builder = mkOption {
        type = types.enum [
          "nh"
          "nixos-rebuild"
          "nix"
        ];
        default = "nix";
        description = ''
          How the system is built and switched (`system.builder`). `nix`
          (the module's default; the worker's own default is `nh`) needs
          the fewest sudo rules and lets the unit keep /etc read-only.
        '';
      };

      builderPackage = mkOption {
        type = types.nullOr types.package;
        default = builderPackages.${wcfg.builder};
        defaultText = literalExpression "pkgs.nh for nh, pkgs.nixos-rebuild for nixos-rebuild, null for nix";
        description = "The builder's package, put on the units' PATH (`nh` or `nixos-rebuild`).";
      };

      extraPackages = mkOption {
        type = types.listOf types.package;
        default = [ ];
        example = literalExpression "[ pkgs.chezmoi ]";
        description = "More packages on the PATH of the worker and the boot check (for hooks and checks).";
      };

      extraSudoCommands = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = ''
          More commands the user may run with sudo, without a password. nh
          elevates commands of its own, which differ between nh releases:
          with `builder = "nh"` add them here (the journal's sudo lines show
          them).
        '';
      };

      schedule = {
        onCalendar = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "Sat 04:00";
          description = ''
            When a timer on this host requests its own upgrade (`convoy
            upgrade HOST`), as systemd.time(7) OnCalendar. `null`: no timer.
            For the fleet, run `convoy schedule` on one or two machines
            instead (docs/nixos.md).
          '';
        };
        credentialsFile = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "An operator credential (`convoy creds add-operator`) for the timer: a host credential may not request upgrades.";
        };
      };

      reboot = {
        allow = mkOption {
          type = types.bool;
          default = false;
          description = "Reboot after an upgrade that changed the kernel, initrd or modules (`reboot.allow`); adds the sudo rule for `systemctl reboot`.";
        };
        window = mkOption {
          type = types.str;
          default = "";
          example = "Sat 02:00-05:00";
          description = "When a reboot may start, in local time (`reboot.window`); empty: any time.";
        };
      };

      goldenGeneration = {
        enable = mkOption {
          type = types.bool;
          default = false;
          description = "Pin a golden generation after a validated boot and fall back to it after failed boots (`golden.enable`).";
        };
        validateServices = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "sshd.service" ];
          description = "Units that must be active after boot (`golden.validate_services`); the boot check is ordered after them.";
        };
        autoPinAfterBoot = mkOption {
          type = types.bool;
          default = true;
          description = "Pin the booted system after a validated boot (`golden.auto_pin_after_boot`).";
        };
        maxBootFailures = mkOption {
          type = types.ints.positive;
          default = 2;
          description = "Failed boot checks of one system before the fallback (`golden.max_boot_failures`).";
        };
      };

      settings = mkOption {
        type = toml.type;
        default = { };
        example = {
          upgrade.timeout = "1h";
          repo.verify_commits = true;
        };
        description = "More keys of the worker TOML (docs/config.md), merged over the generated ones.";
      };
    };

    server = {
      enable = mkEnableOption "the convoy bus (`convoy server`)";

      user = mkOption {
        type = types.str;
        default = "convoy-bus";
        description = "The user the server runs as, created by the module.";
      };

      dataDir = mkOption {
        type = types.str;
        default = "/var/lib/convoy-bus";
        description = "The bus's data: the whole history and users.json (`--data`). Back it up.";
      };

      listen = mkOption {
        type = types.str;
        default = "127.0.0.1:4222";
        example = "0.0.0.0:4222";
        description = "HOST:PORT (`--listen`); beyond loopback, authentication is on and TLS required.";
      };

      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = "Open the client port in the firewall (not the cluster port, which has no authentication: keep it on a private network).";
      };

      auth = mkOption {
        type = types.bool;
        default = false;
        description = "Require credentials on loopback too (`--auth`); always on beyond loopback.";
      };

      tlsCert = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "TLS certificate file (`--tls-cert`).";
      };

      tlsKey = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "TLS key file (`--tls-key`), readable by the server's user.";
      };

      insecureNoTLS = mkOption {
        type = types.bool;
        default = false;
        description = "Listen beyond loopback without TLS (`--insecure-no-tls`), on a WireGuard or Tailscale mesh.";
      };

      name = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Server name, unique in a cluster (`--name`).";
      };

      replicas = mkOption {
        type = types.ints.between 1 5;
        default = 1;
        description = "Replicas of the stream and buckets when created (`--replicas`); 3 on a three-node cluster.";
      };

      cluster = {
        name = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "Join a JetStream cluster of this name (`--cluster`).";
        };
        listen = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "10.0.0.1:6222";
          description = "HOST:PORT for cluster routes (`--cluster-listen`); unauthenticated, keep it private.";
        };
        routes = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "nats://10.0.0.1:6222" "nats://10.0.0.2:6222" "nats://10.0.0.3:6222" ];
          description = "Routes to the nodes (`--routes`).";
        };
      };

      controller = mkOption {
        type = types.bool;
        default = true;
        description = "Run the rollout controller in the server (`--controller`).";
      };

      logLevel = mkOption {
        type = types.enum [
          "debug"
          "info"
          "warn"
          "error"
        ];
        default = "info";
        description = "The log level (`--log-level`).";
      };

      http = {
        listen = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "127.0.0.1:8080";
          description = "Serve the dashboard and metrics on HOST:PORT (`--http`).";
        };
        tokenFile = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "File with the token the dashboard and metrics require (`--http-token-file`); required beyond loopback.";
        };
        tlsCert = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "TLS certificate of the dashboard and metrics (`--http-tls-cert`); required beyond loopback.";
        };
        tlsKey = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "TLS key of the dashboard and metrics (`--http-tls-key`).";
        };
      };

      alerts = mkOption {
        type = toml.type;
        default = { };
        example = {
          offline_after = "10m";
          dashboard_url = "https://convoy.example.org";
          sink = [
            {
              type = "ntfy";
              url = "https://ntfy.sh/my-fleet";
              token_file = "/run/secrets/ntfy-token";
            }
          ];
        };
        description = "The `[alerts]` section of the server's config (`--config`; docs/alerts.md): rules and sinks. The file is in the world-readable Nix store: give tokens and HMAC secrets as files (`token_file`, `secret_file`), and no URL with a secret in it. Empty: the server sends no alerts.";
      };

      settings = mkOption {
        type = with types; attrsOf (nullOr (oneOf [ str int bool (listOf str) ]));
        default = { };
        example = {
          retain = "90d";
          min-free = "5GiB";
        };
        description = "Any other `convoy server` flag, as `{ flag-name = value; }`: `--flag-name=value` (lists joined with commas, `null` left out).";
      };

      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Arguments appended to `convoy server`.";
      };
    };
  };

  config = mkMerge [
    (mkIf wcfg.enable {
      assertions = [
        {
          assertion = wcfg.repo != null || final ? repo;
          message = "services.convoy.worker.repo: missing: the worker deploys a git checkout of your nix-config (repo = \"/home/ops/nix-config\").";
        }
        {
          assertion = wcfg.preUpdateHooks == [ ] || final ? repo;
          message = "services.convoy.worker.preUpdateHooks run in the repo checkout before the pull: set services.convoy.worker.repo.";
        }
        {
          assertion = wcfg.builder == "nix" || wcfg.builderPackage != null;
          message = "services.convoy.worker.builder = \"${wcfg.builder}\" needs ${wcfg.builder} on the worker's PATH: set services.convoy.worker.builderPackage (this nixpkgs has no pkgs.${wcfg.builder}).";
        }
        {
          assertion = wcfg.builder != "nix" || wcfg.buildBeforeSwitch;
          message = "services.convoy.worker.buildBeforeSwitch = false: the nix builder switches to what it built, so it must build first; use builder = \"nh\" or \"nixos-rebuild\", which build as part of their switch.";
        }
        {
          assertion = (wcfg.repo == null || !wcfg.repo.verifyCommits) || wcfg.repo.allowedSigners != null;
          message = "services.convoy.worker.repo.verifyCommits needs repo.allowedSigners, the file of keys allowed to sign.";
        }
        {
          assertion = wcfg.schedule.onCalendar == null || wcfg.schedule.credentialsFile != null;
          message = "services.convoy.worker.schedule.onCalendar needs schedule.credentialsFile, an operator credential (convoy creds add-operator): the host's own credential may not request upgrades.";
        }
        {
          assertion = !(wcfg.goldenGeneration.enable && !elevates && userName != "root");
          message = "services.convoy.worker.goldenGeneration.enable with settings.system.elevation = [ ]: the boot check must be able to pin and fall back; keep sudo elevation.";
        }
      ];

      environment.etc."convoy/worker.toml".source = configFile;
      environment.systemPackages = [ cfg.package ];

      users.users = optionalAttrs (wcfg.user == null) {
        convoy = {
          isSystemUser = true;
          group = "convoy";
          home = wcfg.stateDir;
          description = "convoy worker";
        };
      };
      users.groups = optionalAttrs (wcfg.user == null) { convoy = { }; };

      systemd.tmpfiles.rules = [ "d ${wcfg.stateDir} 0700 ${userName} - -" ];

      security.sudo.extraRules = mkIf elevates [
        {
          users = [ userName ];
          commands = map (command: {
            inherit command;
            options = [ "NOPASSWD" ];
          }) sudoCommands;
        }
      ];

      systemd.services.convoy-worker = {
        description = "convoy worker of ${wcfg.host}";
        # An activation must not restart the worker that runs it.
        restartIfChanged = false;
        wantedBy = [ "multi-user.target" ];
        after = [
          "network-online.target"
          "convoy-boot-check.service"
        ];
        wants = [ "network-online.target" ];
        path = unitPath;
        serviceConfig = workerHardening // {
          User = userName;
          ExecStart = "${lib.getExe cfg.package} worker --config ${configPath}";
          Restart = "always";
          RestartSec = "5s";
          # A stop puts the host back: give it time. The default KillMode
          # (control-group) stops the commands of a dead worker too.
          TimeoutStopSec = "5min";
        };
      };

      systemd.services.convoy-boot-check = {
        description = "convoy boot check of ${wcfg.host}";
        wantedBy = [ "multi-user.target" ];
        # Not after multi-user.target, which wants it: that would be a cycle.
        after = [ "network-online.target" ] ++ wcfg.goldenGeneration.validateServices;
        wants = [ "network-online.target" ];
        before = [ "convoy-worker.service" ];
        restartIfChanged = false;
        path = unitPath;
        serviceConfig = workerHardening // {
          Type = "oneshot";
          RemainAfterExit = true;
          User = userName;
          ExecStart = "${lib.getExe cfg.package} boot-check --config ${configPath}";
        };
      };
    })

    (mkIf (wcfg.enable && wcfg.schedule.onCalendar != null) {
      systemd.timers.convoy-upgrade = {
        description = "request this host's convoy upgrade";
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = wcfg.schedule.onCalendar;
          Persistent = true;
        };
      };
      systemd.services.convoy-upgrade = {
        description = "request the convoy upgrade of ${wcfg.host}";
        after = [ "network-online.target" ];
        wants = [ "network-online.target" ];
        serviceConfig = {
          Type = "oneshot";
          User = userName;
          PrivateTmp = true;
          NoNewPrivileges = true;
          ProtectSystem = "strict";
          ProtectHome = "read-only";
          ExecStart = "${lib.getExe cfg.package} ${busFlags} upgrade ${wcfg.host}";
        };
      };
    })

    (mkIf scfg.enable {
      assertions = [
        {
          assertion = (scfg.tlsCert == null) == (scfg.tlsKey == null);
          message = "services.convoy.server.tlsCert and tlsKey go together.";
        }
        {
          assertion =
            scfg.cluster.name == null || (scfg.cluster.listen != null && scfg.cluster.routes != [ ] && scfg.name != null);
          message = "services.convoy.server.cluster.name needs cluster.listen, cluster.routes and server.name (unique among the nodes).";
        }
        {
          assertion =
            lib.any (h: lib.hasPrefix h scfg.listen) [ "127." "localhost:" "[::1]:" ]
            || scfg.tlsCert != null
            || scfg.insecureNoTLS;
          message = "services.convoy.server.listen = \"${scfg.listen}\" is beyond loopback: set tlsCert and tlsKey (or, knowingly, insecureNoTLS).";
        }
        {
          assertion =
            scfg.http.listen == null
            || lib.any (h: lib.hasPrefix h scfg.http.listen) [ "127." "localhost:" "[::1]:" ]
            || (scfg.http.tlsCert != null && scfg.http.tlsKey != null && scfg.http.tokenFile != null);
          message = "services.convoy.server.http.listen = \"${toString scfg.http.listen}\" is beyond loopback: set http.tlsCert, http.tlsKey and http.tokenFile (the dashboard shows the fleet's outputs).";
        }
      ];

      users.users.${scfg.user} = {
        isSystemUser = true;
        group = scfg.user;
        home = scfg.dataDir;
      };
      users.groups.${scfg.user} = { };
      environment.systemPackages = [ cfg.package ];

      systemd.tmpfiles.rules = [ "d ${scfg.dataDir} 0700 ${scfg.user} ${scfg.user} -" ];

      systemd.services.convoy-server = {
        description = "convoy bus";
        wantedBy = [ "multi-user.target" ];
        after = [ "network-online.target" ];
        wants = [ "network-online.target" ];
        serviceConfig = {
          User = scfg.user;
          Group = scfg.user;
          ExecStart = "${lib.getExe cfg.package} server ${lib.escapeShellArgs serverFlags}";
          Restart = "always";
          RestartSec = "2s";
          PrivateTmp = true;
          NoNewPrivileges = true;
          ProtectSystem = "strict";
          ProtectHome = true;
          ReadWritePaths = [ scfg.dataDir ];
          PrivateDevices = true;
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          ProtectControlGroups = true;
          RestrictSUIDSGID = true;
          LockPersonality = true;
          UMask = "0077";
        };
      };

      # The client port only: the cluster port has no authentication.
      networking.firewall.allowedTCPPorts = mkIf scfg.openFirewall [
        (lib.toInt (lib.last (lib.splitString ":" scfg.listen)))
      ];
    })
  ];
}
