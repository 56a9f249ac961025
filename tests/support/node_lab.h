// A Kubernetes node, wired the way a CNI (Calico, Cilium) wires one, in
// network namespaces that the fixture creates and removes (also when a test
// fails). Every address is in 198.18.0.0/15 or 2001:db8::/32, and nothing
// leaves the namespaces.
//
//   switch "sw" (a bridge): the underlay, with
//     cli  198.18.2.9    2001:db8::2:9    a client (also "the world": nginx :80)
//     out  198.18.4.1    2001:db8::4:1    an outsider
//     bad  198.18.3.3    2001:db8::3:3    a blocklisted host
//     n1   198.18.0.10   2001:db8::10     the node under test, uplink eth0
//     n2   198.18.0.11   2001:db8::11     a second node
//     ctl  198.18.0.2    2001:db8::2      where portcullis-control runs
//     atk  198.18.66.6   2001:db8::66:6   an attacker (floods)
//   pods behind host-side veths ("cali" + name on the node), each pod
//   address a /32 (/128) route on the node, the pod's default route via
//   169.254.1.1 (fe80::1):
//     on n1: ing 198.19.1.10 2001:db8:1:1::10  the ingress pod (nginx :8443)
//            be  198.19.1.20 2001:db8:1:1::20  its backend (nginx :8080)
//     on n2: rp  198.19.2.10 2001:db8:1:2::10  a remote pod, over VXLAN (4789)
//            rb  198.19.2.66 2001:db8:1:2::66  a remote pod to blocklist
//            fp  198.19.3.10                   a remote pod over flannel's VXLAN (8472)
//            fb  198.19.3.66                   its blocklisted neighbour
//   (This kernel has neither Geneve nor IP-in-IP: CONFIG_GENEVE and
//   CONFIG_NET_IPIP are off and there are no modules. Both overlays are
//   VXLAN, on the IANA port and on flannel's.)
//   on n1: a kube-proxy-style (nftables) NodePort, node:30443 -> ing:8443
//   (IPv4 and IPv6, externalTrafficPolicy Local: no SNAT), masquerade of
//   the pods' IPv4 traffic leaving the node, and a hostNetwork listener
//   (nginx on the node's addresses, :10443).
#pragma once

#include <unistd.h>

#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/support/command.h"
#include "tests/support/lab.h"
#include "tests/support/temp_dir.h"

namespace portcullis::testing {

class NodeLab {
 public:
  struct Pod {
    std::string node, v4, v6;  // v6 empty: IPv4 only
  };

  // `prefix` names every namespace (prefix + name); `keep` leaves them in
  // place on destruction (portcullis-node-lab up; Remove takes them down).
  explicit NodeLab(std::string prefix = absl::StrCat("pk", getpid() % 100000), bool keep = false)
      : prefix_(std::move(prefix)), keep_(keep) {
    Step("namespaces", Namespaces());
    Step("switch and hosts", Underlay());
    for (const auto& [name, pod] : Pods()) Step("pod " + name, PodCommands(name, pod));
    Step("overlays", Overlays());
    Step("kube-proxy", KubeProxy());
  }

  ~NodeLab() {
    if (!keep_) Remove(prefix_);
  }

  // Removes the namespaces of a lab with `prefix`.
  static void Remove(const std::string& prefix) {
    for (const std::string& name : Names()) RunCommand("ip netns del " + prefix + name);
  }
  NodeLab(const NodeLab&) = delete;
  NodeLab& operator=(const NodeLab&) = delete;

  // What failed while building the lab, or "".
  const std::string& error() const { return error_; }

