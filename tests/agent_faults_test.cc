// The agent under faults: kill -9 in the middle of applies, and its pins
// removed (the pin dir deleted, bpffs unmounted) under it. The pinned state
// is always wholly one policy version, a restarted agent converges, and
// enforcement never stops.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "datapath/datapath.h"
#include "datapath/policy_installer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/compiler.h"
#include "policy/text.h"
#include "policy/validator.h"
#include "tests/support/big_policy.h"
#include "tests/support/lab.h"
#include "tests/support/portcullis_commands.h"
#include "tests/support/wait.h"

namespace portcullis::testing {
namespace {

using Clock = std::chrono::steady_clock;

const std::string kAgent = PORTCULLIS_AGENT_PATH;

// Two policies that differ in every source prefix and in port 8080.
std::string PolicyText(int variant, int prefixes) {
  std::string text = absl::StrCat(
      "apiVersion: portcullis/v1\nkind: IngressPolicy\nmetadata: {name: v", variant,
      "}\nspec:\n  defaultAction: deny\n  sets:\n    admins: [198.18.1.0/28]\n    many:\n");
  absl::StrAppend(&text, PrefixItems(prefixes, variant));
  absl::StrAppend(&text, "  failsafe:\n    - {ports: [22, 10250], proto: tcp, from: [admins]}\n",
                  "  ports:\n    - {ports: [80], proto: tcp, from: any}\n",
                  variant == 0 ? "    - {ports: [8080], proto: tcp, from: [many]}\n"
                               : "    - {ports: [8080], proto: tcp, from: any}\n");
  return text;
}

policy::CompiledPolicy CompileText(const std::string& text) {
  auto checked = policy::CheckPolicyText(text);
  EXPECT_TRUE(checked.ok()) << checked.Format("p.yaml");
  auto compiled = policy::Compile(checked.loaded->policy);
  EXPECT_TRUE(compiled.ok()) << compiled.status();
  return *compiled;
}

int Iterations() {
  int n = 0;
  const char* env = std::getenv("PORTCULLIS_FAULT_ITERATIONS");
  return env && absl::SimpleAtoi(env, &n) && n > 0 ? n : 12;
}

class AgentFaultsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;
    lab_ = new Lab(std::map<std::string, std::string>{{"out", "198.18.30.9"}});
    nginx_ = new Process(lab_->StartNginx("ing", {80, 8080}));
  }
  static void TearDownTestSuite() {
    delete nginx_;
    delete lab_;
    lab_ = nullptr;
  }
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "network namespaces and BPF need root";
    ++test_;
    pin_dir_ = absl::StrCat("/sys/fs/bpf/", lab_->prefix(), "f", test_);
    state_dir_ = absl::StrCat(lab_->tmp(), "/fstate", test_);
    file_ = absl::StrCat(lab_->tmp(), "/fpolicy", test_, ".yaml");
    log_ = absl::StrCat(lab_->tmp(), "/fagent", test_, ".log");
  }
  void TearDown() override {
    if (lab_ == nullptr) return;
    agent_.Kill(SIGKILL);
    UninstallAgent(*lab_, "ing", kAgent, pin_dir_, state_dir_);
    if (HasFailure()) {
      std::ifstream in(log_);
      std::cerr << "---- agent log ----\n" << in.rdbuf();
    }
  }

  void Write(const std::string& text) {
    std::ofstream(file_ + ".new") << text;
    std::filesystem::rename(file_ + ".new", file_);
  }

  // `private_mounts`: in a mount namespace of its own, so that the test can
  // unmount bpffs under it without touching the machine's.
  void StartAgent(bool private_mounts = false) {
    std::vector<std::string> argv = {"nsenter", "--net=/run/netns/" + lab_->Ns("ing")};
    if (private_mounts) argv.insert(argv.end(), {"unshare", "--mount", "--propagation", "private"});
    argv.insert(argv.end(), {kAgent, "--policy-file", file_, "--interfaces", lab_->Link("ing"),
                             "--pin-dir", pin_dir_, "--state-dir", state_dir_, "--metrics-addr",
                             "127.0.0.1:9469", "--node", "faults"});
    agent_ = Process(argv, log_);
    ASSERT_TRUE(WaitFor([&] { return Ready(); }, std::chrono::seconds(20)))
        << "the agent did not become ready";
  }
  bool Ready() {
    return lab_->In("ing",
                    "curl -s -o /dev/null -w %{http_code} --max-time 1 "
                    "http://127.0.0.1:9469/readyz")
               .out == "200";
  }
  std::string Log() {
    std::ifstream in(log_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::string Get8080() { return lab_->Get("out", "http://198.18.0.10:8080/", 0.5); }

  // Which of `policies` the pinned active slot holds wholly; -1 for none.
  int PinnedPolicy(const std::vector<policy::CompiledPolicy>& policies) {
    auto dp = datapath::Datapath::Load({.pin_dir = pin_dir_ + "/maps"});
    EXPECT_TRUE(dp.ok()) << dp.status();
    if (!dp.ok()) return -1;
    auto active = datapath::ReadActiveSlot(**dp);
    EXPECT_TRUE(active.ok()) << active.status();
    if (!active.ok()) return -1;
    int found = -1;
    for (size_t i = 0; i < policies.size(); ++i) {
      if (datapath::VerifySlot(**dp, active->first, policies[i]).ok()) {
        EXPECT_EQ(found, -1) << "the slot matches two policies";
        found = static_cast<int>(i);
      }
    }
    return found;
  }

  static inline Lab* lab_ = nullptr;
  static inline Process* nginx_ = nullptr;
  static inline int test_ = 0;
  std::string pin_dir_, state_dir_, file_, log_;
  Process agent_;
};

// The memory limit of deploy/base/agent-daemonset.yaml, in bytes.
uint64_t ManifestMemoryLimit() {
  std::ifstream in(std::string(PORTCULLIS_SOURCE_DIR) + "/deploy/base/agent-daemonset.yaml");
  bool limits = false;
  for (std::string line; std::getline(in, line);) {
    absl::string_view l = absl::StripAsciiWhitespace(line);
    if (l == "limits:") limits = true;
    uint64_t n = 0;
    if (limits && absl::ConsumePrefix(&l, "memory: ")) {
      if (absl::ConsumeSuffix(&l, "Gi") && absl::SimpleAtoi(l, &n)) return n << 30;
      if (absl::ConsumeSuffix(&l, "Mi") && absl::SimpleAtoi(l, &n)) return n << 20;
    }
  }
  return 0;
}

// The documented capacity in the manifest's memory limit: an agent in a
// memory cgroup of that limit (as the kubelet makes it) applies a policy of
// 1M blocklist prefixes, then a different one (both policy slots full at
// the switch), without being OOM-killed, and enforces the second.
TEST_F(AgentFaultsTest, AMillionPrefixesFitTheManifestsMemoryLimit) {
  const uint64_t limit = ManifestMemoryLimit();
  ASSERT_GT(limit, 0u) << "no memory limit in the agent's DaemonSet";
  const std::string cgroup = absl::StrCat("/sys/fs/cgroup/memory/", lab_->prefix(), "mem");
  if (!std::filesystem::exists("/sys/fs/cgroup/memory/cgroup.procs")) {
    GTEST_SKIP() << "no cgroup v1 memory controller here";
  }
  ASSERT_TRUE(std::filesystem::create_directory(cgroup)) << cgroup;
  absl::Cleanup remove_cgroup = [&] {
    agent_.Kill(SIGKILL);
    rmdir(cgroup.c_str());
  };
  std::ofstream(cgroup + "/memory.limit_in_bytes") << limit;
  Write(BlocklistPolicy(1'000'000, 0));
  agent_ = Process(
      {"sh", "-c",
       absl::StrCat("echo $$ > ", cgroup, "/cgroup.procs && exec nsenter --net=/run/netns/",
                    lab_->Ns("ing"), " ", kAgent, " --policy-file ", file_, " --interfaces ",
                    lab_->Link("ing"), " --pin-dir ", pin_dir_, " --state-dir ", state_dir_,
                    " --metrics-addr 127.0.0.1:9469 --node faults")},
      log_);
  ASSERT_TRUE(WaitFor([&] { return Ready(); }, std::chrono::seconds(120)))
      << "the agent did not become ready";
  Write(BlocklistPolicy(1'000'000, 1));
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(Log(), "\"name\":\"big1\",\"version\":2"); },
                      std::chrono::seconds(120)))
      << "the second policy was not applied";
  std::ifstream oom(cgroup + "/memory.oom_control");
  std::string control((std::istreambuf_iterator<char>(oom)), {});
  EXPECT_THAT(control, ::testing::HasSubstr("oom_kill 0")) << control;
  std::ifstream peak(cgroup + "/memory.max_usage_in_bytes");
  uint64_t max_usage = 0;
  peak >> max_usage;
  std::cout << "peak " << (max_usage >> 20) << " MiB of a " << (limit >> 20) << " MiB limit\n";
  EXPECT_TRUE(Ready());
  EXPECT_EQ(Get8080(), "200");
}

