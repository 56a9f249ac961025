#include "datapath/policy_installer.h"

#include <bpf/bpf.h>

#include "common/status_macros.h"

namespace portcullis::datapath {
namespace {

using policy::PrefixEntry;

MapImage EmptyImage(SlotMap m) {
  switch (m) {
    case SlotMap::kSrcV4Exact: return MapImage(4, sizeof(pc_set_mask));
    case SlotMap::kSrcV6Exact: return MapImage(16, sizeof(pc_set_mask));
    case SlotMap::kSrcV4Prefix: return MapImage(sizeof(pc_lpm_v4_key), sizeof(pc_set_mask));
    case SlotMap::kSrcV6Prefix: return MapImage(sizeof(pc_lpm_v6_key), sizeof(pc_set_mask));
    case SlotMap::kDstV4: return MapImage(sizeof(pc_lpm_v4_key), 1);
    case SlotMap::kDstV6: return MapImage(sizeof(pc_lpm_v6_key), 1);
    case SlotMap::kPortClass: return MapImage(4, sizeof(uint16_t));
    case SlotMap::kPortClasses: return MapImage(4, sizeof(pc_port_class));
    case SlotMap::kCount: break;
  }
  return MapImage(1, 1);
}

MapWriteMode WriteMode(SlotMap m) {
  switch (m) {
    case SlotMap::kPortClass:
    case SlotMap::kPortClasses: return MapWriteMode{.can_delete = false, .batch = true};
    case SlotMap::kSrcV4Exact:
    case SlotMap::kSrcV6Exact: return MapWriteMode{.can_delete = true, .batch = true};
    default: return MapWriteMode{.can_delete = true, .batch = false};  // LPM tries
  }
}

void AddExact(MapImage& image, const std::vector<PrefixEntry>& entries, size_t addr_len) {
  for (const PrefixEntry& e : entries) image.Add(e.prefix.bytes().data(), &e.mask);
}

template <typename Key>
void AddPrefixes(MapImage& image, const std::vector<PrefixEntry>& entries, size_t addr_len,
                 bool value_is_byte) {
  for (const PrefixEntry& e : entries) {
    Key key{};
    key.prefixlen = static_cast<__u32>(e.prefix.length());
    std::memcpy(key.addr, e.prefix.bytes().data(), addr_len);
    const uint8_t one = 1;
    image.Add(&key, value_is_byte ? static_cast<const void*>(&one) : &e.mask);
  }
}

}  // namespace

std::array<MapImage, kSlotMapCount> BuildImages(const policy::CompiledPolicy& p) {
  std::array<MapImage, kSlotMapCount> images = {
      EmptyImage(SlotMap::kSrcV4Exact),  EmptyImage(SlotMap::kSrcV6Exact),
      EmptyImage(SlotMap::kSrcV4Prefix), EmptyImage(SlotMap::kSrcV6Prefix),
      EmptyImage(SlotMap::kDstV4),       EmptyImage(SlotMap::kDstV6),
      EmptyImage(SlotMap::kPortClass),   EmptyImage(SlotMap::kPortClasses)};
  auto at = [&](SlotMap m) -> MapImage& { return images[static_cast<int>(m)]; };
  AddExact(at(SlotMap::kSrcV4Exact), p.src_v4_exact, 4);
  AddExact(at(SlotMap::kSrcV6Exact), p.src_v6_exact, 16);
  AddPrefixes<pc_lpm_v4_key>(at(SlotMap::kSrcV4Prefix), p.src_v4_prefix, 4, false);
  AddPrefixes<pc_lpm_v6_key>(at(SlotMap::kSrcV6Prefix), p.src_v6_prefix, 16, false);
  AddPrefixes<pc_lpm_v4_key>(at(SlotMap::kDstV4), p.dst_v4, 4, true);
  AddPrefixes<pc_lpm_v6_key>(at(SlotMap::kDstV6), p.dst_v6, 16, true);
  for (uint32_t i = 0; i < p.port_class.size(); ++i) {
    at(SlotMap::kPortClass).Add(&i, &p.port_class[i]);
  }
  for (uint32_t i = 0; i < p.classes.size(); ++i) {
    at(SlotMap::kPortClasses).Add(&i, &p.classes[i]);
  }
  for (MapImage& image : images) image.Sort();
  return images;
}

PolicyInstaller::PolicyInstaller(Datapath& dp) : dp_(dp) {
  for (SlotImages& slot : written_) {
    for (int m = 0; m < kSlotMapCount; ++m) slot[m] = EmptyImage(static_cast<SlotMap>(m));
  }
}

absl::Status PolicyInstaller::Install(const policy::CompiledPolicy& policy, uint64_t version) {
  const int slot = active_slot_ == 0 ? 1 : 0;
  std::array<MapImage, kSlotMapCount> target = BuildImages(policy);
  SlotImages& written = written_[slot];

  for (int m = 0; m < kSlotMapCount; ++m) {
    const SlotMap map = static_cast<SlotMap>(m);
    const int fd = dp_.slot_map_fd(map, slot);
    const std::string name = absl::StrCat(SlotMapName(map), "[", slot, "]");
    if (!written[m].has_value()) {
      MapImage current = EmptyImage(map);
      if (WriteMode(map).can_delete) RETURN_IF_ERROR(ReadImage(fd, name, current));
      written[m] = std::move(current);
    }
    absl::Status status = ApplyImage(fd, name, *written[m], target[m], WriteMode(map));
    if (!status.ok()) {
      written[m].reset();  // partly written: read it back next time
      return status;
    }
    written[m] = std::move(target[m]);
  }

  pc_config config = policy.config;
  config.slot = static_cast<__u32>(slot);
  config.version = version;
  const __u32 zero = 0;
  if (bpf_map_update_elem(dp_.config_fd(slot), &zero, &config, BPF_ANY)) {
    return ErrnoStatus("bpf_map_update_elem", absl::StrCat("active_policy_", slot), errno);
  }
  // The switch. Returns only after programs running on the old slot finish.
  const int config_fd = dp_.config_fd(slot);
  if (bpf_map_update_elem(dp_.active_policy_fd(), &zero, &config_fd, BPF_ANY)) {
    return ErrnoStatus("bpf_map_update_elem", "active_policy", errno);
  }
  active_slot_ = slot;
  return absl::OkStatus();
}

}  // namespace portcullis::datapath
