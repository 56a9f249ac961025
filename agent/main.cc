// portcullis-agent: see agent.h and PRODUCT.md "Command-line contract".
#include <signal.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/agent.h"
#include "agent/cookie_notrack.h"
#include "common/flags.h"
#include "common/log.h"
#include "control/rollout.h"
#include "datapath/sample_ring.h"

ABSL_FLAG(std::string, policy_file, "",
          "Enforce this local policy file (YAML); it is watched and re-applied when it changes.");
ABSL_FLAG(std::string, interfaces, "",
          "Comma-separated interfaces to police with XDP (and whose outgoing flows are "
          "recorded so that replies pass as established).");
ABSL_FLAG(std::string, tc_interfaces, "",
          "Comma-separated globs of the host-side interfaces of pods to police (e.g. \"cali*\" "
          "on dedicated ingress nodes): matching interfaces, now and later, get the judge toward "
          "the pod and the flow recorder on what it sends.");
ABSL_FLAG(std::string, xdp_mode, "auto", "auto (native, else generic), native or generic.");
ABSL_FLAG(std::string, metrics_addr, "0.0.0.0:9469",
          "HOST:PORT for /metrics, /healthz and /readyz; empty to disable.");
ABSL_FLAG(std::string, state_dir, "/var/lib/portcullis",
          "Where the last applied policy is kept (enforced at start if the file is invalid).");
ABSL_FLAG(std::string, pin_dir, "/sys/fs/bpf/portcullis",
          "bpffs directory for pinned maps and links; /sys/fs/bpf must be the host's bpffs.");
ABSL_FLAG(bool, allow_ephemeral_pins, false,
          "Mount a bpffs of the agent's own when /sys/fs/bpf is not one: its pins, and "
          "enforcement, then end with the agent (tests and experiments only).");
ABSL_FLAG(std::string, node, "", "Node name, for logs and status (default: the host name).");
ABSL_FLAG(std::string, node_labels, "",
          "The node's labels, KEY=VALUE[,KEY=VALUE...], reported to the control service, whose "
          "canary rollouts (push --node-selector) select nodes by them.");
ABSL_FLAG(bool, uninstall, false,
          "Detach every program the agent installed and remove its pins and state, then exit.");
ABSL_FLAG(std::string, control, "",
          "Control service HOST:PORT: watch it for policy instead of --policy-file (needs --ca, "
          "--cert, --key). Replicas: a name with several addresses, or IP:PORT,IP:PORT,...; "
          "the agent moves to another when its replica is gone.");
ABSL_FLAG(std::string, ca, "", "CA certificate (PEM) of the control service, for --control.");
ABSL_FLAG(std::string, cert, "", "This agent's client certificate (PEM), for --control.");
ABSL_FLAG(std::string, key, "", "This agent's client key (PEM), for --control.");
ABSL_FLAG(absl::Duration, tls_refresh_interval, portcullis::control::kDefaultTlsRefresh,
          "How often --ca, --cert and --key are re-read: a renewed certificate is used at "
          "the next handshake, without a restart and without touching enforcement.");
ABSL_FLAG(std::string, server_name, "",
          "Name to expect in the control service's certificate (default: the host of "
          "--control).");
ABSL_FLAG(int, report_interval_seconds, 10,
          "How often to report status to the control service (also after every apply).");
ABSL_FLAG(int, control_stale_failover_seconds, 30,
          "How long to stay on a control replica that says it is stale (it cannot read its "
          "store, --store etcd) before moving to another of --control; doubled while every "
          "replica is.");
ABSL_FLAG(std::string, cookie_mark,
          absl::StrFormat("0x%08x", portcullis::agent::kDefaultCookieMark),
          "Packet mark bits (0x... or decimal) that carry the ACK completing a SYN cookie to the "
          "agent's nftables rule (table inet portcullis), which takes it out of conntrack: "
          "where NAT is loaded (kube-proxy) such an ACK would otherwise lose its connection. "
          "Choose bits no other component of the node sets on packets it receives; 0: no "
          "mark and no rule.");
ABSL_FLAG(bool, insecure_plaintext_for_testing, false,
          "Talk to a control service started with the same flag (no TLS). Never in production.");