// A policy that killed the agent twice in a row while it was being applied
// (killed for memory) is not applied by the next agent, which would only die
// too: the fleet-wide crash loop the red team saw. It keeps the
// last-known-good policy and is ready; the next change of the file is
// applied as usual. (One death mid-apply is retried: the kill -9 test.)
TEST_F(AgentFaultsTest, APolicyThatKilledTheAgentTwiceIsNotAppliedAgain) {
  Write(PolicyText(1, 8));  // 8080 open to any
  StartAgent();
  EXPECT_EQ(Get8080(), "200");
  agent_.Stop();
  const std::string fatal = PolicyText(0, 8);  // 8080 only from [many]
  Write(fatal);
  auto checked = policy::CheckPolicyText(fatal);
  ASSERT_TRUE(checked.ok());
  // What the killed agent left behind: the mark of the policy it applied.
  std::ofstream(state_dir_ + "/applying") << policy::ContentHash(checked.loaded->policy) << " 2\n";
  StartAgent();
  EXPECT_EQ(Get8080(), "200") << "the policy that stopped the last agent was applied";
  EXPECT_THAT(Log(), ::testing::HasSubstr("the agent died 2 times in a row while applying this "
                                          "policy (killed for memory, most likely)"));
  EXPECT_FALSE(std::filesystem::exists(state_dir_ + "/applying"));
  Write(PolicyText(0, 9));
  EXPECT_TRUE(WaitFor([&] { return Get8080() != "200"; }, std::chrono::seconds(10)))
      << "a new version of the file was not applied";
}

