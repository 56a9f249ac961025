// libFuzzer: the capture reader of `portcullisctl simulate` on arbitrary
// bytes (pcap and pcapng): frames or a clear error, never a crash.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "cli/pcap_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = memfd_create("capture", 0);
  if (fd < 0) return 0;
  if (write(fd, data, size) == static_cast<ssize_t>(size)) {
    const std::string path = "/proc/self/fd/" + std::to_string(fd);
    auto reader = portcullis::cli::PcapReader::Open(path);
    if (reader.ok()) {
      for (int i = 0; i < 100000; ++i) {
        auto frame = (*reader)->Next();
        if (!frame.ok() || !frame->has_value()) break;
      }
    }
  }
  close(fd);
  return 0;
}
