// The control plane's two figures (docs/BENCHMARKS.md "Control service").
// Not a test; run as root:
//
//   control_bench fanout [STREAMS]       one real portcullis-control, STREAMS
//       simulated agents in this process, each on its own mTLS connection,
//       watching; one push; the time until each has received the version and
//       acknowledged it (ReportStatus), p50/p99/max, and the service's memory.
//   control_bench latency [PUSHES]       portcullis-control and two real
//       agents in network namespaces; PUSHES pushes each of a 1k-prefix and
//       a 100k-prefix policy with portcullisctl; the time from starting the
//       push until both agents have applied it, p50/p99/max.
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "control/client.h"
#include "portcullis/v1/control.grpc.pb.h"
#include "tests/support/lab.h"
#include "tests/support/portcullis_commands.h"
#include "tests/support/wait.h"

namespace portcullis::bench {
namespace {

using testing::CommandResult;
using testing::Lab;
using testing::Process;
using testing::RssMb;
using testing::RunCommand;
using testing::WaitFor;
using Clock = std::chrono::steady_clock;

const std::string kControl = PORTCULLIS_CONTROL_PATH;
const std::string kCtl = PORTCULLISCTL_PATH;
const std::string kAgent = PORTCULLIS_AGENT_PATH;

// A policy whose "office" set holds `prefixes` distinct /28s of 10.0.0.0/8;
// `variant` shifts them, so that consecutive pushes differ in every entry.
std::string PolicyWithPrefixes(int prefixes, int variant) {
  std::string out = absl::StrCat(
      "apiVersion: portcullis/v1\nkind: IngressPolicy\nmetadata: {name: bench-", prefixes,
      "}\nspec:\n  defaultAction: deny\n  sets:\n    admins: [198.18.1.0/28]\n    office:\n");
  absl::StrAppend(&out, testing::PrefixItems(prefixes, variant));
  absl::StrAppend(&out,
                  "  failsafe:\n    - {ports: [22, 10250], proto: tcp, from: [admins]}\n"
                  "  ports:\n    - {ports: [80], proto: tcp, from: any}\n"
                  "    - {ports: [8080], proto: tcp, from: [office]}\n");
  return out;
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Summary {
  double p50, p99, max;
};
Summary Summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) {
    return ms[std::min(ms.size() - 1, static_cast<size_t>(q * static_cast<double>(ms.size())))];
  };
  return {at(0.5), at(0.99), ms.back()};
}

// --- fan-out ----------------------------------------------------------------

struct FanoutState {
  std::atomic<int> connected{0}, received{0}, acked{0}, failed{0};
  std::atomic<uint64_t> target{0};
  Clock::time_point push_start;
  std::mutex mu;
  std::vector<double> receive_ms, ack_ms;
};

// One simulated agent: a watch stream on its own connection; each version
// received is acknowledged with a status report, as an agent does after
// applying it.
class SimAgent : public grpc::ClientReadReactor<v1::PolicyVersion> {
 public:
  SimAgent(std::shared_ptr<grpc::Channel> channel, int index, FanoutState& state)
      : stub_(v1::Control::NewStub(channel)), state_(state) {
    request_.set_node(absl::StrCat("sim-", index));
    stub_->async()->Watch(&ctx_, &request_, this);
    StartRead(&version_);
    StartCall();
  }
  void Cancel() { ctx_.TryCancel(); }

  void OnReadInitialMetadataDone(bool ok) override {
    if (ok) ++state_.connected;
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (version_.version() == state_.target) {
      const double ms = Ms(Clock::now() - state_.push_start);
      {
        std::lock_guard<std::mutex> lock(state_.mu);
        state_.receive_ms.push_back(ms);
      }
      ++state_.received;
      Acknowledge(version_.version(), version_.content_hash());
    }
    StartRead(&version_);
  }
  void OnDone(const grpc::Status& s) override {
    if (!s.ok() && s.error_code() != grpc::StatusCode::CANCELLED) ++state_.failed;
    std::lock_guard<std::mutex> lock(done_mu_);
    done_ = true;
    done_cv_.notify_all();
  }
  void WaitDone() {
    std::unique_lock<std::mutex> lock(done_mu_);
    done_cv_.wait(lock, [this] { return done_; });
  }

 private:
  void Acknowledge(uint64_t version, const std::string& hash) {
    report_.set_node(request_.node());
    report_.set_applied_version(version);
    report_.set_applied_hash(hash);
    report_ctx_ = std::make_unique<grpc::ClientContext>();
    stub_->async()->ReportStatus(report_ctx_.get(), &report_, &report_response_,
                                 [this](grpc::Status s) {
                                   if (!s.ok()) {
                                     ++state_.failed;
                                     return;
                                   }
                                   const double ms = Ms(Clock::now() - state_.push_start);
                                   std::lock_guard<std::mutex> lock(state_.mu);
                                   state_.ack_ms.push_back(ms);
                                   ++state_.acked;
                                 });
  }

