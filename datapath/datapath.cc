#include "datapath/datapath.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "common/abi.h"
#include "common/status_macros.h"
#include "portcullis_bpf.skel.h"
#include "portcullis_cookie_bpf.skel.h"

namespace portcullis::datapath {
namespace {

// A map pinned at `path` must have exactly this build's shape to be reused.
absl::Status CheckPinnedShape(struct bpf_map* map, const std::string& path) {
  const int fd = bpf_obj_get(path.c_str());
  if (fd < 0) return absl::OkStatus();  // not pinned yet: created and pinned at load
  UniqueFd pinned(fd);
  struct bpf_map_info info = {};
  __u32 len = sizeof(info);
  if (bpf_obj_get_info_by_fd(pinned.get(), &info, &len)) {
    return ErrnoStatus("bpf_obj_get_info_by_fd", path, errno);
  }
  if (info.type != bpf_map__type(map) || info.key_size != bpf_map__key_size(map) ||
      info.value_size != bpf_map__value_size(map) ||
      info.max_entries != bpf_map__max_entries(map) || info.map_flags != bpf_map__map_flags(map)) {
    return absl::FailedPreconditionError(
        absl::StrCat("the map pinned at ", path, " has another shape than this build's (type ",
                     info.type, ", key ", info.key_size, ", value ", info.value_size, ", entries ",
                     info.max_entries, "; want ", bpf_map__type(map), ", ", bpf_map__key_size(map),
                     ", ", bpf_map__value_size(map), ", ", bpf_map__max_entries(map), ")"));
  }
  return absl::OkStatus();
}

// first_sight's hash seed: random, so that no one can aim a collision.
uint64_t RandomSeed() {
  uint64_t seed = 0;
  if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed)) {
    timespec t = {};
    clock_gettime(CLOCK_MONOTONIC, &t);
    seed = static_cast<uint64_t>(t.tv_nsec) ^ (static_cast<uint64_t>(getpid()) << 32);
  }
  return seed;
}

}  // namespace

std::vector<struct bpf_map*> Datapath::PinnedMaps() const {
  std::vector<struct bpf_map*> maps;
  struct bpf_map* map;
  bpf_object__for_each_map(map, skel_->obj) {
    if (!bpf_map__is_internal(map)) maps.push_back(map);  // .rodata: per load, not shared
  }
  if (cookie_skel_ != nullptr) maps.push_back(cookie_skel_->maps.cookie_handovers);
  return maps;
}

