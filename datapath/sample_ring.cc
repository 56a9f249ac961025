#include "datapath/sample_ring.h"

#include <bpf/libbpf.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "datapath/bpf_util.h"

namespace portcullis::datapath {

absl::StatusOr<std::unique_ptr<SampleRing>> SampleRing::Open(int ringbuf_fd, OnSample on_sample) {
  std::unique_ptr<SampleRing> r(new SampleRing(std::move(on_sample)));
  r->rb_ = ring_buffer__new(ringbuf_fd, &SampleRing::Deliver, r.get(), nullptr);
  if (r->rb_ == nullptr) return ErrnoStatus("ring_buffer__new", "drop_samples", errno);
  return r;
}

SampleRing::~SampleRing() {
  if (rb_ != nullptr) ring_buffer__free(rb_);
}

void SampleRing::Poll(int timeout_ms) { ring_buffer__poll(rb_, timeout_ms); }

int SampleRing::Deliver(void* ctx, void* data, size_t size) {
  if (size < sizeof(pc_sample)) return 0;
  pc_sample s;
  std::memcpy(&s, data, sizeof(s));
  static_cast<SampleRing*>(ctx)->on_sample_(s);
  return 0;
}

namespace {

int LibbpfPrint(enum libbpf_print_level level, const char* format, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char buf[1024];
  vsnprintf(buf, sizeof(buf), format, args);
  const std::string line(absl::StripTrailingAsciiWhitespace(buf));
  if (absl::StrContains(line, "Kernel error message")) return 0;
  Log(level == LIBBPF_WARN ? LogLevel::kWarning : LogLevel::kInfo, "libbpf", {{"detail", line}});
  return 0;
}

}  // namespace

void RouteLibbpfLogs() { libbpf_set_print(LibbpfPrint); }

}  // namespace portcullis::datapath
