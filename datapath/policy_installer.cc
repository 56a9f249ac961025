#include "datapath/policy_installer.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <utility>

#include "common/status_macros.h"
#include "datapath/counters.h"

namespace portcullis::datapath {
namespace {

using policy::PrefixEntry;

// What libbpf says of a slot map, for writing and reading it.
struct SlotMapKind {
  explicit SlotMapKind(const Datapath& dp, SlotMap m) : shape(dp.shape(m)) {}
  bool array() const { return shape.type == BPF_MAP_TYPE_ARRAY; }
  bool trie() const { return shape.type == BPF_MAP_TYPE_LPM_TRIE; }
  MapImage Empty() const { return MapImage(shape.key_size, shape.value_size); }
  // Arrays cannot delete; LPM tries have no batch operations.
  MapWriteMode WriteMode() const { return MapWriteMode{.can_delete = !array(), .batch = !trie()}; }
  MapShape shape;
};

// Which slot a key of map `m` belongs to.
uint32_t SlotOfKey(const SlotMapKind& m, const uint8_t* key) {
  if (m.trie()) return key[offsetof(pc_lpm_v4_key, slot)];
  uint32_t slot;
  std::memcpy(&slot, key, sizeof(slot));  // hashes: the slot leads the key
  return slot;
}

template <typename Key>
void AddExact(MapImage& image, const std::vector<PrefixEntry>& entries, uint32_t slot) {
  for (const PrefixEntry& e : entries) {
    Key key{};
    key.slot = slot;
    std::memcpy(key.addr, e.prefix.bytes().data(), sizeof(key.addr));
    image.Add(&key, &e.mask);
  }
}

template <typename Key>
void AddPrefixes(MapImage& image, const std::vector<PrefixEntry>& entries, uint32_t slot,
                 bool value_is_byte) {
  for (const PrefixEntry& e : entries) {
    Key key{};
    key.prefixlen = static_cast<__u32>(PC_LPM_SLOT_BITS + e.prefix.length());
    key.slot = static_cast<__u8>(slot);
    std::memcpy(key.addr, e.prefix.bytes().data(), sizeof(key.addr));
    const uint8_t one = 1;
    image.Add(&key, value_is_byte ? static_cast<const void*>(&one) : &e.mask);
  }
}

// The counter rows the port_policy entries of `slot` refer to.
absl::StatusOr<std::vector<bool>> RowsUsedBySlot(const Datapath& dp, uint32_t slot) {
  std::vector<bool> used(PC_MAX_COUNTED_PORTS, false);
  std::vector<uint32_t> keys(PC_PORT_ENTRIES);
  std::vector<pc_port_policy> values(PC_PORT_ENTRIES);
  // Array batches resume after in_batch; slot 0 starts at the first entry.
  uint32_t before = slot * PC_PORT_ENTRIES - 1, next = 0;
  __u32 count = PC_PORT_ENTRIES;
  if (bpf_map_lookup_batch(dp.map_fd(SlotMap::kPortPolicy), slot ? &before : nullptr, &next,
                           keys.data(), values.data(), &count, nullptr) &&
      errno != ENOENT) {
    return ErrnoStatus("bpf_map_lookup_batch", "port_policy", errno);
  }
  for (__u32 i = 0; i < count; ++i) {
    const uint16_t row = values[i].counter_row;
    if (row && row <= PC_MAX_COUNTED_PORTS) used[row - 1] = true;
  }
  return used;
}

// 1 + the registered row that counts `range`, 0 if none does.
uint16_t RowOf(const std::vector<pc_counted_port>& registry, const pc_counted_port& range) {
  for (size_t row = 0; row < registry.size(); ++row) {
    const pc_counted_port& r = registry[row];
    if (r.in_use && r.first == range.first && r.last == range.last && r.proto == range.proto) {
      return static_cast<uint16_t>(row + 1);
    }
  }
  return 0;
}

}  // namespace

absl::StatusOr<std::vector<uint16_t>> PolicyInstaller::RegisterCountedPorts(
    const policy::CompiledPolicy& policy, uint32_t live_slot) {
  if (!counted_) {
    ASSIGN_OR_RETURN(counted_, ReadCountedPorts(dp_));
  }
  std::vector<pc_counted_port>& registry = *counted_;
  std::vector<uint16_t> rows(policy.counted_ports.size(), 0);
  std::vector<bool> taken(PC_MAX_COUNTED_PORTS, false);  // by this policy
  std::vector<size_t> unplaced;
  for (size_t k = 0; k < policy.counted_ports.size(); ++k) {
    rows[k] = RowOf(registry, policy.counted_ports[k]);
    if (rows[k]) {
      taken[rows[k] - 1] = true;
    } else {
      unplaced.push_back(k);
    }
  }
  if (unplaced.empty()) return rows;

  std::optional<std::vector<bool>> live_uses;  // read only if a row must be reclaimed
  uint32_t row = 0;
  for (size_t k : unplaced) {
    for (; row < PC_MAX_COUNTED_PORTS; ++row) {
      if (taken[row]) continue;
      if (!registry[row].in_use) break;
      if (!live_uses) {
        ASSIGN_OR_RETURN(live_uses, RowsUsedBySlot(dp_, live_slot));
      }
      if (!(*live_uses)[row]) break;
    }
    if (row == PC_MAX_COUNTED_PORTS) break;  // full: the rest count in the hash
    // A reclaimed row starts again from zero: its range is in neither the
    // live policy nor this one, so no metric shows it.
    const int cpus = libbpf_num_possible_cpus();
    if (cpus <= 0) return ErrnoStatus("libbpf_num_possible_cpus", "named_port_drops", cpus);
    const std::vector<uint64_t> zeros(static_cast<size_t>(cpus), 0);
    if (registry[row].in_use) {
      for (uint32_t reason = 0; reason < PC_REASON_COUNT; ++reason) {
        const uint32_t index = row * PC_REASON_COUNT + reason;
        if (bpf_map_update_elem(dp_.map_fd(Map::kNamedPortDrops), &index, zeros.data(), BPF_ANY)) {
          counted_.reset();
          return ErrnoStatus("bpf_map_update_elem", "named_port_drops", errno);
        }
      }
    }
    if (bpf_map_update_elem(dp_.map_fd(Map::kCountedPorts), &row, &policy.counted_ports[k],
                            BPF_ANY)) {
      counted_.reset();
      return ErrnoStatus("bpf_map_update_elem", "counted_ports", errno);
    }
    registry[row] = policy.counted_ports[k];
    taken[row] = true;
    rows[k] = static_cast<uint16_t>(row + 1);
  }
  return rows;
}

std::array<MapImage, kSlotMapCount> BuildImages(const Datapath& dp, const policy::CompiledPolicy& p,
                                                uint32_t slot, const std::vector<uint16_t>& rows) {
  std::array<MapImage, kSlotMapCount> images = [&]<size_t... m>(std::index_sequence<m...>) {
    return std::array<MapImage, kSlotMapCount>{SlotMapKind(dp, static_cast<SlotMap>(m)).Empty()...};
  }
  (std::make_index_sequence<kSlotMapCount>());
  auto at = [&](SlotMap m) -> MapImage& { return images[static_cast<int>(m)]; };
  AddExact<pc_src_v4_key>(at(SlotMap::kSrcV4Exact), p.src_v4_exact, slot);
  AddExact<pc_src_v6_key>(at(SlotMap::kSrcV6Exact), p.src_v6_exact, slot);
  AddPrefixes<pc_lpm_v4_key>(at(SlotMap::kSrcV4Prefix), p.src_v4_prefix, slot, false);
  AddPrefixes<pc_lpm_v6_key>(at(SlotMap::kSrcV6Prefix), p.src_v6_prefix, slot, false);
  AddPrefixes<pc_lpm_v4_key>(at(SlotMap::kDstV4), p.dst_v4, slot, true);
  AddPrefixes<pc_lpm_v6_key>(at(SlotMap::kDstV6), p.dst_v6, slot, true);
  for (uint32_t i = 0; i < p.ports.size(); ++i) {
    const uint32_t index = slot * PC_PORT_ENTRIES + i;
    pc_port_policy port = p.ports[i];
    const uint16_t range = p.counted_range.empty() ? 0 : p.counted_range[i];
    port.counter_row = range && range <= rows.size() ? rows[range - 1] : 0;
    at(SlotMap::kPortPolicy).Add(&index, &port);
  }
  for (uint32_t i = 0; i < p.rate_overrides.size(); ++i) {
    const uint32_t index = slot * PC_MAX_RATE_OVERRIDES + i;
    at(SlotMap::kRateOverrides).Add(&index, &p.rate_overrides[i]);
  }
  for (MapImage& image : images) image.Sort();
  return images;
}

absl::StatusOr<uint32_t> PolicyInstaller::BeginWrite(const policy::CompiledPolicy& policy) {
  // Array indices are slot-relative: an oversized table would spill into the
  // other slot, which may be live.
  if (policy.ports.size() != PC_PORT_ENTRIES ||
      policy.rate_overrides.size() > PC_MAX_RATE_OVERRIDES) {
    return absl::InvalidArgumentError(
        absl::StrCat("compiled policy has ", policy.ports.size(), " port entries (want ",
                     PC_PORT_ENTRIES, ") and ", policy.rate_overrides.size(),
                     " rate overrides (at most ", PC_MAX_RATE_OVERRIDES, ")"));
  }
  // A writer that went away between a flip and its grace period may have left
  // packets on the slot about to be written; wait them out once.
  if (!fenced_) {
    RETURN_IF_ERROR(dp_.WaitForRunningPrograms());
    fenced_ = true;
  }
  ASSIGN_OR_RETURN(const uint32_t active, ReadActiveWord(dp_));
  const uint32_t live = active & (PC_POLICY_SLOTS - 1);
  // A shadow candidate in the idle slot stops being judged by before the
  // slot is rewritten: no packet is judged by half of one.
  if (active & PC_ACTIVE_SHADOW) RETURN_IF_ERROR(SetActive(live));
  return live;
}

absl::Status PolicyInstaller::SetActive(uint32_t word) {
  const __u32 zero = 0;
  // One aligned 4-byte store: each packet reads either the old word or the
  // new one.
  if (bpf_map_update_elem(dp_.map_fd(Map::kActiveSlot), &zero, &word, BPF_ANY)) {
    return ErrnoStatus("bpf_map_update_elem", "active_slot", errno);
  }
  return dp_.WaitForRunningPrograms();
}

absl::Status PolicyInstaller::WriteSlot(const policy::CompiledPolicy& policy, uint64_t version,
                                        uint32_t slot) {
  const uint32_t live_slot = slot ^ 1;
  ASSIGN_OR_RETURN(const std::vector<uint16_t> rows, RegisterCountedPorts(policy, live_slot));
  std::array<MapImage, kSlotMapCount> target = BuildImages(dp_, policy, slot, rows);
  SlotImages& written = written_[slot];

  for (int m = 0; m < kSlotMapCount; ++m) {
    const SlotMap map = static_cast<SlotMap>(m);
    const SlotMapKind kind(dp_, map);
    const int fd = dp_.map_fd(map);
    const std::string name = absl::StrCat(SlotMapName(map), "[slot ", slot, "]");
    if (!written[m].has_value()) {
      MapImage current = kind.Empty();
      if (!kind.array()) {
        // Arrays are rewritten whole; hashes and tries must lose stale keys.
        RETURN_IF_ERROR(ReadImage(
            fd, name, current, [&](const uint8_t* key) { return SlotOfKey(kind, key) == slot; }));
      }
      written[m] = std::move(current);
    }
    absl::Status status = ApplyImage(fd, name, *written[m], target[m], kind.WriteMode());
    if (!status.ok()) {
      written[m].reset();  // partly written: read it back next time
      return status;
    }
    written[m] = std::move(target[m]);
  }

  pc_config config = policy.config;
  config.version = version;
  // Flows opened before the blocklist changed stop being established for its
  // sources; an unchanged blocklist keeps its moment.
  pc_config live{};
  if (bpf_map_lookup_elem(dp_.map_fd(Map::kPolicyConfig), &live_slot, &live)) {
    return ErrnoStatus("bpf_map_lookup_elem", "policy_config", errno);
  }
  config.blocklist_since =
      (live.flags & PC_CFG_VALID) && live.blocklist_hash == config.blocklist_hash
          ? live.blocklist_since
          : dp_.Now();
  if (bpf_map_update_elem(dp_.map_fd(Map::kPolicyConfig), &slot, &config, BPF_ANY)) {
    return ErrnoStatus("bpf_map_update_elem", "policy_config", errno);
  }
  return absl::OkStatus();
}

absl::Status PolicyInstaller::Install(const policy::CompiledPolicy& policy, uint64_t version) {
  ASSIGN_OR_RETURN(const uint32_t live, BeginWrite(policy));
  // The slot packets do not select, even when its config is not valid yet:
  // its config may then be rewritten freely.
  const uint32_t slot = live ^ 1;
  RETURN_IF_ERROR(WriteSlot(policy, version, slot));
  // The switch. Slots 0 and 1 differ in one bit, so no reader can see any
  // other value.
  return SetActive(slot);
}

absl::Status PolicyInstaller::InstallShadow(const policy::CompiledPolicy& policy, uint64_t stamp) {
  ASSIGN_OR_RETURN(const uint32_t live, BeginWrite(policy));
  RETURN_IF_ERROR(WriteSlot(policy, stamp, live ^ 1));
  // What an earlier candidate would have changed is not this one's.
  RETURN_IF_ERROR(ClearShadowCounts(dp_));
  return SetActive(live | PC_ACTIVE_SHADOW);
}

absl::Status PolicyInstaller::PromoteShadow(uint64_t version) {
  ASSIGN_OR_RETURN(const uint32_t active, ReadActiveWord(dp_));
  if (!(active & PC_ACTIVE_SHADOW)) {
    return absl::FailedPreconditionError("no shadow candidate is loaded");
  }
  const uint32_t live = active & (PC_POLICY_SLOTS - 1), slot = live ^ 1;
  // The candidate is restamped with its live version while no packet reads
  // it; live traffic then sees one switch, from the old policy to it.
  RETURN_IF_ERROR(SetActive(live));
  pc_config config{};
  if (bpf_map_lookup_elem(dp_.map_fd(Map::kPolicyConfig), &slot, &config)) {
    return ErrnoStatus("bpf_map_lookup_elem", "policy_config", errno);
  }
  config.version = version;
  if (bpf_map_update_elem(dp_.map_fd(Map::kPolicyConfig), &slot, &config, BPF_ANY)) {
    return ErrnoStatus("bpf_map_update_elem", "policy_config", errno);
  }
  return SetActive(slot);
}

absl::Status PolicyInstaller::DiscardShadow() {
  ASSIGN_OR_RETURN(const uint32_t active, ReadActiveWord(dp_));
  if (!(active & PC_ACTIVE_SHADOW)) return absl::OkStatus();
  return SetActive(active & (PC_POLICY_SLOTS - 1));
}

absl::StatusOr<uint32_t> ReadActiveWord(const Datapath& dp) {
  const __u32 zero = 0;
  __u32 active = 0;
  if (bpf_map_lookup_elem(dp.map_fd(Map::kActiveSlot), &zero, &active)) {
    return ErrnoStatus("bpf_map_lookup_elem", "active_slot", errno);
  }
  return active;
}

absl::StatusOr<std::pair<uint32_t, pc_config>> ReadActiveSlot(const Datapath& dp) {
  ASSIGN_OR_RETURN(const uint32_t active, ReadActiveWord(dp));
  const uint32_t slot = active & (PC_POLICY_SLOTS - 1);
  pc_config config{};
  if (bpf_map_lookup_elem(dp.map_fd(Map::kPolicyConfig), &slot, &config)) {
    return ErrnoStatus("bpf_map_lookup_elem", "policy_config", errno);
  }
  return std::make_pair(slot, config);
}

absl::Status VerifySlot(const Datapath& dp, uint32_t slot, const policy::CompiledPolicy& policy) {
  // The rows the installer registered the policy's ranges in (0 if none).
  ASSIGN_OR_RETURN(const std::vector<pc_counted_port> registry, ReadCountedPorts(dp));
  std::vector<uint16_t> rows;
  for (const pc_counted_port& range : policy.counted_ports) rows.push_back(RowOf(registry, range));
  std::array<MapImage, kSlotMapCount> want = BuildImages(dp, policy, slot, rows);
  for (int m = 0; m < kSlotMapCount; ++m) {
    const SlotMap map = static_cast<SlotMap>(m);
    const SlotMapKind kind(dp, map);
    const int fd = dp.map_fd(map);
    const std::string name = absl::StrCat(SlotMapName(map), "[slot ", slot, "]");
    const MapImage& target = want[m];
    if (kind.array()) {
      std::vector<uint8_t> value(target.value_size());
      for (size_t i = 0; i < target.size(); ++i) {
        if (bpf_map_lookup_elem(fd, target.key(i), value.data()) ||
            std::memcmp(value.data(), target.value(i), value.size()) != 0) {
          uint32_t index;
          std::memcpy(&index, target.key(i), sizeof(index));
          return absl::DataLossError(absl::StrCat(name, ": entry ", index, " differs"));
        }
      }
      continue;
    }
    MapImage have = kind.Empty();
    RETURN_IF_ERROR(ReadImage(fd, name, have,
                              [&](const uint8_t* key) { return SlotOfKey(kind, key) == slot; }));
    have.Sort();
    if (have.size() != target.size()) {
      return absl::DataLossError(
          absl::StrCat(name, ": ", have.size(), " entries, the policy has ", target.size()));
    }
    for (size_t i = 0; i < target.size(); ++i) {
      if (std::memcmp(have.key(i), target.key(i), target.key_size()) != 0 ||
          std::memcmp(have.value(i), target.value(i), target.value_size()) != 0) {
        return absl::DataLossError(absl::StrCat(name, ": entry ", i, " differs"));
      }
    }
  }
  pc_config config{};
  if (bpf_map_lookup_elem(dp.map_fd(Map::kPolicyConfig), &slot, &config)) {
    return ErrnoStatus("bpf_map_lookup_elem", "policy_config", errno);
  }
  pc_config expected = policy.config;
  expected.version = config.version;
  expected.blocklist_since = config.blocklist_since;
  if (std::memcmp(&config, &expected, sizeof(config)) != 0) {
    return absl::DataLossError(absl::StrCat("policy_config[slot ", slot, "] differs"));
  }
  return absl::OkStatus();
}

}  // namespace portcullis::datapath
