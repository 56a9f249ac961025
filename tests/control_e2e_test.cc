// The control service end to end: portcullis-control with --dev certificates
// in its own namespace (the CLI reaches it on loopback), two real agents each
// enforcing on its own veth in its own namespace (they reach the service
// through those veths, past their own XDP programs), nginx behind each, and
// real clients.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "control/tls.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "portcullis/v1/control.pb.h"
#include "tests/support/big_policy.h"
#include "tests/support/lab.h"
#include "tests/support/portcullis_commands.h"
#include "tests/support/test_crl.h"
#include "tests/support/text_edit.h"
#include "tests/support/wait.h"

namespace portcullis::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using Clock = std::chrono::steady_clock;

const std::string kAgent = PORTCULLIS_AGENT_PATH;
const std::string kControl = PORTCULLIS_CONTROL_PATH;
const std::string kCtl = PORTCULLISCTL_PATH;
const std::string kSynSend = PORTCULLIS_SYNSEND_PATH;

// Port 8080 is the office's under A, everyone's under B.
constexpr char kPolicyA[] = R"(apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: a}
spec:
  defaultAction: deny
  sets:
    office: [198.18.2.0/24]
    admins: [198.18.1.0/28]
  failsafe:
    - {ports: [22, 10250], proto: tcp, from: [admins]}
  ports:
    - {ports: [80], proto: tcp, from: any}
    - {ports: [8080], proto: tcp, from: [office]}
)";

std::string PolicyB() {
  std::string b = kPolicyA;
  b.replace(b.find("{ports: [8080], proto: tcp, from: [office]}"),
            std::string("{ports: [8080], proto: tcp, from: [office]}").size(),
            "{ports: [8080], proto: tcp, from: any}");
  return b;
}

class ControlE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;
    lab_ = new Lab({{"node2", "198.18.0.11"},
                    {"ctl", "198.18.0.2"},
                    {"cli", "198.18.2.9"},
                    {"adm", "198.18.1.5"},
                    {"out", "198.18.30.9"}});
    nginx1_ = new Process(lab_->StartNginx("ing", {80, 8080}));
    nginx2_ = new Process(lab_->StartNginx("node2", {80, 8080}));
  }
  static void TearDownTestSuite() {
    delete nginx1_;
    delete nginx2_;
    delete lab_;
    lab_ = nullptr;
  }

  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "network namespaces and BPF need root";
    ASSERT_NE(lab_, nullptr);
    ++test_number_;
    dir_ = absl::StrCat(lab_->tmp(), "/t", test_number_);
    std::filesystem::create_directories(dir_);
    tls_ = dir_ + "/control/tls";
  }

  void TearDown() override {
    if (lab_ == nullptr) return;
    control_.Kill(SIGKILL);
    for (const std::string node : {"ing", "node2"}) {
      agents_[node].Kill(SIGKILL);
      UninstallAgent(*lab_, node, kAgent, PinDir(node), StateDir(node));
    }
    if (HasFailure()) {
      for (const std::string log : {"control", "agent-ing", "agent-node2"}) {
        std::ifstream in(absl::StrCat(dir_, "/", log, ".log"));
        std::cerr << "---- " << log << " log ----\n" << in.rdbuf();
      }
    }
  }

  std::string PinDir(const std::string& node) const {
    return absl::StrCat("/sys/fs/bpf/", lab_->prefix(), "c", test_number_, node);
  }
  std::string StateDir(const std::string& node) const { return dir_ + "/state-" + node; }

  void StartControl() {
    control_ = Process(InNamespace(*lab_, "ctl",
                                   {kControl, "--dev", "--state-dir", dir_ + "/control", "--listen",
                                    absl::StrCat("0.0.0.0:", kControlPort), "--metrics-addr",
                                    "127.0.0.1:9470", "--stale-after-seconds", "5"}),
                       dir_ + "/control.log");
    ASSERT_TRUE(WaitFor([&] { return CtlHttp("/readyz") == "200"; }, std::chrono::seconds(10)))
        << "the control service did not start";
  }

  void StartAgent(const std::string& node, std::vector<std::string> extra = {}) {
    extra.insert(extra.begin(), {"--report-interval-seconds", "1"});
    agents_[node] = Process(AgentWithControl(*lab_, node, kAgent, tls_, PinDir(node),
                                             StateDir(node), "127.0.0.1:9469", extra),
                            dir_ + "/agent-" + node + ".log");
  }

  std::string CtlHttp(const std::string& path) {
    return lab_
        ->In("ctl",
             "curl -s -o /dev/null -w %{http_code} --max-time 1 http://127.0.0.1:9470" + path)
        .out;
  }

  // portcullisctl on the control service's loopback, as `role` ("" = no certificate).
  CommandResult Ctl(const std::string& role, const std::string& args) {
    return RunCommand(CtlCommand(*lab_, "ctl", kCtl, tls_, role, args));
  }

  std::string WritePolicy(const std::string& name, const std::string& text) {
    const std::string path = absl::StrCat(dir_, "/", name);
    std::ofstream(path) << text;
    return path;
  }

  // Pushes as editor; returns the acknowledged version (0 on failure).
  uint64_t Push(const std::string& text, const std::string& reason) {
    const CommandResult r = Ctl("editor", absl::StrCat("push ", WritePolicy("push.yaml", text),
                                                       " --reason '", reason, "'"));
    uint64_t version = 0;
    if (r.exit_code != 0 || !absl::SimpleAtoi(absl::StripAsciiWhitespace(r.out), &version)) {
      ADD_FAILURE() << "push failed: " << r.exit_code << " " << r.err;
      return 0;
    }
    return version;
  }

  double Metric(const std::string& ns, const std::string& url, const std::string& name) {
    const std::string text = lab_->In(ns, "curl -s --max-time 1 " + url).out;
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      if (absl::StartsWith(line, name + " ")) {
        double v = 0;
        if (absl::SimpleAtod(line.substr(name.size() + 1), &v)) return v;
      }
    }
    return -1;
  }
  double AgentMetric(const std::string& node, const std::string& name) {
    return Metric(node, "http://127.0.0.1:9469/metrics", name);
  }
  bool Enforces(const std::string& node, uint64_t version) {
    return AgentMetric(node, "portcullis_policy_version") == static_cast<double>(version);
  }
  bool BothEnforce(uint64_t version) {
    return Enforces("ing", version) && Enforces("node2", version);
  }

  // "200" when `from` reaches port 8080 on `node`, "000" when dropped.
  std::string Get8080(const std::string& from, const std::string& node) {
    return lab_->Get(from, absl::StrCat("http://", lab_->Address(node), ":8080/"), 0.5);
  }

  // Control service, both agents, policy A live and enforced: its version.
  uint64_t StartWithPolicyA() {
    StartControl();
    const uint64_t v = Push(kPolicyA, "start");
    StartAgent("ing");
    StartAgent("node2");
    EXPECT_TRUE(WaitFor([&] { return BothEnforce(v); }, std::chrono::seconds(10)));
    EXPECT_EQ(Get8080("out", "ing"), "000");
    EXPECT_EQ(Get8080("cli", "ing"), "200");
    return v;
  }

  std::string AgentLog(const std::string& node) const {
    std::ifstream in(dir_ + "/agent-" + node + ".log");
    std::stringstream log;
    log << in.rdbuf();
    return log.str();
  }

  // Exactly `count` SYNs from host `from` to `node`:`port`.
  void SendSyns(const std::string& from, const std::string& node, int port, int count) {
    const CommandResult r =
        lab_->In(from, absl::StrCat(kSynSend, " ", lab_->Address(from), " ", lab_->Address(node),
                                    " ", port, " ", count, " 10"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  // The agent's portcullis_packets_total, summed over interfaces and hooks.
  double AgentPackets(const std::string& node, const std::string& verdict,
                      const std::string& reason) {
    const std::string text =
        lab_->In(node, "curl -s --max-time 1 http://127.0.0.1:9469/metrics").out;
    double sum = 0;
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      if (!absl::StartsWith(line, "portcullis_packets_total{")) continue;
      if (!absl::StrContains(line, absl::StrCat("verdict=\"", verdict, "\"")) ||
          !absl::StrContains(line, absl::StrCat("reason=\"", reason, "\""))) {
        continue;
      }
      double v = 0;
      if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &v)) sum += v;
    }
    return sum;
  }

  static inline Lab* lab_ = nullptr;
  static inline Process *nginx1_ = nullptr, *nginx2_ = nullptr;
  static inline int test_number_ = 0;
  std::string dir_, tls_;
  Process control_;
  std::map<std::string, Process> agents_;
};

