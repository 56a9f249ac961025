#include "agent/pod_netns.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/net_namespace.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

namespace portcullis::agent {
namespace {

namespace fs = std::filesystem;

absl::Status Errno(const std::string& what, int err) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(err)));
}

// A NETLINK_ROUTE socket of the calling thread's namespace, for requests
// answered by one message.
class RouteSocket {
 public:
  static absl::StatusOr<RouteSocket> Open() {
    RouteSocket s;
    s.fd_.Reset(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!s.fd_.valid()) return Errno("netlink socket", errno);
    const struct timeval timeout = {.tv_sec = 2, .tv_usec = 0};
    setsockopt(s.fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    return s;
  }

  // Sends `request` and returns the answer (its attributes start at
  // `payload` bytes into the message).
  absl::StatusOr<const struct nlmsghdr*> Ask(struct nlmsghdr* request, const std::string& what) {
    request->nlmsg_flags = NLM_F_REQUEST;
    request->nlmsg_seq = ++seq_;
    if (send(fd_.get(), request, request->nlmsg_len, 0) < 0) return Errno(what, errno);
    for (;;) {
      const ssize_t n = recv(fd_.get(), buf_.data(), buf_.size(), 0);
      if (n < 0) return Errno(what, errno);
      int len = static_cast<int>(n);
      const auto* h = reinterpret_cast<const struct nlmsghdr*>(buf_.data());
      if (!NLMSG_OK(h, len)) return absl::UnavailableError(absl::StrCat(what, ": short answer"));
      if (h->nlmsg_seq != seq_) continue;  // an answer to an earlier request that timed out
      if (h->nlmsg_type == NLMSG_ERROR) {
        const auto* e = static_cast<const struct nlmsgerr*>(NLMSG_DATA(h));
        return Errno(what, -e->error);
      }
      return h;
    }
  }

 private:
  RouteSocket() : buf_(16 * 1024) {}
  datapath::UniqueFd fd_;
  std::vector<char> buf_;
  uint32_t seq_ = 0;
};

// Calls fn(type, data, len) for each attribute of `h` after its `fixed`
// header.
template <typename Fn>
void ForEachAttr(const struct nlmsghdr* h, size_t fixed, Fn fn) {
  int len = static_cast<int>(h->nlmsg_len) - static_cast<int>(NLMSG_LENGTH(NLMSG_ALIGN(fixed)));
  const auto* a = reinterpret_cast<const struct rtattr*>(static_cast<const char*>(NLMSG_DATA(h)) +
                                                         NLMSG_ALIGN(fixed));
  for (; RTA_OK(a, len); a = RTA_NEXT(a, len)) fn(a->rta_type, RTA_DATA(a), RTA_PAYLOAD(a));
}

struct Peer {
  int ifindex = 0;
  std::optional<int32_t> nsid;  // absent: the peer is in this namespace
};

absl::StatusOr<Peer> PeerOf(RouteSocket& sock, const std::string& ifname) {
  const unsigned ifindex = if_nametoindex(ifname.c_str());
  if (ifindex == 0) return absl::NotFoundError(absl::StrCat("no such interface: ", ifname));
  struct {
    struct nlmsghdr h;
    struct ifinfomsg i;
  } req = {};
  req.h.nlmsg_len = NLMSG_LENGTH(sizeof(req.i));
  req.h.nlmsg_type = RTM_GETLINK;
  req.i.ifi_family = AF_UNSPEC;
  req.i.ifi_index = static_cast<int>(ifindex);
  auto answer = sock.Ask(&req.h, absl::StrCat("RTM_GETLINK ", ifname));
  if (!answer.ok()) return answer.status();
  Peer peer;
  ForEachAttr(*answer, sizeof(struct ifinfomsg), [&](int type, const void* data, size_t len) {
    if (len < 4) return;
    int32_t value;
    std::memcpy(&value, data, 4);
    if (type == IFLA_LINK) peer.ifindex = value;
    if (type == IFLA_LINK_NETNSID) peer.nsid = value;
  });
  return peer;
}

// The id this namespace gives the namespace `netns`; -1 for none.
absl::StatusOr<int32_t> NsidOf(RouteSocket& sock, int netns) {
  alignas(struct nlmsghdr) char
      req[NLMSG_SPACE(NLMSG_ALIGN(sizeof(struct rtgenmsg)) + RTA_SPACE(sizeof(uint32_t)))] = {};
  auto* h = reinterpret_cast<struct nlmsghdr*>(req);
  h->nlmsg_len = NLMSG_LENGTH(NLMSG_ALIGN(sizeof(struct rtgenmsg)));
  h->nlmsg_type = RTM_GETNSID;
  static_cast<struct rtgenmsg*>(NLMSG_DATA(h))->rtgen_family = AF_UNSPEC;
  auto* a = reinterpret_cast<struct rtattr*>(req + h->nlmsg_len);
  a->rta_type = NETNSA_FD;
  a->rta_len = RTA_LENGTH(sizeof(uint32_t));
  const uint32_t fd = static_cast<uint32_t>(netns);
  std::memcpy(RTA_DATA(a), &fd, sizeof(fd));
  h->nlmsg_len += RTA_ALIGN(a->rta_len);
  auto answer = sock.Ask(h, "RTM_GETNSID");
  if (!answer.ok()) return answer.status();
  int32_t nsid = -1;
  ForEachAttr(*answer, sizeof(struct rtgenmsg), [&](int type, const void* data, size_t len) {
    if (type == NETNSA_NSID && len >= 4) std::memcpy(&nsid, data, 4);
  });
  return nsid;
}

}  // namespace

