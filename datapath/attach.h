// Attaching the datapath programs to interfaces, and detaching them.
//
// XDP goes on through a BPF link pinned in the pin dir, so it outlives the
// agent (fail-static) and a new agent swaps the program under it in one
// operation (bpf_link_update). TC programs go on a clsact qdisc as filters
// with a fixed handle and priority (libbpf 1.1 has no tcx); a filter also
// outlives its creator, and BPF_TC_F_REPLACE swaps it in one operation.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "datapath/bpf_util.h"

namespace portcullis::datapath {

enum class XdpMode { kAuto, kNative, kGeneric };

// Parses "auto", "native" or "generic".
absl::StatusOr<XdpMode> ParseXdpMode(absl::string_view text);

struct XdpAttachment {
  std::string mode;  // "native" or "generic": what is in effect
  bool replaced;     // an earlier program was swapped out (adoption)
  UniqueFd link;     // the link; holding it keeps XDP on even if the pin is removed
};

// Attaches (or, when `link_pin` holds a link already, atomically replaces)
// the XDP program on `ifname`. kAuto tries native, then generic.
absl::StatusOr<XdpAttachment> AttachXdp(int prog_fd, const std::string& ifname, XdpMode mode,
                                        const std::string& link_pin);

// Detaches the XDP link pinned at `link_pin` and removes the pin. OK if there
// is no such pin.
absl::Status DetachXdp(const std::string& link_pin);

// What XDP program runs on `ifindex`: none, `prog_fd`'s, or another.
enum class XdpOn { kNone, kOurs, kOther };
XdpOn QueryXdp(int ifindex, int prog_fd);

// Pins `fd` (a link) at `path`, replacing a pin of that name.
absl::Status RepinObject(int fd, const std::string& path);

enum class TcDirection { kIngress, kEgress };

// Attaches (or atomically replaces) our TC filter. Returns whether this call
// created the clsact qdisc (so that only a qdisc we created is removed).
absl::StatusOr<bool> AttachTc(int prog_fd, const std::string& ifname, TcDirection direction);
// The same, by index in the calling thread's namespace; `name` is for errors.
absl::StatusOr<bool> AttachTc(int prog_fd, int ifindex, TcDirection direction,
                              const std::string& name);

// Removes our TC filter from `ifindex` if present (identified by our handle,
// priority and program name). With `remove_qdisc`, also the clsact qdisc.
// Returns whether a filter of ours was found.
absl::StatusOr<bool> DetachTc(int ifindex, TcDirection direction, bool remove_qdisc);

// Our TC filter's handle and priority on every interface.
inline constexpr uint32_t kTcHandle = 0x5043;  // "PC"
inline constexpr uint32_t kTcPriority = 0xC0;

}  // namespace portcullis::datapath
