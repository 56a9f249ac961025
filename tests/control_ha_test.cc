// portcullis-control replicated on etcd, end to end: a 3-member etcd
// cluster and three portcullis-control replicas (--store etcd, one CA, real
// mTLS) in the "ctl" namespace of a Lab, portcullisctl pushing through
// different replicas at once, and a real agent on "ing" that watches
// through --control with all three endpoints.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/etcd.h"
#include "tests/support/lab.h"
#include "tests/support/portcullis_commands.h"
#include "tests/support/wait.h"

namespace portcullis::testing {
namespace {

using ::testing::HasSubstr;

const std::string kAgent = PORTCULLIS_AGENT_PATH;
const std::string kControl = PORTCULLIS_CONTROL_PATH;
const std::string kCtl = PORTCULLISCTL_PATH;
constexpr int kReplicas = 3;
// The last replica reaches etcd at this address (the members serve on it
// too), so that nftables can cut it off alone.
const std::string kCutOffAddress = "127.0.0.2";
constexpr int kCutOff = kReplicas - 1;
// How long the agent stays on a stale replica before it moves.
constexpr int kStaleFailoverSeconds = 3;

// Port 80 open to everyone; `extra` is one more port, open to 198.18.2.0/24:
// each push gets a policy of its own.
std::string PolicyWith(int extra) {
  return absl::StrCat(R"(apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: ha}
spec:
  defaultAction: deny
  sets:
    office: [198.18.2.0/24]
    admins: [198.18.1.0/28]
  failsafe:
    - {ports: [22, 10250], proto: tcp, from: [admins]}
  ports:
    - {ports: [80], proto: tcp, from: any}
    - {ports: [)",
                      extra, R"(], proto: tcp, from: [office]}
)");
}

class ControlHaTest : public ::testing::Test {
 protected:
  // One Lab for the suite: a namespace's veth is deleted asynchronously, so
  // a Lab made again at once under the same names could collide with it.
  static void SetUpTestSuite() {
    if (geteuid() == 0) lab_ = new Lab(std::map<std::string, std::string>{{"ctl", "198.18.0.2"}});
  }
  static void TearDownTestSuite() {
    delete lab_;
    lab_ = nullptr;
  }

  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "network namespaces and BPF need root";
    ASSERT_NE(lab_, nullptr);
    dir_ = absl::StrCat(lab_->tmp(), "/t", ++test_number_);
    std::filesystem::create_directories(dir_);
    etcd_ = std::make_unique<EtcdCluster>(
        3, std::vector<std::string>{},
        std::vector<std::string>{"nsenter", "--net=/run/netns/" + lab_->Ns("ctl")}, kCutOffAddress);
    ASSERT_TRUE(etcd_->WaitHealthy()) << "etcd did not start: " << etcd_->LogOf(0);
    // One CA, server certificate, role map and audit key for every replica,
    // as a Secret would hand them out.
    certs_ = dir_ + "/certs";
    const CommandResult made =
        RunCommand(absl::StrCat(kControl, " --dev --dev-certs-only --state-dir ", certs_));
    ASSERT_EQ(made.exit_code, 0) << made.err;
    for (int i = 0; i < kReplicas; ++i) StartReplica(i);
    for (int i = 0; i < kReplicas; ++i) {
      ASSERT_TRUE(
          WaitFor([&] { return ReplicaHttp(i, "/readyz") == "200"; }, std::chrono::seconds(15)))
          << "replica " << i << " did not start";
    }
  }

  void TearDown() override {
    if (lab_ == nullptr || dir_.empty()) return;
    agent_.Kill(SIGKILL);
    UninstallAgent(*lab_, "ing", kAgent, PinDir(), dir_ + "/agent-state");
    for (Process& r : replicas_) r.Kill(SIGKILL);
    // A test that failed while replica kCutOff was cut off leaves no
    // partition to the next.
    lab_->In("ctl", absl::StrCat("nft delete table ip ", lab_->prefix(), "cutoff 2>/dev/null"));
    etcd_.reset();
    if (HasFailure()) {
      for (int i = 0; i < kReplicas; ++i) DumpLog(absl::StrCat("replica", i));
      DumpLog("agent");
    }
  }

  void DumpLog(const std::string& name) const {
    std::ifstream in(absl::StrCat(dir_, "/", name, ".log"));
    std::cerr << "---- " << name << " log ----\n" << in.rdbuf();
  }

  std::string PinDir() const {
    return absl::StrCat("/sys/fs/bpf/", lab_->prefix(), "ha", test_number_);
  }
  static int Port(int i) { return kControlPort + i; }

  void StartReplica(int i) {
    const std::string dir = absl::StrCat(dir_, "/replica", i);
    std::filesystem::create_directories(dir);
    replicas_[i] = Process(
        InNamespace(
            *lab_, "ctl",
            ControlReplica(kControl, certs_, dir, absl::StrCat("0.0.0.0:", Port(i)),
                           absl::StrCat("127.0.0.1:", 9470 + i),
                           {"--stale-after-seconds", "5", "--store", "etcd", "--etcd-endpoints",
                            etcd_->Endpoints(i == kCutOff ? kCutOffAddress : "127.0.0.1")})),
        absl::StrCat(dir_, "/replica", i, ".log"));
  }

  std::string ReplicaHttp(int i, const std::string& path) const {
    return lab_
        ->In("ctl", absl::StrCat("curl -s -o /dev/null -w %{http_code} --max-time 1 "
                                 "http://127.0.0.1:",
                                 9470 + i, path))
        .out;
  }

  // portcullisctl through replica i (its loopback port), as `role`.
  CommandResult Ctl(int i, const std::string& role, const std::string& args) const {
    return RunCommand(absl::StrCat(
        "nsenter --net=/run/netns/", lab_->Ns("ctl"), " ", kCtl, " --control 127.0.0.1:", Port(i),
        " --ca ", certs_, "/tls/ca.crt --cert ", certs_, "/tls/", role, ".crt --key ", certs_,
        "/tls/", role, ".key --server-name ", kControlServerName, " ", args));
  }

  // Pushes PolicyWith(extra) through replica i; the version it acknowledged,
  // or 0 when it refused or could not be reached.
  uint64_t Push(int i, int extra, const std::string& reason) const {
    const std::string file = absl::StrCat(dir_, "/policy-", extra, ".yaml");
    std::ofstream(file) << PolicyWith(extra);
    const CommandResult r =
        Ctl(i, "editor", absl::StrCat("push ", file, " --reason '", reason, "'"));
    std::smatch m;
    static const std::regex kAck("as version ([0-9]+)");
    if (r.exit_code != 0 || !std::regex_search(r.err, m, kAck)) return 0;
    return std::stoull(m[1]);
  }

  // The live version replica i reports ("live version: N (hash)"), 0 if none.
  uint64_t LiveOn(int i) const {
    const CommandResult r = Ctl(i, "viewer", "status");
    std::smatch m;
    static const std::regex kLive("live version: ([0-9]+)");
    if (r.exit_code != 0 || !std::regex_search(r.out, m, kLive)) return 0;
    return std::stoull(m[1]);
  }

  static inline Lab* lab_ = nullptr;
  static inline int test_number_ = 0;
  std::string dir_;  // this test's files
  // The agent on "ing", with `replicas` in --control (all by default).
  void StartAgent(const std::vector<int>& replicas = {0, 1, 2}) {
    std::vector<std::string> agent = AgentWithControl(
        *lab_, "ing", kAgent, certs_ + "/tls", PinDir(), dir_ + "/agent-state", "127.0.0.1:9469",
        {"--report-interval-seconds", "1", "--control-stale-failover-seconds",
         absl::StrCat(kStaleFailoverSeconds)});
    for (size_t k = 0; k + 1 < agent.size(); ++k) {
      if (agent[k] == "--control") {
        std::vector<std::string> endpoints;
        for (int i : replicas) endpoints.push_back(absl::StrCat("198.18.0.2:", Port(i)));
        agent[k + 1] = absl::StrJoin(endpoints, ",");
      }
    }
    agent_ = Process(agent, dir_ + "/agent.log");
  }

  // Whether replica i's status shows the agent on "ing" running version v,
  // in sync, whichever replica the agent reports to.
  bool ShowsAgentOn(int i, uint64_t v) const {
    return std::regex_search(Ctl(i, "viewer", "status").out,
                             std::regex(absl::StrCat("\ning +", v, " +\\S+ +in sync ")));
  }
  // Whether every running replica shows it.
  bool AgentReports(uint64_t v) const {
    for (int i = 0; i < kReplicas; ++i) {
      if (replicas_[i].running() && !ShowsAgentOn(i, v)) return false;
    }
    return true;
  }
  // How many policy streams replica i holds (its watch-stream gauge).
  double StreamsOn(int i) const {
    if (!replicas_[i].running()) return 0;
    const CommandResult m = lab_->In(
        "ctl", absl::StrCat("curl -s --max-time 1 http://127.0.0.1:", 9470 + i, "/metrics"));
    return SumMetric(m.out, "portcullis_control_watch_streams");
  }
  // Which replica holds the agent's policy stream, -1 when none.
  int StreamHolder() const {
    for (int i = 0; i < kReplicas; ++i) {
      if (StreamsOn(i) >= 1) return i;
    }
    return -1;
  }

  // Cuts replica kCutOff off from every etcd member, or heals it: its
  // packets to and from kCutOffAddress are dropped silently, as in a
  // partition (no reset, no ICMP).
  void CutOff(bool cut) const {
    const std::string table = lab_->prefix() + "cutoff";
    const CommandResult r = lab_->In(
        "ctl", cut ? absl::StrCat("nft \"add table ip ", table, "; add chain ip ", table,
                                  " out { type filter hook output priority 0; }; add rule ip ",
                                  table, " out ip daddr ", kCutOffAddress, " drop; add rule ip ",
                                  table, " out ip saddr ", kCutOffAddress, " drop\"")
                   : absl::StrCat("nft delete table ip ", table));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  // A metric of the agent on "ing" (its --metrics-addr).
  double AgentMetric(const std::string& name) const {
    const CommandResult m = lab_->In("ing", "curl -s --max-time 1 http://127.0.0.1:9469/metrics");
    return SumMetric(m.out, name);
  }

  std::unique_ptr<EtcdCluster> etcd_;
  std::string certs_;
  Process replicas_[kReplicas];
  Process agent_;
};

// Two clients push at once through replicas 0 and 1 while replica 1 is
// killed -9 halfway. Every acknowledged push is a version of its own,
// exactly once, the numbers have no gap, the audit chain verifies, and the
// survivors agree on the live version.
TEST_F(ControlHaTest, AcknowledgedPushesSurviveAReplicaKilledDuringAPushLoop) {
  constexpr int kEach = 8;
  std::vector<uint64_t> acked[2];
  std::atomic<int> pushed_by_1{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 2; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < kEach; ++i) {
        const uint64_t v = Push(c, 20000 + 100 * c + i, absl::StrCat("client ", c, " push ", i));
        if (v != 0) acked[c].push_back(v);
        if (c == 1) ++pushed_by_1;
      }
    });
  }
  ASSERT_TRUE(WaitFor([&] { return pushed_by_1 >= kEach / 2; }, std::chrono::seconds(60)));
  replicas_[1].Kill(SIGKILL);
  for (std::thread& t : clients) t.join();