  static std::map<std::string, Pod> Pods() {
    return {
        {"ing", {"n1", "198.19.1.10", "2001:db8:1:1::10"}},
        {"be", {"n1", "198.19.1.20", "2001:db8:1:1::20"}},
        {"rp", {"n2", "198.19.2.10", "2001:db8:1:2::10"}},
        {"rb", {"n2", "198.19.2.66", "2001:db8:1:2::66"}},
        {"fp", {"n2", "198.19.3.10", ""}},
        {"fb", {"n2", "198.19.3.66", ""}},
    };
  }
  static std::map<std::string, std::pair<std::string, std::string>> Hosts() {
    return {
        {"cli", {"198.18.2.9", "2001:db8::2:9"}},   {"out", {"198.18.4.1", "2001:db8::4:1"}},
        {"bad", {"198.18.3.3", "2001:db8::3:3"}},   {"n1", {"198.18.0.10", "2001:db8::10"}},
        {"n2", {"198.18.0.11", "2001:db8::11"}},    {"ctl", {"198.18.0.2", "2001:db8::2"}},
        {"atk", {"198.18.66.6", "2001:db8::66:6"}},
    };
  }

  std::string Ns(const std::string& name) const { return prefix_ + name; }
  const std::string& prefix() const { return prefix_; }
  const std::string& tmp() const { return tmp_.path(); }
  // The node's uplink, and a pod's interface on its node.
  static std::string Uplink() { return "eth0"; }
  static std::string PodInterface(const std::string& pod) { return "cali" + pod; }
  // A host's or a pod's address; IPv6 ones in brackets for URLs with `url`.
  static std::string V4(const std::string& name) {
    auto pods = Pods();
    if (pods.count(name)) return pods[name].v4;
    return Hosts().at(name).first;
  }
  static std::string V6(const std::string& name, bool url = false) {
    auto pods = Pods();
    const std::string a = pods.count(name) ? pods[name].v6 : Hosts().at(name).second;
    return url ? "[" + a + "]" : a;
  }

  // A shell command in a namespace (see InNetns).
  CommandResult In(const std::string& name, const std::string& command) const {
    return InNetns(Ns(name), command);
  }
  // The HTTP status of a GET from `from`, "000" when refused or timed out.
  std::string Get(const std::string& from, const std::string& url, double timeout = 2) const {
    return HttpStatusFrom(Ns(from), url, timeout);
  }

  // nginx in namespace `name` answering 200 on every `listen` (ADDR:PORT,
  // [V6]:PORT), with a body naming `name`.
  Process StartNginx(const std::string& name, const std::vector<std::string>& listen) const {
    return StartNginxIn(Ns(name), listen, name, tmp_);
  }

 private:
  // Runs `commands` as one shell script (stopping at the first failure);
  // the first failing step is kept in error_.
  void Step(const std::string& what, const std::vector<std::string>& commands) {
    if (!error_.empty()) return;
    const std::string script = tmp_.Write("step.sh", "set -e\n" + absl::StrJoin(commands, "\n"));
    const CommandResult r = RunCommand("sh -x " + script);
    if (r.exit_code != 0) {
      error_ =
          absl::StrCat(what, ": ", r.err.substr(r.err.size() > 2000 ? r.err.size() - 2000 : 0));
    }
  }

  std::string N(const std::string& name) const { return "ip -n " + Ns(name) + " "; }
  std::string Sysctl(const std::string& name, const std::string& setting) const {
    return absl::StrCat("ip netns exec ", Ns(name), " sysctl -qw ", setting);
  }

  // Every namespace, the switch last (removed after what hangs on it).
  static std::vector<std::string> Names() {
    std::vector<std::string> names;
    for (const auto& [name, p] : Pods()) names.push_back(name);
    for (const auto& [name, a] : Hosts()) names.push_back(name);
    names.push_back("sw");
    return names;
  }

  std::vector<std::string> Namespaces() {
    std::vector<std::string> c;
    for (const std::string& name : Names()) {
      c.push_back("ip netns add " + Ns(name));
      c.push_back(N(name) + "link set lo up");
      c.push_back(Sysctl(name, "net.ipv6.conf.all.accept_dad=0"));
      c.push_back(Sysctl(name, "net.ipv6.conf.default.accept_dad=0"));
    }
    return c;
  }

