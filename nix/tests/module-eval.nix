# Evaluates nix/module.nix with nixpkgs' lib.evalModules and stubs for the
# NixOS options it sets outside services.convoy, then checks the rendered
# units, sudo rules, assertions and worker settings.
#
#   nix-instantiate --eval --strict --json nix/tests/module-eval.nix \
#     --arg lib 'import /path/to/nixpkgs/lib' -A result
#
# `result` throws, listing every failed check; `fixtures` is the worker
# settings of two configurations, the JSON that pkgs.formats.toml turns
# into /etc/convoy/worker.toml (workers/testdata/nixos-module-*.json, loaded
# by workers/module_config_test.go). .ci/nix-checks runs both.
{ lib }:

let
  inherit (lib) types mkOption;

  fakePkg = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta.mainProgram = name;
  };

  pkgs = {
    convoy = fakePkg "convoy";
    nh = fakePkg "nh";
    nixos-rebuild = fakePkg "nixos-rebuild";
    git = fakePkg "git";
    openssh = fakePkg "openssh";
    coreutils = fakePkg "coreutils";
    chezmoi = fakePkg "chezmoi";
    # pkgs.formats.toml writes the value with remarshal; the stub keeps the
    # value for the checks instead of building a file.
    formats.toml = _: {
      type = types.attrsOf types.anything // {
        description = "TOML value";
      };
      generate = name: value: {
        outPath = "/nix/store/00000000000000000000000000000000-${name}";
        inherit value;
      };
    };
  };

  anyAttrs = mkOption {
    type = types.attrsOf types.anything;
    default = { };
  };
  anyList = mkOption {
    type = types.listOf types.anything;
    default = [ ];
  };

  # The NixOS options the module sets or reads, outside its namespace.
  stubs = {
    options = {
      assertions = anyList;
      warnings = anyList;
      networking.hostName = mkOption {
        type = types.str;
        default = "sorrow";
      };
      networking.firewall.allowedTCPPorts = anyList;
      environment.etc = anyAttrs;
      environment.systemPackages = anyList;
      users.users = anyAttrs;
      users.groups = anyAttrs;
      security.sudo.extraRules = anyList;
      systemd.tmpfiles.rules = anyList;
      systemd.services = anyAttrs;
      systemd.timers = anyAttrs;
      systemd.package = mkOption {
        type = types.package;
        default = fakePkg "systemd";
      };
      nix.package = mkOption {
        type = types.package;
        default = fakePkg "nix";
      };
    };
  };

  evalModules =
    conf:
    lib.evalModules {
      modules = [
        ../module.nix
        stubs
        conf
        { _module.args.pkgs = pkgs; }
      ];
    };
  eval = conf: (evalModules conf).config;

  failedAssertions = c: map (a: a.message) (lib.filter (a: !a.assertion) c.assertions);
  toml = c: c.environment.etc."convoy/worker.toml".source.value;
  sudo = c: map (r: r.command) (lib.concatMap (r: r.commands) c.security.sudo.extraRules);
  store = name: "/nix/store/00000000000000000000000000000000-${name}";

  minimal = eval {
    services.convoy.worker = {
      enable = true;
      repo = "/home/ops/nix-config";
    };
  };

  full = eval {
    services.convoy.worker = {
      enable = true;
      host = "torment";
      user = "ops";
      nats = "tls://bus.example:4222";
      credentialsFile = "/etc/convoy/torment.nk";
      tlsCA = "/etc/convoy/ca.pem";
      repo = {
        path = "/home/ops/nix-config";
        branch = "production";
        verifyCommits = true;
        allowedSigners = "/etc/convoy/allowed_signers";
      };
      secrets = "/home/ops/nix-secrets";
      buildBeforeSwitch = true;
      preUpdateHooks = [ "chezmoi update" ];
      validationChecks = [ "systemctl --quiet is-enabled sshd" ];
      onValidationFailure = "notify";
      healthChecks = [ "systemctl --quiet is-active sshd" ];
      tags = [
        "canary"
        "web"
      ];
      builder = "nixos-rebuild";
      extraPackages = [ pkgs.chezmoi ];
      schedule = {
        onCalendar = "Sat 04:00";
        credentialsFile = "/etc/convoy/timer.nk";
      };
      reboot = {
        allow = true;
        window = "Sat 02:00-05:00";
      };
      goldenGeneration = {
        enable = true;
        validateServices = [ "sshd.service" ];
        autoPinAfterBoot = false;
        maxBootFailures = 3;
      };
      settings.upgrade.timeout = "1h";
    };
  };

  broken = conf: failedAssertions (eval { services.convoy.worker = { enable = true; } // conf; });

  server = eval {
    services.convoy.server = {
      enable = true;
      listen = "0.0.0.0:4222";
      tlsCert = "/etc/convoy/bus.pem";
      tlsKey = "/etc/convoy/bus-key.pem";
      name = "n1";
      replicas = 3;
      cluster = {
        name = "convoy";
        listen = "10.0.0.1:6222";
        routes = [
          "nats://n1:6222"
          "nats://n2:6222"
        ];
      };
      openFirewall = true;
      http.listen = "127.0.0.1:8080";
      alerts.sink = [
        {
          type = "command";
          command = [ "logger" ];
        }
      ];
      settings.retain = "90d";
      extraArgs = [ "--min-free=5GiB" ];
    };
  };

  nixCommon = [
    "${store "nix"}/bin/nix-env -p /nix/var/nix/profiles/system --switch-generation *"
    "${store "nix"}/bin/nix-env -p /nix/var/nix/profiles/system --set /nix/store/*"
    "${store "systemd"}/bin/systemd-run --wait --collect --pipe --quiet --service-type=exec --unit=convoy-activate-* -- /nix/store/*/bin/switch-to-configuration *"
    "/nix/store/*/bin/switch-to-configuration switch"
    "/nix/store/*/bin/switch-to-configuration boot"
    "${store "nix"}/bin/nix-store --add-root /nix/var/nix/gcroots/convoy-golden --realise /nix/store/*"
  ];

  checks = {
    minimalAssertionsHold = failedAssertions minimal == [ ];
    minimalToml = toml minimal == {
      host = "sorrow";
      tags = [ ];
      state_dir = "/var/lib/convoy";
      repo = {
        path = "/home/ops/nix-config";
        remote = "origin";
        branch = "main";
        verify_commits = false;
      };
      upgrade = {
        pre_update_hooks = [ ];
        build_before_switch = true;
        validation_checks = [ ];
        on_validation_failure = "rollback";
        health_checks = [ ];
      };
      system = {
        driver = "nixos";
        builder = "nix";
        elevation = [
          "sudo"
          "-n"
        ];
      };
      golden = {
        enable = false;
        validate_services = [ ];
        auto_pin_after_boot = true;
        max_boot_failures = 2;
      };
      reboot = {
        allow = false;
        window = "";
      };
    };
    minimalCreatesUser = minimal.users.users.convoy.isSystemUser && minimal.users.groups ? convoy;
    minimalSudoIsTheNixBuildersOnly = sudo minimal == nixCommon;
    minimalSudoUser = (lib.head minimal.security.sudo.extraRules).users == [ "convoy" ];
    minimalSudoNoPassword = lib.all (c: c.options == [ "NOPASSWD" ]) (lib.head minimal.security.sudo.extraRules).commands;
    minimalTmpfiles = minimal.systemd.tmpfiles.rules == [ "d /var/lib/convoy 0700 convoy - -" ];
    workerExec =
      minimal.systemd.services.convoy-worker.serviceConfig.ExecStart
      == "${store "convoy"}/bin/convoy worker --config /etc/convoy/worker.toml";
    workerAfterBootCheck = lib.elem "convoy-boot-check.service" minimal.systemd.services.convoy-worker.after;
    workerNotRestartedBySwitch = minimal.systemd.services.convoy-worker.restartIfChanged == false;
    workerKeepsSudo = minimal.systemd.services.convoy-worker.serviceConfig.NoNewPrivileges == false;
    workerHardened =
      minimal.systemd.services.convoy-worker.serviceConfig.ProtectSystem == "full"
      && minimal.systemd.services.convoy-worker.serviceConfig.PrivateTmp;
    workerPathHasSudoWrappers = lib.elem "/run/wrappers" minimal.systemd.services.convoy-worker.path;
    bootCheckOneshotBeforeWorker =
      minimal.systemd.services.convoy-boot-check.serviceConfig.Type == "oneshot"
      && lib.elem "convoy-worker.service" minimal.systemd.services.convoy-boot-check.before
      && minimal.systemd.services.convoy-boot-check.serviceConfig.ExecStart
        == "${store "convoy"}/bin/convoy boot-check --config /etc/convoy/worker.toml";
    minimalNoTimer = minimal.systemd.timers == { };

    fullAssertionsHold = failedAssertions full == [ ];
    fullDoesNotCreateUser = full.users.users == { };
    fullSudo =
      sudo full
      == nixCommon
      ++ [
        "${store "nixos-rebuild"}/bin/nixos-rebuild switch --flake /home/ops/nix-config#torment"
        "${store "systemd"}/bin/systemctl reboot"
      ];
    fullSudoUser = (lib.head full.security.sudo.extraRules).users == [ "ops" ];
    fullSettingsMerged = (toml full).upgrade.timeout == "1h" && (toml full).upgrade.on_validation_failure == "notify";
    fullBuilderOnPath = lib.elem pkgs.nixos-rebuild full.systemd.services.convoy-worker.path;
    fullNotReadOnlyEtc = full.systemd.services.convoy-worker.serviceConfig.ProtectSystem == false;
    fullBootCheckAfterValidatedServices = lib.elem "sshd.service" full.systemd.services.convoy-boot-check.after;
    fullTimer = full.systemd.timers.convoy-upgrade.timerConfig.OnCalendar == "Sat 04:00";
    fullTimerExec =
      full.systemd.services.convoy-upgrade.serviceConfig.ExecStart
      == "${store "convoy"}/bin/convoy --nats tls://bus.example:4222 --nkey /etc/convoy/timer.nk --tls-ca /etc/convoy/ca.pem upgrade torment";

    hooksWithoutRepo = lib.any (lib.hasInfix "preUpdateHooks run in the repo") (broken {
      preUpdateHooks = [ "chezmoi update" ];
    });
    repoMissing = lib.any (lib.hasInfix "worker.repo: missing") (broken { });
    nhWithoutNh = lib.any (lib.hasInfix "needs nh on the worker's PATH") (broken {
      repo = "/r";
      builder = "nh";
      builderPackage = null;
    });
    nixBuilderMustBuild = lib.any (lib.hasInfix "must build first") (broken {
      repo = "/r";
      buildBeforeSwitch = false;
    });
    scheduleNeedsOperator = lib.any (lib.hasInfix "operator credential") (broken {
      repo = "/r";
      schedule.onCalendar = "daily";
    });
    verifyNeedsSigners = lib.any (lib.hasInfix "allowedSigners") (broken {
      repo = {
        path = "/r";
        verifyCommits = true;
      };
    });
    nhGetsPlainSudo = (toml (eval {
      services.convoy.worker = {
        enable = true;
        repo = "/r";
        builder = "nh";
      };
    })).system.elevation == [ "sudo" ];

    serverAssertionsHold = failedAssertions server == [ ];
    serverExec =
      server.systemd.services.convoy-server.serviceConfig.ExecStart
      == "${store "convoy"}/bin/convoy server "
        # systemd unquotes ExecStart's single quotes as a shell would
        + lib.escapeShellArgs [
          "--cluster=convoy"
          "--cluster-listen=10.0.0.1:6222"
          "--config=/nix/store/00000000000000000000000000000000-convoy-server.toml"
          "--data=/var/lib/convoy-bus"
          "--http=127.0.0.1:8080"
          "--listen=0.0.0.0:4222"
          "--log-level=info"
          "--name=n1"
          "--replicas=3"
          "--retain=90d"
          "--routes=nats://n1:6222,nats://n2:6222"
          "--tls-cert=/etc/convoy/bus.pem"
          "--tls-key=/etc/convoy/bus-key.pem"
          "--min-free=5GiB"
        ];
    serverHttpBeyondLoopbackNeedsTLSAndToken = lib.any (lib.hasInfix "http.listen") (failedAssertions (eval {
      services.convoy.server = {
        enable = true;
        http.listen = "0.0.0.0:9426";
      };
    }));
    serverFirewallClientPortOnly = server.networking.firewall.allowedTCPPorts == [ 4222 ];
    serverReadOnlyButData = server.systemd.services.convoy-server.serviceConfig.ReadWritePaths == [ "/var/lib/convoy-bus" ];
    serverBeyondLoopbackNeedsTLS = lib.any (lib.hasInfix "beyond loopback") (failedAssertions (eval {
      services.convoy.server = {
        enable = true;
        listen = "0.0.0.0:4222";
      };
    }));
  };

  failed = lib.attrNames (lib.filterAttrs (_: ok: !ok) checks);
in
{
  inherit checks;
  # For nix/options-doc.nix.
  options = (evalModules { }).options.services.convoy;
  result =
    if failed == [ ] then
      "${toString (lib.length (lib.attrNames checks))} checks passed"
    else
      throw "module checks failed: ${lib.concatStringsSep ", " failed}";
  fixtures = {
    minimal = toml minimal;
    full = toml full;
  };
}
