#include "cli/pcap_reader.h"

#include <pcap/pcap.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace portcullis::cli {

absl::StatusOr<std::unique_ptr<PcapReader>> PcapReader::Open(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const std::string why = absl::StrCat(path, ": ", std::strerror(errno));
    return errno == ENOENT ? absl::NotFoundError(why) : absl::PermissionDeniedError(why);
  }
  char errbuf[PCAP_ERRBUF_SIZE] = {};
  pcap_t* handle =
      pcap_open_offline_with_tstamp_precision(path.c_str(), PCAP_TSTAMP_PRECISION_NANO, errbuf);
  if (handle == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a readable pcap or pcapng capture (", errbuf, ")"));
  }
  std::unique_ptr<PcapReader> reader(new PcapReader(handle, path));
  const int link = pcap_datalink(handle);
  if (link != DLT_EN10MB) {
    const char* name = pcap_datalink_val_to_name(link);
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": link type ", name ? name : "unknown", " (", link,
                     ") is not Ethernet; capture on the policed interface itself, not on \"any\""));
  }
  return reader;
}

PcapReader::~PcapReader() { pcap_close(handle_); }

absl::StatusOr<std::optional<CapturedFrame>> PcapReader::Next() {
  struct pcap_pkthdr* header = nullptr;
  const u_char* data = nullptr;
  const int rc = pcap_next_ex(handle_, &header, &data);
  if (rc == PCAP_ERROR_BREAK) return std::nullopt;  // end of file
  if (rc != 1) {
    return absl::DataLossError(
        absl::StrCat(path_, ": corrupt or truncated capture (", pcap_geterr(handle_), ")"));
  }
  const uint64_t ns = static_cast<uint64_t>(header->ts.tv_sec) * 1'000'000'000ULL +
                      static_cast<uint64_t>(header->ts.tv_usec);  // nanoseconds here
  return CapturedFrame{ns, absl::MakeConstSpan(data, header->caplen), header->len};
}

}  // namespace portcullis::cli
