// Writes captures with libpcap (nanosecond timestamps), for tests and the demo.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

typedef struct pcap pcap_t;
typedef struct pcap_dumper pcap_dumper_t;

namespace portcullis::testing {

class PcapWriter {
 public:
  static absl::StatusOr<std::unique_ptr<PcapWriter>> Create(const std::string& path,
                                                            int link_type = 1 /* Ethernet */);
  ~PcapWriter();
  void Write(uint64_t timestamp_ns, const std::vector<uint8_t>& frame);

 private:
  PcapWriter(pcap_t* pcap, pcap_dumper_t* dumper) : pcap_(pcap), dumper_(dumper) {}
  pcap_t* pcap_;
  pcap_dumper_t* dumper_;
};

}  // namespace portcullis::testing
