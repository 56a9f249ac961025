// portcullis-agent: see agent.h and PRODUCT.md "Command-line contract".
#include <bpf/libbpf.h>
#include <signal.h>

#include <cstdarg>

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/agent.h"
#include "agent/log.h"
#include "common/flags.h"

ABSL_FLAG(std::string, policy_file, "",
          "Enforce this local policy file (YAML); it is watched and re-applied when it changes.");
ABSL_FLAG(std::string, interfaces, "",
          "Comma-separated interfaces to police with XDP (and whose outgoing flows are "
          "recorded so that replies pass as established).");
ABSL_FLAG(std::string, tc_interfaces, "",
          "Comma-separated globs (e.g. \"veth*,cali*\"): matching interfaces, now and later, get "
          "the TC ingress program.");
ABSL_FLAG(std::string, xdp_mode, "auto", "auto (native, else generic), native or generic.");
ABSL_FLAG(std::string, metrics_addr, "0.0.0.0:9469",
          "HOST:PORT for /metrics, /healthz and /readyz; empty to disable.");
ABSL_FLAG(std::string, state_dir, "/var/lib/portcullis",
          "Where the last applied policy is kept (enforced at start if the file is invalid).");
ABSL_FLAG(std::string, pin_dir, "/sys/fs/bpf/portcullis",
          "bpffs directory for pinned maps and links (mounts /sys/fs/bpf if needed).");
ABSL_FLAG(std::string, node, "", "Node name, for logs and status.");
ABSL_FLAG(bool, uninstall, false,
          "Detach every program the agent installed and remove its pins and state, then exit.");
ABSL_FLAG(std::string, control, "", "Control service HOST:PORT (not available in this build).");
ABSL_FLAG(std::string, ca, "", "CA certificate for --control.");
ABSL_FLAG(std::string, cert, "", "Client certificate for --control.");
ABSL_FLAG(std::string, key, "", "Client key for --control.");

namespace {

std::vector<std::string> List(const std::string& csv) {
  return absl::StrSplit(csv, ',', absl::SkipEmpty());
}

// libbpf's own messages become structured log lines. Its "Kernel error
// message" lines are the extended ack of errors the agent handles itself
// (a clsact qdisc that exists already, a filter that is not there).
int LibbpfPrint(enum libbpf_print_level level, const char* format, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char buf[1024];
  vsnprintf(buf, sizeof(buf), format, args);
  std::string line = absl::StripTrailingAsciiWhitespace(buf).data();
  if (absl::StrContains(line, "Kernel error message")) return 0;
  portcullis::agent::Log(level == LIBBPF_WARN ? portcullis::agent::LogLevel::kWarning
                                              : portcullis::agent::LogLevel::kInfo,
                         "libbpf", {{"detail", line}});
  return 0;
}

int Fail(const std::string& message) {
  portcullis::agent::LogError(message);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  portcullis::ParseFlags(
      argc, argv,
      "portcullis-agent: enforces an ingress policy in the kernel with XDP and TC.\n\n"
      "  portcullis-agent --policy-file POLICY.yaml --interfaces IF[,IF...] [options]\n"
      "  portcullis-agent --uninstall [--pin-dir DIR] [--state-dir DIR]\n\n"
      "On SIGTERM the agent exits and leaves enforcement in place; a new agent adopts it.",
      "agent/main.cc");
  using portcullis::agent::LogInfo;
  libbpf_set_print(LibbpfPrint);

  if (absl::GetFlag(FLAGS_uninstall)) {
    absl::Status s = portcullis::agent::Uninstall(absl::GetFlag(FLAGS_pin_dir),
                                                  absl::GetFlag(FLAGS_state_dir));
    return s.ok() ? 0 : Fail(std::string(s.message()));
  }
  if (!absl::GetFlag(FLAGS_control).empty()) {
    return Fail("--control: the control-service mode is not available in this build; use "
                "--policy-file");
  }
  portcullis::agent::AgentOptions options;
  options.policy_file = absl::GetFlag(FLAGS_policy_file);
  options.interfaces = List(absl::GetFlag(FLAGS_interfaces));
  options.tc_interfaces = List(absl::GetFlag(FLAGS_tc_interfaces));
  options.metrics_addr = absl::GetFlag(FLAGS_metrics_addr);
  options.state_dir = absl::GetFlag(FLAGS_state_dir);
  options.pin_dir = absl::GetFlag(FLAGS_pin_dir);
  options.node = absl::GetFlag(FLAGS_node);
  if (options.policy_file.empty()) return Fail("--policy-file is required");
  if (options.interfaces.empty()) return Fail("--interfaces is required");
  auto mode = portcullis::datapath::ParseXdpMode(absl::GetFlag(FLAGS_xdp_mode));
  if (!mode.ok()) return Fail(std::string(mode.status().message()));
  options.xdp_mode = *mode;

  // Signals are taken synchronously by this thread; block them everywhere.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto agent = portcullis::agent::Agent::Start(options);
  if (!agent.ok()) return Fail(std::string(agent.status().message()));
  int sig = 0;
  sigwait(&signals, &sig);
  LogInfo("shutting down; enforcement stays in place", {{"signal", static_cast<int64_t>(sig)}});
  (*agent)->Shutdown();
  std::fflush(nullptr);
  std::_Exit(0);  // see Agent::Shutdown
}