namespace {

std::vector<std::string> List(const std::string& csv) {
  return absl::StrSplit(csv, ',', absl::SkipEmpty());
}

int Fail(const std::string& message) {
  portcullis::LogError(message);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  portcullis::ParseFlags(
      argc, argv,
      "portcullis-agent: enforces an ingress policy in the kernel with XDP and TC.\n\n"
      "  portcullis-agent --policy-file POLICY.yaml --interfaces IF[,IF...] [options]\n"
      "  portcullis-agent --control HOST:PORT --ca FILE --cert FILE --key FILE "
      "--interfaces IF[,IF...] [options]\n"
      "  portcullis-agent --uninstall [--pin-dir DIR] [--state-dir DIR]\n\n"
      "On SIGTERM the agent exits and leaves enforcement in place; a new agent adopts it.",
      "agent/main.cc");
  using portcullis::LogInfo;
  portcullis::datapath::RouteLibbpfLogs();

  if (absl::GetFlag(FLAGS_uninstall)) {
    absl::Status s =
        portcullis::agent::Uninstall(absl::GetFlag(FLAGS_pin_dir), absl::GetFlag(FLAGS_state_dir));
    return s.ok() ? 0 : Fail(std::string(s.message()));
  }
  portcullis::agent::AgentOptions options;
  if (const std::string control = absl::GetFlag(FLAGS_control); !control.empty()) {
    if (!absl::GetFlag(FLAGS_policy_file).empty()) {
      return Fail("--control and --policy-file are exclusive: the policy comes from one of them");
    }
    portcullis::control::ClientOptions client;
    client.target = control;
    client.tls = {absl::GetFlag(FLAGS_ca), absl::GetFlag(FLAGS_cert), absl::GetFlag(FLAGS_key)};
    client.server_name = absl::GetFlag(FLAGS_server_name);
    client.tls_refresh = absl::GetFlag(FLAGS_tls_refresh_interval);
    if (client.tls_refresh < absl::Seconds(1)) return Fail("--tls-refresh-interval: at least 1s");
    client.insecure_plaintext = absl::GetFlag(FLAGS_insecure_plaintext_for_testing);
    if (client.insecure_plaintext) {
      portcullis::LogWarning(
          "INSECURE: talking to the control service without TLS "
          "(--insecure-plaintext-for-testing)");
    } else if (client.tls.ca.empty() || client.tls.cert.empty() || client.tls.key.empty()) {
      return Fail("--control needs --ca, --cert and --key");
    } else if (auto tls = portcullis::control::ReadTlsFiles(client.tls); !tls.ok()) {
      return Fail(std::string(tls.status().message()));  // before touching the kernel
    }
    options.control = client;
    options.report_interval = absl::Seconds(absl::GetFlag(FLAGS_report_interval_seconds));
    const int stale_failover = absl::GetFlag(FLAGS_control_stale_failover_seconds);
    if (stale_failover < 1) return Fail("--control-stale-failover-seconds must be at least 1");
    options.stale_failover = absl::Seconds(stale_failover);
  }
  options.policy_file = absl::GetFlag(FLAGS_policy_file);
  options.interfaces = List(absl::GetFlag(FLAGS_interfaces));
  options.tc_interfaces = List(absl::GetFlag(FLAGS_tc_interfaces));
  options.metrics_addr = absl::GetFlag(FLAGS_metrics_addr);
  options.state_dir = absl::GetFlag(FLAGS_state_dir);
  options.pin_dir = absl::GetFlag(FLAGS_pin_dir);
  options.allow_ephemeral_pins = absl::GetFlag(FLAGS_allow_ephemeral_pins);
  options.node = absl::GetFlag(FLAGS_node);
  if (options.node.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    options.node = host;
  }
  auto labels = portcullis::control::ParseLabels(absl::GetFlag(FLAGS_node_labels), "--node-labels");
  if (!labels.ok()) return Fail(std::string(labels.status().message()));
  options.node_labels = *std::move(labels);
  if (options.policy_file.empty() && !options.control) {
    return Fail("--policy-file or --control is required");
  }
  if (options.interfaces.empty()) return Fail("--interfaces is required");
  auto mode = portcullis::datapath::ParseXdpMode(absl::GetFlag(FLAGS_xdp_mode));
  if (!mode.ok()) return Fail(std::string(mode.status().message()));
  options.xdp_mode = *mode;
  auto cookie_mark = portcullis::agent::ParseCookieMark(absl::GetFlag(FLAGS_cookie_mark));
  if (!cookie_mark.ok()) return Fail(std::string(cookie_mark.status().message()));
  options.cookie_mark = *cookie_mark;

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
