// Small RAII and error helpers for libbpf calls.
#pragma once

#include <bpf/bpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace portcullis::datapath {

// An owned file descriptor (BPF map, program or link). Move-only.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) Reset(std::exchange(other.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// "bpf_map_update_elem(src_v4_exact): No space left on device", with the
// canonical code that fits the errno. `err` may be negative (libbpf style).
inline absl::Status ErrnoStatus(absl::string_view call, absl::string_view object, int err) {
  if (err < 0) err = -err;
  const std::string message = absl::StrCat(call, "(", object, "): ", std::strerror(err));
  switch (err) {
    case EPERM:
    case EACCES:
      return absl::PermissionDeniedError(message);
    case ENOENT:
    case ENODEV:
      return absl::NotFoundError(message);
    case EEXIST:
    case EBUSY:
      return absl::FailedPreconditionError(message);
    case ENOSPC:
    case ENOMEM:
    case E2BIG:
      return absl::ResourceExhaustedError(message);
    case EINVAL:
      return absl::InvalidArgumentError(message);
    case EOPNOTSUPP:
      return absl::UnimplementedError(message);
    default:
      return absl::InternalError(message);
  }
}

// Calls fn(key) for every key of a hash map (keys of a fixed type). A key
// deleted meanwhile may end the walk early, as bpf_map_get_next_key does.
template <typename Key, typename Fn>
absl::Status ForEachKey(int fd, absl::string_view name, Fn&& fn) {
  Key key{}, next{};
  const Key* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    fn(next);
    key = next;
    prev = &key;
  }
  if (errno != ENOENT) return ErrnoStatus("bpf_map_get_next_key", name, errno);
  return absl::OkStatus();
}

}  // namespace portcullis::datapath
