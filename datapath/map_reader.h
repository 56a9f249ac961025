// Reading whole BPF maps in batches: one bpf_map_lookup_batch call per few
// thousand entries instead of a get_next_key and a lookup per entry, so that
// a full map (a flood's worth of buckets) costs tens of syscalls, not
// hundreds of thousands.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace portcullis::datapath {

struct BatchRead {
  uint32_t key_size;
  // Bytes of one value as the map returns it: value_size, or for a per-CPU
  // map one 8-byte-aligned value per possible CPU (PerCpuValueBytes).
  uint32_t value_bytes;
  size_t batch = 4096;      // entries per syscall
  size_t limit = SIZE_MAX;  // stop after this many entries
};

// Calls fn(key, value) for every entry of the map `fd`, at most opts.limit,
// and returns how many were read. Entries added or deleted meanwhile may or
// may not be seen, as with any walk of a live map.
absl::StatusOr<size_t> ReadBatched(
    int fd, absl::string_view name, const BatchRead& opts,
    const std::function<void(const uint8_t* key, const uint8_t* value)>& fn);

// Bytes a per-CPU map returns for one value of `value_size` bytes.
absl::StatusOr<uint32_t> PerCpuValueBytes(uint32_t value_size);

}  // namespace portcullis::datapath