  EXPECT_EQ(acked[0].size(), static_cast<size_t>(kEach)) << "a push to the survivor failed";
  std::set<uint64_t> numbers;
  for (const auto& a : acked) numbers.insert(a.begin(), a.end());
  EXPECT_EQ(numbers.size(), acked[0].size() + acked[1].size()) << "one number acknowledged twice";
  const CommandResult history = Ctl(2, "viewer", "history");
  ASSERT_EQ(history.exit_code, 0) << history.err;
  // Versions that were stored but whose acknowledgement was lost with the
  // replica may exist; every number from 1 to the newest exists once.
  uint64_t newest = 0;
  for (uint64_t n : numbers) newest = std::max(newest, n);
  const uint64_t live = LiveOn(2);
  EXPECT_GE(live, newest);
  for (uint64_t n = 1; n <= live; ++n) {
    const CommandResult got = Ctl(2, "viewer", absl::StrCat("get ", n));
    EXPECT_EQ(got.exit_code, 0) << "version " << n << " is missing: " << got.err;
  }
  const CommandResult none = Ctl(2, "viewer", absl::StrCat("get ", live + 1));
  EXPECT_NE(none.exit_code, 0) << "a version past the live one";
  for (int c = 0; c < 2; ++c) {
    for (uint64_t n : acked[c]) {
      const CommandResult got = Ctl(2, "viewer", absl::StrCat("get ", n));
      EXPECT_THAT(got.out, HasSubstr(absl::StrCat(": client ", c, " push ")))
          << "version " << n << " is not the push client " << c << " was told it was";
    }
  }
  const CommandResult verify =
      Ctl(2, "viewer",
          absl::StrCat("audit --verify --audit-public-key ", certs_, "/tls/audit-signing.pub"));
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  EXPECT_TRUE(WaitFor([&] { return LiveOn(0) == live; }, std::chrono::seconds(5)))
      << "replica 0 shows " << LiveOn(0) << ", replica 2 " << live;
}