TEST_F(ControlE2eTest, PushReachesBothAgentsWithinASecondAndRollbackRestores) {
  const uint64_t a = StartWithPolicyA();
  ASSERT_GT(a, 0u);

  const auto start = Clock::now();
  const uint64_t b = Push(PolicyB(), "open 8080");
  ASSERT_EQ(b, a + 1);
  ASSERT_TRUE(WaitFor([&] { return BothEnforce(b); }, std::chrono::seconds(5)));
  const auto elapsed = Clock::now() - start;
  EXPECT_LT(elapsed, std::chrono::seconds(1))
      << std::chrono::duration<double>(elapsed).count() << " s from push to enforced";
  RecordProperty("push_to_enforced_ms",
                 std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count());
  EXPECT_EQ(Get8080("out", "ing"), "200");
  EXPECT_EQ(Get8080("out", "node2"), "200");

  // Both agents report the live hash: in sync, not drifted.
  ASSERT_TRUE(WaitFor(
      [&] {
        return absl::StrContains(Ctl("viewer", "status").out, "2 agents: 0 drifted, 0 stale");
      },
      std::chrono::seconds(3)))
      << Ctl("viewer", "status").out;
  EXPECT_EQ(Metric("ctl", "http://127.0.0.1:9470/metrics",
                   "portcullis_control_agents{state=\"in_sync\"}"),
            2);

  const CommandResult rollback =
      Ctl("admin", absl::StrCat("rollback --to ", a, " --reason revert"));
  ASSERT_EQ(rollback.exit_code, 0) << rollback.err;
  EXPECT_EQ(absl::StripAsciiWhitespace(rollback.out), absl::StrCat(b + 1));
  ASSERT_TRUE(WaitFor([&] { return BothEnforce(b + 1); }, std::chrono::seconds(5)));
  EXPECT_EQ(Get8080("out", "ing"), "000");
  EXPECT_EQ(Get8080("out", "node2"), "000");
  EXPECT_EQ(Get8080("cli", "node2"), "200");

  const CommandResult history = Ctl("viewer", "history");
  EXPECT_THAT(history.out, HasSubstr(absl::StrCat("[rollback to ", a, "] revert")));
  const CommandResult verify = Ctl("viewer", "audit --verify");
  EXPECT_EQ(verify.exit_code, 0) << verify.err;
  EXPECT_THAT(verify.out, HasSubstr("audit chain verified: 3 entries, head 3:sha256:"));
  // The head, kept apart from the service, anchors the chain: a log cut
  // back to fewer entries, or rewritten, no longer holds it.
  const size_t at = verify.out.find("head ") + 5;
  const std::string anchor = verify.out.substr(at, verify.out.find(';', at) - at);
  EXPECT_THAT(verify.out, HasSubstr("; signatures not checked (no --audit-public-key)"));
  // --dev signs every entry with its own key; the public half verifies them.
  const CommandResult signed_ =
      Ctl("viewer", absl::StrCat("audit --verify --audit-public-key ", tls_, "/audit-signing.pub"));
  EXPECT_EQ(signed_.exit_code, 0) << signed_.err;
  EXPECT_THAT(signed_.out, HasSubstr("; signed from entry 1"));
  EXPECT_EQ(Ctl("viewer", "audit --verify --expect-head " + anchor).exit_code, 0);
  const CommandResult forged = Ctl("viewer", "audit --verify --expect-head 3:sha256:00");
  EXPECT_EQ(forged.exit_code, 1);
  EXPECT_THAT(forged.err, HasSubstr("it no longer holds entry 3 with hash sha256:00"));
}

