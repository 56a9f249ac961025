// The pod's side of a pod interface: the host side of a veth (--tc-interfaces)
// names its peer by index and by the id this namespace gives the peer's
// namespace (IFLA_LINK, IFLA_LINK_NETNSID). No call turns that id into a
// namespace, so the namespaces the container runtime bind-mounts (containerd
// and CRI-O in /run/netns) are asked theirs (RTM_GETNSID). Used to put the
// cookie program at the pod's ingress, in the pod's namespace, which is the
// only place the kfunc takes the pod's listener (docs/ARCHITECTURE.md).
#pragma once

#include <optional>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "datapath/bpf_util.h"

namespace portcullis::agent {

inline constexpr char kPodNetnsDir[] = "/run/netns";

struct PodSide {
  datapath::UniqueFd netns;  // the pod's network namespace
  int ifindex = 0;           // the veth's peer, in that namespace
};

// OK when this process can put programs in pods' namespaces: `netns_dir`
// is there, and it may enter a namespace (CAP_SYS_ADMIN, which setns needs);
// otherwise what is missing.
absl::Status CanReachPodNamespaces(const std::string& netns_dir = kPodNetnsDir);

// The pod side of `host_ifname`, a veth in this namespace; nullopt when it
// has no peer in another namespace (its listeners are the node's). NotFound
// when no namespace in `netns_dir` is the peer's.
absl::StatusOr<std::optional<PodSide>> FindPodSide(const std::string& host_ifname,
                                                   const std::string& netns_dir = kPodNetnsDir);

// The name under which StateDir records a clsact qdisc the agent created
// at the pod's side of `host_ifname` (no interface name has a '/').
inline std::string PodSideQdisc(const std::string& host_ifname) { return host_ifname + "/pod"; }

// Runs `fn` in the network namespace `netns` (on a thread of its own, which
// setns moves; the caller's stays where it is). No exception escapes.
absl::Status InNetns(int netns, absl::FunctionRef<absl::Status()> fn);

}  // namespace portcullis::agent
