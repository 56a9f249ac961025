// Observability end to end: a real Prometheus (Debian's) scrapes a real
// agent (control mode, in front of nginx) and the control service, all in
// test namespaces. After traffic, a query through Prometheus's HTTP API
// returns exactly the drops the test sent; and every metric that the
// Grafana dashboard and the alert rules use is one Prometheus received.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/lab.h"
#include "tests/support/portcullis_commands.h"
#include "tests/support/wait.h"

namespace portcullis::testing {
namespace {

using Clock = std::chrono::steady_clock;

const std::string kAgent = PORTCULLIS_AGENT_PATH;
const std::string kControl = PORTCULLIS_CONTROL_PATH;
const std::string kCtl = PORTCULLISCTL_PATH;
const std::string kSynSend = PORTCULLIS_SYNSEND_PATH;
const std::string kSource = PORTCULLIS_SOURCE_DIR;

// Prometheus (in the control namespace, 198.18.0.2) may scrape the node's
// metrics port; 8080 is the office's; 198.18.200.0/24 is blocklisted.
constexpr char kPolicy[] = R"(apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: observe}
spec:
  defaultAction: deny
  sets:
    office: [198.18.2.0/24]
    admins: [198.18.1.0/28]
    monitoring: [198.18.0.2/32]
  blocklist: [198.18.200.0/24]
  failsafe:
    - {ports: [22, 10250], proto: tcp, from: [admins]}
  ports:
    - {ports: [80], proto: tcp, from: any}
    - {ports: [8080], proto: tcp, from: [office]}
    - {ports: [9469], proto: tcp, from: [monitoring]}
)";

TEST(ObserveE2eTest, PrometheusSeesExactDropCountsAndEveryMetricTheDashboardsUse) {
  if (geteuid() != 0) GTEST_SKIP() << "network namespaces and BPF need root";
  Lab lab({{"ctl", "198.18.0.2"}, {"out", "198.18.30.9"}, {"blk", "198.18.200.9"}});
  Process nginx = lab.StartNginx("ing", {80, 8080});
  const std::string dir = lab.tmp();
  const std::string tls = dir + "/control/tls";
  const std::string pin_dir = absl::StrCat("/sys/fs/bpf/", lab.prefix(), "obs");
  auto in_ctl = [&](const std::string& command) { return lab.In("ctl", command); };

  Process control(
      InNamespace(lab, "ctl",
                  {kControl, "--dev", "--state-dir", dir + "/control", "--listen",
                   absl::StrCat("0.0.0.0:", kControlPort), "--metrics-addr", "127.0.0.1:9470"}),
      dir + "/control.log");
  ASSERT_TRUE(WaitFor(
      [&] {
        return in_ctl("curl -s -o /dev/null -w %{http_code} http://127.0.0.1:9470/readyz").out ==
               "200";
      },
      std::chrono::seconds(10)));
  auto ctl = [&](const std::string& role, const std::string& args) {
    return RunCommand(CtlCommand(lab, "ctl", kCtl, tls, role, args));
  };
  std::ofstream(dir + "/policy.yaml") << kPolicy;
  ASSERT_EQ(ctl("editor", "push " + dir + "/policy.yaml --reason observe").exit_code, 0);
  // A refused push, so that the refusal counter has a series.
  ASSERT_EQ(ctl("viewer", "push " + dir + "/policy.yaml --reason nope").exit_code, 4);

  Process agent(
      AgentWithControl(lab, "ing", kAgent, tls, pin_dir, dir + "/agent-state", "0.0.0.0:9469"),
      dir + "/agent.log");
  struct Cleanup {
    ~Cleanup() { fn(); }
    std::function<void()> fn;
  } cleanup{[&] {
    agent.Kill(SIGKILL);
    UninstallAgent(lab, "ing", kAgent, pin_dir, dir + "/agent-state");
  }};
  ASSERT_TRUE(WaitFor(
      [&] {
        return lab.In("ing", "curl -s -o /dev/null -w %{http_code} http://127.0.0.1:9469/readyz")
                   .out == "200";
      },
      std::chrono::seconds(10)));

  // A shadow candidate that opens 8080 to anyone: the outsider's SYNs are
  // what it would change, in portcullis_shadow_packets_total.
  std::string candidate = kPolicy;
  candidate.replace(candidate.find("from: [office]"), std::string("from: [office]").size(),
                    "from: any");
  std::ofstream(dir + "/candidate.yaml") << candidate;
  ASSERT_EQ(ctl("editor", "push " + dir + "/candidate.yaml --shadow --reason observe").exit_code,
            0);
  ASSERT_TRUE(WaitFor(
      [&] {
        std::ifstream in(dir + "/agent.log");
        std::stringstream log;
        log << in.rdbuf();
        return log.str().find("shadow candidate loaded") != std::string::npos;
      },
      std::chrono::seconds(10)));

  // The node's metrics port is reachable from the monitoring address only.
  std::ofstream(dir + "/prometheus.yml") << R"(global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: portcullis-agent
    static_configs:
      - targets: ["198.18.0.10:9469"]
        labels: {node: ing}
  - job_name: portcullis-control
    static_configs:
      - targets: ["127.0.0.1:9470"]
)";
  Process prometheus(
      {"nsenter", "--net=/run/netns/" + lab.Ns("ctl"), "prometheus",
       "--config.file=" + dir + "/prometheus.yml", "--storage.tsdb.path=" + dir + "/tsdb",
       "--web.listen-address=127.0.0.1:9090", "--log.level=warn"},
      dir + "/prometheus.log");
  ASSERT_TRUE(WaitFor(
      [&] {
        return in_ctl("curl -s -o /dev/null -w %{http_code} http://127.0.0.1:9090/-/ready").out ==
               "200";
      },
      std::chrono::seconds(30)))
      << "Prometheus did not become ready";
  auto query = [&](const std::string& promql) {
    return in_ctl("curl -s http://127.0.0.1:9090/api/v1/query --data-urlencode \"query=" + promql +
                  "\"")
        .out;
  };
  // Both targets are up (the first scrape comes about a second after start).
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(query("sum(up)"), "\"2\"]"); },
                      std::chrono::seconds(30)))
      << query("up");

  constexpr int kNotAllowlisted = 37, kBlocklisted = 23;
  for (const auto& [host, port, count] :
       {std::tuple{"out", 8080, kNotAllowlisted}, std::tuple{"blk", 80, kBlocklisted}}) {
    const CommandResult r = lab.In(host, absl::StrCat(kSynSend, " ", lab.Address(host),
                                                      " 198.18.0.10 ", port, " ", count, " 20"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  // Exactly what was sent, by reason, as Prometheus stored it.
  const std::string drops =
      "sum by (reason) (portcullis_packets_total{verdict=\\\"drop\\\","
      "reason=~\\\"not_allowlisted|blocklist\\\"})";
  auto value = [&](const std::string& result, const std::string& reason) {
    std::smatch m;
    const std::regex re("\"reason\":\"" + reason + "\"\\},\"value\":\\[[0-9.]+,\"([0-9.]+)\"\\]");
    double v = -1;
    if (std::regex_search(result, m, re)) absl::SimpleAtod(m[1].str(), &v);
    return v;
  };
  std::string result;
  EXPECT_TRUE(WaitFor(
      [&] {
        result = query(drops);
        return value(result, "not_allowlisted") == kNotAllowlisted &&
               value(result, "blocklist") == kBlocklisted;
      },
      std::chrono::seconds(20)))
      << result;

  EXPECT_TRUE(WaitFor(
      [&] {
        result = query(
            "portcullis_shadow_packets_total{from_reason=\\\"not_allowlisted\\\","
            "to_reason=\\\"allowed\\\"}");
        return absl::StrContains(result, absl::StrCat("\"", kNotAllowlisted, "\"]"));
      },
      std::chrono::seconds(20)))
      << result;

  // Every metric name Prometheus received, for the dashboard and alerts check.
  const std::string names =
      in_ctl("curl -s http://127.0.0.1:9090/api/v1/label/__name__/values").out;
  std::set<std::string> portcullis;
  const std::regex name_re("\"(portcullis_[a-z0-9_]+)\"");
  for (std::sregex_iterator it(names.begin(), names.end(), name_re), end; it != end; ++it) {
    portcullis.insert((*it)[1].str());
  }
  // Exactly the agent's and the control service's metrics (PRODUCT.md's
  // and the operational ones): a metric lost or renamed fails here.
  const std::set<std::string> expected = {
      "portcullis_bytes_total",
      "portcullis_control_agents",
      "portcullis_control_audit_chain_valid",
      "portcullis_control_connected",
      "portcullis_control_live_version",
      "portcullis_control_refusals_total",
      "portcullis_control_requests_total",
      "portcullis_control_stale",
      "portcullis_control_watch_streams",
      "portcullis_drop_samples_suppressed_total",
      "portcullis_drops_by_port_total",
      "portcullis_map_capacity",
      "portcullis_map_entries",
      "portcullis_packets_total",
      "portcullis_policy_apply_seconds_bucket",
      "portcullis_policy_apply_seconds_count",
      "portcullis_policy_apply_seconds_sum",
      "portcullis_policy_last_applied_timestamp_seconds",
      "portcullis_policy_reverts_total",
      "portcullis_policy_version",
      "portcullis_rate_limited_sources",
      "portcullis_ready",
      "portcullis_scrape_duration_seconds",
      "portcullis_shadow_packets_total",
      "portcullis_sync_errors_total",
      "portcullis_syn_cookies_supported",
      "portcullis_syn_cookies_total",
      "portcullis_xdp_attached",
  };
  EXPECT_EQ(portcullis, expected) << names;
  std::ofstream(dir + "/names.txt") << absl::StrJoin(portcullis, "\n") << "\n";
  const CommandResult check = RunCommand(
      absl::StrCat("node ", kSource, "/deploy/checks/check.mjs metrics ", dir, "/names.txt"));
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

}  // namespace
}  // namespace portcullis::testing