TEST_F(ControlE2eTest, RefusesViewersPushesCallsWithoutCertificatesAndForeignCertificates) {
  StartControl();
  const std::string policy = WritePolicy("a.yaml", kPolicyA);

  const CommandResult viewer = Ctl("viewer", "push " + policy + " --reason x");
  EXPECT_EQ(viewer.exit_code, 4);
  EXPECT_THAT(viewer.err, HasSubstr("Push needs the role editor or admin; \"viewer\" is viewer"));

  const CommandResult anonymous = Ctl("", "history");
  EXPECT_EQ(anonymous.exit_code, 4);
  EXPECT_THAT(anonymous.err, HasSubstr("no client certificate"));

  // A certificate named "admin", from a CA the service does not trust.
  const CommandResult made = RunCommand(
      absl::StrCat("cd ", dir_,
                   " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                   "-subj /CN=admin -days 1 -keyout rogue.key -out rogue.crt"));
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const CommandResult rogue =
      RunCommand(CtlCommand(*lab_, "ctl", kCtl, tls_, "",
                            absl::StrCat("--cert ", dir_, "/rogue.crt --key ", dir_,
                                         "/rogue.key push ", policy, " --reason x")));
  EXPECT_EQ(rogue.exit_code, 3);
  EXPECT_THAT(rogue.err, HasSubstr("the TLS handshake failed"));

  // Nothing was pushed; the refusals the service saw are audited.
  EXPECT_THAT(Ctl("viewer", "history").out, Not(HasSubstr("\n1")));
  const CommandResult audit = Ctl("viewer", "audit");
  EXPECT_THAT(audit.out, HasSubstr("viewer       viewer  Push           refused"));
  EXPECT_THAT(audit.out, HasSubstr("-            -       History        refused"));
  EXPECT_EQ(
      Metric("ctl", "http://127.0.0.1:9470/metrics",
             "portcullis_control_refusals_total{method=\"Push\",reason=\"permission_denied\"}"),
      1);
}

TEST_F(ControlE2eTest, RefusesAProtectedPortOpenToAnyNamingTheRule) {
  StartControl();
  std::string bad = kPolicyA;
  bad.replace(bad.find("{ports: [80], proto: tcp, from: any}"),
              std::string("{ports: [80], proto: tcp, from: any}").size(),
              "{ports: [80, 10254], proto: tcp, from: any}");
  const std::string file = WritePolicy("bad.yaml", bad);
  // validate --control asks the service, and changes nothing.
  const CommandResult v = Ctl("editor", "validate " + file);
  EXPECT_EQ(v.exit_code, 1);
  EXPECT_THAT(v.err, HasSubstr("bad.yaml: refused by the control service: spec.ports[0]: rule "
                               "\"tcp 80,10254 from any\" opens protected port 10254"));
  const CommandResult r = Ctl("editor", "push " + file + " --reason x");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("spec.ports[0]: rule \"tcp 80,10254 from any\" opens protected "
                               "port 10254 to every source (from: any)"));
  EXPECT_THAT(Ctl("viewer", "audit").out,
              HasSubstr("Push           refused  -       policy refused"));
}

TEST_F(ControlE2eTest, ServesOnlyTls12WithAeadCiphersOr13) {
  StartControl();
  auto handshake = [&](const std::string& options) {
    return lab_
        ->In("ctl", absl::StrCat("echo | timeout 5 openssl s_client -connect 127.0.0.1:",
                                 kControlPort, " ", options, " 2>&1"))
        .out;
  };
  // s_client prints "New, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256", or
  // "Cipher is (NONE)" when the server refused the handshake.
  EXPECT_THAT(handshake(""), HasSubstr("New, TLSv1.3, Cipher is TLS_AES"));
  EXPECT_THAT(handshake("-tls1_1"), HasSubstr("Cipher is (NONE)"));
  EXPECT_THAT(handshake("-tls1_2 -cipher AES128-SHA:AES256-SHA256:AES128-SHA256"),
              HasSubstr("Cipher is (NONE)"));
  EXPECT_THAT(handshake("-tls1_2"),
              ::testing::ContainsRegex("New, TLSv1.2, Cipher is [A-Z0-9-]*GCM"));
}

// Certificates are renewed in place and revoked, as cert-manager and an
// operator do: each pair is a directory reached through a symlink that is
// swapped (as kubelet updates a Secret volume), and the CRL is replaced.
// The service presents its renewed certificate to new connections, the
// agent reconnects with its renewed one once the old one is revoked, and
// neither restarts nor stops enforcing; the revoked certificate is refused.
TEST_F(ControlE2eTest, RenewedCertificatesAreUsedWithoutRestartsAndRevokedOnesAreRefused) {
  ASSERT_EQ(
      RunCommand(absl::StrCat(kControl, " --dev --dev-certs-only --state-dir ", dir_, "/control"))
          .exit_code,
      0);
  const std::string pki = dir_ + "/pki";
  std::filesystem::create_directories(pki);
  auto issue = [&](const std::string& gen, const control::DevLeaf& leaf) {
    std::filesystem::create_directories(pki + "/" + gen);
    ASSERT_TRUE(control::IssueDevCertificate(tls_, leaf, pki + "/" + gen + "/tls.crt",
                                             pki + "/" + gen + "/tls.key")
                    .ok());
  };
  auto use = [&](const std::string& link, const std::string& gen) {
    const std::string tmp = pki + "/" + link + ".new";
    std::filesystem::remove(tmp);
    std::filesystem::create_directory_symlink(gen, tmp);
    std::filesystem::rename(tmp, pki + "/" + link);
  };
  const control::DevLeaf server{kControlServerName,
                                "DNS:portcullis-control,IP:127.0.0.1,IP:198.18.0.2"};
  const control::DevLeaf agent{"portcullis-agent:ing"};
  issue("server-1", server);
  issue("agent-1", agent);
  use("server", "server-1");
  use("agent", "agent-1");
  const std::string crl = pki + "/crl.pem";
  ASSERT_TRUE(WriteTestCrl(tls_, {}, crl).ok());

  control_ = Process(
      InNamespace(*lab_, "ctl",
                  {kControl, "--state-dir", dir_ + "/control", "--ca", tls_ + "/ca.crt", "--cert",
                   pki + "/server/tls.crt", "--key", pki + "/server/tls.key", "--crl", crl,
                   "--tls-refresh-interval", "1s", "--listen",
                   absl::StrCat("0.0.0.0:", kControlPort), "--metrics-addr", "127.0.0.1:9470"}),
      dir_ + "/control.log");
  ASSERT_TRUE(WaitFor([&] { return CtlHttp("/readyz") == "200"; }, std::chrono::seconds(10)));
  const uint64_t va = Push(kPolicyA, "start");
  agents_["ing"] = Process(
      AgentWithControl(*lab_, "ing", kAgent, tls_, PinDir("ing"), StateDir("ing"), "127.0.0.1:9469",
                       {"--cert", pki + "/agent/tls.crt", "--key", pki + "/agent/tls.key",
                        "--tls-refresh-interval", "1s", "--report-interval-seconds", "1"}),
      dir_ + "/agent-ing.log");
  ASSERT_TRUE(WaitFor([&] { return Enforces("ing", va); }, std::chrono::seconds(10)));

  // The service's certificate, renewed: new handshakes get it.
  auto served_serial = [&] {
    return lab_
        ->In("ctl", absl::StrCat("openssl s_client -connect 127.0.0.1:", kControlPort,
                                 " </dev/null 2>/dev/null | openssl x509 -noout -serial"))
        .out;
  };
  const std::string serial1 = *CertificateSerial(pki + "/server-1/tls.crt");
  EXPECT_EQ(absl::StripAsciiWhitespace(served_serial()), "serial=" + serial1);
  issue("server-2", server);
  use("server", "server-2");
  const std::string serial2 = *CertificateSerial(pki + "/server-2/tls.crt");
  EXPECT_TRUE(
      WaitFor([&] { return absl::StripAsciiWhitespace(served_serial()) == "serial=" + serial2; },
              std::chrono::seconds(10)))
      << "still serving " << served_serial();
  EXPECT_EQ(Ctl("viewer", "status").exit_code, 0) << "clients verify the renewed certificate";
  const CommandResult wrong_name = Ctl("viewer", "status --server-name elsewhere.example");
  EXPECT_NE(wrong_name.exit_code, 0) << "the server's name is checked";

  // The agent's, renewed on disk, then the old one revoked: the service ends
  // the stream that presented it, and the agent comes back with the new one.
  issue("agent-2", agent);
  use("agent", "agent-2");
  ASSERT_TRUE(WriteTestCrl(tls_, {pki + "/agent-1/tls.crt"}, crl).ok());
  const auto agent_log = [&] {
    std::ifstream in(dir_ + "/agent-ing.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const auto Version = [&] { return AgentMetric("ing", "portcullis_policy_version"); };
  bool enforcing_throughout = true;
  EXPECT_TRUE(WaitFor(
      [&] {
        const double v = Version();  // -1: the scrape failed, which says nothing
        enforcing_throughout &= v == va || v < 0;
        return absl::StrContains(agent_log(), "refused this agent's certificate");
      },
      std::chrono::seconds(15)));
  const uint64_t vb = Push(PolicyB(), "after the rotation");
  EXPECT_TRUE(WaitFor(
      [&] {
        const double v = Version();  // one reading: it may change between two
        enforcing_throughout &= v == va || v == vb || v < 0;
        return v == vb;
      },
      std::chrono::seconds(15)))
      << "the agent did not come back with its renewed certificate";
  EXPECT_TRUE(enforcing_throughout) << "enforcement stopped during the rotation";
  EXPECT_EQ(Get8080("out", "ing"), "200") << "policy B, which opens 8080 to all";
  EXPECT_EQ(waitpid(agents_["ing"].pid(), nullptr, WNOHANG), 0) << "the agent exited";

  // The revoked certificate is refused, saying why; and an admin's revoked
  // certificate is refused on connections already open, without a restart.
  const CommandResult revoked = RunCommand(
      absl::StrCat("nsenter --net=/run/netns/", lab_->Ns("ctl"), " ", kCtl,
                   " --control 127.0.0.1:", kControlPort, " --ca ", tls_, "/ca.crt --cert ", pki,
                   "/agent-1/tls.crt --key ", pki, "/agent-1/tls.key status"));
  EXPECT_NE(revoked.exit_code, 0);
  EXPECT_THAT(revoked.err, HasSubstr("is revoked by " + crl));
  EXPECT_EQ(Ctl("editor", "history").exit_code, 0);
  ASSERT_TRUE(WriteTestCrl(tls_, {pki + "/agent-1/tls.crt", tls_ + "/editor.crt"}, crl).ok());
  EXPECT_TRUE(
      WaitFor([&] { return Ctl("editor", "history").exit_code != 0; }, std::chrono::seconds(10)));
  EXPECT_THAT(Ctl("editor", "history").err, HasSubstr("is revoked"));
  EXPECT_EQ(Ctl("admin", "history").exit_code, 0);
}

// "A small push by an admin failed with a keepalive timeout, but was
// stored": its client was told one thing and the store held another. While
// a 1M-prefix push holds the push lock for seconds, small pushes with a 1 s
// deadline are made every 300 ms: each is stored exactly when its client
// says it was (the service stores nothing for a client that is gone or
// whose deadline is too near; the CLI, when the answer is lost, says what
// the history holds).
TEST_F(ControlE2eTest, APushIsStoredExactlyWhenItsClientSaysSo) {
  StartControl();
  ASSERT_NE(Push(kPolicyA, "start"), 0u);
  const std::string big = WritePolicy("big.yaml", BlocklistPolicy(1'000'000, 0));
  std::atomic<bool> big_done{false};
  CommandResult big_result;
  std::thread big_push([&] {
    big_result = Ctl("editor", "push " + big + " --reason big --timeout-seconds 120");
    big_done = true;
  });
  constexpr int kMaxSmall = 40;
  std::vector<CommandResult> small(kMaxSmall);
  std::vector<std::thread> pushes;
  for (int i = 0; i < kMaxSmall && !big_done; ++i) {
    const std::string file =
        WritePolicy(absl::StrCat("small-", i, ".yaml"),
                    Edit(kPolicyA, "{ports: [8080], proto: tcp, from: [office]}",
                         absl::StrCat("{ports: [", 8100 + i, "], proto: tcp, from: [office]}")));
    pushes.emplace_back([&, i, file] {
      small[i] = Ctl(
          "editor", absl::StrCat("push ", file, " --reason '[small ", i, "]' --timeout-seconds 1"));
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  big_push.join();
  for (std::thread& t : pushes) t.join();
  EXPECT_EQ(big_result.exit_code, 0) << big_result.err;

  const CommandResult history = Ctl("viewer", "history");
  ASSERT_EQ(history.exit_code, 0) << history.err;
  int refused = 0;
  for (size_t i = 0; i < pushes.size(); ++i) {
    const bool stored = absl::StrContains(history.out, absl::StrCat("[small ", i, "]"));
    EXPECT_EQ(stored, small[i].exit_code == 0)
        << "push " << i << ": exit " << small[i].exit_code << ", " << small[i].err;
    if (small[i].exit_code != 0) {
      ++refused;
      EXPECT_THAT(small[i].err, HasSubstr("it was not stored")) << "push " << i;
    }
  }
  EXPECT_GT(refused, 0) << "no push waited behind the big one: the case was not made";
  const CommandResult verify = Ctl("viewer", "audit --verify");
  EXPECT_EQ(verify.exit_code, 0) << verify.err;
}

// Commit-confirmed pushes. A push that cuts the agents off from the
// control service (it blocklists the service's address, so the stream's
// packets are dropped) can never be confirmed to them: each goes back by
// itself within the window and a second, through the atomic switch, and
// keeps serving; the service reverts it too, and the agents' reverts reach
// the audit log once they are back. A confirmed push stays; a confirmation
// after the window is refused.
TEST_F(ControlE2eTest, AnUnconfirmedPushThatLocksTheAgentsOutIsRevertedByThem) {
  const uint64_t va = StartWithPolicyA();
  const std::string lockout = WritePolicy(
      "lockout.yaml", Edit(kPolicyA, "  ports:\n", "  blocklist: [198.18.0.2/32]\n  ports:\n"));
  const CommandResult pushed =
      Ctl("editor", "push " + lockout + " --reason lockout --confirm-within 4s");
  const auto acked = Clock::now();
  ASSERT_EQ(pushed.exit_code, 0) << pushed.err;
  uint64_t vl = 0;
  ASSERT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(pushed.out), &vl));
  EXPECT_THAT(pushed.err, HasSubstr(absl::StrCat("portcullisctl confirm ", vl)));
  EXPECT_TRUE(WaitFor([&] { return BothEnforce(vl); }, std::chrono::seconds(3)));
  EXPECT_EQ(
      Ctl("editor", "push " + WritePolicy("b.yaml", PolicyB()) + " --reason meanwhile").exit_code,
      1)
      << "no push over a version that awaits confirmation";

  // Back by themselves within the window and a second of it.
  const auto reverted = [&](const std::string& node) {
    return AgentMetric(node, "portcullis_policy_reverts_total") == 1;
  };
  EXPECT_TRUE(WaitFor([&] { return reverted("ing") && reverted("node2"); },
                      acked + std::chrono::seconds(5) - Clock::now()))
      << "the agents did not go back within the window + 1 s";
  EXPECT_EQ(Get8080("cli", "ing"), "200");
  EXPECT_EQ(Get8080("out", "ing"), "000");
  // The service's own revert is a new version holding A; the agents take it
  // once they reach the service again, and report their reverts.
  const CommandResult history = Ctl("viewer", "history");
  EXPECT_THAT(history.out, HasSubstr(absl::StrCat("[rollback to ", va, "] version ", vl,
                                                  " was not confirmed by")));
  EXPECT_THAT(history.out, HasSubstr("[not confirmed] lockout"));
  const uint64_t vr = vl + 1;
  EXPECT_TRUE(WaitFor([&] { return BothEnforce(vr); }, std::chrono::seconds(30)));
  EXPECT_TRUE(WaitFor(
      [&] {
        const std::string audit = Ctl("viewer", "audit").out;
        return absl::StrContains(audit, absl::StrCat("node ing went back by itself from version ",
                                                     vl, " to ", va)) &&
               absl::StrContains(audit, absl::StrCat("node node2 went back by itself from version ",
                                                     vl, " to ", va));
      },
      std::chrono::seconds(15)));
  EXPECT_EQ(Ctl("viewer", "audit --verify").exit_code, 0);

  // Confirmed, it stays.
  const CommandResult b = Ctl(
      "editor", "push " + WritePolicy("b.yaml", PolicyB()) + " --reason open --confirm-within 3s");
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const std::string vb(absl::StripAsciiWhitespace(b.out));
  const CommandResult confirmed = Ctl("editor", "confirm " + vb);
  EXPECT_EQ(confirmed.exit_code, 0) << confirmed.err;
  std::this_thread::sleep_for(std::chrono::seconds(4));
  uint64_t vbn = 0;
  ASSERT_TRUE(absl::SimpleAtoi(vb, &vbn));
  EXPECT_TRUE(BothEnforce(vbn));
  EXPECT_EQ(Get8080("out", "ing"), "200");
  EXPECT_THAT(Ctl("viewer", "history").out, HasSubstr("[confirmed] open"));

  // Too late.
  const CommandResult c = Ctl(
      "editor", "push " + WritePolicy("a.yaml", kPolicyA) + " --reason late --confirm-within 1s");
  ASSERT_EQ(c.exit_code, 0) << c.err;
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const CommandResult late =
      Ctl("editor", absl::StrCat("confirm ", absl::StripAsciiWhitespace(c.out)));
  EXPECT_EQ(late.exit_code, 1);
  EXPECT_THAT(late.err, ::testing::ContainsRegex("closed at|was not confirmed by"));
}

TEST_F(ControlE2eTest, KillDuringPushesLosesNoAcknowledgedVersionAndAgentsConverge) {
  StartWithPolicyA();
  // A stream of pushes, each a different blocklist; the service is killed
  // in the middle of it.
  std::mutex mu;
  std::vector<uint64_t> acknowledged;
  auto acked = [&] {
    std::lock_guard<std::mutex> lock(mu);
    return acknowledged;
  };
  std::atomic<bool> stop{false};
  std::thread pusher([&] {
    for (int i = 1; i <= 400 && !stop; ++i) {
      std::string p = kPolicyA;
      p.replace(p.find("  failsafe:"), 0, absl::StrCat("  blocklist: [198.18.77.", i, "]\n"));
      const CommandResult r = Ctl("editor", absl::StrCat("push ", WritePolicy("s.yaml", p),
                                                         " --reason stream --timeout-seconds 2"));
      uint64_t v = 0;
      if (r.exit_code == 0 && absl::SimpleAtoi(absl::StripAsciiWhitespace(r.out), &v)) {
        std::lock_guard<std::mutex> lock(mu);
        acknowledged.push_back(v);
      }
    }
  });
  // Joined on every way out: a failed ASSERT below must not leave the thread
  // joinable (std::terminate would skip the lab's teardown and leak its
  // namespaces and pins).
  auto join_pusher = absl::MakeCleanup([&] {
    stop = true;
    if (pusher.joinable()) pusher.join();
  });
  ASSERT_TRUE(WaitFor([&] { return acked().size() >= 8; }, std::chrono::seconds(20)));
  control_.Kill(SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::move(join_pusher).Invoke();
  const std::vector<uint64_t> before_kill = acked();
  ASSERT_GE(before_kill.size(), 8u);

  // Enforcement goes on while the service is down.
  EXPECT_TRUE(WaitFor([&] { return AgentMetric("ing", "portcullis_control_connected") == 0; },
                      std::chrono::seconds(5)));
  EXPECT_EQ(Get8080("out", "ing"), "000");
  EXPECT_EQ(Get8080("cli", "node2"), "200");

  StartControl();
  const CommandResult history = Ctl("viewer", "history");
  for (uint64_t v : before_kill) {
    EXPECT_THAT(history.out, ::testing::ContainsRegex(absl::StrCat("\n", v, "[ *]")))
        << "version " << v << " lost";
    EXPECT_EQ(Ctl("viewer", absl::StrCat("get ", v)).exit_code, 0);
  }
  EXPECT_EQ(Ctl("viewer", "audit --verify").exit_code, 0);
  // The live version: the last acknowledged one, or one stored just as the
  // service died (durable, but its acknowledgement was lost).
  uint64_t live = 0;
  const CommandResult get = Ctl("viewer", "get");
  ASSERT_TRUE(absl::SimpleAtoi(
      get.out.substr(std::string("# version ").size(), get.out.find(" by ") - 10), &live))
      << get.out;
  EXPECT_GE(live, before_kill.back());
  // The agents reconnect and converge on it.
  EXPECT_TRUE(WaitFor([&] { return BothEnforce(live); }, std::chrono::seconds(20)));
  for (const std::string node : {"ing", "node2"}) {
    EXPECT_TRUE(WaitFor([&] { return AgentMetric(node, "portcullis_control_connected") == 1; },
                        std::chrono::seconds(20)))
        << node << " did not reconnect";
  }
}

TEST_F(ControlE2eTest, StatusShowsDriftedAndStaleAgentsUntilTheyCatchUp) {
  StartWithPolicyA();
  auto status = [&] { return Ctl("viewer", "status").out; };
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(status(), "2 agents: 0 drifted, 0 stale"); },
                      std::chrono::seconds(5)))
      << status();
  // node2 goes away and misses a push: it is stale (no report within 5 s)
  // and drifted (its applied hash is not the live one).
  agents_["node2"].Kill(SIGKILL);
  const uint64_t b = Push(PolicyB(), "open 8080");
  ASSERT_TRUE(WaitFor([&] { return Enforces("ing", b); }, std::chrono::seconds(5)));
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(status(), "2 agents: 1 drifted, 1 stale"); },
                      std::chrono::seconds(10)))
      << status();
  EXPECT_THAT(status(), ::testing::ContainsRegex("node2 +1 +sha256:[0-9a-f]+ +stale, drifted"));
  const std::string metrics = lab_->In("ctl", "curl -s http://127.0.0.1:9470/metrics").out;
  EXPECT_THAT(metrics, HasSubstr("portcullis_control_agents{state=\"stale\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("portcullis_control_agents{state=\"in_sync\"} 1"));
  // Back, it catches up from its last-known-good version.
  StartAgent("node2");
  ASSERT_TRUE(WaitFor([&] { return Enforces("node2", b); }, std::chrono::seconds(10)));
  EXPECT_TRUE(WaitFor([&] { return absl::StrContains(status(), "2 agents: 0 drifted, 0 stale"); },
                      std::chrono::seconds(5)))
      << status();
  EXPECT_EQ(Get8080("out", "node2"), "200");
}

