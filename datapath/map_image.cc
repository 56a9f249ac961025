#include "datapath/map_image.h"

#include <bpf/bpf.h>

#include <algorithm>
#include <numeric>

#include "datapath/bpf_util.h"

namespace portcullis::datapath {

void MapImage::Add(const void* key, const void* value) {
  const auto* k = static_cast<const uint8_t*>(key);
  const auto* v = static_cast<const uint8_t*>(value);
  keys_.insert(keys_.end(), k, k + key_size_);
  if (value_size_ > 0) values_.insert(values_.end(), v, v + value_size_);
}

void MapImage::Sort() {
  const size_t n = size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return std::memcmp(key(a), key(b), key_size_) < 0; });
  std::vector<uint8_t> keys(keys_.size());
  std::vector<uint8_t> values(values_.size());
  for (size_t i = 0; i < n; ++i) {
    std::memcpy(keys.data() + i * key_size_, key(order[i]), key_size_);
    std::memcpy(values.data() + i * value_size_, value(order[i]), value_size_);
  }
  keys_ = std::move(keys);
  values_ = std::move(values);
}

namespace {

// Batches of this many records keep each syscall's kernel buffer small.
constexpr size_t kBatch = 8192;

absl::Status Update(int fd, absl::string_view name, const MapImage& records, bool batch) {
  const size_t n = records.size();
  size_t done = 0;
  if (batch && n > 0) {
    LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
    while (done < n) {
      __u32 count = static_cast<__u32>(std::min(kBatch, n - done));
      const int err =
          bpf_map_update_batch(fd, records.key(done), records.value(done), &count, &opts);
      if (err == -EOPNOTSUPP || err == -ENOTSUP || err == -524 /* ENOTSUPP */) break;
      if (err) return ErrnoStatus("bpf_map_update_batch", name, err);
      done += count;
    }
  }
  for (; done < n; ++done) {
    if (bpf_map_update_elem(fd, records.key(done), records.value(done), BPF_ANY)) {
      return ErrnoStatus("bpf_map_update_elem", name, errno);
    }
  }
  return absl::OkStatus();
}

}  // namespace

ImageDiff DiffImages(const MapImage& current, const MapImage& target) {
  const uint32_t ks = target.key_size();
  const uint32_t vs = target.value_size();
  ImageDiff diff{MapImage(ks, 0), MapImage(ks, vs)};
  size_t i = 0, j = 0;
  // Merge of two sorted key lists.
  while (i < current.size() || j < target.size()) {
    int cmp;
    if (i == current.size()) {
      cmp = 1;
    } else if (j == target.size()) {
      cmp = -1;
    } else {
      cmp = std::memcmp(current.key(i), target.key(j), ks);
    }
    if (cmp < 0) {
      diff.deletes.Add(current.key(i), nullptr);
      ++i;
    } else if (cmp > 0 || std::memcmp(current.value(i), target.value(j), vs) != 0) {
      diff.updates.Add(target.key(j), target.value(j));
      if (cmp == 0) ++i;
      ++j;
    } else {
      ++i;
      ++j;
    }
  }
  return diff;
}

absl::Status ApplyImage(int fd, absl::string_view name, const MapImage& current,
                        const MapImage& target, MapWriteMode mode) {
  const ImageDiff diff = DiffImages(current, target);
  // Deletes first, so that a full map has room for the new entries.
  if (mode.can_delete) {
    for (size_t k = 0; k < diff.deletes.size(); ++k) {
      if (bpf_map_delete_elem(fd, diff.deletes.key(k)) && errno != ENOENT) {
        return ErrnoStatus("bpf_map_delete_elem", name, errno);
      }
    }
  }
  return Update(fd, name, diff.updates, mode.batch);
}

absl::Status ReadImage(int fd, absl::string_view name, MapImage& out,
                       const std::function<bool(const uint8_t* key)>& keep) {
  std::vector<uint8_t> key(out.key_size()), next(out.key_size()), value(out.value_size());
  const void* prev = nullptr;
  while (true) {
    if (bpf_map_get_next_key(fd, prev, next.data())) {
      if (errno == ENOENT) break;
      return ErrnoStatus("bpf_map_get_next_key", name, errno);
    }
    if (keep(next.data()) && bpf_map_lookup_elem(fd, next.data(), value.data()) == 0) {
      out.Add(next.data(), value.data());
    }
    key = next;
    prev = key.data();
  }
  out.Sort();
  return absl::OkStatus();
}

}  // namespace portcullis::datapath
