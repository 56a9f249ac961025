// Turns the datapath's drop samples (ring buffer) into JSON log lines:
// time, iface, hook, verdict, reason, src, dst, proto, ports. Lines are
// rate-limited so that a flood cannot flood the log; the samples left out
// are counted.
#pragma once

#include <prometheus/counter.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/abi.h"
#include "datapath/sample_ring.h"

namespace portcullis::agent {

// One sample as its log line (exposed for tests).
std::string FormatDropSample(const pc_sample& sample);

class DropSampleLogger {
 public:
  // Logs at most `per_second` lines a second (bursts up to `burst`).
  static absl::StatusOr<std::unique_ptr<DropSampleLogger>> Start(int ringbuf_fd, double per_second,
                                                                 double burst,
                                                                 prometheus::Counter* suppressed);
  ~DropSampleLogger();

 private:
  DropSampleLogger() = default;
  void OnSample(const pc_sample& sample);  // on thread_

  std::unique_ptr<datapath::SampleRing> ring_;
  std::atomic<bool> stop_{false};
  std::thread thread_;  // polls ring_
  double per_second_ = 0, burst_ = 0, tokens_ = 0;
  int64_t last_ns_ = 0;
  prometheus::Counter* suppressed_ = nullptr;
};

}  // namespace portcullis::agent