TEST_F(ControlE2eTest, AgentRestartedWhileControlIsDownEnforcesLastKnownGood) {
  StartWithPolicyA();
  const uint64_t b = Push(PolicyB(), "open 8080");
  ASSERT_TRUE(WaitFor([&] { return BothEnforce(b); }, std::chrono::seconds(5)));

  control_.Stop();  // SIGTERM: stopping the service changes no enforcement
  EXPECT_TRUE(WaitFor([&] { return AgentMetric("ing", "portcullis_control_connected") == 0; },
                      std::chrono::seconds(5)));
  EXPECT_EQ(Get8080("out", "ing"), "200");
  EXPECT_GT(AgentMetric("ing", "portcullis_sync_errors_total{kind=\"stream\"}"), 0);

  agents_["node2"].Kill(SIGKILL);
  StartAgent("node2");
  ASSERT_TRUE(WaitFor([&] { return Enforces("node2", b); }, std::chrono::seconds(10)));
  EXPECT_EQ(Get8080("out", "node2"), "200");
  EXPECT_EQ(AgentMetric("node2", "portcullis_control_connected"), 0);
  EXPECT_THAT(std::string(std::istreambuf_iterator<char>(
                              *std::make_unique<std::ifstream>(dir_ + "/agent-node2.log")),
                          {}),
              HasSubstr("enforcing the last-known-good policy until the control service answers"));
}

