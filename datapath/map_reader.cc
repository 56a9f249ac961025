#include "datapath/map_reader.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <vector>

#include "absl/status/statusor.h"
#include "datapath/bpf_util.h"

namespace portcullis::datapath {

absl::StatusOr<uint32_t> PerCpuValueBytes(uint32_t value_size) {
  const int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return ErrnoStatus("libbpf_num_possible_cpus", "per-CPU map", cpus);
  return static_cast<uint32_t>(cpus) * ((value_size + 7) / 8 * 8);
}

absl::StatusOr<size_t> ReadBatched(
    int fd, absl::string_view name, const BatchRead& opts,
    const std::function<void(const uint8_t* key, const uint8_t* value)>& fn) {
  size_t batch = std::max<size_t>(1, std::min(opts.batch, opts.limit));
  std::vector<uint8_t> keys(batch * opts.key_size), values(batch * opts.value_bytes);
  // The resume token: a bucket index for hashes, a key for arrays.
  std::vector<uint8_t> in(std::max<uint32_t>(opts.key_size, 8)), out(in.size());
  bool first = true;
  size_t read = 0;
  while (read < opts.limit) {
    __u32 count = static_cast<__u32>(std::min(batch, opts.limit - read));
    const int err = bpf_map_lookup_batch(fd, first ? nullptr : in.data(), out.data(), keys.data(),
                                         values.data(), &count, nullptr);
    if (err && errno == ENOSPC && count == 0) {
      // One hash bucket holds more entries than a batch: grow and retry.
      batch *= 2;
      keys.resize(batch * opts.key_size);
      values.resize(batch * opts.value_bytes);
      continue;
    }
    if (err && errno != ENOENT) return ErrnoStatus("bpf_map_lookup_batch", name, errno);
    for (__u32 i = 0; i < count; ++i) {
      fn(keys.data() + i * opts.key_size, values.data() + i * opts.value_bytes);
    }
    read += count;
    if (err) break;  // ENOENT: that was the last batch
    in.swap(out);
    first = false;
  }
  return read;
}

}  // namespace portcullis::datapath
