// portcullis-agent end to end: real namespaces, veths and a bridge, nginx as
// the ingress pod, real clients, an attacker, and the agent as a process.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/lab.h"
#include "tests/support/portcullis_commands.h"
#include "tests/support/wait.h"

namespace portcullis::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using Clock = std::chrono::steady_clock;

const std::string kAgent = PORTCULLIS_AGENT_PATH;
const std::string kSynSend = PORTCULLIS_SYNSEND_PATH;
const std::string kXdpPass = PORTCULLIS_XDP_PASS_PATH;

constexpr char kPolicy[] = R"(apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: e2e}
spec:
  defaultAction: deny
  sets:
    office: [198.18.2.0/24]
    admins: [198.18.1.0/28]
  failsafe:
    - {ports: [22], proto: tcp, from: [admins]}
  ports:
    - {ports: [80, 443], proto: tcp, from: any}
    - {ports: [10254], proto: tcp, from: [admins]}
    - {ports: ["30000-32767"], proto: tcp, from: [office]}
  rateLimits:
    syn:
      perSource: {rate: 100, burst: 200}
      global: {rate: 20000, burst: 40000}
)";

class AgentE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;
    lab_ = new Lab({{"cli", "198.18.2.9"},
                    {"out", "198.18.30.9"},
                    {"adm", "198.18.1.5"},
                    {"atk", "198.18.66.6"}});
    // IPv6 between the client and the ingress, for the cookies.
    lab_->AddAddress("ing", "2001:db8::a/64");
    lab_->AddAddress("cli", "2001:db8::2:9/64");
    lab_->AddAddress("atk", "2001:db8::66:6/64");
    nginx_ = new Process(lab_->StartNginx("ing", {80, 443, 10254, 31000, 8080}, {"[2001:db8::a]"}));
  }
  static void TearDownTestSuite() {
    delete nginx_;
    delete lab_;
    nginx_ = nullptr;
    lab_ = nullptr;
  }

  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "network namespaces and BPF need root";
    ASSERT_NE(lab_, nullptr);
    ++test_number_;
    pin_dir_ = absl::StrCat("/sys/fs/bpf/", lab_->prefix(), "t", test_number_);
    state_dir_ = absl::StrCat(lab_->tmp(), "/state", test_number_);
    policy_file_ = absl::StrCat(lab_->tmp(), "/policy", test_number_, ".yaml");
    log_ = absl::StrCat(lab_->tmp(), "/agent", test_number_, ".log");
    WritePolicy(kPolicy);
  }

  void TearDown() override {
    if (lab_ == nullptr) return;
    agent_.Kill(SIGKILL);
    UninstallAgent(*lab_, "ing", kAgent, pin_dir_, state_dir_);
    if (HasFailure()) {
      std::ifstream in(log_);
      std::cerr << "---- agent log ----\n" << in.rdbuf() << "-------------------\n";
    }
  }

  // Replaces the policy file the way ConfigMaps and editors do: a new file
  // renamed over the old one.
  void WritePolicy(const std::string& text) {
    const std::string tmp = policy_file_ + ".new";
    std::ofstream(tmp) << text;
    std::filesystem::rename(tmp, policy_file_);
  }

  void StartAgent(const std::vector<std::string>& extra = {}, std::string interfaces = "") {
    if (interfaces.empty()) interfaces = lab_->Link("ing");
    std::vector<std::string> argv = {"nsenter",
                                     "--net=/run/netns/" + lab_->Ns("ing"),
                                     kAgent,
                                     "--policy-file",
                                     policy_file_,
                                     "--interfaces",
                                     interfaces,
                                     "--tc-interfaces",
                                     lab_->prefix() + "pod*",
                                     "--pin-dir",
                                     pin_dir_,
                                     "--state-dir",
                                     state_dir_,
                                     "--metrics-addr",
                                     "127.0.0.1:9469",
                                     "--node",
                                     "e2e"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    agent_ = Process(argv, log_);
    ASSERT_TRUE(WaitFor([&] { return Http("/readyz") == "200"; }, std::chrono::seconds(10)))
        << "the agent did not become ready";
  }

  std::string Http(const std::string& path) {
    return lab_
        ->In("ing",
             "curl -s -o /dev/null -w %{http_code} --max-time 2 http://127.0.0.1:9469" + path)
        .out;
  }

  // The sum of a metric's samples whose labels contain every `want` pair.
  double Metric(const std::string& name, const std::vector<std::string>& want = {}) {
    return SumMetric(lab_->In("ing", "curl -s --max-time 2 http://127.0.0.1:9469/metrics").out,
                     name, want);
  }

  double Packets(const std::string& verdict, const std::string& reason) {
    return Metric("portcullis_packets_total",
                  {"iface=\"" + lab_->Link("ing") + "\"", "hook=\"xdp\"",
                   "verdict=\"" + verdict + "\"", "reason=\"" + reason + "\""});
  }

  // Exactly `count` SYNs from host `from` to the ingress.
  void SendSyns(const std::string& from, int port, int count) {
    const CommandResult r = lab_->In(from, absl::StrCat(kSynSend, " ", lab_->Address(from),
                                                        " 198.18.0.10 ", port, " ", count, " 20"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  // A veth delivers what XDP sends back out (XDP_TX, a SYN cookie's
  // SYN-ACK) only to a peer that runs an XDP program too (GRO is not
  // enough), where a NIC's driver always takes it. docs/ARCHITECTURE.md
  // says so for veth uplinks.
  void EnableXdpTx() {
    const CommandResult r = lab_->In("lan", "ip -force link set dev " + lab_->prefix() +
                                                "ing1 xdp obj " + kXdpPass + " sec xdp");
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  // How many of `n` requests from the client to the ingress's port 443,
  // one after the other with 2 s each, got a 200.
  int ClientSuccesses(int n, const std::string& url = "http://198.18.0.10:443/") {
    const CommandResult r =
        lab_->In("cli", absl::StrCat("ok=0; for i in $(seq ", n,
                                     "); do c=$(curl -s -o /dev/null -w %{http_code} --max-time 2 ",
                                     url, "); [ \"$c\" = 200 ] && ok=$((ok+1)); done; echo $ok"));
    int ok = -1;
    EXPECT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(r.out), &ok)) << r.out << r.err;
    return ok;
  }

  // With `cookies: always`: 5 requests from the client to `url` (the
  // ingress at `ingress`, port 80), each connection made through a cookie;
  // then 20 bare ACKs from `client` whose cookie is wrong, counted invalid,
  // none of which becomes a connection (the kernel answers them with a RST,
  // as any stray ACK).
  void ExpectCookieConnectionsAndNoForgedOne(const std::string& client, const std::string& ingress,
                                             const std::string& url) {
    ASSERT_EQ(Metric("portcullis_syn_cookies_supported"), 1) << Log();
    const double valid = Metric("portcullis_syn_cookies_total", {"result=\"valid\""});
    for (int i = 0; i < 5; ++i) EXPECT_EQ(lab_->Get("cli", url), "200") << "request " << i;
    EXPECT_EQ(Metric("portcullis_syn_cookies_total", {"result=\"valid\""}) - valid, 5)
        << "each request's connection was made through a cookie";
    EXPECT_GE(Metric("portcullis_syn_cookies_total", {"result=\"sent\""}), 5);
    EXPECT_GE(Packets("cookie", "syn_cookie"), 5);

    const double invalid = Metric("portcullis_syn_cookies_total", {"result=\"invalid\""});
    const CommandResult forged = lab_->In(
        "cli", absl::StrCat(kSynSend, " ", client, " ", ingress, " 80 20 5 ack=0x12345678"));
    ASSERT_EQ(forged.exit_code, 0) << forged.err;
    EXPECT_TRUE(WaitFor(
        [&] {
          return Metric("portcullis_syn_cookies_total", {"result=\"invalid\""}) - invalid == 20;
        },
        std::chrono::seconds(2)));
    EXPECT_EQ(lab_->In("ing", "ss -Htn state established sport = :80 | wc -l").out, "0\n")
        << lab_->In("ing", "ss -tan").out;
  }

  // 150,000 SYNs from random addresses of `sources` to `target`:443 while
  // the client makes 200 requests to `url`, with `cookies: auto` under a
  // global budget far below the flood.
  void FloodAndServe(const std::string& sources, const std::string& target,
                     const std::string& url) {
    Process flood(
        {"ip", "netns", "exec", lab_->Ns("atk"), kSynSend, sources, target, "443", "150000", "30"},
        lab_->tmp() + "/spoofed.log");
    const int ok = ClientSuccesses(200, url);
    EXPECT_EQ(flood.Wait(), 0) << "the flood did not send its 150000 SYNs";
    EXPECT_GE(ok, 198) << "fewer than 99% of the client's requests succeeded";
    EXPECT_GE(Packets("cookie", "syn_cookie"), 100000) << "the flood was answered with cookies";
    EXPECT_EQ(Packets("drop", "syn_rate_global"), 0);
    EXPECT_EQ(Packets("drop", "syn_rate_source"), 0);
    // Every SYN judged syn_cookie was answered (a SYN too short to grow
    // into a SYN-ACK with options gets a bare one).
    EXPECT_EQ(Metric("portcullis_syn_cookies_total", {"result=\"sent\""}),
              Packets("cookie", "syn_cookie"));
  }

  std::string Log() {
    std::ifstream in(log_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  static inline Lab* lab_ = nullptr;
  static inline Process* nginx_ = nullptr;
  static inline int test_number_ = 0;
  std::string pin_dir_, state_dir_, policy_file_, log_;
  Process agent_;
};

const std::string kIngress = "http://198.18.0.10";

TEST_F(AgentE2eTest, EnforcesThePolicyAndCountsEveryDrop) {
  StartAgent();
  EXPECT_EQ(lab_->Get("cli", kIngress + ":443/"), "200");
  EXPECT_EQ(lab_->Get("out", kIngress + ":80/"), "200");
  EXPECT_EQ(lab_->Get("cli", kIngress + ":31000/"), "200");     // office NodePort
  EXPECT_EQ(lab_->Get("adm", kIngress + ":10254/"), "200");     // admin endpoint
  EXPECT_EQ(lab_->Get("out", kIngress + ":10254/", 1), "000");  // segmented
  EXPECT_EQ(lab_->Get("out", kIngress + ":31000/", 1), "000");
  EXPECT_EQ(lab_->Get("out", kIngress + ":8080/", 1), "000");  // no rule

  // Counters match the packets sent, by reason and by port.
  const double not_allowlisted = Packets("drop", "not_allowlisted");
  const double port_closed = Packets("drop", "port_closed");
  const double by_port =
      Metric("portcullis_drops_by_port_total", {"port=\"10254\"", "reason=\"not_allowlisted\""});
  const double other =
      Metric("portcullis_drops_by_port_total", {"port=\"other\"", "reason=\"port_closed\""});
  SendSyns("out", 10254, 5);
  SendSyns("out", 8080, 7);
  EXPECT_EQ(Packets("drop", "not_allowlisted") - not_allowlisted, 5);
  EXPECT_EQ(Packets("drop", "port_closed") - port_closed, 7);
  EXPECT_EQ(
      Metric("portcullis_drops_by_port_total", {"port=\"10254\"", "reason=\"not_allowlisted\""}) -
          by_port,
      5);
  EXPECT_EQ(Metric("portcullis_drops_by_port_total", {"port=\"other\"", "reason=\"port_closed\""}) -
                other,
            7);
  EXPECT_EQ(Metric("portcullis_policy_version"), 1);
  EXPECT_EQ(Metric("portcullis_xdp_attached", {"iface=\"" + lab_->Link("ing") + "\""}), 1);
  // The policy's tables: office and admins are prefixes, nothing exact.
  EXPECT_EQ(Metric("portcullis_map_entries", {"map=\"src_v4_prefix\""}), 2);
  EXPECT_EQ(Metric("portcullis_map_entries", {"map=\"src_v4_exact\""}), 0);
  EXPECT_EQ(Metric("portcullis_map_capacity", {"map=\"src_v4_prefix\""}), 1048576);
  EXPECT_EQ(Metric("portcullis_policy_apply_seconds_count"), 1);
  // Applied moments ago, by the wall clock.
  EXPECT_NEAR(Metric("portcullis_policy_last_applied_timestamp_seconds"),
              absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()), 120);
  EXPECT_EQ(Metric("portcullis_control_connected"), 0);  // standalone
  for (const char* kind : {"invalid_policy", "compile", "apply", "attach"}) {
    EXPECT_THAT(lab_->In("ing", "curl -s http://127.0.0.1:9469/metrics").out,
                HasSubstr(absl::StrCat("portcullis_sync_errors_total{kind=\"", kind, "\"} 0")));
  }
  EXPECT_EQ(Http("/healthz"), "200");
  // Drops are sampled into the log as JSON lines.
  EXPECT_TRUE(WaitFor([&] { return absl::StrContains(Log(), "\"reason\":\"not_allowlisted\""); },
                      std::chrono::seconds(2)));
  EXPECT_THAT(Log(),
              HasSubstr("\"src\":\"198.18.30.9\",\"dst\":\"198.18.0.10\",\"proto\":\"tcp\""));
}

TEST_F(AgentE2eTest, RepliesToConnectionsTheNodeOpensAreEstablished) {
  Process server = lab_->StartNginx("cli", {8080});
  StartAgent();
  const double established = Packets("pass", "established");
  // defaultAction deny: only the egress flow record lets the reply in.
  EXPECT_EQ(lab_->Get("ing", "http://198.18.2.9:8080/"), "200");
  EXPECT_GT(Packets("pass", "established") - established, 0);
}

TEST_F(AgentE2eTest, SynFloodIsLimitedWhileClientsAreServed) {
  StartAgent();
  const double limited = Packets("drop", "syn_rate_source");
  Process flood({"ip", "netns", "exec", lab_->Ns("atk"), kSynSend, "198.18.66.6", "198.18.0.10",
                 "443", "200000", "30"},
                lab_->tmp() + "/flood.log");
  const int ok = ClientSuccesses(200);
  EXPECT_EQ(flood.Wait(), 0) << "the flood did not send its 200000 SYNs";
  EXPECT_GE(ok, 198) << "fewer than 99% of the client's requests succeeded";
  // 200k SYNs from one source against 100/s with a burst of 200: nearly all limited.
  EXPECT_GE(Packets("drop", "syn_rate_source") - limited, 190000);
  // The attacker is out of SYN tokens right now (as soon as the bucket scan,
  // cached for 2 s against hostile scrapers, is renewed).
  EXPECT_TRUE(
      WaitFor([&] { return Metric("portcullis_rate_limited_sources", {"kind=\"syn\""}) >= 1; },
              std::chrono::seconds(5)));
  EXPECT_GE(Metric("portcullis_map_entries", {"map=\"source_buckets\""}), 2);
  // The drop-sample log was rate-limited, and says how much it left out.
  EXPECT_TRUE(WaitFor([&] { return Metric("portcullis_drop_samples_suppressed_total") > 0; },
                      std::chrono::seconds(2)));
}

// SYN cookies (PRODUCT.md step 12), with the ingress's nginx as the real
// listener: with `always`, every connection is made through a cookie, which
// XDP sends and the TC program hands to nginx.
std::string CookiePolicy(absl::string_view cookies, absl::string_view global) {
  std::string p = kPolicy;
  const std::string from = "      global: {rate: 20000, burst: 40000}\n";
  p.replace(p.find(from), from.size(),
            absl::StrCat("      global: ", global, "\n      cookies: ", cookies, "\n"));
  return p;
}

TEST_F(AgentE2eTest, AClientConnectsThroughACookieAndAForgedOneMakesNoConnection) {
  WritePolicy(CookiePolicy("always", "{rate: 20000, burst: 40000}"));
  StartAgent();
  EnableXdpTx();
  ExpectCookieConnectionsAndNoForgedOne("198.18.2.9", "198.18.0.10", kIngress + ":80/");

  // The conntrack bypass is there, and goes when an agent sets no mark.
  EXPECT_THAT(lab_->In("ing", "nft list tables").out, HasSubstr("table inet portcullis"));
  agent_.Kill(SIGTERM);
  StartAgent({"--cookie-mark", "0"});
  EXPECT_THAT(lab_->In("ing", "nft list tables").out, Not(HasSubstr("portcullis")));
}

// The same over IPv6: the SYN-ACK and the request socket are built from an
// IPv6 header and its options, and the cookie hashes IPv6 addresses.
// (VLAN tags are covered by the table tests only: this kernel is built
// without 802.1Q interfaces, so a tagged frame reaches no socket here.)
TEST_F(AgentE2eTest, ACookieConnectionAndAForgedOneOverIpv6) {
  WritePolicy(CookiePolicy("always", "{rate: 20000, burst: 40000}"));
  StartAgent();
  EnableXdpTx();
  ExpectCookieConnectionsAndNoForgedOne("2001:db8::2:9", "2001:db8::a", "http://[2001:db8::a]:80/");
}

// A flood from random, spoofed sources: per-source buckets never fire, and
// with cookies off the global budget would drop the clients' SYNs with the
// flood's. With auto, what is over the budget is answered with cookies,
// and the client gets through.
TEST_F(AgentE2eTest, ASpoofedSynFloodIsAnsweredWithCookiesWhileClientsAreServed) {
  WritePolicy(CookiePolicy("auto", "{rate: 500, burst: 500}"));
  StartAgent();
  EnableXdpTx();
  FloodAndServe("198.19.0.0/16", "198.18.0.10", "http://198.18.0.10:443/");
}

// Over IPv6, the sources spread over 65,536 /64s (a bucket's default
// grouping), so that no source bucket fires either.
TEST_F(AgentE2eTest, ASpoofedIpv6SynFloodIsAnsweredWithCookiesWhileClientsAreServed) {
  WritePolicy(CookiePolicy("auto", "{rate: 500, burst: 500}"));
  StartAgent();
  EnableXdpTx();
  FloodAndServe("2001:db8:ff::/48", "2001:db8::a", "http://[2001:db8::a]:443/");
}

// Under `ip netns exec` the agent gets a /sys of its own, and a bpffs it
// mounted there would take its pins, and enforcement, with it when it
// exits: it refuses to start and says why and what to do, unless
// --allow-ephemeral-pins accepts that.
TEST_F(AgentE2eTest, APrivateBpffsIsRefusedUnlessEphemeralPinsAreAllowed) {
  std::vector<std::string> argv = {"ip",
                                   "netns",
                                   "exec",
                                   lab_->Ns("ing"),
                                   kAgent,
                                   "--policy-file",
                                   policy_file_,
                                   "--interfaces",
                                   lab_->Link("ing"),
                                   "--pin-dir",
                                   pin_dir_,
                                   "--state-dir",
                                   state_dir_,
                                   "--metrics-addr",
                                   "127.0.0.1:9469"};
  Process refused(argv, log_);
  EXPECT_EQ(refused.Wait(), 1);
  EXPECT_THAT(Log(), HasSubstr(absl::StrCat("--pin-dir ", pin_dir_,
                                            ": /sys/fs/bpf is not a bpffs mount here")));
  EXPECT_THAT(Log(), HasSubstr("--allow-ephemeral-pins accepts pins that die with the agent"));
  EXPECT_THAT(RunCommand("ip -n " + lab_->Ns("ing") + " link show " + lab_->Link("ing")).out,
              Not(HasSubstr("prog/xdp")))
      << "it attached before refusing";

  argv.push_back("--allow-ephemeral-pins");
  agent_ = Process(argv, log_);
  ASSERT_TRUE(WaitFor([&] { return Http("/readyz") == "200"; }, std::chrono::seconds(10)));
  EXPECT_THAT(Log(), HasSubstr("mounting a bpffs of this agent's own"));
  // The pins died with it, and XDP with them.
  agent_.Kill(SIGTERM);
  EXPECT_TRUE(WaitFor(
      [&] {
        return !absl::StrContains(
            RunCommand("ip -n " + lab_->Ns("ing") + " link show " + lab_->Link("ing")).out,
            "prog/xdp");
      },
      std::chrono::seconds(5)));
}

TEST_F(AgentE2eTest, GenericModeIsUsedWhenAskedForAndReported) {
  StartAgent({"--xdp-mode", "generic"});
  EXPECT_EQ(Metric("portcullis_xdp_attached",
                   {"iface=\"" + lab_->Link("ing") + "\"", "mode=\"generic\""}),
            1);
  EXPECT_THAT(RunCommand("ip -n " + lab_->Ns("ing") + " link show " + lab_->Link("ing")).out,
              HasSubstr("xdpgeneric"));
  EXPECT_EQ(lab_->Get("cli", kIngress + ":443/"), "200");
  EXPECT_EQ(lab_->Get("out", kIngress + ":10254/", 1), "000");
}

TEST_F(AgentE2eTest, SurvivesKillDashNineAndIsAdoptedThenUninstalls) {
  StartAgent();
  ASSERT_EQ(lab_->Get("cli", kIngress + ":443/"), "200");
  const double allowed = Packets("pass", "allowed");
  agent_.Kill(SIGKILL);
  // Fail-static: the last policy goes on being enforced without an agent.
  EXPECT_EQ(lab_->Get("cli", kIngress + ":443/"), "200");
  EXPECT_EQ(lab_->Get("out", kIngress + ":10254/", 1), "000");
  // A map an older build pinned under a name this build no longer uses
  // (builds before the per-family buckets had one "source_buckets").
  const std::string stale = pin_dir_ + "/maps/source_buckets";
  ASSERT_EQ(RunCommand("bpftool map create " + stale +
                       " type lru_hash key 24 value 16 entries 16 name source_buckets")
                .exit_code,
            0);

  StartAgent();  // adopts the pinned maps and link
  EXPECT_THAT(Log(), HasSubstr("adopted XDP attachment, program replaced"));
  // The cookies' conntrack bypass (agent/cookie_notrack.h) was replaced too:
  // one table, one rule.
  EXPECT_THAT(lab_->In("ing", "nft list table inet portcullis").out,
              HasSubstr("meta mark & 0x00100000 == 0x00100000 meta mark set meta mark & "
                        "0xffefffff notrack"));
  EXPECT_FALSE(std::filesystem::exists(stale)) << "the stale pin was left behind";
  EXPECT_THAT(Log(), HasSubstr("unpinned maps an older build left"));
  EXPECT_TRUE(std::filesystem::exists(pin_dir_ + "/maps/source_buckets_v4"));
  EXPECT_GE(Packets("pass", "allowed"), allowed + 1) << "counters did not carry on";
  EXPECT_EQ(lab_->Get("cli", kIngress + ":443/"), "200");
  EXPECT_EQ(lab_->Get("out", kIngress + ":10254/", 1), "000");

  const auto term = Clock::now();
  agent_.Kill(SIGTERM);
  EXPECT_LT(Clock::now() - term, std::chrono::seconds(2)) << "SIGTERM took 2 s or more";
  const CommandResult un = RunCommand(UninstallCommand(*lab_, "ing", kAgent, pin_dir_, state_dir_));
  ASSERT_EQ(un.exit_code, 0) << un.err;
  EXPECT_FALSE(std::filesystem::exists(pin_dir_));
  EXPECT_THAT(RunCommand("ip -n " + lab_->Ns("ing") + " link show " + lab_->Link("ing")).out,
              Not(HasSubstr("xdp")));
  for (const char* dir : {"ingress", "egress"}) {
    EXPECT_THAT(RunCommand(absl::StrCat("tc -n ", lab_->Ns("ing"), " filter show dev ",
                                        lab_->Link("ing"), " ", dir))
                    .out,
                Not(HasSubstr("portcullis")))
        << dir;
  }
  EXPECT_THAT(lab_->In("ing", "nft list tables").out, Not(HasSubstr("portcullis")));
  EXPECT_EQ(lab_->Get("out", kIngress + ":10254/", 1), "200");  // nothing enforces any more
}

TEST_F(AgentE2eTest, ReplacesPinsOfAnIncompatibleBuildWithoutAGap) {
  StartAgent();
  agent_.Kill(SIGKILL);
  // What an older build might have left: a map of another shape.
  const std::string pin = pin_dir_ + "/maps/port_drop_counters";
  ASSERT_EQ(RunCommand("rm " + pin).exit_code, 0);
  ASSERT_EQ(RunCommand("bpftool map create " + pin +
                       " type percpu_hash key 4 value 8 entries 128 name old_counters")
                .exit_code,
            0);
  // Enforcement goes on while the new agent replaces everything.
  Process watcher({"ip", "netns", "exec", lab_->Ns("out"), "sh", "-c",
                   "for i in $(seq 15); do curl -s -o /dev/null -w \"%{http_code} \" --max-time "
                   "0.2 http://198.18.0.10:10254/; done"},
                  lab_->tmp() + "/watch.log");
  StartAgent();
  watcher.Wait();
  EXPECT_THAT(Log(), HasSubstr("pinned maps are from an incompatible build; replacing them"));
  EXPECT_THAT(Log(), HasSubstr("adopted XDP attachment, program replaced"));
  std::ifstream in(lab_->tmp() + "/watch.log");
  std::stringstream codes;
  codes << in.rdbuf();
  EXPECT_THAT(codes.str(), Not(HasSubstr("200"))) << "the admin port was reachable during the swap";
  EXPECT_EQ(lab_->Get("cli", kIngress + ":443/"), "200");
  // The new pins are this build's: the next agent adopts them as they are.
  agent_.Kill(SIGTERM);
  StartAgent();
  // (The log holds all three starts: only the second one replaced anything.)
  const std::string log = Log();
  size_t replaced = 0;
  for (size_t at = log.find("replacing them"); at != std::string::npos;
       at = log.find("replacing them", at + 1)) {
    ++replaced;
  }
  EXPECT_EQ(replaced, 1u);
  EXPECT_EQ(lab_->Get("cli", kIngress + ":443/"), "200");
}

TEST_F(AgentE2eTest, PolicyFileChangesApplyWithinASecondAndInvalidOnesChangeNothing) {
  StartAgent();
  ASSERT_EQ(lab_->Get("out", kIngress + ":10254/", 1), "000");
  std::string open = kPolicy;
  open.replace(open.find("{ports: [10254], proto: tcp, from: [admins]}"),
               std::string("{ports: [10254], proto: tcp, from: [admins]}").size(),
               "{ports: [10254], proto: tcp, from: any}");
  const auto written = Clock::now();
  WritePolicy(open);
  ASSERT_TRUE(
      WaitFor([&] { return Metric("portcullis_policy_version") == 2; }, std::chrono::seconds(1)))
      << "the change was not applied within 1 s";
  EXPECT_LE(Clock::now() - written, std::chrono::seconds(1));
  EXPECT_EQ(lab_->Get("out", kIngress + ":10254/"), "200");

  WritePolicy(std::string(kPolicy) + "  icmp: sometimes\n");
  ASSERT_TRUE(WaitFor(
      [&] { return Metric("portcullis_sync_errors_total", {"kind=\"invalid_policy\""}) == 1; },
      std::chrono::seconds(2)));
  EXPECT_EQ(Metric("portcullis_policy_version"), 2);
  EXPECT_EQ(lab_->Get("out", kIngress + ":10254/"), "200");  // the previous policy stays
  EXPECT_THAT(Log(), HasSubstr("spec.icmp: \\\"sometimes\\\" is not one of: deny, allow"));
}

// New pod interfaces, and what the pod-facing program judges: node_e2e_test.cc.

TEST_F(AgentE2eTest, RecreatedPolicedInterfaceIsAttachedAgainAndReadinessFollows) {
  const std::string up = lab_->prefix() + "up0";
  const std::string create = absl::StrCat("ip -n ", lab_->Ns("ing"), " link add ", up,
                                          " type veth peer name ", lab_->prefix(), "up1");
  ASSERT_EQ(RunCommand(create).exit_code, 0);
  StartAgent({}, lab_->Link("ing") + "," + up);
  auto has_xdp = [&] {
    return absl::StrContains(RunCommand("ip -n " + lab_->Ns("ing") + " link show " + up).out,
                             "prog/xdp");
  };
  ASSERT_TRUE(has_xdp());
  EXPECT_THAT(Log(), Not(HasSubstr("adopted")));  // a fresh start adopts nothing

  ASSERT_EQ(RunCommand(absl::StrCat("ip -n ", lab_->Ns("ing"), " link del ", up)).exit_code, 0);
  EXPECT_TRUE(WaitFor([&] { return Http("/readyz") == "503"; }, std::chrono::seconds(1)))
      << "a missing policed interface must make the agent not ready";
  EXPECT_EQ(lab_->Get("out", kIngress + ":10254/", 1), "000");  // the others stay enforced

  ASSERT_EQ(RunCommand(create).exit_code, 0);
  EXPECT_TRUE(WaitFor(has_xdp, std::chrono::seconds(1))) << "XDP not attached again";
  EXPECT_TRUE(WaitFor([&] { return Http("/readyz") == "200"; }, std::chrono::seconds(1)));
  RunCommand(absl::StrCat("ip -n ", lab_->Ns("ing"), " link del ", up));
}

TEST_F(AgentE2eTest, InvalidPolicyAtStartFallsBackToLastKnownGoodOrRefuses) {
  // No last-known-good: refuse to start, saying why.
  WritePolicy(std::string(kPolicy) + "  mode: sometimes\n");
  const CommandResult refused = RunCommand(absl::StrCat(
      "nsenter --net=/run/netns/", lab_->Ns("ing"), " timeout 10 ", kAgent, " --policy-file ",
      policy_file_, " --interfaces ", lab_->Link("ing"), " --pin-dir ", pin_dir_, " --state-dir ",
      state_dir_, " --metrics-addr 127.0.0.1:9469"));
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err, HasSubstr("no last-known-good policy"));
  EXPECT_THAT(refused.err, HasSubstr("spec.mode: \\\"sometimes\\\""));

  // With one: enforce it and say so.
  WritePolicy(kPolicy);
  StartAgent();
  agent_.Kill(SIGTERM);
  WritePolicy(std::string(kPolicy) + "  mode: sometimes\n");
  StartAgent();
  EXPECT_THAT(Log(), HasSubstr("enforcing the last-known-good policy instead"));
  EXPECT_EQ(lab_->Get("out", kIngress + ":10254/", 1), "000");
  EXPECT_EQ(lab_->Get("cli", kIngress + ":443/"), "200");
}

TEST_F(AgentE2eTest, ClearErrorsForBadInterfacesAndFlags) {
  const std::string base =
      absl::StrCat("nsenter --net=/run/netns/", lab_->Ns("ing"), " ", kAgent, " --policy-file ",
                   policy_file_, " --pin-dir ", pin_dir_, " --state-dir ", state_dir_);
  CommandResult r = RunCommand(base + " --interfaces nosuch0");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--interfaces: no such interface: nosuch0"));
  r = RunCommand(base + " --interfaces " + lab_->Link("ing") + " --xdp-mode turbo");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--xdp-mode: \\\"turbo\\\" is not auto, native or generic"));
  r = RunCommand(base + " --interfaces " + lab_->Link("ing") + " --cookie-mark 0x1zz");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--cookie-mark: \\\"0x1zz\\\" is not a 32-bit mark"));
  r = RunCommand(base + " --interfaces " + lab_->Link("ing") + " --pin-dir /tmp");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--pin-dir /tmp is not on a bpffs mount"));

  // Without privileges: say which are needed. (Its own state dir, so that
  // only the privileges are missing.)
  const std::string nobody_state = lab_->tmp() + "/nobody-state";
  RunCommand("mkdir -p " + nobody_state + " && chown 65534:65534 " + nobody_state +
             " && chmod 755 " + lab_->tmp() + " && chmod 644 " + policy_file_);
  r = RunCommand(absl::StrCat("nsenter --net=/run/netns/", lab_->Ns("ing"),
                              " setpriv --reuid=65534 --regid=65534 --clear-groups "
                              "--inh-caps=-all --bounding-set=-all ",
                              kAgent, " --policy-file ", policy_file_, " --interfaces ",
                              lab_->Link("ing"), " --pin-dir ", pin_dir_, " --state-dir ",
                              nobody_state, " --metrics-addr ''"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("the agent needs root, or CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON"));
}

}  // namespace
}  // namespace portcullis::testing