// A push through one replica is what every replica serves within a second
// or two: each follows the store through its etcd watch.
TEST_F(ControlHaTest, EveryReplicaServesThePushOfAnother) {
  const uint64_t v = Push(0, 8080, "through replica 0");
  ASSERT_EQ(v, 1u);
  for (int i = 1; i < kReplicas; ++i) {
    EXPECT_TRUE(WaitFor([&] { return LiveOn(i) == v; }, std::chrono::seconds(5)))
        << "replica " << i << " shows " << LiveOn(i);
  }
  const uint64_t w = Push(2, 8081, "through replica 2");
  ASSERT_EQ(w, 2u) << "replica 2 numbered against a stale head";
  EXPECT_TRUE(WaitFor([&] { return LiveOn(0) == w; }, std::chrono::seconds(5)));
}

// One etcd member lost: pushes go on. Two lost: pushes are refused, naming
// the lost quorum; status still answers, says it is stale, and the agent
// keeps enforcing. Members back: pushes go on where they stopped.
TEST_F(ControlHaTest, LostQuorumRefusesPushesAndStatusSaysStaleUntilItIsBack) {
  Process nginx = lab_->StartNginx("ing", {80, 8080});
  StartAgent();
  ASSERT_EQ(Push(0, 8080, "first"), 1u);
  ASSERT_TRUE(WaitFor([&] { return AgentReports(1); }, std::chrono::seconds(20)))
      << Ctl(0, "viewer", "status").out;

  etcd_->Kill(2);
  EXPECT_EQ(Push(1, 8081, "two members"), 2u);

  etcd_->Kill(1);
  const std::string file = dir_ + "/policy-refused.yaml";
  std::ofstream(file) << PolicyWith(8082);
  const CommandResult refused = Ctl(0, "editor", absl::StrCat("push ", file, " --reason lost"));
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_THAT(refused.err, HasSubstr("etcd has no quorum"));
  EXPECT_TRUE(WaitFor(
      [&] {
        const CommandResult s = Ctl(2, "viewer", "status");
        return s.exit_code == 0 &&
               s.out.find("stale: this replica cannot read its store") != std::string::npos;
      },
      std::chrono::seconds(20)))
      << Ctl(2, "viewer", "status").out;
  // The agent enforces what it had: port 8080 is the office's.
  EXPECT_EQ(lab_->Get("ctl", "http://198.18.0.10:8080/"), "000");
  EXPECT_EQ(lab_->Get("ctl", "http://198.18.0.10:80/"), "200");

  etcd_->Start(1);
  etcd_->Start(2);
  ASSERT_TRUE(etcd_->WaitHealthy());
  uint64_t back = 0;
  for (int i = 0; i < 20 && back == 0; ++i) {
    back = Push(0, 8083, "quorum back");
    if (back == 0) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  EXPECT_EQ(back, 3u);
  EXPECT_TRUE(WaitFor([&] { return AgentReports(3); }, std::chrono::seconds(20)))
      << Ctl(0, "viewer", "status").out;
  EXPECT_TRUE(
      WaitFor([&] { return Ctl(2, "viewer", "status").out.find("stale:") == std::string::npos; },
              std::chrono::seconds(10)));
}

// The agent reports to one replica, and every replica's status shows it,
// in sync, and shows the new version once a push through another replica
// reached it (agent reports are shared through etcd).
TEST_F(ControlHaTest, EveryReplicaShowsTheAgentWhicheverOneItReportsTo) {
  Process nginx = lab_->StartNginx("ing", {80, 8080});
  StartAgent();
  ASSERT_EQ(Push(0, 8080, "first"), 1u);
  int holder = -1;
  ASSERT_TRUE(WaitFor([&] { return (holder = StreamHolder()) >= 0; }, std::chrono::seconds(20)));
  ASSERT_TRUE(WaitFor([&] { return AgentReports(1); }, std::chrono::seconds(10)))
      << Ctl((holder + 1) % kReplicas, "viewer", "status").out;
  const int other = (holder + 1) % kReplicas;
  ASSERT_EQ(Push(other, 8081, "second"), 2u);
  EXPECT_TRUE(
      WaitFor([&] { return ShowsAgentOn((holder + 2) % kReplicas, 2); }, std::chrono::seconds(10)))
      << Ctl((holder + 2) % kReplicas, "viewer", "status").out;
  EXPECT_TRUE(AgentReports(2));
}

// The last replica is cut off from etcd by nftables: it stops acknowledging
// pushes, says it is stale, and the agent that reports only to it stays on
// the last version, connected; pushes go on through the others. Once the
// partition heals, it serves what they pushed, and its agent runs it.
TEST_F(ControlHaTest, AReplicaCutOffFromEtcdStopsAcknowledgingAndItsAgentKeepsItsVersion) {
  Process nginx = lab_->StartNginx("ing", {80, 8080});
  StartAgent({kCutOff});
  ASSERT_EQ(Push(0, 8080, "first"), 1u);
  ASSERT_TRUE(WaitFor([&] { return ShowsAgentOn(0, 1) && ShowsAgentOn(kCutOff, 1); },
                      std::chrono::seconds(20)))
      << Ctl(kCutOff, "viewer", "status").out;
  ASSERT_NO_FATAL_FAILURE(CutOff(true));
  EXPECT_EQ(Push(kCutOff, 8081, "through the cut-off replica"), 0u);
  EXPECT_TRUE(WaitFor(
      [&] {
        return Ctl(kCutOff, "viewer", "status").out.find("stale: this replica cannot read") !=
               std::string::npos;
      },
      std::chrono::seconds(30)))
      << Ctl(kCutOff, "viewer", "status").out;
  const CommandResult metrics = lab_->In(
      "ctl", absl::StrCat("curl -s --max-time 1 http://127.0.0.1:", 9470 + kCutOff, "/metrics"));
  EXPECT_EQ(SumMetric(metrics.out, "portcullis_control_store_up"), 0) << metrics.out;
  // Its push stored nothing: the next one through a healthy replica is 2.
  ASSERT_EQ(Push(0, 8082, "through a healthy replica"), 2u);
  EXPECT_EQ(AgentMetric("portcullis_control_connected"), 1);
  EXPECT_EQ(AgentMetric("portcullis_policy_version"), 1) << "the agent lost its version";
  // Told, and with nowhere else to go, it stays.
  EXPECT_TRUE(WaitFor([&] { return AgentMetric("portcullis_control_stale") == 1; },
                      std::chrono::seconds(10)));
  std::this_thread::sleep_for(std::chrono::seconds(kStaleFailoverSeconds + 1));
  EXPECT_EQ(StreamsOn(kCutOff), 1) << "the agent left the only replica it has";
  ASSERT_NO_FATAL_FAILURE(CutOff(false));
  EXPECT_TRUE(WaitFor([&] { return LiveOn(kCutOff) == 2; }, std::chrono::seconds(60)))
      << Ctl(kCutOff, "viewer", "status").out;
  EXPECT_TRUE(WaitFor([&] { return ShowsAgentOn(0, 2); }, std::chrono::seconds(30)))
      << Ctl(0, "viewer", "status").out;
  EXPECT_EQ(AgentMetric("portcullis_control_stale"), 0);
}

// An agent on the replica that is cut off, with others in --control: it is
// told that its replica is stale, keeps its version, and after its grace
// period moves to a healthy replica, where the next push reaches it.
TEST_F(ControlHaTest, AnAgentOnACutOffReplicaIsToldItIsStaleAndMovesToAHealthyOne) {
  Process nginx = lab_->StartNginx("ing", {80, 8080});
  // The agent must start on the replica to be cut off: the others are
  // down until it is.
  replicas_[0].Kill(SIGKILL);
  replicas_[1].Kill(SIGKILL);
  StartAgent();
  ASSERT_TRUE(WaitFor([&] { return StreamsOn(kCutOff) == 1; }, std::chrono::seconds(20)));
  for (int i = 0; i < 2; ++i) StartReplica(i);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(
        WaitFor([&] { return ReplicaHttp(i, "/readyz") == "200"; }, std::chrono::seconds(15)));
  }
  ASSERT_EQ(Push(0, 8080, "first"), 1u);
  ASSERT_TRUE(WaitFor([&] { return ShowsAgentOn(0, 1); }, std::chrono::seconds(20)))
      << Ctl(0, "viewer", "status").out;
  ASSERT_EQ(StreamsOn(kCutOff), 1);

  ASSERT_NO_FATAL_FAILURE(CutOff(true));
  ASSERT_TRUE(WaitFor([&] { return AgentMetric("portcullis_control_stale") == 1; },
                      std::chrono::seconds(30)))
      << "the agent was not told its replica is stale";
  EXPECT_EQ(AgentMetric("portcullis_policy_version"), 1) << "the agent lost its version";
  EXPECT_TRUE(WaitFor(
      [&] {
        return StreamsOn(kCutOff) == 0 && StreamsOn(0) + StreamsOn(1) == 1 &&
               AgentMetric("portcullis_control_connected") == 1 &&
               AgentMetric("portcullis_control_stale") == 0;
      },
      std::chrono::seconds(kStaleFailoverSeconds + 15)))
      << "the agent did not move to a healthy replica";
  ASSERT_EQ(Push(0, 8081, "after the move"), 2u);
  EXPECT_TRUE(WaitFor([&] { return ShowsAgentOn(0, 2); }, std::chrono::seconds(10)))
      << Ctl(0, "viewer", "status").out;
  EXPECT_EQ(lab_->Get("ctl", "http://198.18.0.10:80/"), "200");
  ASSERT_NO_FATAL_FAILURE(CutOff(false));
}