TEST_F(AgentFaultsTest, KillDuringAppliesLeavesOneWholeVersionAndRestartsConverge) {
  const std::string texts[2] = {PolicyText(0, 30000), PolicyText(1, 30000)};
  const std::vector<policy::CompiledPolicy> compiled = {CompileText(texts[0]),
                                                        CompileText(texts[1])};
  Write(texts[0]);
  StartAgent();
  ASSERT_EQ(PinnedPolicy(compiled), 0);
  // How long a change takes from the file to the switch, so that the kills
  // fall before, during and after the apply.
  const auto change = Clock::now();
  Write(texts[1]);
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(Log(), "\"name\":\"v1\""); },
                      std::chrono::seconds(20)));
  const int apply_ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - change).count());
  std::mt19937 rng(20261126);
  int current = 1, old_kept = 0, new_taken = 0;
  const int iterations = Iterations();
  for (int i = 0; i < iterations; ++i) {
    SCOPED_TRACE(absl::StrCat("iteration ", i));
    const int next = 1 - current;
    Write(texts[next]);  // the agent sees it within milliseconds and applies it
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>(0, apply_ms * 4 / 3)(rng)));
    agent_.Kill(SIGKILL);
    // Whatever the moment: the pinned maps hold one whole policy.
    const int pinned = PinnedPolicy(compiled);
    ASSERT_NE(pinned, -1) << "the active slot holds neither policy wholly";
    (pinned == next ? new_taken : old_kept)++;
    // ... and it is enforced, with no agent running.
    EXPECT_EQ(Get8080(), pinned == 1 ? "200" : "000");
    // A new agent converges on the file.
    StartAgent();
    EXPECT_EQ(PinnedPolicy(compiled), next);
    current = next;
  }
  RecordProperty("apply_ms", apply_ms);
  RecordProperty("kills_before_switch", old_kept);
  RecordProperty("kills_after_switch", new_taken);
  std::cout << iterations << " kills within 0-" << apply_ms * 4 / 3
            << " ms of a change: " << old_kept << " left the previous policy, " << new_taken
            << " the new one; all whole\n";
}