  std::vector<std::string> Underlay() {
    std::vector<std::string> c = {N("sw") + "link add br0 type bridge",
                                  N("sw") + "link set br0 up"};
    for (const auto& [name, a] : Hosts()) {
      const std::string dev = name == "n1" || name == "n2" ? Uplink() : "eth0";
      c.push_back(absl::StrCat(N("sw"), "link add p", name, " type veth peer name ", dev, " netns ",
                               Ns(name)));
      c.push_back(absl::StrCat(N("sw"), "link set p", name, " master br0 up"));
      c.push_back(absl::StrCat(N(name), "addr add ", a.first, "/16 dev ", dev));
      c.push_back(absl::StrCat(N(name), "addr add ", a.second, "/64 dev ", dev, " nodad"));
      c.push_back(absl::StrCat(N(name), "link set ", dev, " up"));
    }
    for (const std::string node : {"n1", "n2"}) {
      c.push_back(Sysctl(node, "net.ipv4.ip_forward=1"));
      c.push_back(Sysctl(node, "net.ipv6.conf.all.forwarding=1"));
      c.push_back(Sysctl(node, "net.ipv4.conf.all.rp_filter=0"));
      c.push_back(Sysctl(node, "net.ipv4.conf.default.rp_filter=0"));
    }
    // The IPv6 pod network is routed (no NAT), as on a dual-stack cluster.
    for (const std::string host : {"cli", "out", "bad", "atk"}) {
      c.push_back(N(host) + "-6 route add 2001:db8:1:1::/64 via 2001:db8::10");
    }
    return c;
  }

  std::vector<std::string> PodCommands(const std::string& name, const Pod& pod) {
    const std::string host_if = PodInterface(name);
    std::vector<std::string> c = {
        // Calico's host side: one MAC for every pod interface.
        absl::StrCat(N(pod.node), "link add ", host_if,
                     " address ee:ee:ee:ee:ee:ee type veth peer name eth0 netns ", Ns(name)),
        absl::StrCat(N(pod.node), "link set ", host_if, " up"),
        absl::StrCat(N(pod.node), "addr add fe80::1/64 dev ", host_if, " nodad"),
        absl::StrCat(N(pod.node), "route add ", pod.v4, "/32 dev ", host_if),
        absl::StrCat(N(name), "addr add ", pod.v4, "/32 dev eth0"),
        absl::StrCat(N(name), "link set eth0 up"),
        // The CNI's gateway: an address on no interface, answered for by
        // the node (a fixed neighbour entry here, proxy ARP in Calico).
        absl::StrCat(N(name), "route add 169.254.1.1 dev eth0 scope link"),
        absl::StrCat(N(name), "route add default via 169.254.1.1 dev eth0"),
        absl::StrCat(N(name), "neigh replace 169.254.1.1 dev eth0 lladdr ee:ee:ee:ee:ee:ee"),
    };
    if (!pod.v6.empty()) {
      c.push_back(absl::StrCat(N(pod.node), "-6 route add ", pod.v6, "/128 dev ", host_if));
      c.push_back(absl::StrCat(N(name), "addr add ", pod.v6, "/128 dev eth0 nodad"));
      c.push_back(absl::StrCat(N(name), "-6 route add default via fe80::1 dev eth0"));
    }
    return c;
  }