// nftables inside node2's namespace: drop everything to and from the control
// service (a partition), or stop dropping it.
void Partition(Lab& lab, const std::string& dir, bool on) {
  if (!on) {
    lab.In("node2", "nft delete table inet pcfault 2>/dev/null");
    return;
  }
  std::ofstream(dir + "/partition.nft")
      << "table inet pcfault {\n"
         "  chain in { type filter hook input priority -300; ip saddr 198.18.0.2 drop; }\n"
         "  chain out { type filter hook output priority -300; ip daddr 198.18.0.2 drop; }\n"
         "}\n";
  const CommandResult r = lab.In("node2", "nft -f " + dir + "/partition.nft");
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(ControlE2eTest, PartitionedAgentKeepsEnforcingReportsItAndConvergesWhenHealed) {
  const uint64_t a = StartWithPolicyA();
  Partition(*lab_, dir_, true);
  const uint64_t b = Push(PolicyB(), "open 8080");
  ASSERT_TRUE(WaitFor([&] { return Enforces("ing", b); }, std::chrono::seconds(5)));
  // Keepalive notices the silent partition (about 15 s).
  EXPECT_TRUE(WaitFor([&] { return AgentMetric("node2", "portcullis_control_connected") == 0; },
                      std::chrono::seconds(30)));
  EXPECT_TRUE(Enforces("node2", a));
  EXPECT_EQ(Get8080("out", "node2"), "000");  // still the old policy, enforced
  EXPECT_EQ(Get8080("out", "ing"), "200");
  EXPECT_GT(AgentMetric("node2", "portcullis_sync_errors_total{kind=\"stream\"}"), 0);

  Partition(*lab_, dir_, false);
  EXPECT_TRUE(WaitFor([&] { return Enforces("node2", b); }, std::chrono::seconds(40)));
  EXPECT_TRUE(WaitFor([&] { return AgentMetric("node2", "portcullis_control_connected") == 1; },
                      std::chrono::seconds(5)));
  EXPECT_EQ(Get8080("out", "node2"), "200");
}

// A confirmation made while an agent's stream was down reaches it when it
// reconnects (it says it awaits one): it does not go back at the deadline.
TEST_F(ControlE2eTest, AConfirmationMissedWhileDisconnectedArrivesOnReconnect) {
  StartWithPolicyA();
  const CommandResult b = Ctl(
      "editor", "push " + WritePolicy("b.yaml", PolicyB()) + " --reason open --confirm-within 15s");
  const auto acked = Clock::now();
  ASSERT_EQ(b.exit_code, 0) << b.err;
  uint64_t vb = 0;
  ASSERT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(b.out), &vb));
  ASSERT_TRUE(WaitFor([&] { return BothEnforce(vb); }, std::chrono::seconds(5)));
  Partition(*lab_, dir_, true);
  lab_->In("node2", "ss -K dst 198.18.0.2 >/dev/null 2>&1");
  ASSERT_TRUE(WaitFor([&] { return AgentMetric("node2", "portcullis_control_connected") == 0; },
                      std::chrono::seconds(5)));
  EXPECT_EQ(Ctl("editor", absl::StrCat("confirm ", vb)).exit_code, 0);
  Partition(*lab_, dir_, false);
  EXPECT_TRUE(WaitFor([&] { return AgentMetric("node2", "portcullis_control_connected") == 1; },
                      std::chrono::seconds(10)));
  std::this_thread::sleep_until(acked + std::chrono::seconds(17));  // past the deadline
  EXPECT_TRUE(BothEnforce(vb));
  EXPECT_EQ(AgentMetric("node2", "portcullis_policy_reverts_total"), 0);
  EXPECT_EQ(AgentMetric("ing", "portcullis_policy_reverts_total"), 0);
  EXPECT_EQ(Get8080("out", "node2"), "200");
}