TEST_F(AgentFaultsTest, ADeletedPinDirIsNoticedAndRestoredWithoutAGap) {
  Write(PolicyText(0, 10));
  StartAgent();
  ASSERT_EQ(Get8080(), "000");
  std::filesystem::remove_all(pin_dir_);
  // The agent notices within a second or so, says so, and pins everything again.
  EXPECT_TRUE(
      WaitFor([&] { return absl::StrContains(Log(), "pins restored"); }, std::chrono::seconds(5)));
  EXPECT_THAT(Log(), ::testing::HasSubstr("pinned maps or links are gone"));
  EXPECT_TRUE(std::filesystem::exists(pin_dir_ + "/maps/active_slot"));
  EXPECT_TRUE(std::filesystem::exists(pin_dir_ + "/links/xdp_" + lab_->Link("ing")));
  EXPECT_TRUE(WaitFor([&] { return Ready(); }, std::chrono::seconds(5)));
  // XDP never went away (the agent holds the link), so the policy held.
  EXPECT_EQ(Get8080(), "000");
  EXPECT_EQ(lab_->Get("out", "http://198.18.0.10:80/"), "200");
  // And a restarted agent adopts the restored pins.
  agent_.Kill(SIGKILL);
  StartAgent();
  EXPECT_THAT(Log(), ::testing::HasSubstr("adopted XDP attachment"));
}

TEST_F(AgentFaultsTest, AnUnmountedBpffsIsMountedAgainAndRepinned) {
  Write(PolicyText(0, 10));
  StartAgent(/*private_mounts=*/true);
  const std::string in_agent_mounts =
      absl::StrCat("nsenter --mount=/proc/", agent_.pid(), "/ns/mnt ");
  const CommandResult umount = RunCommand(in_agent_mounts + "umount /sys/fs/bpf");
  ASSERT_EQ(umount.exit_code, 0) << umount.err;
  EXPECT_TRUE(
      WaitFor([&] { return absl::StrContains(Log(), "pins restored"); }, std::chrono::seconds(5)));
  EXPECT_THAT(Log(), ::testing::HasSubstr("mounted bpffs"));
  EXPECT_EQ(RunCommand(in_agent_mounts + "test -e " + pin_dir_ + "/maps/active_slot").exit_code, 0);
  EXPECT_TRUE(WaitFor([&] { return Ready(); }, std::chrono::seconds(5)));
  EXPECT_EQ(Get8080(), "000");
  EXPECT_EQ(lab_->Get("out", "http://198.18.0.10:80/"), "200");
}

