// The agent's pins in bpffs: the layout of the pin dir (maps/ and links/),
// making sure it is on a bpffs, unpinning what an older build left, and a
// watch that notices when the pins are gone (bpffs unmounted, the dir
// removed) and pins the maps and XDP links again, so that a restarted agent
// can still adopt what runs.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "datapath/datapath.h"

namespace portcullis::agent {

// What the agent needs to use BPF and its pins, for the errors that say so.
inline constexpr absl::string_view kAgentPrivileges =
    "the agent needs root, or CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON and CAP_SYS_ADMIN (to mount "
    "bpffs)";

// Where things are pinned under --pin-dir.
struct PinLayout {
  std::string pin_dir;
  std::string maps() const { return pin_dir + "/maps"; }
  std::string links() const { return pin_dir + "/links"; }
  std::string xdp_link(const std::string& ifname) const { return links() + "/xdp_" + ifname; }
};

// Makes sure `pin_dir` is on a bpffs and creates maps/ and links/. When
// /sys/fs/bpf is not a bpffs here, a bpffs the agent mounted itself would be
// private to its mount namespace (`ip netns exec` gives a process its own
// /sys; a container without the hostPath has its own): its pins, and with
// them enforcement, would die with the process. So that is refused with an
// error that names the mount and the fix, unless `mount_private` accepts
// it (--allow-ephemeral-pins, or the pin watch restoring the pins of a
// running agent whose bpffs was unmounted under it).
absl::Status PreparePinDir(const PinLayout& layout, bool mount_private);

// The XDP links the agent holds, by interface, as the pin watch re-pins
// them: fn(ifname, link fd).
using ForEachXdpLink = std::function<void(const std::function<void(const std::string&, int)>&)>;

class PinKeeper {
 public:
  // `dp` and what `links` reaches must outlive the keeper.
  PinKeeper(PinLayout layout, datapath::Datapath& dp, ForEachXdpLink links)
      : layout_(std::move(layout)), dp_(dp), links_(std::move(links)) {}
  ~PinKeeper() { StopWatch(); }
  PinKeeper(const PinKeeper&) = delete;
  PinKeeper& operator=(const PinKeeper&) = delete;

  const PinLayout& layout() const { return layout_; }

  // Unpins maps of names this build does not use (left by an older build).
  absl::Status RemoveStalePins();
  // Pins this build's maps (replacing incompatible ones), then removes the
  // rest.
  absl::Status PinMaps();

  // Checks every second that the pins are there; when they are not, calls
  // on_change(false), pins them again, and calls on_change(true) once that
  // worked. The number of map pins present now is what "complete" means.
  absl::Status StartWatch(std::function<void(bool pins_ok)> on_change);
  void StopWatch();

 private:
  bool Present();
  absl::Status Restore();
  void Watch();

  const PinLayout layout_;
  datapath::Datapath& dp_;
  const ForEachXdpLink links_;
  std::function<void(bool)> on_change_;
  size_t map_pins_ = 0;  // entries of maps/ when complete
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace portcullis::agent
