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
//   control_bench ha [AGENTS] [PUSHES] [PUSHES_100K]   a 3-member etcd
//       cluster and three replicas on it (--store etcd, real mTLS), AGENTS
//       simulated agents spread over them; PUSHES pushes of a 1k-prefix
//       policy and PUSHES_100K of a 100k-prefix one; the time from each push's acknowledgement
//       until every agent has reported the version, and until every replica shows that; memory per
//       stream per replica; then push throughput, the three replicas against one on SQLite, in the
//       same run.
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
#include "control/control_stub.h"
#include "policy/diagnostics.h"
#include "policy/yaml_loader.h"
#include "portcullis/v1/control.grpc.pb.h"
#include "tests/support/etcd.h"
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
  std::map<std::string, int> errors;  // what failed, by message

  void Failed(const std::string& what, const grpc::Status& s) {
    ++failed;
    std::lock_guard<std::mutex> lock(mu);
    ++errors[absl::StrCat(what, ": ", s.error_code(), " ", s.error_message())];
  }
  std::string Errors() {
    std::lock_guard<std::mutex> lock(mu);
    std::string out;
    for (const auto& [what, n] : errors) absl::StrAppend(&out, "\n  ", n, " x ", what);
    return out;
  }
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
    // A stale notice is not a version (no replica goes stale here).
    if (!version_.notice() && version_.version() == state_.target) {
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
    if (!s.ok() && s.error_code() != grpc::StatusCode::CANCELLED) state_.Failed("watch", s);
    std::lock_guard<std::mutex> lock(done_mu_);
    done_ = true;
    done_cv_.notify_all();
  }
  void WaitDone() {
    std::unique_lock<std::mutex> lock(done_mu_);
    done_cv_.wait(lock, [this] { return done_ && reporting_ == 0; });
  }

 private:
  void Acknowledge(uint64_t version, const std::string& hash) {
    report_.set_node(request_.node());
    report_.set_applied_version(version);
    report_.set_applied_hash(hash);
    report_ctx_ = std::make_unique<grpc::ClientContext>();
    {
      std::lock_guard<std::mutex> lock(done_mu_);
      ++reporting_;
    }
    stub_->async()->ReportStatus(report_ctx_.get(), &report_, &report_response_,
                                 [this](grpc::Status s) {
                                   if (!s.ok()) {
                                     state_.Failed("report", s);
                                   } else {
                                     const double ms = Ms(Clock::now() - state_.push_start);
                                     std::lock_guard<std::mutex> lock(state_.mu);
                                     state_.ack_ms.push_back(ms);
                                     ++state_.acked;
                                   }
                                   std::lock_guard<std::mutex> lock(done_mu_);
                                   --reporting_;
                                   done_cv_.notify_all();
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
  int reporting_ = 0;  // ReportStatus calls in flight
};

// Simulated agents, stopped (streams cancelled, every callback run) before
// they are destroyed, on every path out.
struct SimFleet {
  std::vector<std::unique_ptr<SimAgent>> agents;
  ~SimFleet() { Stop(); }
  void Stop() {
    for (auto& a : agents) a->Cancel();
    for (auto& a : agents) a->WaitDone();
    agents.clear();
  }
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
  SimFleet fleet;
  std::vector<std::unique_ptr<SimAgent>>& agents = fleet.agents;
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
  fleet.Stop();

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

// --- replicas on etcd ------------------------------------------------------------

// CPU seconds (user + system) that process `pid` has used.
double CpuSeconds(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Fields after the command name, which is in parentheses: utime is the
  // 12th of them, stime the 13th.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::vector<std::string> fields = absl::StrSplit(stat.substr(close + 2), ' ');
  double ticks = 0;
  for (size_t f : {11u, 12u}) {
    double v = 0;
    if (f < fields.size() && absl::SimpleAtod(fields[f], &v)) ticks += v;
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// One portcullis-control with the shared certificates in `certs` (as one
// Secret hands every replica), gRPC on `port`, /readyz on `http_port`.
Process StartReplica(const std::string& dir, const std::string& certs, int port, int http_port,
                     const std::vector<std::string>& store) {
  std::filesystem::create_directories(dir);
  return Process(testing::ControlReplica(kControl, certs, dir, absl::StrCat("127.0.0.1:", port),
                                         absl::StrCat("127.0.0.1:", http_port), store),
                 dir + ".log");
}

bool Ready(int http_port) {
  return RunCommand(absl::StrCat("curl -s -o /dev/null -w '%{http_code}' --max-time 1 ",
                                 "http://127.0.0.1:", http_port, "/readyz"))
             .out == "200";
}

control::ClientOptions OptionsFor(const std::string& certs, int port, const std::string& role) {
  control::ClientOptions options;
  options.target = absl::StrCat("127.0.0.1:", port);
  options.tls = {certs + "/tls/ca.crt", certs + "/tls/" + role + ".crt",
                 certs + "/tls/" + role + ".key"};
  options.server_name = testing::kControlServerName;
  return options;
}

// PolicyWithPrefixes as protos, `count` variants that differ in every entry.
std::vector<v1::Policy> Policies(int prefixes, int count) {
  std::vector<v1::Policy> out;
  for (int v = 0; v < count; ++v) {
    policy::Diagnostics diags;
    std::optional<policy::LoadedPolicy> loaded =
        policy::ParsePolicyYaml(PolicyWithPrefixes(prefixes, v), diags);
    if (loaded) out.push_back(std::move(loaded->policy));
  }
  return out;
}

// Pushes through `stub`: the version acknowledged, or 0 (refused, or
// unchanged), with the refusal in `error`.
uint64_t PushPolicy(control::ControlStub& stub, const v1::Policy& policy, std::string* error) {
  v1::PushRequest request;
  *request.mutable_policy() = policy;
  request.set_reason("bench");
  absl::StatusOr<v1::PushResponse> r = stub.Push(request, absl::Seconds(30));
  if (!r.ok()) {
    if (error != nullptr) *error = r.status().ToString();
    return 0;
  }
  return r->version();
}

// How many agents replica `stub` shows running `version`.
int ShownOn(control::ControlStub& stub, uint64_t version) {
  absl::StatusOr<v1::StatusResponse> r = stub.Status(v1::StatusRequest(), absl::Seconds(10));
  if (!r.ok()) return -1;
  int n = 0;
  for (const v1::AgentState& a : r->agents()) n += a.status().applied_version() == version;
  return n;
}

// Pushes per second acknowledged over `seconds` by `stubs.size()` clients
// pushing at once, client k through stubs[k]; refusals counted apart.
struct Throughput {
  double per_second;
  int acknowledged, refused;
  std::string first_error;
};
Throughput PushFor(const std::vector<control::ControlStub*>& stubs,
                   const std::vector<v1::Policy>& policies, double seconds) {
  std::atomic<int> next{0}, acknowledged{0}, refused{0};
  std::mutex mu;
  std::string first_error;
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  std::vector<std::thread> clients;
  for (control::ControlStub* stub : stubs) {
    clients.emplace_back([&, stub] {
      while (Clock::now() < end) {
        std::string error;
        const int variant = next++ % static_cast<int>(policies.size());
        if (PushPolicy(*stub, policies[variant], &error) != 0) {
          ++acknowledged;
          continue;
        }
        ++refused;
        std::lock_guard<std::mutex> lock(mu);
        if (first_error.empty()) first_error = error;
      }
    });
  }
  for (std::thread& t : clients) t.join();
  const double took = std::chrono::duration<double>(Clock::now() - start).count();
  return {acknowledged / took, acknowledged.load(), refused.load(), first_error};
}

int Ha(int agent_count, int pushes, int large_pushes) {
  constexpr int kReplicas = 3;
  // Room for a 100k-prefix version (about 2.5 MB) in one transaction, as
  // the example StatefulSet sets.
  testing::EtcdCluster etcd(
      3, {"--max-request-bytes", "8388608", "--quota-backend-bytes", "4294967296"});
  if (!etcd.WaitHealthy()) {
    std::cerr << "etcd did not start: " << etcd.LogOf(0) << "\n";
    return 1;
  }
  testing::TempDir dir;
  const std::string certs = dir.File("certs");
  const CommandResult made =
      RunCommand(absl::StrCat(kControl, " --dev --dev-certs-only --state-dir ", certs));
  if (made.exit_code != 0) {
    std::cerr << made.err;
    return 1;
  }
  std::vector<int> ports, http_ports;
  std::vector<Process> replicas;
  for (int i = 0; i < kReplicas; ++i) {
    ports.push_back(testing::UnusedLoopbackPort());
    http_ports.push_back(testing::UnusedLoopbackPort());
    replicas.push_back(StartReplica(
        dir.File(absl::StrCat("replica", i)), certs, ports[i], http_ports[i],
        {"--store", "etcd", "--etcd-endpoints", etcd.Endpoints(), "--stale-after-seconds", "60"}));
  }
  for (int i = 0; i < kReplicas; ++i) {
    if (!WaitFor([&] { return Ready(http_ports[i]); }, std::chrono::seconds(20))) {
      std::cerr << "replica " << i << " did not start: " << dir.File(absl::StrCat("replica", i))
                << ".log\n";
      return 1;
    }
  }
  std::vector<std::unique_ptr<control::ControlStub>> editors, viewers;
  for (int i = 0; i < kReplicas; ++i) {
    for (auto* stubs : {&editors, &viewers}) {
      auto channel = control::MakeChannel(
          OptionsFor(certs, ports[i], stubs == &editors ? "editor" : "viewer"));
      if (!channel.ok()) {
        std::cerr << channel.status() << "\n";
        return 1;
      }
      stubs->push_back(
          control::NewGrpcControlStub(*channel, OptionsFor(certs, ports[i], "").target));
    }
  }
  long rss_idle[kReplicas];
  for (int i = 0; i < kReplicas; ++i) rss_idle[i] = RssMb(replicas[i].pid());

  FanoutState state;
  SimFleet fleet;
  std::vector<std::unique_ptr<SimAgent>>& agents = fleet.agents;
  const auto connect_start = Clock::now();
  for (int k = 0; k < agent_count; ++k) {
    control::ClientOptions options = OptionsFor(certs, ports[k % kReplicas], "agent");
    options.own_connection = true;
    // Thousands of agents share this process's event loop on a small
    // machine: a ping answered in 5 s would be read late (real agents each
    // have a process).
    options.keepalive_timeout = absl::Seconds(30);
    auto channel = control::MakeChannel(options);
    if (!channel.ok()) {
      std::cerr << channel.status() << "\n";
      return 1;
    }
    agents.push_back(std::make_unique<SimAgent>(*channel, k, state));
    // Opened in batches, each once the last is up: 5,000 TLS handshakes at
    // once starve this process, and streams then miss their keepalive
    // answers (a harness limit: real agents each have a process).
    if ((k + 1) % 250 == 0 || k + 1 == agent_count) {
      if (!WaitFor([&] { return state.connected == k + 1; }, std::chrono::seconds(60))) {
        std::cerr << "only " << state.connected << " of " << k + 1 << " streams connected ("
                  << state.failed << " failed)" << state.Errors() << "\n";
        return 1;
      }
      if ((k + 1) % 1000 == 0) std::fprintf(stderr, "  %d streams up\n", k + 1);
    }
  }
  const double connect_ms = Ms(Clock::now() - connect_start);
  // A keepalive period and its timeout with every stream open, before any
  // push: the streams must hold.
  std::this_thread::sleep_for(std::chrono::seconds(16));
  if (state.failed > 0) {
    std::cerr << state.failed << " streams failed while idle:" << state.Errors() << "\n";
    return 1;
  }
  long rss_streams[kReplicas];
  for (int i = 0; i < kReplicas; ++i) rss_streams[i] = RssMb(replicas[i].pid());

  std::printf(
      "replicas on etcd: 3 etcd members, 3 portcullis-control replicas (--store etcd), %d "
      "simulated agents\n  (watch streams, each on its own mTLS connection, spread "
      "round-robin), %d pushes of 1k prefixes, %d of 100k\n",
      agent_count, pushes, large_pushes);
  std::printf("  streams connected in %.0f ms\n", connect_ms);
  for (int i = 0; i < kReplicas; ++i) {
    const int streams = (agent_count + kReplicas - 1 - i) / kReplicas;
    std::printf("  replica %d: RSS %ld MB idle, %ld MB with %d streams: %.0f KB per stream\n", i,
                rss_idle[i], rss_streams[i], streams,
                1024.0 * static_cast<double>(rss_streams[i] - rss_idle[i]) / streams);
  }
  int through = 0;
  uint64_t version_now = 0;
  for (int prefixes : {1000, 100000}) {
    const int count = prefixes == 1000 ? pushes : large_pushes;
    if (count == 0) continue;
    const std::vector<v1::Policy> policies = Policies(prefixes, 2);
    std::vector<double> reported_ms, shown_ms, answered_ms;
    double cpu_replicas = 0, cpu_self = 0;
    for (int p = 0; p < count + 1; ++p) {
      // Each push through the next replica; its agents hear of it by watch.
      control::ControlStub& editor = *editors[through++ % kReplicas];
      // Versions are gapless: the next is known before the push, so that a
      // stream that delivers it before the push's answer arrives counts.
      const uint64_t expected = version_now + 1;
      {
        std::lock_guard<std::mutex> lock(state.mu);
        state.ack_ms.clear();
      }
      state.acked = 0;
      double cpu_before_replicas = 0;
      for (const Process& r : replicas) cpu_before_replicas += CpuSeconds(r.pid());
      const double cpu_before_self = CpuSeconds(getpid());
      state.push_start = Clock::now();  // before target, which publishes it
      state.target = expected;
      std::string error;
      const uint64_t version = PushPolicy(editor, policies[p % 2], &error);
      const auto acknowledged = Clock::now();
      if (version != expected) {
        std::cerr << "push answered version " << version << ", not " << expected << ": " << error
                  << "\n";
        return 1;
      }
      version_now = version;
      if (!WaitFor([&] { return state.acked == agent_count; }, std::chrono::seconds(60))) {
        std::cerr << "version " << version << ": only " << state.acked << " of " << agent_count
                  << " agents reported it (" << state.failed << " failed)" << state.Errors()
                  << "\n";
        return 1;
      }
      double last_ack_ms = 0;
      {
        std::lock_guard<std::mutex> lock(state.mu);
        for (double ms : state.ack_ms) last_ack_ms = std::max(last_ack_ms, ms);
      }
      const double reported = last_ack_ms - Ms(acknowledged - state.push_start);
      double cpu_after_replicas = 0;
      for (const Process& r : replicas) cpu_after_replicas += CpuSeconds(r.pid());
      const double cpu_after_self = CpuSeconds(getpid());
      bool every = WaitFor(
          [&] {
            for (auto& viewer : viewers) {
              if (ShownOn(*viewer, version) != agent_count) return false;
            }
            return true;
          },
          std::chrono::seconds(60), std::chrono::milliseconds(100));
      if (!every) {
        std::cerr << "version " << version << ": not every replica shows all agents on it\n";
        return 1;
      }
      // The first push of each size warms up; not counted.
      if (p > 0) {
        cpu_replicas += cpu_after_replicas - cpu_before_replicas;
        cpu_self += cpu_after_self - cpu_before_self;
        reported_ms.push_back(reported);
        answered_ms.push_back(Ms(acknowledged - state.push_start));
        shown_ms.push_back(Ms(Clock::now() - acknowledged));
      }
    }
    const Summary r = Summarize(reported_ms), s = Summarize(shown_ms), a = Summarize(answered_ms);
    std::printf("  %6d prefixes: the push answered     p50 %6.0f ms  p99 %6.0f ms  max %6.0f ms\n",
                prefixes, a.p50, a.p99, a.max);
    std::printf(
        "                   then every agent reported p50 %6.0f ms  p99 %6.0f ms  max %6.0f ms\n",
        r.p50, r.p99, r.max);
    std::printf(
        "                   every replica shows it  p50 %6.0f ms  p99 %6.0f ms  max %6.0f ms\n",
        s.p50, s.p99, s.max);
    std::printf(
        "                   CPU until all reported, per push: the replicas %.2f s in all, the "
        "simulated agents %.2f s (2 cores)\n",
        cpu_replicas / count, cpu_self / count);
    const double target = prefixes == 1000 ? 2000 : 5000;
    std::printf("  target: p99 under %.0f ms from the acknowledgement until all reported: %s\n",
                target, r.p99 < target ? "met" : "NOT met");
  }
  fleet.Stop();

  // Throughput, the agents gone: what the store takes. Two clients per
  // replica on etcd; as many on the one SQLite replica.
  const std::vector<v1::Policy> small = Policies(1000, 16);
  constexpr double kSeconds = 10;
  std::vector<control::ControlStub*> on_etcd;
  for (int k = 0; k < 2 * kReplicas; ++k) on_etcd.push_back(editors[k % kReplicas].get());
  const Throughput etcd_rate = PushFor(on_etcd, small, kSeconds);
  for (Process& r : replicas) r.Kill(SIGTERM);

  const int sqlite_port = testing::UnusedLoopbackPort(),
            sqlite_http = testing::UnusedLoopbackPort();
  Process sqlite = StartReplica(dir.File("sqlite"), certs, sqlite_port, sqlite_http, {});
  if (!WaitFor([&] { return Ready(sqlite_http); }, std::chrono::seconds(20))) {
    std::cerr << "the SQLite replica did not start\n";
    return 1;
  }
  auto channel = control::MakeChannel(OptionsFor(certs, sqlite_port, "editor"));
  if (!channel.ok()) return 1;
  std::unique_ptr<control::ControlStub> sqlite_editor =
      control::NewGrpcControlStub(*channel, OptionsFor(certs, sqlite_port, "").target);
  const std::vector<control::ControlStub*> on_sqlite(2 * kReplicas, sqlite_editor.get());
  const Throughput sqlite_rate = PushFor(on_sqlite, small, kSeconds);

  std::printf("push throughput, 1k-prefix policies, %d clients pushing at once for %.0f s:\n",
              2 * kReplicas, kSeconds);
  for (const auto& [name, t] :
       {std::pair<const char*, const Throughput&>{"3 replicas on etcd", etcd_rate},
        {"1 replica on SQLite", sqlite_rate}}) {
    std::printf("  %-20s %6.1f pushes/s acknowledged (%d; %d refused)%s%s\n", name, t.per_second,
                t.acknowledged, t.refused, t.first_error.empty() ? "" : ": ",
                t.first_error.c_str());
  }
  std::printf("  ratio etcd / SQLite: %.2f\n", etcd_rate.per_second / sqlite_rate.per_second);
  return 0;
}

}  // namespace
}  // namespace portcullis::bench

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows as it comes
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
  if (mode == "ha") {
    int pushes = 0, large = 0;
    return portcullis::bench::Ha(argc > 2 && absl::SimpleAtoi(argv[2], &n) ? n : 5000,
                                 argc > 3 && absl::SimpleAtoi(argv[3], &pushes) ? pushes : 20,
                                 argc > 4 && absl::SimpleAtoi(argv[4], &large) ? large : 5);
  }
  std::cerr << "usage: control_bench fanout [STREAMS] | latency [PUSHES] | ha [AGENTS] [PUSHES] "
               "[PUSHES_100K]\n";
  return 2;
}
