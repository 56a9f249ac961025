// The drop_samples ring buffer, read from user space: RAII over libbpf's
// ring_buffer, calling back once per pc_sample.
#pragma once

#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "common/abi.h"

struct ring_buffer;

namespace portcullis::datapath {

class SampleRing {
 public:
  using OnSample = std::function<void(const pc_sample&)>;
  // `ringbuf_fd` is the drop_samples map; `on_sample` runs on the thread
  // that calls Poll.
  static absl::StatusOr<std::unique_ptr<SampleRing>> Open(int ringbuf_fd, OnSample on_sample);
  ~SampleRing();
  SampleRing(const SampleRing&) = delete;
  SampleRing& operator=(const SampleRing&) = delete;

  // Delivers what is in the ring, waiting up to `timeout_ms` for something.
  void Poll(int timeout_ms);

 private:
  explicit SampleRing(OnSample on_sample) : on_sample_(std::move(on_sample)) {}
  static int Deliver(void* ctx, void* data, size_t size);

  OnSample on_sample_;
  struct ring_buffer* rb_ = nullptr;
};

// libbpf's own messages as structured log lines (warnings and info; debug
// is dropped, and so are the kernel's extended acks of errors that the
// callers handle themselves). Once per process.
void RouteLibbpfLogs();

}  // namespace portcullis::datapath
