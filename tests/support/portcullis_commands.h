// Command lines of the Portcullis binaries run inside a Lab's namespaces,
// shared by the end-to-end tests and the control benchmark. Paths to the
// binaries come from each target's compile definitions.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/support/command.h"
#include "tests/support/lab.h"

namespace portcullis::testing {

// The control service's port, its address seen from the agents' namespaces
// (the Lab host "ctl"), and the name its --dev certificate carries.
inline constexpr int kControlPort = 9443;
inline constexpr char kControlAddress[] = "198.18.0.2:9443";
inline constexpr char kControlServerName[] = "portcullis-control";

// `argv` run in `host`'s network namespace (nsenter, not `ip netns exec`,
// which remounts /sys and hides bpffs).
inline std::vector<std::string> InNamespace(const Lab& lab, const std::string& host,
                                            std::vector<std::string> argv) {
  argv.insert(argv.begin(), {"nsenter", "--net=/run/netns/" + lab.Ns(host)});
  return argv;
}

// portcullis-agent in control mode on `host`'s veth, with the --dev agent
// certificate from `tls_dir`.
inline std::vector<std::string> AgentWithControl(
    const Lab& lab, const std::string& host, const std::string& agent, const std::string& tls_dir,
    const std::string& pin_dir, const std::string& state_dir, const std::string& metrics_addr,
    std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {agent,
                                   "--control",
                                   kControlAddress,
                                   "--ca",
                                   tls_dir + "/ca.crt",
                                   "--cert",
                                   tls_dir + "/agent.crt",
                                   "--key",
                                   tls_dir + "/agent.key",
                                   "--server-name",
                                   kControlServerName,
                                   "--interfaces",
                                   lab.Link(host),
                                   "--pin-dir",
                                   pin_dir,
                                   "--state-dir",
                                   state_dir,
                                   "--metrics-addr",
                                   metrics_addr,
                                   "--node",
                                   host};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return InNamespace(lab, host, std::move(argv));
}

// portcullis-control as one replica of several: the CA, server certificate,
// role map and audit key that `portcullis-control --dev --dev-certs-only
// --state-dir CERTS` wrote (as one Secret hands them to every replica),
// agents sharing one certificate, and `extra` (the store, say) after.
inline std::vector<std::string> ControlReplica(const std::string& control, const std::string& certs,
                                               const std::string& state_dir,
                                               const std::string& listen,
                                               const std::string& metrics_addr,
                                               std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {control,
                                   "--state-dir",
                                   state_dir,
                                   "--ca",
                                   certs + "/tls/ca.crt",
                                   "--cert",
                                   certs + "/tls/server.crt",
                                   "--key",
                                   certs + "/tls/server.key",
                                   "--role-map",
                                   certs + "/roles.yaml",
                                   "--audit-signing-key",
                                   certs + "/tls/audit-signing.key",
                                   "--allow-shared-agent-certs",
                                   "--listen",
                                   listen,
                                   "--metrics-addr",
                                   metrics_addr};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

// portcullisctl on the control service's loopback (in `ctl_host`'s
// namespace), as `role`; "" presents no certificate.
inline std::string CtlCommand(const Lab& lab, const std::string& ctl_host, const std::string& ctl,
                              const std::string& tls_dir, const std::string& role,
                              const std::string& args) {
  std::string identity;
  if (!role.empty()) {
    identity =
        absl::StrCat(" --cert ", tls_dir, "/", role, ".crt --key ", tls_dir, "/", role, ".key");
  }
  return absl::StrCat("nsenter --net=/run/netns/", lab.Ns(ctl_host), " ", ctl,
                      " --control 127.0.0.1:", kControlPort, " --ca ", tls_dir, "/ca.crt", identity,
                      " ", args);
}

// portcullis-agent --uninstall for an agent that ran on `host`.
inline std::string UninstallCommand(const Lab& lab, const std::string& host,
                                    const std::string& agent, const std::string& pin_dir,
                                    const std::string& state_dir) {
  return absl::StrCat("nsenter --net=/run/netns/", lab.Ns(host), " ", agent,
                      " --uninstall --pin-dir ", pin_dir, " --state-dir ", state_dir);
}

// Removes what an agent on `host` installed, also after a failed test:
// --uninstall, then the pin dir itself in case the agent could not run.
inline void UninstallAgent(const Lab& lab, const std::string& host, const std::string& agent,
                           const std::string& pin_dir, const std::string& state_dir) {
  RunCommand(UninstallCommand(lab, host, agent, pin_dir, state_dir));
  std::error_code ec;
  std::filesystem::remove_all(pin_dir, ec);
}

}  // namespace portcullis::testing
