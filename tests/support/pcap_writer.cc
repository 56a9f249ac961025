#include "tests/support/pcap_writer.h"

#include <pcap/pcap.h>

#include "absl/strings/str_cat.h"

namespace portcullis::testing {

absl::StatusOr<std::unique_ptr<PcapWriter>> PcapWriter::Create(const std::string& path,
                                                               int link_type) {
  pcap_t* pcap = pcap_open_dead_with_tstamp_precision(link_type, 65535, PCAP_TSTAMP_PRECISION_NANO);
  if (pcap == nullptr) return absl::InternalError("pcap_open_dead failed");
  pcap_dumper_t* dumper = pcap_dump_open(pcap, path.c_str());
  if (dumper == nullptr) {
    const std::string why = pcap_geterr(pcap);
    pcap_close(pcap);
    return absl::UnavailableError(absl::StrCat(path, ": ", why));
  }
  return std::unique_ptr<PcapWriter>(new PcapWriter(pcap, dumper));
}

PcapWriter::~PcapWriter() {
  pcap_dump_close(dumper_);
  pcap_close(pcap_);
}

void PcapWriter::Write(uint64_t timestamp_ns, const std::vector<uint8_t>& frame) {
  struct pcap_pkthdr header = {};
  header.ts.tv_sec = static_cast<time_t>(timestamp_ns / 1'000'000'000ULL);
  header.ts.tv_usec = static_cast<suseconds_t>(timestamp_ns % 1'000'000'000ULL);  // ns precision
  header.caplen = static_cast<bpf_u_int32>(frame.size());
  header.len = header.caplen;
  pcap_dump(reinterpret_cast<u_char*>(dumper_), &header, frame.data());
}

}  // namespace portcullis::testing