// The agent's replica is killed: it is on another within 5 s, and a push
// through a survivor reaches it.
TEST_F(ControlHaTest, AnAgentWhoseReplicaDiesIsOnAnotherWithinFiveSeconds) {
  Process nginx = lab_->StartNginx("ing", {80, 8080});
  StartAgent();
  ASSERT_EQ(Push(0, 8080, "first"), 1u);
  int holder = -1;
  ASSERT_TRUE(WaitFor([&] { return (holder = StreamHolder()) >= 0; }, std::chrono::seconds(20)));
  const auto connected = [&] {
    const CommandResult m = lab_->In("ing", "curl -s --max-time 1 http://127.0.0.1:9469/metrics");
    return SumMetric(m.out, "portcullis_control_connected");
  };
  ASSERT_TRUE(WaitFor([&] { return connected() == 1; }, std::chrono::seconds(10)));
  const auto killed = std::chrono::steady_clock::now();
  replicas_[holder].Kill(SIGKILL);
  ASSERT_TRUE(WaitFor([&] { return StreamHolder() >= 0; }, std::chrono::seconds(5)))
      << "the agent was on no other replica 5 s after its own died";
  const auto took = std::chrono::steady_clock::now() - killed;
  std::cerr << "agent failover: "
            << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms\n";
  const int survivor = holder == 0 ? 1 : 0;
  ASSERT_EQ(Push(survivor, 8081, "after failover"), 2u);
  EXPECT_TRUE(WaitFor([&] { return AgentReports(2); }, std::chrono::seconds(10)))
      << Ctl(survivor, "viewer", "status").out;
  EXPECT_EQ(connected(), 1);
}

}  // namespace
}  // namespace portcullis::testing
