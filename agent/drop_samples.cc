#include "agent/drop_samples.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <time.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "agent/labels.h"
#include "common/log.h"

namespace portcullis::agent {
namespace {

int64_t MonotonicNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace

std::string FormatDropSample(const pc_sample& s) {
  LogFields fields = {{"iface", IfaceName(s.ifindex)},
                      {"hook", std::string(HookName(s.hook))},
                      {"verdict", std::string(VerdictName(s.verdict))},
                      {"reason", std::string(ReasonName(s.reason))},
                      {"src", AddressName(s.family, s.src)},
                      {"dst", AddressName(s.family, s.dst)},
                      {"proto", ProtoName(s.proto)}};
  if (s.proto == IPPROTO_TCP || s.proto == IPPROTO_UDP) {
    fields.push_back({"sport", static_cast<uint64_t>(s.sport)});
    fields.push_back({"dport", static_cast<uint64_t>(s.dport)});
  }
  return FormatLogLine(LogLevel::kInfo, "drop sample", fields);
}

absl::StatusOr<std::unique_ptr<DropSampleLogger>> DropSampleLogger::Start(
    int ringbuf_fd, double per_second, double burst, prometheus::Counter* suppressed) {
  std::unique_ptr<DropSampleLogger> l(new DropSampleLogger());
  l->per_second_ = per_second;
  l->burst_ = l->tokens_ = burst;
  l->last_ns_ = MonotonicNs();
  l->suppressed_ = suppressed;
  auto ring =
      datapath::SampleRing::Open(ringbuf_fd, [p = l.get()](const pc_sample& s) { p->OnSample(s); });
  if (!ring.ok()) return ring.status();
  l->ring_ = *std::move(ring);
  l->thread_ = std::thread([p = l.get()] {
    while (!p->stop_) p->ring_->Poll(/*timeout_ms=*/200);
  });
  return l;
}

DropSampleLogger::~DropSampleLogger() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void DropSampleLogger::OnSample(const pc_sample& sample) {
  const int64_t now = MonotonicNs();
  tokens_ = std::min(burst_, tokens_ + (now - last_ns_) * per_second_ / 1e9);
  last_ns_ = now;
  if (tokens_ < 1) {
    if (suppressed_) suppressed_->Increment();
    return;
  }
  tokens_ -= 1;
  const std::string line = FormatDropSample(sample) + "\n";
  std::fputs(line.c_str(), stderr);
}

}  // namespace portcullis::agent