TEST_F(ControlE2eTest, AFlappingLinkCausesNoApplies) {
  StartWithPolicyA();
  const double applies = AgentMetric("node2", "portcullis_policy_apply_seconds_count");
  const double breaks = AgentMetric("node2", "portcullis_sync_errors_total{kind=\"stream\"}");
  ASSERT_GE(applies, 1);
  // Eight flaps: the stream is cut (its socket destroyed) and the link down
  // for a moment, then up again.
  for (int i = 0; i < 8; ++i) {
    Partition(*lab_, dir_, true);
    lab_->In("node2", "ss -K dst 198.18.0.2 >/dev/null 2>&1");
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    Partition(*lab_, dir_, false);
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  EXPECT_TRUE(WaitFor([&] { return AgentMetric("node2", "portcullis_control_connected") == 1; },
                      std::chrono::seconds(40)));
  // Each reconnect says which version the agent has; the service sends none.
  EXPECT_EQ(AgentMetric("node2", "portcullis_policy_apply_seconds_count"), applies);
  const double new_breaks =
      AgentMetric("node2", "portcullis_sync_errors_total{kind=\"stream\"}") - breaks;
  EXPECT_GE(new_breaks, 1);
  EXPECT_LE(new_breaks, 40) << "reconnects are paced by the backoff";
  EXPECT_EQ(Get8080("out", "node2"), "000");
}

// Shadow: the candidate is judged beside the live policy on real traffic
// (an office client, an outsider and an admin, SYNs counted exactly, to
// ports where nothing answers so that no reply adds packets), acting on
// nothing; the report counts exactly the packets whose verdict it changes;
// promoted, it enforces what it predicted.
TEST_F(ControlE2eTest, AShadowCandidateCountsExactlyWhatItWouldChangeAndPromotionEnforcesIt) {
  StartControl();
  std::string live = kPolicyA;
  live += "    - {ports: [9443], proto: tcp, from: any}\n";
  const uint64_t v = Push(live, "start");
  StartAgent("ing");
  StartAgent("node2");
  ASSERT_TRUE(WaitFor([&] { return BothEnforce(v); }, std::chrono::seconds(10)));

  // Opens 8080 to anyone, closes 9443, opens 10254 to the admins.
  std::string candidate = PolicyB();
  candidate += "    - {ports: [10254], proto: tcp, from: [admins]}\n";
  const CommandResult pushed = Ctl("editor", absl::StrCat("push ", WritePolicy("s.yaml", candidate),
                                                          " --shadow --reason 'review 8080'"));
  ASSERT_EQ(pushed.exit_code, 0) << pushed.err;
  EXPECT_EQ(absl::StripAsciiWhitespace(pushed.out), "1");
  EXPECT_THAT(pushed.err, HasSubstr("as shadow candidate 1"));
  // Both agents load it; the live version is untouched.
  auto report = [&] {
    portcullis::v1::ShadowReportResponse r;
    const CommandResult out = Ctl("viewer", "shadow report --format json");
    EXPECT_EQ(out.exit_code, 0) << out.err;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(out.out, &r).ok()) << out.out;
    return r;
  };
  ASSERT_TRUE(
      WaitFor([&] { return report().agents_reporting_size() == 2; }, std::chrono::seconds(10)))
      << report().DebugString();
  EXPECT_TRUE(BothEnforce(v));

  const double dropped_before = AgentPackets("ing", "drop", "not_allowlisted");
  SendSyns("out", "ing", 8080, 20);  // dropped live; the candidate would allow them
  SendSyns("cli", "ing", 9443, 10);  // allowed live (nothing listens); the candidate closes it
  SendSyns("adm", "ing", 10254, 5);  // closed live; the candidate opens it to the admins
  SendSyns("cli", "ing", 80, 10);    // allowed by both
  SendSyns("adm", "ing", 22, 3);     // failsafe in both
  EXPECT_EQ(Get8080("out", "ing"), "000") << "the candidate acts on nothing";
  // Every packet the live policy dropped as not_allowlisted is the
  // outsider's to 8080: its 20 SYNs and those of its curl.
  const auto outsider =
      static_cast<uint64_t>(AgentPackets("ing", "drop", "not_allowlisted") - dropped_before);
  EXPECT_GE(outsider, 21u);
  using Row = std::tuple<std::string, std::string, std::string, std::string, uint64_t, uint64_t,
                         std::string>;
  const std::set<Row> want = {
      {"drop", "not_allowlisted", "pass", "allowed", outsider, 1, "tcp/8080"},
      {"pass", "allowed", "drop", "port_closed", 10, 1, "tcp/9443"},
      {"drop", "port_closed", "pass", "allowed", 5, 1, "tcp/10254"},
  };
  auto rows = [&](const portcullis::v1::ShadowReportResponse& r) {
    std::set<Row> got;
    for (const portcullis::v1::ShadowChange& c : r.changes()) {
      std::string ports;
      for (const portcullis::v1::ShadowTransition& p : c.ports()) {
        absl::StrAppend(&ports, ports.empty() ? "" : ",", p.proto(), "/", p.port());
      }
      got.insert({c.from_verdict(), c.from_reason(), c.to_verdict(), c.to_reason(), c.packets(),
                  c.sources(), ports});
    }
    return got;
  };
  ASSERT_TRUE(WaitFor([&] { return rows(report()) == want; }, std::chrono::seconds(10)))
      << report().DebugString();
  const portcullis::v1::ShadowReportResponse r = report();
  for (const portcullis::v1::ShadowChange& c : r.changes()) {
    ASSERT_EQ(c.top_sources_size(), 1);
    const std::string from = c.to_reason() == "port_closed" ? "cli"
                             : c.ports(0).port() == 8080    ? "out"
                                                            : "adm";
    EXPECT_EQ(c.top_sources(0).address(), lab_->Address(from));
  }
  EXPECT_EQ(AgentMetric("ing",
                        "portcullis_shadow_packets_total{from_reason=\"port_closed\","
                        "to_reason=\"allowed\"}"),
            5);
  const CommandResult table = Ctl("viewer", "shadow report");
  EXPECT_THAT(table.out, HasSubstr("would newly drop (or audit): 10 packets"));
  EXPECT_THAT(table.out, HasSubstr("pass/allowed -> drop/port_closed: 10 packets from 1 source"));
  EXPECT_THAT(table.out, HasSubstr("top sources: 198.18.2.9 (10)"));

  // Promoted, it enforces what it predicted, through the slot it was in.
  const CommandResult stale = Ctl("editor", "shadow promote --id 7 --reason 'reviewed'");
  EXPECT_EQ(stale.exit_code, 1);
  EXPECT_THAT(stale.err, HasSubstr("the shadow candidate is 1, not 7"));
  const CommandResult promoted = Ctl("editor", "shadow promote --id 1 --reason 'reviewed'");
  ASSERT_EQ(promoted.exit_code, 0) << promoted.err;
  EXPECT_EQ(absl::StripAsciiWhitespace(promoted.out), absl::StrCat(v + 1));
  ASSERT_TRUE(WaitFor([&] { return BothEnforce(v + 1); }, std::chrono::seconds(5)));
  const double closed_before = AgentPackets("ing", "drop", "port_closed");
  SendSyns("cli", "ing", 9443, 10);
  EXPECT_EQ(AgentPackets("ing", "drop", "port_closed") - closed_before, 10);
  EXPECT_EQ(Get8080("out", "ing"), "200");
  EXPECT_THAT(AgentLog("ing"), HasSubstr("policy applied: the shadow candidate, promoted"));
  EXPECT_FALSE(report().has_candidate()) << "promotion ends the candidate";
  const CommandResult audit = Ctl("viewer", "audit");
  EXPECT_THAT(audit.out, HasSubstr("shadow candidate: "));
  EXPECT_THAT(audit.out, HasSubstr("promoted shadow candidate 1"));
  EXPECT_EQ(Ctl("viewer", "audit --verify").exit_code, 0);
}

