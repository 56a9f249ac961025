// portcullisctl: the security team's command line. The offline commands
// (validate, simulate) are here; those that talk to the control service are
// in remote.cc.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/check_policy.h"
#include "cli/remote.h"
#include "cli/simulate.h"
#include "common/flags.h"
#include "policy/compiler.h"

ABSL_FLAG(std::string, policy, "", "simulate: the policy file (YAML)");
ABSL_FLAG(std::string, pcap, "", "simulate: the capture (pcap or pcapng, Ethernet frames)");
ABSL_FLAG(std::string, format, "table", "simulate, shadow report: output format, json or table");

namespace {

using portcullis::cli::kExitInvalid;
using portcullis::cli::kExitOk;
using portcullis::cli::kExitSystem;
using portcullis::cli::kExitUsage;

constexpr char kUsage[] =
    R"(portcullisctl: validate, simulate, push and inspect Portcullis policies.

Usage:
  portcullisctl validate POLICY.yaml
      Checks a policy. Errors and warnings name FILE:LINE:COLUMN.
      Exit 0 when valid (warnings allowed), 1 when invalid. With --control,
      also asks the control service whether it would accept the policy
      (the baseline, against the live version).
  portcullisctl simulate --policy POLICY.yaml --pcap TRAFFIC.pcap [--format json|table]
      Judges every packet of an Ethernet capture with the real datapath
      program (BPF_PROG_TEST_RUN, needs root or CAP_BPF), rate limits on the
      capture's own timestamps. Exit 0 when simulated, 1 for a bad policy or
      capture, 3 when BPF is not available.

Commands that talk to the control service take
  --control HOST:PORT --ca CA.crt --cert YOU.crt --key YOU.key
  portcullisctl diff POLICY.yaml [--exit-code]
      What a push would change against the live version: CIDRs and rules
      added (+) and removed (-), settings changed (~). --exit-code: exit 1
      when there are differences.
  portcullisctl push POLICY.yaml --reason "..." [--allow-failsafe-change]
                [--confirm-within DURATION]
      Validates locally, then pushes. Prints the new version on stdout.
      --confirm-within 2m: every agent, and the service, go back to the
      previous version unless `confirm VERSION` comes within 2 minutes (an
      agent that cannot reach the service goes back by itself).
  portcullisctl push POLICY.yaml --reason "..." --nodes A,B | --node-selector KEY=VALUE
      A canary: the version is live on those nodes only (the selector
      matches the agents' --node-labels); the others keep the live one.
  portcullisctl push POLICY.yaml --reason "..." --steps 10%,50%,100% --interval 5m
                [--max-drop-increase 5x]
      A staged rollout: the version is live on that share of the agents,
      then on the next share every interval; the last step promotes it.
      --max-drop-increase (also with --nodes/--node-selector): abort by
      itself when a canary's drops, by a reason the change touches, rise
      above that factor of their rate before.
  portcullisctl rollout promote|abort [--version N] --reason "..."
      promote: the canary version goes live on every node. abort: the
      canaries go back to what the others run, as a new version for all.
  portcullisctl push POLICY.yaml --shadow --reason "..."
      Stores the policy as the shadow candidate: every agent judges each
      packet by it too, beside the live version, and acts on nothing.
  portcullisctl shadow report [--format table|json] [--top N]
      What the candidate would change, over all agents: packets and
      sources by (live -> shadow) verdict and reason, ports, top sources.
  portcullisctl shadow promote [--id N] --reason "..." [--allow-failsafe-change]
      Makes the candidate live as a new version; agents switch to the slot
      it is loaded in. --id: refuse unless N is still the candidate.
  portcullisctl shadow discard [--id N] --reason "..."
      Drops the candidate. Any new live version ends it too.
  portcullisctl confirm VERSION
      Keeps a version pushed with --confirm-within, within its window.
  portcullisctl rollback --to VERSION --reason "..." [--allow-failsafe-change]
      Makes VERSION's policy live again, as a new version (admin only).
  portcullisctl history | audit [--verify] | status | get [VERSION]
      Versions; the audit log (--verify checks its hash chain); the agents,
      their applied version, drift and staleness; one version as YAML.

Exit codes: 0 done; 1 invalid or refused policy, differences (diff
--exit-code), broken audit chain; 2 bad command line; 3 the service or the
machine could not do it (unreachable, TLS failure, BPF unavailable); 4 not
authenticated, or the role does not allow it.
)";

int Fail(int code, const std::string& message) {
  std::cerr << "portcullisctl: " << message << "\n";
  return code;
}

int Validate(const std::vector<char*>& args) {
  if (args.size() != 3) return Fail(kExitUsage, "usage: portcullisctl validate POLICY.yaml");
  return portcullis::cli::CheckPolicy(args[2], /*report_valid=*/true) ? kExitOk : kExitInvalid;
}

int Simulate(const std::vector<char*>& args) {
  if (args.size() != 2) {
    return Fail(kExitUsage, absl::StrCat("simulate takes no positional arguments (got \"",
                                         args.size() > 2 ? args[2] : "", "\")"));
  }
  const std::string policy_path = absl::GetFlag(FLAGS_policy);
  const std::string pcap_path = absl::GetFlag(FLAGS_pcap);
  const std::string format = absl::GetFlag(FLAGS_format);
  if (policy_path.empty()) return Fail(kExitUsage, "simulate needs --policy POLICY.yaml");
  if (pcap_path.empty()) return Fail(kExitUsage, "simulate needs --pcap TRAFFIC.pcap");
  if (format != "json" && format != "table") {
    return Fail(kExitUsage, absl::StrCat("--format: \"", format, "\" is not json or table"));
  }
  auto policy = portcullis::cli::CheckPolicy(policy_path, /*report_valid=*/false);
  if (!policy) return kExitInvalid;
  auto compiled = portcullis::policy::Compile(*policy);
  if (!compiled.ok()) return Fail(kExitInvalid, std::string(compiled.status().message()));

  const bool tty = isatty(STDERR_FILENO);
  auto progress = [&](uint64_t frames) {
    if (tty) std::cerr << "\rsimulate: " << frames << " packets judged" << std::flush;
  };
  auto result = portcullis::cli::Simulate(*compiled, pcap_path, progress);
  if (tty && result.ok() && result->packets.size() >= 100000) std::cerr << "\n";
  if (!result.ok()) {
    const absl::StatusCode code = result.status().code();
    const bool input =
        code == absl::StatusCode::kNotFound || code == absl::StatusCode::kInvalidArgument ||
        code == absl::StatusCode::kFailedPrecondition || code == absl::StatusCode::kDataLoss;
    std::string message(result.status().message());
    if (code == absl::StatusCode::kPermissionDenied) {
      absl::StrAppend(&message, " (simulate loads the datapath: run as root or with CAP_BPF)");
    }
    return Fail(input ? kExitInvalid : kExitSystem, message);
  }
  std::cout << (format == "json" ? portcullis::cli::FormatJson(*result)
                                 : portcullis::cli::FormatTable(*result, pcap_path));
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args = portcullis::ParseFlags(argc, argv, kUsage, "cli/");
  if (args.size() < 2) {
    std::cerr << kUsage;
    return kExitUsage;
  }
  const std::string command = args[1];
  if (portcullis::cli::IsRemoteCommand(command.c_str())) return portcullis::cli::RunRemote(args);
  if (command == "validate") return Validate(args);
  if (command == "simulate") return Simulate(args);
  if (command == "help") {
    std::cout << kUsage;
    return kExitOk;
  }
  return Fail(kExitUsage, absl::StrCat("unknown command \"", command, "\"; see --help"));
}
