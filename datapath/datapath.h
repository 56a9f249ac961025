// The loaded Portcullis BPF object: its programs and maps. Owns every kernel
// object it creates (RAII; not movable, held by unique_ptr).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "datapath/bpf_util.h"

struct portcullis_bpf;         // the bpftool-generated skeletons
struct portcullis_cookie_bpf;  // (cookie.bpf.c)
struct bpf_map;

namespace portcullis::datapath {

struct DatapathOptions {
  // Read "now" from the user_clock map instead of the kernel's monotonic
  // clock: simulation and tests replay time deterministically (and
  // first_sight's hash gets a fixed seed instead of a random one).
  bool use_user_clock = false;
  // Record each packet's verdict in last_verdict (simulation and tests).
  bool record_last_verdict = false;
  // Judge every SYN as if a listener were behind it (simulation and tests:
  // the frames have no sockets behind them), for SYN cookies.
  bool assume_listeners = false;
  // Drop samples sent to the ring buffer, at most this many per second.
  uint64_t samples_per_second = 100;
  uint64_t sample_burst = 100;
  // Mark bits that the cookie completer sets on the ACK it hands to a
  // listener, for a rule that takes it out of conntrack (agent/
  // cookie_notrack.h); 0: none.
  uint32_t cookie_mark = 0;
  // SYN cookies for the pods behind --tc-interfaces too: XDP answers SYNs
  // that find no socket in the node's namespace, and the uplink's completer
  // hands their ACKs to tc_cookie_pod_prog_fd() in the pods' namespaces.
  bool cookies_for_pods = false;
  // When set, every map is pinned in this bpffs directory, and maps already
  // pinned there (by an earlier agent) are reused: policy, buckets, flows and
  // counters carry on across restarts.
  std::string pin_dir;
};

// Every map of portcullis.bpf.c. The policy maps that hold both slots come
// first, in the order the installer writes them (policy_config, written
// last, is not among them). Names, types and sizes come from libbpf; the
// only table is MapName(), and Load() fails if it and the object disagree.
enum class Map {
  kSrcV4Exact,
  kSrcV6Exact,
  kSrcV4Prefix,
  kSrcV6Prefix,
  kDstV4,
  kDstV6,
  kPortPolicy,
  kRateOverrides,
  // ---- not per slot ----
  kActiveSlot,
  kPolicyConfig,
  kSourceBucketsV4,
  kSourceBucketsV6,
  kDryBucketsV4,
  kDryBucketsV6,
  kFirstSight,
  kGlobalBuckets,
  kEgressFlows,
  kIngressFlows,
  kXdpIfaces,
  kIfaceSlots,
  kVerdictCountersFast,
  kVerdictCounters,
  kPortDropCounters,
  kCountedPorts,
  kNamedPortDrops,
  kShadowTransitions,
  kShadowSources,
  kSynCookies,
  kCookieStats,
  kDropSamples,
  kUserClock,
  kLastVerdict,
  kCount,
};
inline constexpr int kMapCount = static_cast<int>(Map::kCount);
// The slot maps are Map values below kSlotMapCount.
using SlotMap = Map;
inline constexpr int kSlotMapCount = static_cast<int>(Map::kRateOverrides) + 1;

// The map's name in the BPF object (and its pin's file name).
absl::string_view MapName(Map m);
inline absl::string_view SlotMapName(SlotMap m) { return MapName(m); }

// What libbpf knows of a map's shape.
struct MapShape {
  uint32_t type;  // enum bpf_map_type
  uint32_t key_size;
  uint32_t value_size;
  uint32_t max_entries;
};

// OK when this kernel can complete SYN cookies (it has the kfunc
// bpf_sk_assign_tcp_reqsk, Linux 6.9+); otherwise an error that says why.
absl::Status SynCookiesSupported();

class Datapath {
 public:
  // Opens, configures and loads the object. No policy is active until the
  // first install. PermissionDenied when the process may not use BPF;
  // FailedPrecondition (naming the map) when maps pinned in pin_dir have
  // another shape than this build's (an incompatible older agent).
  static absl::StatusOr<std::unique_ptr<Datapath>> Load(const DatapathOptions& options);
  ~Datapath();
  Datapath(const Datapath&) = delete;
  Datapath& operator=(const Datapath&) = delete;

  const DatapathOptions& options() const { return options_; }
  // Pins every map in `dir`, replacing pins of the same name.
  absl::Status PinMaps(const std::string& dir);
  // Unpins what an older build left in `dir` under names this build does
  // not use (a renamed map would otherwise stay pinned, and allocated, for
  // ever). Programs still using such a map keep it alive until they go.
  // Returns the names removed.
  absl::StatusOr<std::vector<std::string>> RemoveStalePins(const std::string& dir) const;
  // Copies the flows the node opened from the egress_flows pinned in `dir`
  // by an incompatible build (whose value was the 8-byte last-seen time)
  // into this datapath's fresh map, so that an upgrade does not cut the
  // node's outbound connections. Returns how many were carried over.
  absl::StatusOr<uint64_t> CarryOverFlows(const std::string& dir);

  int xdp_prog_fd() const;
  int tc_pod_prog_fd() const;     // judges, toward a pod (its interface's egress)
  int tc_record_prog_fd() const;  // records opened flows, where the node or a pod sends
  // Completes SYN cookies, on a policed uplink's ingress; -1 where this
  // kernel cannot (cookies_unsupported() says why), and then no SYN is
  // answered with a cookie.
  int tc_cookie_prog_fd() const;
  // The pod's half, at the ingress of the pod's side of its veth (in the
  // pod's namespace), with cookies_for_pods; -1 with tc_cookie_prog_fd().
  int tc_cookie_pod_prog_fd() const;
  const std::string& cookies_unsupported() const { return cookies_unsupported_; }

  int map_fd(Map m) const;
  MapShape shape(Map m) const;

  // Marks `ifindex` as an interface XDP judges (or no longer), so that the
  // pod-facing TC program does not judge its packets again.
  absl::Status SetXdpInterface(uint32_t ifindex, bool judged);

  // Returns once every program that was running when it was called has
  // finished (an RCU grace period): after it, a slot that packets no longer
  // select is not being read by anyone.
  absl::Status WaitForRunningPrograms();

  // "Now" on the programs' clock: the kernel's coarse monotonic clock, or
  // the user clock (use_user_clock; 0 until it is set).
  int64_t Now() const;

 private:
  explicit Datapath(const DatapathOptions& options) : options_(options) {}

  DatapathOptions options_;
  // Loads cookie.bpf.c on the maps it shares, and gives SYN cookies their
  // key; or records why not.
  absl::Status LoadCookieCompleter();
  // The maps pinned in pin_dir: every map of portcullis.bpf.c, and the one
  // of cookie.bpf.c that it does not share (cookie_handovers).
  std::vector<struct bpf_map*> PinnedMaps() const;

  struct ::portcullis_bpf* skel_ = nullptr;
  struct ::portcullis_cookie_bpf* cookie_skel_ = nullptr;
  std::string cookies_unsupported_;
  std::array<struct bpf_map*, kMapCount> maps_{};
  // An ARRAY_OF_MAPS used only as a fence: updating it makes the kernel wait
  // for running BPF programs before the syscall returns.
  UniqueFd fence_outer_;
  UniqueFd fence_inner_;
};

}  // namespace portcullis::datapath
