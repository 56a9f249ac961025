// Portcullis on a Kubernetes node as a CNI wires one (tests/support/
// node_lab.h), with nginx as the ingress pod and the agent run as the
// DaemonSet runs it: --interfaces on the uplink, --tc-interfaces on the
// ingress pod's host-side interface, and a deny-by-default policy without
// `destinations`. Each path to the pod of docs/ARCHITECTURE.md "Where
// packets are judged" is checked: by which hook, on which port, once.
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/node_lab.h"
#include "tests/support/portcullis_commands.h"
#include "tests/support/wait.h"

namespace portcullis::testing {
namespace {

using Clock = std::chrono::steady_clock;

const std::string kAgent = PORTCULLIS_AGENT_PATH;
const std::string kSynSend = PORTCULLIS_SYNSEND_PATH;
const std::string kXdpPass = PORTCULLIS_XDP_PASS_PATH;

// What a security team writes for this node: clients reach the NodePort
// (30443) and the hostNetwork listener (10443); pods elsewhere reach the
// ingress pod's own port (8443), and so do the nodes (kubelet's probes);
// the nodes send the overlays (4789, 8472). Clients are not allowed 8443:
// a NodePort connection judged again after the DNAT would be refused.
constexpr char kPolicy[] = R"(apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: node}
spec:
  defaultAction: deny
  sets:
    clients: [198.18.2.0/24, "2001:db8::2:0/112"]
    pods: [198.19.2.0/24, 198.19.3.0/24, "2001:db8:1:2::/64"]
    nodes: [198.18.0.10/32, 198.18.0.11/32, 198.19.254.0/23, "2001:db8::10/128",
            "2001:db8::11/128", "2001:db8:ff::/64"]
  blocklist: [198.18.3.0/24, "2001:db8::3:0/112", 198.19.2.66/32, 198.19.3.66/32,
              "2001:db8:1:2::66/128"]
  failsafe:
    - {ports: [22, 10250], proto: tcp, from: [nodes]}
  ports:
    - {ports: [30443, 10443], proto: tcp, from: [clients]}
    - {ports: [8443], proto: tcp, from: [pods, nodes]}
    - {ports: [4789, 8472], proto: udp, from: [nodes]}
)";

constexpr char kCookiesAlways[] = "  rateLimits:\n    syn:\n      cookies: always\n";
// What is attached at the ingress of the ingress pod's eth0, in its namespace.
constexpr char kPodFilters[] = "tc filter show dev eth0 ingress";

// A veth delivers XDP_TX frames (SYN-ACKs with cookies) only to a peer that
// runs XDP itself (docs/ARCHITECTURE.md): the switch's port toward the
// node, while this is in scope.
class SwitchPortXdp {
 public:
  explicit SwitchPortXdp(const NodeLab& lab)
      : port_(absl::StrCat("ip -n ", lab.Ns("sw"), " link set dev pn1 xdp")) {
    const CommandResult r = RunCommand(port_ + " obj " + kXdpPass + " sec xdp");
    EXPECT_EQ(r.exit_code, 0) << r.err;
  }
  ~SwitchPortXdp() { RunCommand(port_ + " off"); }
  SwitchPortXdp(const SwitchPortXdp&) = delete;
  SwitchPortXdp& operator=(const SwitchPortXdp&) = delete;

