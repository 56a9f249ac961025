// The intended contents of one BPF map as packed, key-sorted records, and
// the minimal set of writes that turns one image into another.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace portcullis::datapath {

class MapImage {
 public:
  MapImage(uint32_t key_size, uint32_t value_size) : key_size_(key_size), value_size_(value_size) {}

  // Adds a record; `value` may be null when value_size is 0.
  void Add(const void* key, const void* value);
  // Orders records by key bytes; call before Diff/Apply.
  void Sort();

  size_t size() const { return keys_.size() / key_size_; }
  uint32_t key_size() const { return key_size_; }
  uint32_t value_size() const { return value_size_; }
  const uint8_t* key(size_t i) const { return keys_.data() + i * key_size_; }
  const uint8_t* value(size_t i) const { return values_.data() + i * value_size_; }

 private:
  uint32_t key_size_;
  uint32_t value_size_;
  std::vector<uint8_t> keys_;
  std::vector<uint8_t> values_;
};

// What turns one image into another: the keys to delete and the records to
// write, each in key order. Keys only in `current` are deleted; keys only in
// `target`, or whose value differs, are written; equal records are left.
struct ImageDiff {
  MapImage deletes;  // values unused (size 0)
  MapImage updates;
};
// Both images sorted, with the same key and value sizes. Pure.
ImageDiff DiffImages(const MapImage& current, const MapImage& target);

// How a map is written: arrays cannot delete, and some map types (LPM trie)
// have no batch operations.
struct MapWriteMode {
  bool can_delete = true;
  bool batch = true;
};

// Makes the map `fd` hold `target`, given that it holds `current` (both
// sorted). Writes only what differs. `name` is for error messages.
absl::Status ApplyImage(int fd, absl::string_view name, const MapImage& current,
                        const MapImage& target, MapWriteMode mode);

// Reads the entries of a hash or LPM map whose keys `keep` accepts (used
// when what a slot holds is not known, e.g. after a failed write).
absl::Status ReadImage(int fd, absl::string_view name, MapImage& out,
                       const std::function<bool(const uint8_t* key)>& keep);

}  // namespace portcullis::datapath
