#include "agent/link_watcher.h"

#include <fnmatch.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace portcullis::agent {

bool LinkWatcher::Matches(const std::vector<std::string>& globs, const std::string& name) {
  for (const std::string& g : globs) {
    if (fnmatch(g.c_str(), name.c_str(), 0) == 0) return true;
  }
  return false;
}

absl::StatusOr<std::unique_ptr<LinkWatcher>> LinkWatcher::Start(
    std::vector<std::string> globs, std::function<void(const std::string&)> on_link,
    std::function<void(const std::string&)> on_removed) {
  std::unique_ptr<LinkWatcher> w(new LinkWatcher());
  // Subscribe before scanning, so that a link created in between is not missed.
  const int sock = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
  if (sock < 0) return absl::UnavailableError(absl::StrCat("netlink: ", std::strerror(errno)));
  w->sock_.Reset(sock);
  struct sockaddr_nl addr = {};
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = RTMGRP_LINK;
  if (bind(sock, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr))) {
    return absl::UnavailableError(absl::StrCat("netlink bind: ", std::strerror(errno)));
  }

  if (struct if_nameindex* list = if_nameindex()) {
    for (struct if_nameindex* i = list; i->if_index != 0; ++i) {
      if (Matches(globs, i->if_name)) on_link(i->if_name);
    }
    if_freenameindex(list);
  }

  auto buf = std::make_shared<std::vector<char>>(64 * 1024);
  absl::Status started =
      w->thread_.Start(sock, [sock, buf, globs = std::move(globs), on_link = std::move(on_link),
                              on_removed = std::move(on_removed)] {
        ssize_t received;
        while ((received = recv(sock, buf->data(), buf->size(), 0)) > 0) {
          int n = static_cast<int>(received);
          for (auto* h = reinterpret_cast<struct nlmsghdr*>(buf->data()); NLMSG_OK(h, n);
               h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type != RTM_NEWLINK && h->nlmsg_type != RTM_DELLINK) continue;
            auto* ifi = static_cast<struct ifinfomsg*>(NLMSG_DATA(h));
            int len = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof(*ifi)));
            for (auto* a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
              if (a->rta_type != IFLA_IFNAME) continue;
              const std::string name(static_cast<const char*>(RTA_DATA(a)));
              if (!Matches(globs, name)) continue;
              if (h->nlmsg_type == RTM_NEWLINK) {
                on_link(name);
              } else if (on_removed) {
                on_removed(name);
              }
            }
          }
        }
      });
  if (!started.ok()) return started;
  return w;
}

LinkWatcher::~LinkWatcher() { thread_.Stop(); }

}  // namespace portcullis::agent