  std::unique_ptr<v1::Control::Stub> stub_;
  FanoutState& state_;
  grpc::ClientContext ctx_;
  v1::WatchRequest request_;
  v1::PolicyVersion version_;
  v1::AgentStatus report_;
  v1::ReportStatusResponse report_response_;
  std::unique_ptr<grpc::ClientContext> report_ctx_;
  std::mutex done_mu_;
  std::condition_variable done_cv_;
  bool done_ = false;
};

int Fanout(int streams) {
  testing::TempDir dir;
  // Per process: the service refuses a port in use (no SO_REUSEPORT).
  const std::string port = absl::StrCat(19000 + getpid() % 1000);
  Process control({kControl, "--dev", "--state-dir", dir.path(), "--listen", "127.0.0.1:" + port,
                   "--metrics-addr", ""},
                  dir.File("control.log"));
  const std::string tls = dir.path() + "/tls";
  if (!WaitFor([&] { return std::filesystem::exists(tls + "/ca.crt"); },
               std::chrono::seconds(10))) {
    std::cerr << "the control service did not start\n";
    return 1;
  }
  const pid_t pid = control.pid();
  const long rss_idle = RssMb(pid);

  control::ClientOptions options;
  options.target = "127.0.0.1:" + port;
  options.tls = {tls + "/ca.crt", tls + "/agent.crt", tls + "/agent.key"};
  options.own_connection = true;  // each simulated agent, as real agents are
  FanoutState state;
  std::vector<std::unique_ptr<SimAgent>> agents;
  const auto connect_start = Clock::now();
  for (int i = 0; i < streams; ++i) {
    auto channel = control::MakeChannel(options);
    if (!channel.ok()) {
      std::cerr << channel.status() << "\n";
      return 1;
    }
    agents.push_back(std::make_unique<SimAgent>(*channel, i, state));
  }
  if (!WaitFor([&] { return state.connected == streams; }, std::chrono::seconds(120))) {
    std::cerr << "only " << state.connected << " of " << streams << " streams connected ("
              << state.failed << " failed)\n";
    return 1;
  }
  const double connect_ms = Ms(Clock::now() - connect_start);
  const long rss_streams = RssMb(pid);

  const std::string policy = dir.Write("p.yaml", PolicyWithPrefixes(1000, 0));
  state.target = 1;
  state.push_start = Clock::now();
  const CommandResult push = RunCommand(
      absl::StrCat(kCtl, " --control 127.0.0.1:", port, " --ca ", tls, "/ca.crt --cert ", tls,
                   "/editor.crt --key ", tls, "/editor.key push ", policy, " --reason fanout"));
  const double push_ms = Ms(Clock::now() - state.push_start);
  if (push.exit_code != 0) {
    std::cerr << "push failed: " << push.err;
    return 1;
  }
  const bool all = WaitFor([&] { return state.acked == streams; }, std::chrono::seconds(30));
  const long rss_after = RssMb(pid);
  for (auto& a : agents) a->Cancel();
  for (auto& a : agents) a->WaitDone();

  const Summary received = Summarize(state.receive_ms), acked = Summarize(state.ack_ms);
  std::printf(
      "fan-out: %d watch streams, each on its own mTLS connection, one push of a 1k-prefix "
      "policy\n",
      streams);
  std::printf("  streams connected in %.0f ms; the push command took %.0f ms\n", connect_ms,
              push_ms);
  std::printf("  received  p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms  (%d of %d)\n", received.p50,
              received.p99, received.max, state.received.load(), streams);
  std::printf("  acked     p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms  (%d of %d)%s\n", acked.p50,
              acked.p99, acked.max, state.acked.load(), streams, all ? "" : "  INCOMPLETE");
  std::printf(
      "  control service RSS: %ld MB idle, %ld MB with the streams, %ld MB after the push\n",
      rss_idle, rss_streams, rss_after);
  std::printf("  target: all acknowledged within 2000 ms: %s\n",
              all && acked.max < 2000 ? "met" : "NOT met");
  return 0;
}

// --- push-to-enforced latency ---------------------------------------------------

// The wall-clock times at which an agent's log says it applied `version`.
std::optional<absl::Time> AppliedAt(const std::string& log, uint64_t version) {
  std::ifstream in(log);
  const std::string needle =
      absl::StrCat("\"msg\":\"policy applied\",\"origin\":\"control version ", version, "\"");
  for (std::string line; std::getline(in, line);) {
    if (!absl::StrContains(line, needle)) continue;
    const size_t at = line.find("\"ts\":\"");
    absl::Time t;
    std::string err;
    if (at != std::string::npos &&
        absl::ParseTime("%Y-%m-%dT%H:%M:%E3SZ", line.substr(at + 6, 24), &t, &err)) {
      return t;
    }
  }
  return std::nullopt;
}

int Latency(int pushes) {
  Lab lab({{"node2", "198.18.0.11"}, {"ctl", "198.18.0.2"}});
  const std::string dir = lab.tmp();
  const std::string tls = dir + "/control/tls";
  Process control(
      testing::InNamespace(lab, "ctl",
                           {kControl, "--dev", "--state-dir", dir + "/control", "--listen",
                            absl::StrCat("0.0.0.0:", testing::kControlPort), "--metrics-addr", ""}),
      dir + "/control.log");
  if (!WaitFor([&] { return std::filesystem::exists(tls + "/ca.crt"); },
               std::chrono::seconds(10))) {
    std::cerr << "the control service did not start\n";
    return 1;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto ctl = [&](const std::string& args) {
    return RunCommand(testing::CtlCommand(lab, "ctl", kCtl, tls, "editor", args));
  };
  auto pin_dir = [&](const std::string& node) {
    return absl::StrCat("/sys/fs/bpf/", lab.prefix(), "b", node);
  };
  std::map<std::string, Process> agents;
  std::vector<std::string> nodes = {"ing", "node2"};
  for (const std::string& node : nodes) {
    agents[node] = Process(testing::AgentWithControl(lab, node, kAgent, tls, pin_dir(node),
                                                     dir + "/state-" + node, ""),
                           dir + "/agent-" + node + ".log");
  }
  std::printf(
      "push-to-enforced: portcullisctl push until both agents (own namespaces, own "
      "veths) have applied the version, %d pushes per size\n",
      pushes);
  int status = 0;
  for (int prefixes : {1000, 100000}) {
    std::vector<double> ms;
    const std::string files[2] = {absl::StrCat(dir, "/p", prefixes, "a.yaml"),
                                  absl::StrCat(dir, "/p", prefixes, "b.yaml")};
    std::ofstream(files[0]) << PolicyWithPrefixes(prefixes, 0);
    std::ofstream(files[1]) << PolicyWithPrefixes(prefixes, 1);
    for (int i = 0; i < pushes + 1; ++i) {
      const absl::Time start = absl::Now();
      const CommandResult r = ctl(absl::StrCat("push ", files[i % 2], " --reason bench"));
      uint64_t version = 0;
      if (r.exit_code != 0 || !absl::SimpleAtoi(absl::StripAsciiWhitespace(r.out), &version)) {
        std::cerr << "push failed: " << r.err;
        return 1;
      }
      std::optional<absl::Time> done[2];
      WaitFor(
          [&] {
            for (size_t n = 0; n < nodes.size(); ++n) {
              if (!done[n]) done[n] = AppliedAt(dir + "/agent-" + nodes[n] + ".log", version);
            }
            return done[0] && done[1];
          },
          std::chrono::seconds(60));
      if (!done[0] || !done[1]) {
        std::cerr << "version " << version << " was not applied by both agents\n";
        return 1;
      }
      // The first push of each size warms the agents' maps up; not counted.
      if (i > 0) ms.push_back(absl::ToDoubleMilliseconds(std::max(*done[0], *done[1]) - start));
    }
    const Summary s = Summarize(ms);
    std::printf("  %6d prefixes: p50 %6.0f ms  p99 %6.0f ms  max %6.0f ms\n", prefixes, s.p50,
                s.p99, s.max);
    if (prefixes == 100000) {
      std::printf("  target: p99 under 1000 ms for 100k prefixes: %s\n",
                  s.p99 < 1000 ? "met" : "NOT met");
    }
  }
  for (const std::string& node : nodes) {
    agents[node].Kill(SIGKILL);
    RunCommand(testing::UninstallCommand(lab, node, kAgent, pin_dir(node), dir + "/state-" + node));
  }
  return status;
}

}  // namespace
}  // namespace portcullis::bench

int main(int argc, char** argv) {
  // 1,000 client connections and the service's 1,000 need descriptors.
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  const std::string mode = argc > 1 ? argv[1] : "";
  int n = 0;
  if (mode == "fanout") {
    return portcullis::bench::Fanout(argc > 2 && absl::SimpleAtoi(argv[2], &n) ? n : 1000);
  }
  if (mode == "latency") {
    return portcullis::bench::Latency(argc > 2 && absl::SimpleAtoi(argv[2], &n) ? n : 20);
  }
  std::cerr << "usage: control_bench fanout [STREAMS] | latency [PUSHES]\n";
  return 2;
}
