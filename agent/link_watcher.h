// Calls back for every network interface whose name matches one of a set of
// globs: those present at start, and those created (or changed) later
// (netlink RTM_NEWLINK), such as an ingress pod's host-side veth; and, when
// asked, for matching interfaces that are deleted (RTM_DELLINK).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/poll_thread.h"
#include "datapath/bpf_util.h"

namespace portcullis::agent {

class LinkWatcher {
 public:
  static absl::StatusOr<std::unique_ptr<LinkWatcher>> Start(
      std::vector<std::string> globs, std::function<void(const std::string& ifname)> on_link,
      std::function<void(const std::string& ifname)> on_removed = nullptr);
  ~LinkWatcher();

  static bool Matches(const std::vector<std::string>& globs, const std::string& name);

 private:
  LinkWatcher() = default;
  datapath::UniqueFd sock_;
  PollThread thread_;  // last: stopped before the socket closes
};

}  // namespace portcullis::agent
