#include "agent/link_watcher.h"

#include <fnmatch.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <poll.h>
#include <sys/eventfd.h>
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
    std::vector<std::string> globs, std::function<void(const std::string&)> on_link) {
  std::unique_ptr<LinkWatcher> w(new LinkWatcher());
  // Subscribe before scanning, so that a link created in between is not missed.
  w->sock_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (w->sock_ < 0) return absl::UnavailableError(absl::StrCat("netlink: ", std::strerror(errno)));
  struct sockaddr_nl addr = {};
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = RTMGRP_LINK;
  if (bind(w->sock_, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr))) {
    return absl::UnavailableError(absl::StrCat("netlink bind: ", std::strerror(errno)));
  }
  w->stop_fd_ = eventfd(0, EFD_CLOEXEC);

  if (struct if_nameindex* list = if_nameindex()) {
    for (struct if_nameindex* i = list; i->if_index != 0; ++i) {
      if (Matches(globs, i->if_name)) on_link(i->if_name);
    }
    if_freenameindex(list);
  }

  w->thread_ = std::thread([sock = w->sock_, stop = w->stop_fd_, globs = std::move(globs),
                            on_link = std::move(on_link)] {
    std::vector<char> buf(64 * 1024);
    while (true) {
      struct pollfd fds[2] = {{sock, POLLIN, 0}, {stop, POLLIN, 0}};
      if (poll(fds, 2, -1) < 0 && errno != EINTR) return;
      if (fds[1].revents) return;
      ssize_t received = recv(sock, buf.data(), buf.size(), MSG_DONTWAIT);
      if (received <= 0) continue;
      int n = static_cast<int>(received);
      for (auto* h = reinterpret_cast<struct nlmsghdr*>(buf.data()); NLMSG_OK(h, n);
           h = NLMSG_NEXT(h, n)) {
        if (h->nlmsg_type != RTM_NEWLINK) continue;
        auto* ifi = static_cast<struct ifinfomsg*>(NLMSG_DATA(h));
        int len = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof(*ifi)));
        for (auto* a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
          if (a->rta_type != IFLA_IFNAME) continue;
          const std::string name(static_cast<const char*>(RTA_DATA(a)));
          if (Matches(globs, name)) on_link(name);
        }
      }
    }
  });
  return w;
}

LinkWatcher::~LinkWatcher() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof(one));
    thread_.join();
  }
  if (sock_ >= 0) close(sock_);
  if (stop_fd_ >= 0) close(stop_fd_);
}

}  // namespace portcullis::agent