absl::Status Datapath::PinMaps(const std::string& dir) {
  for (struct bpf_map* map : PinnedMaps()) {
    const std::string path = absl::StrCat(dir, "/", bpf_map__name(map));
    if (unlink(path.c_str()) && errno != ENOENT) return ErrnoStatus("unlink", path, errno);
    if (bpf_obj_pin(bpf_map__fd(map), path.c_str())) return ErrnoStatus("bpf_obj_pin", path, errno);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> Datapath::RemoveStalePins(const std::string& dir) const {
  std::vector<std::string> removed;
  std::set<std::string> ours;
  for (const struct bpf_map* map : PinnedMaps()) ours.insert(bpf_map__name(map));
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename();
    if (ours.count(name)) continue;
    if (unlink(it->path().c_str()) && errno != ENOENT) {
      return ErrnoStatus("unlink", it->path().string(), errno);
    }
    removed.push_back(name);
  }
  if (ec) return absl::UnavailableError(absl::StrCat("cannot list ", dir, ": ", ec.message()));
  return removed;
}

absl::StatusOr<uint64_t> Datapath::CarryOverFlows(const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/", MapName(Map::kEgressFlows));
  const int raw = bpf_obj_get(path.c_str());
  if (raw < 0) {
    if (errno == ENOENT) return uint64_t{0};
    return ErrnoStatus("bpf_obj_get", path, errno);
  }
  UniqueFd old(raw);
  struct bpf_map_info info = {};
  __u32 len = sizeof(info);
  if (bpf_obj_get_info_by_fd(old.get(), &info, &len)) {
    return ErrnoStatus("bpf_obj_get_info_by_fd", path, errno);
  }
  const bool last_seen_only = info.value_size == sizeof(uint64_t);
  if (info.key_size != sizeof(pc_flow_key) ||
      (!last_seen_only && info.value_size != sizeof(pc_flow))) {
    return uint64_t{0};  // a layout this build does not know: nothing to carry
  }
  const int fd = map_fd(Map::kEgressFlows);
  uint64_t carried = 0;
  pc_flow_key key{}, next{};
  for (void* prev = nullptr; bpf_map_get_next_key(old.get(), prev, &next) == 0; prev = &key) {
    key = next;
    pc_flow flow{};
    uint64_t seen = 0;
    if (bpf_map_lookup_elem(old.get(), &key, last_seen_only ? static_cast<void*>(&seen) : &flow)) {
      continue;  // gone meanwhile
    }
    if (last_seen_only)
      flow = {.opened_at = static_cast<int64_t>(seen), .seen_at = static_cast<int64_t>(seen)};
    if (bpf_map_update_elem(fd, &key, &flow, BPF_NOEXIST) == 0) ++carried;
  }
  return carried;
}

absl::string_view MapName(Map m) {
  static constexpr absl::string_view kNames[] = {
      "src_v4_exact",
      "src_v6_exact",
      "src_v4_prefix",
      "src_v6_prefix",
      "dst_v4",
      "dst_v6",
      "port_policy",
      "rate_overrides",
      "active_slot",
      "policy_config",
      "source_buckets_v4",
      "source_buckets_v6",
      "dry_buckets_v4",
      "dry_buckets_v6",
      "first_sight",
      "global_buckets",
      "egress_flows",
      "ingress_flows",
      "xdp_ifaces",
      "iface_slots",
      "verdict_counters_fast",
      "verdict_counters",
      "port_drop_counters",
      "counted_ports",
      "named_port_drops",
      "shadow_transitions",
      "shadow_sources",
      "syn_cookies",
      "cookie_stats",
      "drop_samples",
      "user_clock",
      "last_verdict",
  };
  static_assert(std::size(kNames) == kMapCount, "one name per Map");
  const int i = static_cast<int>(m);
  return i >= 0 && i < kMapCount ? kNames[i] : "unknown";
}

absl::StatusOr<std::unique_ptr<Datapath>> Datapath::Load(const DatapathOptions& options) {
  std::unique_ptr<Datapath> dp(new Datapath(options));
  dp->skel_ = portcullis_bpf__open();
  if (dp->skel_ == nullptr) return ErrnoStatus("portcullis_bpf__open", "portcullis.bpf.o", errno);

  // Map -> bpf_map, by name; every map of the object must be in the table.
  for (int i = 0; i < kMapCount; ++i) {
    const std::string name(MapName(static_cast<Map>(i)));
    dp->maps_[i] = bpf_object__find_map_by_name(dp->skel_->obj, name.c_str());
    if (dp->maps_[i] == nullptr) {
      return absl::InternalError(absl::StrCat("portcullis.bpf.o has no map ", name));
    }
  }
  {
    struct bpf_map* map;
    int maps = 0;
    bpf_object__for_each_map(map, dp->skel_->obj) maps += !bpf_map__is_internal(map);
    if (maps != kMapCount) {
      return absl::InternalError(
          absl::StrCat("portcullis.bpf.o has ", maps, " maps; datapath::Map names ", kMapCount));
    }
  }

  auto* rodata = dp->skel_->rodata;
  rodata->use_user_clock = options.use_user_clock;
  rodata->record_last_verdict = options.record_last_verdict;
  rodata->sample_interval_ns =
      options.samples_per_second ? 1'000'000'000ULL / options.samples_per_second : 0;
  rodata->sample_burst = options.sample_burst;
  rodata->assume_listeners = options.assume_listeners;
  rodata->cookies_for_pods = options.cookies_for_pods;
  // Replayed time replays first_sight's collisions too: simulation and
  // tests judge alike on every run.
  rodata->first_sight_seed = options.use_user_clock ? 0x5043'5043'5043'5043 : RandomSeed();

  if (!options.pin_dir.empty()) {
    struct bpf_map* map;
    bpf_object__for_each_map(map, dp->skel_->obj) {
      if (bpf_map__is_internal(map)) continue;  // .rodata: per load, not shared
      const std::string path = absl::StrCat(options.pin_dir, "/", bpf_map__name(map));
      RETURN_IF_ERROR(CheckPinnedShape(map, path));
      if (const int err = bpf_map__set_pin_path(map, path.c_str())) {
        return ErrnoStatus("bpf_map__set_pin_path", path, err);
      }
    }
  }
  if (const int err = portcullis_bpf__load(dp->skel_)) {
    return ErrnoStatus("portcullis_bpf__load", "portcullis.bpf.o", err);
  }

  const int inner = bpf_map_create(BPF_MAP_TYPE_ARRAY, "pc_fence_in", 4, 4, 1, nullptr);
  if (inner < 0) return ErrnoStatus("bpf_map_create", "pc_fence_in", errno);
  dp->fence_inner_.Reset(inner);
  LIBBPF_OPTS(bpf_map_create_opts, outer_opts, .inner_map_fd = static_cast<__u32>(inner));
  const int outer = bpf_map_create(BPF_MAP_TYPE_ARRAY_OF_MAPS, "pc_fence", 4, 4, 1, &outer_opts);
  if (outer < 0) return ErrnoStatus("bpf_map_create", "pc_fence", errno);
  dp->fence_outer_.Reset(outer);
  if (absl::Status s = dp->LoadCookieCompleter(); !s.ok()) {
    // Not fatal: SYNs are then judged as with cookies off.
    dp->cookies_unsupported_ = std::string(s.message());
    if (dp->cookie_skel_ != nullptr) portcullis_cookie_bpf__destroy(dp->cookie_skel_);
    dp->cookie_skel_ = nullptr;
    // A key left by an earlier agent would have XDP send cookies that
    // nothing completes.
    const __u32 zero = 0;
    const pc_cookie_state none{};
    bpf_map_update_elem(dp->map_fd(Map::kSynCookies), &zero, &none, BPF_ANY);
  }
  return dp;
}

absl::Status SynCookiesSupported() {
  // Read once: the kernel's BTF does not change under a running process,
  // and the agent asks before loading (its nftables rule) and while loading.
  static const absl::Status* const supported = new absl::Status([] {
    struct btf* vmlinux = btf__load_vmlinux_btf();
    if (vmlinux == nullptr) {
      return absl::UnavailableError("cannot read the kernel's BTF (/sys/kernel/btf/vmlinux)");
    }
    const int id = btf__find_by_name_kind(vmlinux, "bpf_sk_assign_tcp_reqsk", BTF_KIND_FUNC);
    btf__free(vmlinux);
    if (id < 0) {
      return absl::FailedPreconditionError(
          "this kernel has no bpf_sk_assign_tcp_reqsk() (Linux 6.9 and later have it)");
    }
    return absl::OkStatus();
  }());
  return *supported;
}

absl::Status Datapath::LoadCookieCompleter() {
  RETURN_IF_ERROR(SynCookiesSupported());
  cookie_skel_ = portcullis_cookie_bpf__open();
  if (cookie_skel_ == nullptr)
    return ErrnoStatus("portcullis_cookie_bpf__open", "cookie.bpf.o", errno);
  cookie_skel_->rodata->cookie_mark = options_.cookie_mark;
  cookie_skel_->rodata->cookies_for_pods = options_.cookies_for_pods;
  if (const int err = bpf_map__reuse_fd(cookie_skel_->maps.syn_cookies, map_fd(Map::kSynCookies))) {
    return ErrnoStatus("bpf_map__reuse_fd", "syn_cookies", err);
  }
  if (const int err =
          bpf_map__reuse_fd(cookie_skel_->maps.cookie_stats, map_fd(Map::kCookieStats))) {
    return ErrnoStatus("bpf_map__reuse_fd", "cookie_stats", err);
  }
  // Pinned with the rest, so that an ACK the previous agent's uplink
  // program checked finds its handover at the pod's side across a restart.
  if (!options_.pin_dir.empty()) {
    struct bpf_map* handovers = cookie_skel_->maps.cookie_handovers;
    const std::string path = absl::StrCat(options_.pin_dir, "/", bpf_map__name(handovers));
    // Entries live a second: one of another shape is dropped, not kept.
    if (!CheckPinnedShape(handovers, path).ok() && unlink(path.c_str()) && errno != ENOENT) {
      return ErrnoStatus("unlink", path, errno);
    }
    if (const int err = bpf_map__set_pin_path(handovers, path.c_str())) {
      return ErrnoStatus("bpf_map__set_pin_path", path, err);
    }
  }
  if (const int err = portcullis_cookie_bpf__load(cookie_skel_)) {
    return ErrnoStatus("portcullis_cookie_bpf__load", "cookie.bpf.o", err);
  }
  // The key stays as an earlier agent set it (pinned), so that cookies in
  // flight across a restart stay valid; a new map gets a random one.
  const __u32 zero = 0;
  pc_cookie_state state{};
  if (bpf_map_lookup_elem(map_fd(Map::kSynCookies), &zero, &state)) {
    return ErrnoStatus("bpf_map_lookup_elem", "syn_cookies", errno);
  }
  if ((state.key[0] | state.key[1]) != 0) return absl::OkStatus();
  if (getrandom(state.key, sizeof(state.key), 0) != sizeof(state.key)) {
    return ErrnoStatus("getrandom", "syn_cookies", errno);
  }
  if (bpf_map_update_elem(map_fd(Map::kSynCookies), &zero, &state, BPF_ANY)) {
    return ErrnoStatus("bpf_map_update_elem", "syn_cookies", errno);
  }
  return absl::OkStatus();
}

absl::Status Datapath::SetXdpInterface(uint32_t ifindex, bool judged) {
  const int fd = map_fd(Map::kXdpIfaces);
  const uint32_t one = 1;
  if (judged ? bpf_map_update_elem(fd, &ifindex, &one, BPF_ANY) != 0
             : bpf_map_delete_elem(fd, &ifindex) != 0 && errno != ENOENT) {
    return ErrnoStatus(judged ? "bpf_map_update_elem" : "bpf_map_delete_elem", "xdp_ifaces", errno);
  }
  return absl::OkStatus();
}

int64_t Datapath::Now() const {
  if (options_.use_user_clock) {
    const __u32 zero = 0;
    uint64_t now = 0;
    bpf_map_lookup_elem(map_fd(Map::kUserClock), &zero, &now);
    return static_cast<int64_t>(now);
  }
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);  // bpf_ktime_get_coarse_ns()
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

absl::Status Datapath::WaitForRunningPrograms() {
  const __u32 zero = 0;
  const int inner = fence_inner_.get();
  if (bpf_map_update_elem(fence_outer_.get(), &zero, &inner, BPF_ANY)) {
    return ErrnoStatus("bpf_map_update_elem", "pc_fence", errno);
  }
  return absl::OkStatus();
}

int Datapath::map_fd(Map m) const { return bpf_map__fd(maps_[static_cast<int>(m)]); }

MapShape Datapath::shape(Map m) const {
  const struct bpf_map* map = maps_[static_cast<int>(m)];
  return MapShape{static_cast<uint32_t>(bpf_map__type(map)), bpf_map__key_size(map),
                  bpf_map__value_size(map), bpf_map__max_entries(map)};
}

Datapath::~Datapath() {
  if (cookie_skel_ != nullptr) portcullis_cookie_bpf__destroy(cookie_skel_);
  if (skel_ != nullptr) portcullis_bpf__destroy(skel_);
}

int Datapath::xdp_prog_fd() const { return bpf_program__fd(skel_->progs.portcullis_xdp); }
int Datapath::tc_pod_prog_fd() const { return bpf_program__fd(skel_->progs.portcullis_tc_pod); }
int Datapath::tc_record_prog_fd() const {
  return bpf_program__fd(skel_->progs.portcullis_tc_record);
}
int Datapath::tc_cookie_prog_fd() const {
  return cookie_skel_ != nullptr ? bpf_program__fd(cookie_skel_->progs.portcullis_tc_cookie) : -1;
}
int Datapath::tc_cookie_pod_prog_fd() const {
  return cookie_skel_ != nullptr && options_.cookies_for_pods
             ? bpf_program__fd(cookie_skel_->progs.portcullis_tc_cookie_pod)
             : -1;
}
}  // namespace portcullis::datapath
