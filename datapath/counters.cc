#include "datapath/counters.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "common/status_macros.h"
#include "datapath/bpf_util.h"
#include "datapath/map_reader.h"

namespace portcullis::datapath {
namespace {

// Calls fn(key, value) for every CPU's value of every entry of a per-CPU
// map, read in batches. Per-CPU values come back as one slot per possible
// CPU, each rounded up to 8 bytes.
template <typename Key, typename Value, typename Fn>
absl::Status ForEachPerCpu(int fd, absl::string_view name, Fn&& fn) {
  ASSIGN_OR_RETURN(const uint32_t value_bytes, PerCpuValueBytes(sizeof(Value)));
  const size_t stride = (sizeof(Value) + 7) / 8 * 8;
  const size_t cpus = value_bytes / stride;
  auto read = ReadBatched(fd, name, {.key_size = sizeof(Key), .value_bytes = value_bytes},
                          [&](const uint8_t* key_bytes, const uint8_t* values) {
                            Key key;
                            std::memcpy(&key, key_bytes, sizeof(key));
                            for (size_t cpu = 0; cpu < cpus; ++cpu) {
                              Value v;
                              std::memcpy(&v, values + stride * cpu, sizeof(v));
                              fn(key, v);
                            }
                          });
  return read.status();
}

// Sums fn's per-CPU values by key, in the order keys are first seen.
template <typename Key, typename Count>
absl::Status SumPerCpu(int fd, absl::string_view name, std::vector<Count>& out) {
  return ForEachPerCpu<Key, uint64_t>(fd, name, [&](const Key& k, uint64_t v) {
    if (out.empty() || std::memcmp(&out.back().key, &k, sizeof(k)) != 0) {
      out.push_back(Count{k, 0});
    }
    out.back().packets += v;
  });
}

// Deletes every entry of the hash `fd`.
absl::Status ClearHash(int fd, absl::string_view name, size_t key_size) {
  std::vector<uint8_t> key(key_size);
  while (bpf_map_get_next_key(fd, nullptr, key.data()) == 0) {
    if (bpf_map_delete_elem(fd, key.data()) && errno != ENOENT) {
      return ErrnoStatus("bpf_map_delete_elem", name, errno);
    }
  }
  if (errno != ENOENT) return ErrnoStatus("bpf_map_get_next_key", name, errno);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ShadowCounts> ReadShadowCounts(const Datapath& dp) {
  ShadowCounts counts;
  RETURN_IF_ERROR(SumPerCpu<pc_shadow_key>(dp.map_fd(Map::kShadowTransitions), "shadow_transitions",
                                           counts.transitions));
  RETURN_IF_ERROR(SumPerCpu<pc_shadow_source_key>(dp.map_fd(Map::kShadowSources), "shadow_sources",
                                                  counts.sources));
  return counts;
}

absl::Status ClearShadowCounts(const Datapath& dp) {
  RETURN_IF_ERROR(
      ClearHash(dp.map_fd(Map::kShadowTransitions), "shadow_transitions", sizeof(pc_shadow_key)));
  return ClearHash(dp.map_fd(Map::kShadowSources), "shadow_sources", sizeof(pc_shadow_source_key));
}

absl::StatusOr<std::vector<VerdictCount>> ReadVerdictCounters(int iface_slots_fd, int fast_array_fd,
                                                              int hash_fd) {
  std::vector<VerdictCount> out;
  std::vector<__u32> owners(PC_IFACE_SLOTS, 0);
  for (__u32 slot = 0; slot < PC_IFACE_SLOTS; ++slot) {
    if (bpf_map_lookup_elem(iface_slots_fd, &slot, &owners[slot])) {
      return ErrnoStatus("bpf_map_lookup_elem", "iface_slots", errno);
    }
  }
  absl::Status s = ForEachPerCpu<__u32, pc_counter>(
      fast_array_fd, "verdict_counters_fast", [&](const __u32& index, const pc_counter& v) {
        if (index >= PC_FAST_COUNTERS) return;
        uint32_t i = index;
        pc_verdict_key k{};
        k.reason = static_cast<__u8>(i % PC_REASON_COUNT);
        i /= PC_REASON_COUNT;
        k.verdict = static_cast<__u8>(i % PC_VERDICT_COUNT);
        i /= PC_VERDICT_COUNT;
        k.hook = static_cast<__u8>(i % PC_HOOK_COUNT);
        k.ifindex = owners[i / PC_HOOK_COUNT];
        if (out.empty() || std::memcmp(&out.back().key, &k, sizeof(k)) != 0) {
          out.push_back(VerdictCount{k, {}});
        }
        out.back().total.packets += v.packets;
        out.back().total.bytes += v.bytes;
      });
  if (!s.ok()) return s;
  // Array entries exist whether or not they counted anything.
  std::erase_if(out, [](const VerdictCount& c) { return c.total.packets == 0; });
  s = ForEachPerCpu<pc_verdict_key, pc_counter>(
      hash_fd, "verdict_counters", [&](const pc_verdict_key& k, const pc_counter& v) {
        if (out.empty() || std::memcmp(&out.back().key, &k, sizeof(k)) != 0) {
          out.push_back(VerdictCount{k, {}});
        }
        out.back().total.packets += v.packets;
        out.back().total.bytes += v.bytes;
      });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<VerdictCount>> ReadVerdictCounters(const Datapath& dp) {
  return ReadVerdictCounters(dp.map_fd(Map::kIfaceSlots), dp.map_fd(Map::kVerdictCountersFast),
                             dp.map_fd(Map::kVerdictCounters));
}

absl::StatusOr<std::vector<pc_counted_port>> ReadCountedPorts(const Datapath& dp) {
  std::vector<pc_counted_port> rows(PC_MAX_COUNTED_PORTS);
  for (uint32_t row = 0; row < PC_MAX_COUNTED_PORTS; ++row) {
    if (bpf_map_lookup_elem(dp.map_fd(Map::kCountedPorts), &row, &rows[row])) {
      return ErrnoStatus("bpf_map_lookup_elem", "counted_ports", errno);
    }
  }
  return rows;
}

absl::StatusOr<std::vector<PortDropCount>> ReadPortDropCounters(const Datapath& dp) {
  std::vector<PortDropCount> out;
  absl::Status s = ForEachPerCpu<pc_port_key, uint64_t>(
      dp.map_fd(Map::kPortDropCounters), "port_drop_counters",
      [&](const pc_port_key& k, uint64_t v) {
        if (out.empty() || std::memcmp(&out.back().key, &k, sizeof(k)) != 0) {
          out.push_back(PortDropCount{k, k.port, false, 0});
        }
        out.back().packets += v;
      });
  if (!s.ok()) return s;

  const int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return ErrnoStatus("libbpf_num_possible_cpus", "named_port_drops", cpus);
  std::vector<uint64_t> values(static_cast<size_t>(cpus));
  ASSIGN_OR_RETURN(const std::vector<pc_counted_port> registry, ReadCountedPorts(dp));
  for (uint32_t row = 0; row < registry.size(); ++row) {
    const pc_counted_port& range = registry[row];
    if (!range.in_use) continue;
    // Drops only: the reasons before the first drop reason never count here.
    for (uint32_t reason = PC_FIRST_DROP_REASON; reason < PC_REASON_COUNT; ++reason) {
      if (!IsDropReason(reason)) continue;
      const uint32_t index = row * PC_REASON_COUNT + reason;
      if (bpf_map_lookup_elem(dp.map_fd(Map::kNamedPortDrops), &index, values.data())) {
        return ErrnoStatus("bpf_map_lookup_elem", "named_port_drops", errno);
      }
      uint64_t n = 0;
      for (uint64_t v : values) n += v;
      if (n == 0) continue;
      out.push_back(PortDropCount{
          {.port = range.first, .proto = range.proto, .reason = static_cast<__u8>(reason)},
          range.last,
          true,
          n});
    }
  }
  return out;
}

absl::StatusOr<std::array<uint64_t, PC_COOKIE_RESULTS>> ReadCookieCounts(const Datapath& dp) {
  const int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return ErrnoStatus("libbpf_num_possible_cpus", "cookie_stats", cpus);
  std::vector<uint64_t> values(static_cast<size_t>(cpus));
  std::array<uint64_t, PC_COOKIE_RESULTS> out{};
  for (uint32_t result = 0; result < PC_COOKIE_RESULTS; ++result) {
    if (bpf_map_lookup_elem(dp.map_fd(Map::kCookieStats), &result, values.data())) {
      return ErrnoStatus("bpf_map_lookup_elem", "cookie_stats", errno);
    }
    for (uint64_t v : values) out[result] += v;
  }
  return out;
}

}  // namespace portcullis::datapath