  // Two VXLAN overlays point to point between the nodes, vxlan0 on 4789
  // (Cilium's, Calico's) and flannel.1 on 8472 (flannel's), set up as
  // flannel does: a /32 on the device, the other node's pod subnet via its
  // device address, onlink, and a fixed neighbour.
  std::vector<std::string> Overlays() {
    std::vector<std::string> c;
    struct End {
      std::string node, peer;
      int n;
    };
    for (const End& e : {End{"n1", "n2", 1}, End{"n2", "n1", 2}}) {
      const int p = 3 - e.n;
      c.push_back(absl::StrCat(N(e.node), "link add vxlan0 address 02:00:00:00:42:0", e.n,
                               " type vxlan id 42 dstport 4789 local ", V4(e.node), " remote ",
                               V4(e.peer), " dev eth0"));
      c.push_back(absl::StrCat(N(e.node), "link add flannel.1 address 02:00:00:00:01:0", e.n,
                               " type vxlan id 1 dstport 8472 local ", V4(e.node), " remote ",
                               V4(e.peer), " dev eth0"));
      for (const std::string dev : {"vxlan0", "flannel.1"}) {
        c.push_back(absl::StrCat(N(e.node), "link set ", dev, " up"));
      }
      c.push_back(absl::StrCat(N(e.node), "addr add 198.19.255.", e.n, "/32 dev vxlan0"));
      c.push_back(absl::StrCat(N(e.node), "addr add 2001:db8:ff::", e.n, "/128 dev vxlan0 nodad"));
      c.push_back(absl::StrCat(N(e.node), "addr add 198.19.254.", e.n, "/32 dev flannel.1"));
      c.push_back(absl::StrCat(N(e.node), "neigh replace 198.19.255.", p,
                               " lladdr 02:00:00:00:42:0", p, " dev vxlan0 nud permanent"));
      c.push_back(absl::StrCat(N(e.node), "neigh replace 2001:db8:ff::", p,
                               " lladdr 02:00:00:00:42:0", p, " dev vxlan0 nud permanent"));
      c.push_back(absl::StrCat(N(e.node), "neigh replace 198.19.254.", p,
                               " lladdr 02:00:00:00:01:0", p, " dev flannel.1 nud permanent"));
    }
    // n1's pods are 198.19.1.0/24; n2's: 198.19.2.0/24 over vxlan0, and
    // 198.19.3.0/24 over flannel.1 (and n2 answers those over flannel.1).
    c.push_back(N("n1") + "route add 198.19.2.0/24 via 198.19.255.2 dev vxlan0 onlink");
    c.push_back(N("n1") + "-6 route add 2001:db8:1:2::/64 via 2001:db8:ff::2 dev vxlan0 onlink");
    c.push_back(N("n1") + "route add 198.19.3.0/24 via 198.19.254.2 dev flannel.1 onlink");
    c.push_back(N("n2") + "route add 198.19.1.0/24 via 198.19.255.1 dev vxlan0 onlink");
    c.push_back(N("n2") + "-6 route add 2001:db8:1:1::/64 via 2001:db8:ff::1 dev vxlan0 onlink");
    c.push_back(N("n2") +
                "route add 198.19.1.0/24 via 198.19.254.1 dev flannel.1 onlink table 100");
    c.push_back(N("n2") + "rule add from 198.19.3.0/24 lookup 100");
    return c;
  }

  std::vector<std::string> KubeProxy() {
    const std::string rules = absl::StrCat(
        "table inet kube-proxy {\n"
        "  chain nodeports {\n"
        "    type nat hook prerouting priority dstnat; policy accept;\n"
        "    ip daddr ",
        V4("n1"), " tcp dport 30443 dnat ip to ", V4("ing"), ":8443\n", "    ip6 daddr ", V6("n1"),
        " tcp dport 30443 dnat ip6 to [", V6("ing"), "]:8443\n",
        "  }\n"
        "  chain pod-egress {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        "    ip saddr 198.19.0.0/16 ip daddr != 198.19.0.0/16 oifname \"eth0\" masquerade\n"
        "  }\n"
        "}\n");
    const std::string file = tmp_.Write("kube-proxy.nft", rules);
    return {absl::StrCat("ip netns exec ", Ns("n1"), " nft -f ", file)};
  }

  std::string prefix_;
  bool keep_;
  TempDir tmp_;
  std::string error_;
};

}  // namespace portcullis::testing
