// Reads Ethernet frames from a pcap or pcapng capture with libpcap, with
// nanosecond timestamps.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

typedef struct pcap pcap_t;

namespace portcullis::cli {

struct CapturedFrame {
  uint64_t timestamp_ns;
  absl::Span<const uint8_t> data;  // valid until the next Next()
  uint32_t wire_length;            // > data.size() when the capture cut the frame short
};

class PcapReader {
 public:
  // NotFound for a missing file; InvalidArgument for one that is not a
  // capture; FailedPrecondition for a capture whose link type is not Ethernet.
  static absl::StatusOr<std::unique_ptr<PcapReader>> Open(const std::string& path);
  ~PcapReader();

  // The next frame, nullopt at the end; DataLoss when the file is corrupt
  // or truncated part-way.
  absl::StatusOr<std::optional<CapturedFrame>> Next();

 private:
  PcapReader(pcap_t* handle, std::string path) : handle_(handle), path_(std::move(path)) {}
  pcap_t* handle_;
  std::string path_;
};

}  // namespace portcullis::cli
