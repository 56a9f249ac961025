#include "agent/pin_keeper.h"

#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/state_dir.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "datapath/attach.h"

namespace portcullis::agent {
namespace {

namespace fs = std::filesystem;

bool IsBpffs(const std::string& path) {
  struct statfs st;
  return statfs(path.c_str(), &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

// Entries of `dir`, or nullopt when it cannot be listed.
std::optional<size_t> CountEntries(const std::string& dir) {
  std::error_code ec;
  size_t n = 0;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    ++n;
  }
  if (ec) return std::nullopt;
  return n;
}

}  // namespace

absl::Status PreparePinDir(const PinLayout& layout, bool mount_private) {
  std::error_code ec;
  if (absl::StartsWith(layout.pin_dir, "/sys/fs/bpf") && !IsBpffs("/sys/fs/bpf")) {
    if (!mount_private) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--pin-dir ", layout.pin_dir,
          ": /sys/fs/bpf is not a bpffs mount here, and one this agent mounted would be its "
          "own: its pins, and with them enforcement, would die with the agent. Mount bpffs on "
          "the host (mount -t bpf bpf /sys/fs/bpf), give the container the hostPath "
          "/sys/fs/bpf (deploy/base/agent-daemonset.yaml does), or enter a network namespace "
          "with nsenter --net rather than ip netns exec (which gives the process its own "
          "/sys); --allow-ephemeral-pins accepts pins that die with the agent"));
    }
    LogWarning("mounting a bpffs of this agent's own: pins and enforcement end with it",
               {{"path", std::string("/sys/fs/bpf")}});
    fs::create_directories("/sys/fs/bpf", ec);
    if (mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "bpffs is not mounted at /sys/fs/bpf and cannot be mounted: ", std::strerror(errno),
          " (mount it on the host, or pass the bpffs hostPath)"));
    }
    LogInfo("mounted bpffs", {{"path", std::string("/sys/fs/bpf")}});
  }
  fs::create_directories(layout.maps(), ec);
  if (!ec) fs::create_directories(layout.links(), ec);
  if (ec == std::errc::permission_denied || ec == std::errc::operation_not_permitted) {
    return absl::PermissionDeniedError(
        absl::StrCat("--pin-dir ", layout.pin_dir, ": ", ec.message(), ": ", kAgentPrivileges));
  }
  if (ec || !IsBpffs(layout.maps())) {
    return absl::FailedPreconditionError(
        absl::StrCat("--pin-dir ", layout.pin_dir, " is not on a bpffs mount",
                     ec ? absl::StrCat(" (", ec.message(), ")") : ""));
  }
  // Whoever can write here can replace a pinned map (a policy slot) with one
  // of their own.
  for (const std::string& dir : {layout.pin_dir, layout.maps(), layout.links()}) {
    RETURN_IF_ERROR(CheckPrivateDir("--pin-dir", dir));
  }
  return absl::OkStatus();
}

absl::Status PinKeeper::RemoveStalePins() {
  ASSIGN_OR_RETURN(const std::vector<std::string> removed, dp_.RemoveStalePins(layout_.maps()));
  if (!removed.empty()) {
    LogInfo("unpinned maps an older build left", {{"maps", absl::StrJoin(removed, ",")}});
  }
  return absl::OkStatus();
}

absl::Status PinKeeper::PinMaps() {
  RETURN_IF_ERROR(dp_.PinMaps(layout_.maps()));
  return RemoveStalePins();
}

bool PinKeeper::Present() {
  if (!IsBpffs(layout_.maps())) return false;
  const std::optional<size_t> n = CountEntries(layout_.maps());
  if (!n || *n < map_pins_) return false;
  bool all = true;
  links_([&](const std::string& ifname, int) {
    all = all && access(layout_.xdp_link(ifname).c_str(), F_OK) == 0;
  });
  return all;
}

absl::Status PinKeeper::Restore() {
  // A running agent whose bpffs was unmounted under it: mount one again, so
  // that what runs stays adoptable in this mount namespace.
  RETURN_IF_ERROR(PreparePinDir(layout_, /*mount_private=*/true));
  RETURN_IF_ERROR(dp_.PinMaps(layout_.maps()));
  absl::Status status;
  links_([&](const std::string& ifname, int fd) {
    if (status.ok()) status = datapath::RepinObject(fd, layout_.xdp_link(ifname));
  });
  return status;
}

absl::Status PinKeeper::StartWatch(std::function<void(bool pins_ok)> on_change) {
  const std::optional<size_t> n = CountEntries(layout_.maps());
  if (!n) return absl::UnavailableError(absl::StrCat("cannot list ", layout_.maps()));
  map_pins_ = *n;
  on_change_ = std::move(on_change);
  thread_ = std::thread([this] { Watch(); });
  return absl::OkStatus();
}

void PinKeeper::StopWatch() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void PinKeeper::Watch() {
  bool ok = true;
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stop_; })) {
    lock.unlock();
    if (!Present()) {
      if (ok) {
        // Enforcement goes on (this process holds the maps and links); a
        // restarted agent could not adopt it, so: not ready until re-pinned.
        LogError(
            "pinned maps or links are gone (bpffs unmounted or the pin dir removed); "
            "pinning them again",
            {{"pin_dir", layout_.pin_dir}});
        ok = false;
        on_change_(false);
      }
      if (absl::Status s = Restore(); s.ok()) {
        ok = true;
        on_change_(true);
        LogInfo("pins restored", {{"pin_dir", layout_.pin_dir}});
      } else {
        LogWarning("cannot restore the pins yet", {{"error", std::string(s.message())}});
      }
    }
    lock.lock();
  }
}

}  // namespace portcullis::agent