 private:
  std::string port_;
};

class NodeE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;
    lab_ = new NodeLab();
    if (!lab_->error().empty()) return;
    servers_ = new std::vector<Process>();
    servers_->push_back(lab_->StartNginx(
        "ing", {NodeLab::V4("ing") + ":8443", NodeLab::V6("ing", true) + ":8443"}));
    servers_->push_back(lab_->StartNginx("be", {NodeLab::V4("be") + ":8080"}));
    servers_->push_back(
        lab_->StartNginx("cli", {NodeLab::V4("cli") + ":80", NodeLab::V6("cli", true) + ":80"}));
    servers_->push_back(
        lab_->StartNginx("n1", {NodeLab::V4("n1") + ":10443", NodeLab::V6("n1", true) + ":10443"}));
  }
  static void TearDownTestSuite() {
    delete servers_;
    delete lab_;
    servers_ = nullptr;
    lab_ = nullptr;
  }

  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "network namespaces and BPF need root";
    ASSERT_NE(lab_, nullptr);
    ASSERT_EQ(lab_->error(), "") << "the lab could not be built";
    ++test_number_;
    pin_dir_ = absl::StrCat("/sys/fs/bpf/", lab_->prefix(), "t", test_number_);
    state_dir_ = absl::StrCat(lab_->tmp(), "/state", test_number_);
    policy_file_ = absl::StrCat(lab_->tmp(), "/policy", test_number_, ".yaml");
    log_ = absl::StrCat(lab_->tmp(), "/agent", test_number_, ".log");
    std::ofstream(policy_file_) << kPolicy;
  }

  void TearDown() override {
    if (lab_ == nullptr || !lab_->error().empty()) return;
    agent_.Kill(SIGKILL);
    RunCommand(absl::StrCat("nsenter --net=/run/netns/", lab_->Ns("n1"), " ", kAgent,
                            " --uninstall --pin-dir ", pin_dir_, " --state-dir ", state_dir_));
    std::error_code ec;
    std::filesystem::remove_all(pin_dir_, ec);
    if (HasFailure()) {
      std::ifstream in(log_);
      std::cerr << "---- agent log ----\n" << in.rdbuf() << "-------------------\n";
    }
  }

  // The agent as the DaemonSet runs it, on node n1; `wrap` runs it (setpriv).
  void StartAgent(const std::string& tc_interfaces = "caliing",
                  const std::vector<std::string>& wrap = {}) {
    std::vector<std::string> argv = {"nsenter", "--net=/run/netns/" + lab_->Ns("n1")};
    argv.insert(argv.end(), wrap.begin(), wrap.end());
    argv.insert(argv.end(),
                {kAgent, "--policy-file", policy_file_, "--interfaces", NodeLab::Uplink(),
                 "--tc-interfaces", tc_interfaces, "--pin-dir", pin_dir_, "--state-dir", state_dir_,
                 "--metrics-addr", "127.0.0.1:9469", "--node", "n1"});
    agent_ = Process(argv, log_);
    ASSERT_TRUE(WaitFor(
        [&] {
          return lab_->In("n1",
                          "curl -s -o /dev/null -w %{http_code} --max-time 1 "
                          "http://127.0.0.1:9469/readyz")
                     .out == "200";
        },
        std::chrono::seconds(10)))
        << "the agent did not become ready";
  }

  // portcullis_packets_total summed over the samples whose labels contain
  // every `want`.
  double Packets(const std::vector<std::string>& want) {
    return Metric("portcullis_packets_total", want);
  }
  double Cookies(const std::string& result) {
    return Metric("portcullis_syn_cookies_total", {"result=\"" + result + "\""});
  }
  // The sum of a metric's samples whose labels contain every `want`.
  double Metric(const std::string& name, const std::vector<std::string>& want = {}) {
    return SumMetric(lab_->In("n1", "curl -s --max-time 2 http://127.0.0.1:9469/metrics").out, name,
                     want);
  }
  std::string Log() {
    std::ifstream in(log_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  double Xdp(const std::string& reason) {
    return Packets({"iface=\"eth0\"", "hook=\"xdp\"", "reason=\"" + reason + "\""});
  }
  double Tc(const std::string& reason = "") {
    std::vector<std::string> want = {"iface=\"caliing\"", "hook=\"tc\""};
    if (!reason.empty()) want.push_back("reason=\"" + reason + "\"");
    return Packets(want);
  }

  // Exactly `count` SYNs from `from`'s IPv4 address to `dst`:`port`.
  void SendSyns(const std::string& from, const std::string& dst, int port, int count) {
    const CommandResult r = lab_->In(from, absl::StrCat(kSynSend, " ", NodeLab::V4(from), " ", dst,
                                                        " ", port, " ", count, " 20"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  static inline NodeLab* lab_ = nullptr;
  static inline std::vector<Process>* servers_ = nullptr;
  static inline int test_number_ = 0;
  std::string pin_dir_, state_dir_, policy_file_, log_;
  Process agent_;
};

// uplink -> NodePort DNAT -> pod: judged at XDP on the uplink, on the
// NodePort (the port clients use), before the DNAT, and not again at the
// pod's interface; the pod's replies are never judged. IPv4 and IPv6.
TEST_F(NodeE2eTest, ClientsReachTheIngressPodThroughTheNodePortJudgedOnceAtXdp) {
  StartAgent();
  for (const std::string& node : {NodeLab::V4("n1"), NodeLab::V6("n1", true)}) {
    const double refused = Tc("not_allowlisted") + Tc("port_closed");
    const double allowed = Xdp("allowed");
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(lab_->Get("cli", "http://" + node + ":30443/"), "200") << node;
    }
    EXPECT_GE(Xdp("allowed") - allowed, 5 * 3) << "SYN, ACK, request at least, per connection";
    EXPECT_EQ(Tc("not_allowlisted") + Tc("port_closed"), refused)
        << "judged again at the pod's interface, after the DNAT";
  }
  // The outsider and the blocklisted host are refused at XDP, exactly.
  const double not_allowlisted = Xdp("not_allowlisted"), blocklist = Xdp("blocklist");
  SendSyns("out", NodeLab::V4("n1"), 30443, 7);
  SendSyns("bad", NodeLab::V4("n1"), 30443, 5);
  EXPECT_TRUE(WaitFor([&] { return Xdp("not_allowlisted") - not_allowlisted == 7; },
                      std::chrono::seconds(2)));
  EXPECT_EQ(Xdp("blocklist") - blocklist, 5);
  EXPECT_EQ(lab_->Get("out", "http://" + NodeLab::V4("n1") + ":30443/", 1), "000");
  EXPECT_EQ(lab_->Get("out", "http://" + NodeLab::V6("n1", true) + ":30443/", 1), "000");
}

// uplink -> routed to a pod IP (the IPv6 pod network is routed): judged at
// XDP, on the pod's port: 8443 is not the clients'.
TEST_F(NodeE2eTest, TrafficRoutedToAPodIpIsJudgedAtXdpOnThePodsPort) {
  StartAgent();
  const double refused = Xdp("not_allowlisted"), at_pod = Tc("not_allowlisted");
  EXPECT_EQ(lab_->Get("cli", "http://" + NodeLab::V6("ing", true) + ":8443/", 1), "000");
  EXPECT_GT(Xdp("not_allowlisted"), refused);
  EXPECT_EQ(Tc("not_allowlisted"), at_pod);
}

// The ingress pod's own traffic (what it sends enters its interface's
// ingress, where only flows are recorded): to its backend on the node, and
// to the world, masqueraded (IPv4) or routed (IPv6). The replies pass as
// established, at XDP or at the pod's interface, with no destinations set.
TEST_F(NodeE2eTest, TheIngressPodReachesItsBackendAndTheWorld) {
  StartAgent();
  const double closed = Tc("port_closed") + Xdp("port_closed");
  EXPECT_EQ(lab_->Get("ing", "http://" + NodeLab::V4("be") + ":8080/"), "200");
  EXPECT_EQ(lab_->Get("ing", "http://" + NodeLab::V4("cli") + "/"), "200");
  EXPECT_EQ(lab_->Get("ing", "http://" + NodeLab::V6("cli", true) + "/"), "200");
  EXPECT_EQ(Tc("port_closed") + Xdp("port_closed"), closed);
  EXPECT_GT(Tc("established"), 0) << "the backend's replies reach the pod as established";
  EXPECT_GT(Xdp("established"), 0) << "the world's replies come back through the uplink";
}

// overlay -> pod: the outer VXLAN packet is judged at XDP (it needs its
// rule, 4789 or 8472 from the nodes); the inner one, decapsulated, at the
// pod's interface, by its inner source and the pod's port. An inner source
// in the blocklist never reaches the pod. Both overlays; IPv4 and IPv6.
TEST_F(NodeE2eTest, RemotePodsOverTheOverlaysAreJudgedByTheirInnerSource) {
  StartAgent();
  const double outer_closed = Xdp("port_closed"), allowed = Tc("allowed");
  EXPECT_EQ(lab_->Get("rp", "http://" + NodeLab::V4("ing") + ":8443/"), "200");  // vxlan0
  EXPECT_EQ(lab_->Get("rp", "http://" + NodeLab::V6("ing", true) + ":8443/"), "200");
  EXPECT_EQ(lab_->Get("fp", "http://" + NodeLab::V4("ing") + ":8443/"), "200");  // flannel.1
  EXPECT_GE(Tc("allowed") - allowed, 3 * 3);
  EXPECT_EQ(Xdp("port_closed"), outer_closed) << "an outer VXLAN packet was refused";

  const double blocked = Tc("blocklist");
  SendSyns("rb", NodeLab::V4("ing"), 8443, 4);  // over vxlan0
  SendSyns("fb", NodeLab::V4("ing"), 8443, 3);  // over flannel.1
  EXPECT_TRUE(WaitFor([&] { return Tc("blocklist") - blocked == 7; }, std::chrono::seconds(2)))
      << "blocklisted inner sources dropped at the pod: " << Tc("blocklist") - blocked;
  EXPECT_EQ(lab_->Get("rb", "http://" + NodeLab::V4("ing") + ":8443/", 1), "000");
  EXPECT_EQ(lab_->Get("rb", "http://" + NodeLab::V6("ing", true) + ":8443/", 1), "000");
  EXPECT_EQ(lab_->Get("fb", "http://" + NodeLab::V4("ing") + ":8443/", 1), "000");
  // A remote pod's other ports are closed, at the pod.
  const double closed = Tc("port_closed");
  SendSyns("rp", NodeLab::V4("ing"), 9090, 2);
  EXPECT_TRUE(WaitFor([&] { return Tc("port_closed") - closed == 2; }, std::chrono::seconds(2)));
}

// node -> pod (kubelet's probes) and another pod of the node -> pod: judged
// at the pod's interface.
TEST_F(NodeE2eTest, TheNodeAndOtherPodsOfTheNodeAreJudgedAtThePodsInterface) {
  StartAgent();
  const double allowed = Tc("allowed");
  EXPECT_EQ(lab_->Get("n1", "http://" + NodeLab::V4("ing") + ":8443/"), "200");
  EXPECT_EQ(lab_->Get("n1", "http://" + NodeLab::V6("ing", true) + ":8443/"), "200");
  EXPECT_GE(Tc("allowed") - allowed, 2 * 3);
  // The backend pod is in no set: refused at the ingress pod's interface.
  const double refused = Tc("not_allowlisted");
  SendSyns("be", NodeLab::V4("ing"), 8443, 3);
  EXPECT_TRUE(
      WaitFor([&] { return Tc("not_allowlisted") - refused == 3; }, std::chrono::seconds(2)));
}

// uplink -> a hostNetwork listener: judged at XDP only.
TEST_F(NodeE2eTest, AHostNetworkListenerIsJudgedAtXdp) {
  StartAgent();
  // And the agent said what a deny policy without destinations polices.
  EXPECT_THAT(Log(), ::testing::HasSubstr(
                         "the policy denies by default and names no destinations: every pod "
                         "behind --tc-interfaces is policed"));
  EXPECT_EQ(lab_->Get("cli", "http://" + NodeLab::V4("n1") + ":10443/"), "200");
  EXPECT_EQ(lab_->Get("cli", "http://" + NodeLab::V6("n1", true) + ":10443/"), "200");
  const double refused = Xdp("not_allowlisted");
  SendSyns("out", NodeLab::V4("n1"), 10443, 4);
  EXPECT_TRUE(
      WaitFor([&] { return Xdp("not_allowlisted") - refused == 4; }, std::chrono::seconds(2)));
}

// A pod interface created after the agent started gets the judge on its
// egress and the recorder on its ingress within a second, and enforces.
// (Replaces the agent e2e test that pinned the judge on the ingress.)
TEST_F(NodeE2eTest, NewPodInterfacesGetThePodProgramsWithinASecondAndEnforce) {
  StartAgent("caliing,calinew*");
  const std::string pod = lab_->Ns("new");
  RunCommand("ip netns add " + pod);
  const auto created = Clock::now();
  ASSERT_EQ(RunCommand(absl::StrCat("ip -n ", lab_->Ns("n1"),
                                    " link add calinew0 address ee:ee:ee:ee:ee:ee type veth peer "
                                    "name eth0 netns ",
                                    pod))
                .exit_code,
            0);
  auto filter = [&](const std::string& direction) {
    return RunCommand(
               absl::StrCat("tc -n ", lab_->Ns("n1"), " filter show dev calinew0 ", direction))
        .out;
  };
  // Program names are cut to 15 characters.
  EXPECT_TRUE(WaitFor(
      [&] {
        return absl::StrContains(filter("egress"), "portcullis_tc_p") &&
               absl::StrContains(filter("ingress"), "portcullis_tc_r");
      },
      std::chrono::seconds(1)));
  EXPECT_LE(Clock::now() - created, std::chrono::milliseconds(1100));
  for (const std::string& c :
       {absl::StrCat("ip -n ", lab_->Ns("n1"), " link set calinew0 up"),
        absl::StrCat("ip -n ", lab_->Ns("n1"), " route add 198.19.1.30/32 dev calinew0"),
        absl::StrCat("ip -n ", pod, " addr add 198.19.1.30/32 dev eth0"),
        absl::StrCat("ip -n ", pod, " link set eth0 up")}) {
    ASSERT_EQ(RunCommand(c).exit_code, 0) << c;
  }
  auto closed = [&] {
    return Packets({"iface=\"calinew0\"", "hook=\"tc\"", "reason=\"port_closed\""});
  };
  const double before = closed();
  SendSyns("n1", "198.19.1.30", 9999, 6);
  EXPECT_TRUE(WaitFor([&] { return closed() - before == 6; }, std::chrono::seconds(2)))
      << "drops at the new pod's interface: " << closed() - before;
  RunCommand("ip netns del " + pod);
}

// An upgrade from a build that judged on the pod interface's ingress (what
// the pod sends) and had nothing on its egress: that layout is made here
// with this build's judge under our handle, and the agent killed, as an
// old agent's node would be. The new agent puts the judge on the egress
// and the recorder in the old judge's place (one replace), and the pod
// answers again.
TEST_F(NodeE2eTest, AnUpgradeMovesThePodJudgeFromTheIngressToTheEgress) {
  StartAgent();
  const std::string n1 = "nsenter --net=/run/netns/" + lab_->Ns("n1") + " ";
  const std::string pinned = pin_dir_ + "-old-judge";
  // The judge this agent attached, by the id its filter shows.
  const std::string shown = RunCommand(n1 + "tc filter show dev caliing egress").out;
  const std::regex id_re("id ([0-9]+) name portcullis_tc_p");
  std::smatch id;
  ASSERT_TRUE(std::regex_search(shown, id, id_re)) << shown;
  ASSERT_EQ(RunCommand(absl::StrCat("bpftool prog pin id ", id[1].str(), " ", pinned)).exit_code,
            0);
  ASSERT_EQ(RunCommand(n1 +
                       "tc filter replace dev caliing ingress pref 192 handle 0x5043 bpf da "
                       "pinned " +
                       pinned)
                .exit_code,
            0);
  ASSERT_EQ(
      RunCommand(n1 + "tc filter del dev caliing egress pref 192 handle 0x5043 bpf").exit_code, 0);
  std::filesystem::remove(pinned);
  agent_.Kill(SIGKILL);
  // The old layout's fault: the pod's replies are judged as inbound.
  EXPECT_EQ(lab_->Get("cli", "http://" + NodeLab::V4("n1") + ":30443/", 1), "000");

  StartAgent();
  auto filter = [&](const std::string& direction) {
    return RunCommand(n1 + "tc filter show dev caliing " + direction).out;
  };
  EXPECT_TRUE(absl::StrContains(filter("egress"), "portcullis_tc_p")) << filter("egress");
  EXPECT_TRUE(absl::StrContains(filter("ingress"), "portcullis_tc_r")) << filter("ingress");
  EXPECT_FALSE(absl::StrContains(filter("ingress"), "portcullis_tc_p")) << filter("ingress");
  EXPECT_EQ(lab_->Get("cli", "http://" + NodeLab::V4("n1") + ":30443/"), "200");
  const double blocked = Tc("blocklist");
  SendSyns("rb", NodeLab::V4("ing"), 8443, 2);
  EXPECT_TRUE(WaitFor([&] { return Tc("blocklist") - blocked == 2; }, std::chrono::seconds(2)));
}

// SYN cookies on the node (docs/ARCHITECTURE.md, SYN cookies): with
// `cookies: always`, the hostNetwork listener's connections are made
// through cookies, over IPv4 and IPv6; the ingress pod behind the NodePort
// is outside their reach (its listener is in the pod's namespace), so its
// SYNs are judged as with cookies off, still served, and the agent says so.
// SYN cookies on the node (kube-proxy's NAT loaded): the hostNetwork
// listener's connections are completed at the uplink; the ingress pod's,
// through the NodePort, are checked at the uplink before the DNAT and
// handed to the pod's listener by the cookie program at the pod's side of
// its veth, in the pod's namespace, which --uninstall removes again.
TEST_F(NodeE2eTest, CookiesServeTheHostNetworkListenerAndTheIngressPodBehindTheNodePort) {
  std::ofstream(policy_file_) << kPolicy << kCookiesAlways;
  StartAgent();
  const SwitchPortXdp xdp_pass(*lab_);
  ASSERT_EQ(Metric("portcullis_syn_cookies_supported"), 1);
  // (The kernel keeps 15 characters of a program's name.)
  EXPECT_THAT(lab_->In("ing", kPodFilters).out, ::testing::HasSubstr("portcullis_tc_c"));

  for (const int service_port : {10443, 30443}) {
    const double valid = Cookies("valid"), sent = Cookies("sent");
    for (const std::string& node : {NodeLab::V4("n1"), NodeLab::V6("n1", true)}) {
      for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(lab_->Get("cli", absl::StrCat("http://", node, ":", service_port, "/")), "200")
            << node << ":" << service_port << " " << i;
      }
    }
    EXPECT_EQ(Cookies("sent") - sent, 6) << service_port << ": every SYN answered with a cookie";
    EXPECT_EQ(Cookies("valid") - valid, 6)
        << service_port << ": each connection was made through a cookie";
  }
  EXPECT_EQ(Cookies("invalid"), 0);

  agent_.Kill(SIGKILL);
  ASSERT_EQ(
      RunCommand(absl::StrCat("nsenter --net=/run/netns/", lab_->Ns("n1"), " ", kAgent,
                              " --uninstall --pin-dir ", pin_dir_, " --state-dir ", state_dir_))
          .exit_code,
      0);
  EXPECT_EQ(lab_->In("ing", kPodFilters).out, "") << "the pod's side is left as it was";
}

// The issue's attack, on the pod behind the NodePort: SYNs from random,
// spoofed sources of a /17 the policy admits (so that they get as far as
// the rate limits), at 20,000 a second, 40 times the global budget, for as
// long as the client makes 200 requests through the NodePort. With
// `cookies: off` the budget drops most of the client's SYNs with the
// flood's: checked by hand, the client's 200 requests then outlast the
// 60 s the flood is bounded to.
TEST_F(NodeE2eTest, ASpoofedFloodOnTheNodePortIsAnsweredWithCookiesWhileThePodServesClients) {
  std::ofstream(policy_file_) << absl::StrReplaceAll(
                                     kPolicy, {{"clients: [", "clients: [198.19.128.0/17, "}})
                              << "  rateLimits:\n    syn:\n      global: {rate: 500, burst: 500}\n"
                              << "      cookies: auto\n";
  StartAgent();
  const SwitchPortXdp xdp_pass(*lab_);
  const std::string node = NodeLab::V4("n1");
  // Bounded: 60 s at most, and stopped once the client is done.
  Process flood({"ip", "netns", "exec", lab_->Ns("atk"), kSynSend, "198.19.128.0/17", node, "30443",
                 "1200000", "60", "pps=20000"},
                lab_->tmp() + "/spoofed.log");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // under way
  const CommandResult r = lab_->In(
      "cli", absl::StrCat("ok=0; for i in $(seq 200); do c=$(curl -s -o /dev/null -w "
                          "%{http_code} --max-time 2 http://",
                          node, ":30443/); [ \"$c\" = 200 ] && ok=$((ok+1)); done; echo $ok"));
  const int status = flood.Kill(SIGTERM);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the flood ended before the client did";
  int ok = -1;
  EXPECT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(r.out), &ok)) << r.out << r.err;
  EXPECT_GE(ok, 198) << "fewer than 99% of the client's requests succeeded";
  EXPECT_GE(Xdp("syn_cookie"), 20000) << "the flood was answered with cookies";
  EXPECT_EQ(Xdp("syn_rate_global"), 0);
  EXPECT_GT(Cookies("valid"), 0) << "none of the client's SYNs over the budget was answered";
}