// A discarded candidate, or one a live push ends, is judged no more.
TEST_F(ControlE2eTest, ADiscardedOrSupersededShadowCandidateEnds) {
  const uint64_t v = StartWithPolicyA();
  const std::string path = WritePolicy("s.yaml", PolicyB());
  ASSERT_EQ(Ctl("editor", "push " + path + " --shadow --reason one").exit_code, 0);
  const CommandResult again = Ctl("editor", "push " + path + " --shadow --reason two");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(absl::StripAsciiWhitespace(again.out), "2") << "a new candidate replaces the first";
  const CommandResult live =
      Ctl("editor", "push " + WritePolicy("a.yaml", kPolicyA) + " --shadow --reason same");
  EXPECT_EQ(live.exit_code, 1);
  EXPECT_THAT(live.err, HasSubstr("equals the live version"));
  ASSERT_TRUE(
      WaitFor([&] { return AgentLog("ing").find("shadow candidate loaded") != std::string::npos; },
              std::chrono::seconds(5)));
  ASSERT_EQ(Ctl("editor", "shadow discard --reason 'not now'").exit_code, 0);
  EXPECT_THAT(Ctl("viewer", "shadow report").out, HasSubstr("no shadow candidate"));
  EXPECT_TRUE(WaitFor(
      [&] { return AgentLog("ing").find("shadow candidate discarded") != std::string::npos; },
      std::chrono::seconds(5)))
      << "the agents stop judging by it";
  const CommandResult none = Ctl("editor", "shadow promote --reason x");
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_THAT(none.err, HasSubstr("there is no shadow candidate to promote"));

  ASSERT_EQ(Ctl("editor", "push " + path + " --shadow --reason three").exit_code, 0);
  std::string c = kPolicyA;
  c += "    - {ports: [9090], proto: tcp, from: any}\n";
  const uint64_t next = Push(c, "unrelated change");
  ASSERT_EQ(next, v + 1);
  EXPECT_THAT(Ctl("viewer", "shadow report").out, HasSubstr("no shadow candidate"));
  ASSERT_TRUE(WaitFor([&] { return BothEnforce(next); }, std::chrono::seconds(5)));
  EXPECT_EQ(AgentMetric("ing", "portcullis_policy_version"), next);
  EXPECT_THAT(Ctl("viewer", "audit").out, HasSubstr("ends shadow candidate 3"));
}

