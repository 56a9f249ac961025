// Calls back for every network interface whose name matches one of a set of
// globs: those present at start, and those created later (netlink
// RTM_NEWLINK), such as an ingress pod's host-side veth.
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
      std::vector<std::string> globs, std::function<void(const std::string& ifname)> on_link);
  ~LinkWatcher();

  static bool Matches(const std::vector<std::string>& globs, const std::string& name);

 private:
  LinkWatcher() = default;
  datapath::UniqueFd sock_;
  PollThread thread_;  // last: stopped before the socket closes
};

}  // namespace portcullis::agent