// Two policies whose outcomes for the attacker's SYNs to port 80 differ, and
// whose mix would give a third: A names 80 in a failsafe rule for set s
// (which holds not the attacker) and has no port rule (port_closed); B puts
// the attacker in s and allows 80 only from s2 (not_allowlisted). A packet
// judged by B's IPv4 sets with A's port table (written after the IPv6
// prefixes) would pass as failsafe.
// A filler set of 20,000 IPv6 prefixes that differ between the two makes
// each switch's map writes take milliseconds: a non-atomic switch would then
// judge many packets by a mix (checked: it does).
std::string SwitchPolicy(bool b) {
  std::string filler;
  for (int i = 0; i < 20000; ++i) {
    const uint32_t n = static_cast<uint32_t>(i * 2 + (b ? 1 : 0));
    absl::StrAppend(&filler, "      - \"2001:db8:", absl::Hex(n >> 8), ":", absl::Hex(n & 255),
                    "::/64\"\n");
  }
  // Rules use the sets in the same order in both, so each set has the same
  // mask bit in both (bits go to sets in order of use).
  return absl::StrCat(
      "apiVersion: portcullis/v1\nkind: IngressPolicy\nmetadata: {name: ", b ? "b" : "a",
      "}\nspec:\n  defaultAction: deny\n  sets:\n    admins: [198.18.1.0/28]\n",
      b ? "    s: [198.18.30.0/24]\n" : "    s: [198.18.99.0/24]\n",
      "    s2: [198.18.98.0/24]\n    filler:\n", filler,
      "  failsafe:\n    - {ports: [22, 10250], proto: tcp, from: [admins]}\n", "    - {ports: [",
      b ? 7777 : 80, "], proto: tcp, from: [s]}\n",
      "  ports:\n    - {ports: [9999], proto: tcp, from: [filler]}\n", "    - {ports: [",
      b ? 80 : 7777, "], proto: tcp, from: [s2]}\n");
}

TEST_F(AgentFaultsTest, SwitchingUnderFullRateTrafficNeverJudgesByAMix) {
  Write(SwitchPolicy(false));
  StartAgent();
  auto metric = [&](const std::string& series) {
    const std::string text =
        lab_->In("ing", "curl -s --max-time 2 http://127.0.0.1:9469/metrics").out;
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      if (absl::StartsWith(line, series + " ")) {
        double v = 0;
        if (absl::SimpleAtod(line.substr(series.size() + 1), &v)) return v;
      }
    }
    return 0.0;
  };
  const std::string xdp = "iface=\"" + lab_->Link("ing") + "\",hook=\"xdp\"";
  // The flood, as fast as a raw socket goes, for at most 6 s.
  constexpr int kSyns = 600000;
  CommandResult flood;
  std::thread sender([&] {
    flood = lab_->In(
        "out", absl::StrCat(PORTCULLIS_SYNSEND_PATH, " 198.18.30.9 198.18.0.10 80 ", kSyns, " 6"));
  });
  // Meanwhile the policy flips, each flip an atomic switch by the agent.
  int flips = 0;
  const std::string v_before = absl::StrCat(metric("portcullis_policy_version"));
  for (const auto end = Clock::now() + std::chrono::seconds(4); Clock::now() < end; ++flips) {
    Write(SwitchPolicy(flips % 2 == 0));
    std::this_thread::sleep_for(std::chrono::milliseconds(120));
  }
  sender.join();
  ASSERT_EQ(flood.exit_code, 0) << flood.err;
  int64_t sent = 0;
  ASSERT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(flood.out), &sent));
  // Every SYN was judged wholly by A (port_closed) or wholly by B
  // (not_allowlisted); none by a mix (failsafe, or allowed).
  const double closed =
      metric("portcullis_drops_by_port_total{proto=\"tcp\",port=\"80\",reason=\"port_closed\"}");
  const double refused = metric(
      "portcullis_drops_by_port_total{proto=\"tcp\",port=\"80\",reason=\"not_allowlisted\"}");
  const double mixed =
      metric("portcullis_packets_total{" + xdp + ",verdict=\"pass\",reason=\"failsafe\"}");
  EXPECT_EQ(mixed, 0);
  EXPECT_EQ(closed + refused, static_cast<double>(sent));
  EXPECT_GT(closed, 0);
  EXPECT_GT(refused, 0);
  const double applied = metric("portcullis_policy_version");
  RecordProperty("syns", static_cast<int>(sent));
  RecordProperty("switches", static_cast<int>(applied));
  std::cout << sent << " SYNs during " << flips << " policy writes (" << v_before << " -> "
            << applied << " applied versions): " << closed << " judged by A, " << refused
            << " by B, " << mixed << " by a mix\n";
  EXPECT_GE(applied, 6) << "too few switches happened under the flood";
}

}  // namespace
}  // namespace portcullis::testing