// A canary on one of two agents: only it enforces the new version; promoted,
// both do. A canary chosen by label, aborted: the canary returns to what the
// other runs.
TEST_F(ControlE2eTest, ACanaryRunsOnlyOnItsNodesUntilPromotedOrAborted) {
  StartControl();
  const uint64_t v = Push(kPolicyA, "start");
  StartAgent("ing", {"--node-labels", "zone=a"});
  StartAgent("node2", {"--node-labels", "zone=b,portcullis.example/canary=yes"});
  ASSERT_TRUE(WaitFor([&] { return BothEnforce(v); }, std::chrono::seconds(10)));

  const CommandResult canary = Ctl("editor", absl::StrCat("push ", WritePolicy("b.yaml", PolicyB()),
                                                          " --nodes ing --reason 'try 8080'"));
  ASSERT_EQ(canary.exit_code, 0) << canary.err;
  EXPECT_EQ(absl::StripAsciiWhitespace(canary.out), absl::StrCat(v + 1));
  EXPECT_THAT(canary.err, HasSubstr("a canary: live on those nodes only"));
  ASSERT_TRUE(WaitFor([&] { return Enforces("ing", v + 1); }, std::chrono::seconds(5)));
  std::this_thread::sleep_for(std::chrono::seconds(1));
  EXPECT_TRUE(Enforces("node2", v)) << "only the canary runs the new version";
  EXPECT_EQ(Get8080("out", "ing"), "200");
  EXPECT_EQ(Get8080("out", "node2"), "000");
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::string out = Ctl("viewer", "status").out;
        return absl::StrContains(
                   out, absl::StrCat("rollout: version ", v + 1, " on nodes ing; version ", v)) &&
               absl::StrContains(out, "2 agents: 0 drifted, 0 stale") &&
               absl::StrContains(out, "in sync, canary");
      },
      std::chrono::seconds(5)))
      << Ctl("viewer", "status").out;
  const CommandResult blocked =
      Ctl("editor", "push " + WritePolicy("a.yaml", kPolicyA) + " --reason 'meanwhile'");
  EXPECT_EQ(blocked.exit_code, 1);
  EXPECT_THAT(blocked.err, HasSubstr(absl::StrCat("version ", v + 1, " is a canary on nodes ing")));

  const CommandResult promoted = Ctl("editor", "rollout promote --reason '8080 is fine'");
  ASSERT_EQ(promoted.exit_code, 0) << promoted.err;
  EXPECT_EQ(absl::StripAsciiWhitespace(promoted.out), absl::StrCat(v + 1));
  ASSERT_TRUE(WaitFor([&] { return BothEnforce(v + 1); }, std::chrono::seconds(5)));
  EXPECT_EQ(Get8080("out", "node2"), "200");

  // By label: node2 alone.
  const CommandResult labelled =
      Ctl("editor", "push " + WritePolicy("a.yaml", kPolicyA) +
                        " --node-selector zone=b,portcullis.example/canary=yes --reason 'close'");
  ASSERT_EQ(labelled.exit_code, 0) << labelled.err;
  ASSERT_TRUE(WaitFor([&] { return Enforces("node2", v + 2); }, std::chrono::seconds(5)));
  EXPECT_EQ(Get8080("out", "node2"), "000");
  EXPECT_TRUE(Enforces("ing", v + 1));
  const CommandResult aborted = Ctl("editor", "rollout abort --reason 'clients use 8080'");
  ASSERT_EQ(aborted.exit_code, 0) << aborted.err;
  EXPECT_EQ(absl::StripAsciiWhitespace(aborted.out), absl::StrCat(v + 3));
  ASSERT_TRUE(WaitFor([&] { return BothEnforce(v + 3); }, std::chrono::seconds(5)));
  EXPECT_EQ(Get8080("out", "node2"), "200") << "the canary is back on what the others run";
  EXPECT_EQ(Get8080("out", "ing"), "200");
  EXPECT_THAT(Ctl("editor", "rollout abort --reason again").err,
              HasSubstr("no canary rollout is in progress"));

  const std::string audit = Ctl("viewer", "audit").out;
  EXPECT_THAT(audit, HasSubstr(absl::StrCat("canary on nodes ing; version ", v,
                                            " stays on the other nodes")));
  EXPECT_THAT(audit, HasSubstr(absl::StrCat("canary version ", v + 1,
                                            " (on nodes ing) is live on every node")));
  EXPECT_THAT(audit, HasSubstr("canary on nodes labelled portcullis.example/canary=yes,zone=b"));
  EXPECT_THAT(audit, HasSubstr(absl::StrCat("aborted the rollout of version ", v + 2)));
  EXPECT_EQ(Ctl("viewer", "audit --verify").exit_code, 0);
}

// A staged rollout over two agents: half of them first, then, an interval
// later, all of them, by itself; each step audited.
TEST_F(ControlE2eTest, AStagedRolloutExtendsItselfStepByStep) {
  const uint64_t v = StartWithPolicyA();
  ASSERT_TRUE(WaitFor(
      [&] {
        return absl::StrContains(Ctl("viewer", "status").out, "2 agents: 0 drifted, 0 stale");
      },
      std::chrono::seconds(5)));
  const CommandResult staged =
      Ctl("editor", absl::StrCat("push ", WritePolicy("b.yaml", PolicyB()),
                                 " --steps 50%,100% --interval 5s --reason 'open 8080 slowly'"));
  ASSERT_EQ(staged.exit_code, 0) << staged.err;
  const auto pushed = Clock::now();
  ASSERT_TRUE(WaitFor([&] { return Enforces("ing", v + 1) || Enforces("node2", v + 1); },
                      std::chrono::seconds(4)));
  EXPECT_NE(Enforces("ing", v + 1), Enforces("node2", v + 1)) << "one of two at 50%";
  EXPECT_THAT(Ctl("viewer", "status").out,
              HasSubstr(absl::StrCat("rollout: version ", v + 1,
                                     " on 50% of the nodes (step 1 of 2: 1 node)")));
  ASSERT_TRUE(WaitFor([&] { return BothEnforce(v + 1); }, std::chrono::seconds(10)));
  EXPECT_GE(Clock::now() - pushed, std::chrono::milliseconds(4500)) << "not before its interval";
  EXPECT_EQ(Get8080("out", "ing"), "200");
  EXPECT_EQ(Get8080("out", "node2"), "200");
  const std::string audit = Ctl("viewer", "audit").out;
  EXPECT_THAT(audit, HasSubstr("canary on 50% of the nodes (step 1 of 2: 1 node)"));
  EXPECT_THAT(audit, HasSubstr(absl::StrCat("step 2 of 2: 100%: canary version ", v + 1,
                                            " is live on every node")));
  EXPECT_THAT(Ctl("viewer", "status").out, Not(HasSubstr("rollout:")));
  const CommandResult bad = Ctl("editor", "push " + WritePolicy("a.yaml", kPolicyA) +
                                              " --steps 50%,90% --interval 3s --reason x");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("the last step is 100%"));
}

// A staged rollout that closes the port a client uses aborts by itself: the
// canary's port_closed drops rise past the bound, and every node goes back.
TEST_F(ControlE2eTest, AStagedRolloutAbortsByItselfWhenDropsRiseOnItsCanary) {
  const uint64_t v = StartWithPolicyA();
  // Two reports on the live version from each agent: the rate before.
  ASSERT_TRUE(WaitFor(
      [&] {
        return absl::StrContains(Ctl("viewer", "status").out, "2 agents: 0 drifted, 0 stale");
      },
      std::chrono::seconds(5)));
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  std::string closed = kPolicyA;
  closed.erase(closed.find("    - {ports: [80], proto: tcp, from: any}\n"),
               std::string("    - {ports: [80], proto: tcp, from: any}\n").size());
  const CommandResult staged =
      Ctl("editor", absl::StrCat("push ", WritePolicy("c.yaml", closed),
                                 " --steps 50%,100% --interval 120s --max-drop-increase 5x"
                                 " --reason 'retire port 80'"));
  ASSERT_EQ(staged.exit_code, 0) << staged.err;
  std::string canary;
  ASSERT_TRUE(WaitFor(
      [&] {
        canary = Enforces("ing", v + 1) ? "ing" : Enforces("node2", v + 1) ? "node2" : "";
        return !canary.empty();
      },
      std::chrono::seconds(5)));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // a report on the canary version
  SendSyns("cli", canary, 80, 300);                              // the client still uses port 80
  ASSERT_TRUE(WaitFor([&] { return BothEnforce(v + 2); }, std::chrono::seconds(10)))
      << Ctl("viewer", "status").out;
  EXPECT_EQ(lab_->Get("cli", absl::StrCat("http://", lab_->Address(canary), "/"), 1), "200");
  const std::string audit = Ctl("viewer", "audit").out;
  EXPECT_THAT(audit,
              HasSubstr(absl::StrCat("automatic abort: on node ", canary,
                                     ", drops by port_closed rose from 0.0/s (version ", v, ")")));
  EXPECT_THAT(audit, HasSubstr(absl::StrCat("aborted the rollout of version ", v + 1)));
  EXPECT_THAT(Ctl("viewer", "status").out, Not(HasSubstr("rollout:")));
}

}  // namespace
}  // namespace portcullis::testing