absl::Status CanReachPodNamespaces(const std::string& netns_dir) {
  std::error_code ec;
  if (!fs::is_directory(netns_dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat(netns_dir, ", where the container runtime keeps the pods' network ",
                     "namespaces, is not there (mount it from the host)"));
  }
  struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct caps[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capget, &header, caps) != 0) return Errno("capget", errno);
  if (!(caps[CAP_SYS_ADMIN / 32].effective & (1u << (CAP_SYS_ADMIN % 32)))) {
    return absl::FailedPreconditionError(
        "no CAP_SYS_ADMIN, which entering a pod's network namespace needs "
        "(deploy/overlays/pod-cookies adds it)");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<PodSide>> FindPodSide(const std::string& host_ifname,
                                                   const std::string& netns_dir) {
  auto sock = RouteSocket::Open();
  if (!sock.ok()) return sock.status();
  auto peer = PeerOf(*sock, host_ifname);
  if (!peer.ok()) return peer.status();
  if (!peer->nsid || *peer->nsid < 0 || peer->ifindex <= 0) return std::nullopt;
  std::error_code ec;
  for (auto it = fs::directory_iterator(netns_dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    datapath::UniqueFd netns(open(it->path().c_str(), O_RDONLY | O_CLOEXEC));
    if (!netns.valid()) continue;  // removed meanwhile, or not a namespace
    auto nsid = NsidOf(*sock, netns.get());
    if (nsid.ok() && *nsid == *peer->nsid) return PodSide{std::move(netns), peer->ifindex};
  }
  return absl::NotFoundError(absl::StrCat("the peer of ", host_ifname, " is in a network namespace",
                                          " (id ", *peer->nsid, ") that is not in ", netns_dir,
                                          ec ? absl::StrCat(" (", ec.message(), ")") : ""));
}

absl::Status InNetns(int netns, absl::FunctionRef<absl::Status()> fn) {
  absl::Status result;
  std::thread([&] {
    if (setns(netns, CLONE_NEWNET) != 0) {
      result = Errno("setns", errno);
      return;
    }
    result = fn();
  }).join();
  return result;
}

}  // namespace portcullis::agent
