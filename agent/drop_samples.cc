#include "agent/drop_samples.h"

#include <arpa/inet.h>
#include <bpf/libbpf.h>
#include <net/if.h>
#include <netinet/in.h>
#include <time.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "agent/labels.h"
#include "common/log.h"

namespace portcullis::agent {
namespace {

std::string Address(uint8_t family, const uint8_t* addr) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(family == PC_FAMILY_V6 ? AF_INET6 : AF_INET, addr, buf, sizeof(buf));
  return buf;
}

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
                      {"src", Address(s.family, s.src)},
                      {"dst", Address(s.family, s.dst)},
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
  l->rb_ = ring_buffer__new(ringbuf_fd, &DropSampleLogger::OnSample, l.get(), nullptr);
  if (l->rb_ == nullptr) {
    return absl::InternalError(absl::StrCat("ring_buffer__new(drop_samples): ", errno));
  }
  l->thread_ = std::thread([p = l.get()] {
    while (!p->stop_) ring_buffer__poll(p->rb_, /*timeout_ms=*/200);
  });
  return l;
}

DropSampleLogger::~DropSampleLogger() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (rb_ != nullptr) ring_buffer__free(rb_);
}

int DropSampleLogger::OnSample(void* ctx, void* data, size_t size) {
  auto* self = static_cast<DropSampleLogger*>(ctx);
  if (size < sizeof(pc_sample)) return 0;
  const int64_t now = MonotonicNs();
  self->tokens_ =
      std::min(self->burst_, self->tokens_ + (now - self->last_ns_) * self->per_second_ / 1e9);
  self->last_ns_ = now;
  if (self->tokens_ < 1) {
    if (self->suppressed_) self->suppressed_->Increment();
    return 0;
  }
  self->tokens_ -= 1;
  const std::string line = FormatDropSample(*static_cast<const pc_sample*>(data)) + "\n";
  std::fputs(line.c_str(), stderr);
  return 0;
}

}  // namespace portcullis::agent