// The DaemonSet as shipped (deploy/base) has no CAP_SYS_ADMIN, without
// which no namespace can be entered: the agent says so, and keeps the
// pods as with cookies off, instead of answering SYNs for them with
// cookies that nothing would complete. The node's listener still gets
// them.
TEST_F(NodeE2eTest, WithoutCapSysAdminThePodsAreJudgedAsWithCookiesOff) {
  std::ofstream(policy_file_) << kPolicy << kCookiesAlways;
  StartAgent("caliing", {"setpriv", "--bounding-set=-sys_admin"});
  const SwitchPortXdp xdp_pass(*lab_);
  EXPECT_THAT(Log(), ::testing::HasSubstr("no CAP_SYS_ADMIN"));
  EXPECT_EQ(lab_->In("ing", kPodFilters).out, "");

  const double sent = Cookies("sent"), valid = Cookies("valid");
  EXPECT_EQ(lab_->Get("cli", "http://" + NodeLab::V4("n1") + ":30443/"), "200");
  EXPECT_EQ(Cookies("sent"), sent) << "a SYN for the NodePort was answered with a cookie";
  EXPECT_EQ(lab_->Get("cli", "http://" + NodeLab::V4("n1") + ":10443/"), "200");
  EXPECT_EQ(Cookies("valid") - valid, 1) << "the hostNetwork listener's, through a cookie";
}

}  // namespace
}  // namespace portcullis::testing
